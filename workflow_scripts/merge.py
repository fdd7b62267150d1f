"""Merge one LoRA adapter into its base model and check the merge (rekalm.training.merge)."""

from _common import one_line_errors, start

log = start(snakemake)  # noqa: F821 (snakemake is injected by Snakemake)

from rekalm.llm.hf import DeviceUnavailableError
from rekalm.training.merge import merge_adapter

with one_line_errors(log, DeviceUnavailableError):
    check = merge_adapter(
        base_model_dir=snakemake.input.base_model,
        adapter_dir=snakemake.input.adapter,
        output_dir=snakemake.output.model_dir,
        dtype=snakemake.params.dtype,
        tolerance=snakemake.params.tolerance,
        trust_remote_code=snakemake.params.trust_remote_code,
        threads=snakemake.threads,
        device=snakemake.params.device,
        gpus=int(snakemake.resources.get("gpu", 0)),
    )
log.info("merged %s/%s: %s", snakemake.wildcards.dataset, snakemake.wildcards.ablation, check)
