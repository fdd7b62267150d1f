"""Split one dataset's users and build their candidate lists (rekalm.data.split)."""

from _common import start

log = start(snakemake)  # noqa: F821 (snakemake is injected by Snakemake)

from rekalm.common.io import read_parquet, write_json, write_parquet
from rekalm.data.split import SplitSettings, split_interactions, split_stats

interactions = read_parquet(snakemake.input[0], required=["user", "item", "liked"])
split, candidates = split_interactions(interactions, SplitSettings(**snakemake.params.options))
stats = split_stats(split, candidates)
log.info("split %s: %s", snakemake.wildcards.dataset, stats)
write_parquet(split, snakemake.output.split)
write_parquet(candidates, snakemake.output.candidates)
write_json(stats, snakemake.output.stats)
