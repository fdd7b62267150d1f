"""Parse one dataset's raw files into the canonical interactions and items tables (rekalm.data.prepare)."""

from _common import start

log = start(snakemake)  # noqa: F821 (snakemake is injected by Snakemake)

import json
from pathlib import Path

from rekalm.common.io import write_json, write_parquet
from rekalm.data.prepare import PrepareSettings, Repairs, dataset_stats, prepare_dataset

manifest = json.loads(Path(snakemake.input[0]).read_text())
files = {role: Path(entry["path"]) for role, entry in manifest.items()}
repairs = Repairs()
interactions, items = prepare_dataset(
    snakemake.params.format, files, PrepareSettings(**snakemake.params.options), repairs
)
stats = dataset_stats(interactions, items, repairs)
log.info("prepared %s: %s", snakemake.wildcards.dataset, stats)
write_parquet(interactions, snakemake.output.interactions)
write_parquet(items, snakemake.output.item_table)
write_json(stats, snakemake.output.stats)
