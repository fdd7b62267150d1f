"""Fetch one dataset's source files and write their manifest (rekalm.data.download)."""

from _common import start

log = start(snakemake)  # noqa: F821 (snakemake is injected by Snakemake)

from pathlib import Path

from rekalm.data.download import DownloadSettings, fetch_dataset
from rekalm.common.io import write_json

output = Path(snakemake.output[0])
manifest = fetch_dataset(
    snakemake.wildcards.dataset, snakemake.params.files, output.parent, DownloadSettings(**snakemake.params.retry)
)
write_json(manifest, output)
