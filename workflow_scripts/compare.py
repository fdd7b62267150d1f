import json

from _common import start

log = start(snakemake)  # noqa: F821 (snakemake is injected by Snakemake)

from rekalm.compare import write_comparison
from rekalm.evaluate import MetricSettings, held_out_judgements, relevant_qrels
from rekalm.io import read_parquet


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


systems = list(snakemake.params.systems)
write_comparison(
    dataset=snakemake.wildcards.dataset,
    metrics=dict(zip(systems, map(read_json, snakemake.input.metrics))),
    runs=dict(zip(systems, map(read_json, snakemake.input.runs))),
    qrels=relevant_qrels(held_out_judgements(read_parquet(snakemake.input.candidates))),
    settings=MetricSettings.from_config(snakemake.params.metrics),
    outputs={key: snakemake.output[key] for key in ("table", "latex", "plot", "summary")},
)
