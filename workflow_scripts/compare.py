"""Compare every system of one dataset: tables, plot and summary over seeds (rekalm.evaluation.compare)."""

import json

from _common import start

log = start(snakemake)  # noqa: F821 (snakemake is injected by Snakemake)

from rekalm.evaluation.compare import write_comparison
from rekalm.evaluation.evaluate import MetricSettings, held_out_judgements, relevant_qrels
from rekalm.common.io import read_parquet


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def qrels_of(path):
    return relevant_qrels(held_out_judgements(read_parquet(path)))


# params.systems: [{name, kind, replicates: [{seed, dataset, name}, ...]}]; the metrics and
# runs inputs list the replicates in exactly that order. input.candidates: one table per
# split (several only with run.resplit, one per seed in run.seeds order).
metric_files, run_files = iter(snakemake.input.metrics), iter(snakemake.input.runs)
metrics, runs, kinds = {}, {}, {}
for system in snakemake.params.systems:
    kinds[system["name"]] = system["kind"]
    metrics[system["name"]] = {r["seed"]: read_json(next(metric_files)) for r in system["replicates"]}
    runs[system["name"]] = {r["seed"]: read_json(next(run_files)) for r in system["replicates"]}
split_qrels = None
if snakemake.params.resplit:
    seeds = [r["seed"] for r in snakemake.params.systems[0]["replicates"]]
    split_qrels = {seed: qrels_of(path) for seed, path in zip(seeds, snakemake.input.candidates, strict=True)}
write_comparison(
    dataset=snakemake.wildcards.dataset,
    metrics=metrics,
    runs=runs,
    qrels=qrels_of(snakemake.input.candidates[0]),
    settings=MetricSettings.from_config(snakemake.params.metrics),
    outputs={key: snakemake.output[key] for key in ("table", "latex", "plot", "summary")},
    kinds=kinds,
    split_qrels=split_qrels,
)
