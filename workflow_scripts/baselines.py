"""One classical baseline of one dataset, tuned and ranking its test users' candidates
(rekalm.evaluation.baselines)."""

from _common import start

log = start(snakemake)  # noqa: F821 (snakemake is injected by Snakemake; stderr -> snakemake.log[0])

from rekalm.evaluation.baselines import BaselineSettings, run_baseline
from rekalm.common.io import read_parquet, write_json, write_parquet

name = snakemake.wildcards.baseline
predictions, run, tuning = run_baseline(
    name,
    split=read_parquet(snakemake.input.split, required=["user", "user_set", "item", "liked", "side"]),
    candidates=read_parquet(snakemake.input.candidates, required=["user", "user_set", "position", "item", "liked"]),
    settings=BaselineSettings(**snakemake.params.settings, threads=snakemake.threads),
)
log.info(
    "%s/%s: chose %s (%s %s)",
    snakemake.wildcards.dataset,
    name,
    tuning["chosen"],
    tuning["metric"],
    tuning["chosen_score"],
)
write_parquet(predictions, snakemake.output.predictions)
write_json(run, snakemake.output.run)
write_json(tuning, snakemake.output.tuning)
