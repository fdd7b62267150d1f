import json

from _common import start

log = start(snakemake)  # noqa: F821 (snakemake is injected by Snakemake)

from rekalm.compare import write_comparison
from rekalm.evaluate import MetricSettings, held_out_judgements, relevant_qrels
from rekalm.io import read_parquet


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


# params.systems: [{name, kind, replicates: [[seed, replicate name], ...]}]; the metrics and
# runs inputs list the replicates in exactly that order.
metric_files, run_files = iter(snakemake.input.metrics), iter(snakemake.input.runs)
metrics, runs, kinds = {}, {}, {}
for system in snakemake.params.systems:
    kinds[system["name"]] = system["kind"]
    metrics[system["name"]] = {seed: read_json(next(metric_files)) for seed, _ in system["replicates"]}
    runs[system["name"]] = {seed: read_json(next(run_files)) for seed, _ in system["replicates"]}
write_comparison(
    dataset=snakemake.wildcards.dataset,
    metrics=metrics,
    runs=runs,
    qrels=relevant_qrels(held_out_judgements(read_parquet(snakemake.input.candidates))),
    settings=MetricSettings.from_config(snakemake.params.metrics),
    outputs={key: snakemake.output[key] for key in ("table", "latex", "plot", "summary")},
    kinds=kinds,
)
