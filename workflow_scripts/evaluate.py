"""Metrics of one system's ranking of one dataset (rekalm.evaluation.evaluate)."""

import json

from _common import start

log = start(snakemake)  # noqa: F821 (snakemake is injected by Snakemake)

from rekalm.evaluation.evaluate import MetricSettings, evaluate_ranking
from rekalm.common.io import read_parquet, write_json

with open(snakemake.input.run, encoding="utf-8") as handle:
    run = json.load(handle)
metrics = evaluate_ranking(
    predictions=read_parquet(snakemake.input.predictions, required=["user", "item", "rank", "source"]),
    run=run,
    candidates=read_parquet(snakemake.input.candidates, required=["user", "user_set", "item", "liked"]),
    split=read_parquet(snakemake.input.split, required=["user", "user_set", "item", "side"]),
    settings=MetricSettings.from_config(snakemake.params.metrics),
    labels={"dataset": snakemake.wildcards.dataset, "system": snakemake.wildcards.system},
)
log.info("%s/%s: %s", snakemake.wildcards.dataset, snakemake.wildcards.system, metrics.get("standard"))
write_json(metrics, snakemake.output[0])
