from _common import start

log = start(snakemake)  # noqa: F821 (snakemake is injected by Snakemake)

from rekalm.merge import merge_adapter

check = merge_adapter(
    base_model_dir=snakemake.input.base_model,
    adapter_dir=snakemake.input.adapter,
    output_dir=snakemake.output.model_dir,
    dtype=snakemake.params.dtype,
    tolerance=snakemake.params.tolerance,
    trust_remote_code=snakemake.params.trust_remote_code,
    threads=snakemake.threads,
)
log.info("merged %s/%s: %s", snakemake.wildcards.dataset, snakemake.wildcards.ablation, check)
