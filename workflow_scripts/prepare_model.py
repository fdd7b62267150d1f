"""Prepare one base model as a plain Hugging Face folder (rekalm.llm.prepare_model)."""

from _common import start

log = start(snakemake)  # noqa: F821 (snakemake is injected by Snakemake)

from rekalm.llm.prepare_model import ModelSource, prepare_base_model

source = ModelSource.from_config(snakemake.wildcards.model, dict(snakemake.params.source))
prepare_base_model(source, snakemake.output.model_dir, trust_remote_code=snakemake.params.trust_remote_code)
