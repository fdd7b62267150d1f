"""LoRA-train one ablation of one dataset, stopping at once when a requested GPU is missing (rekalm.training.train)."""

from _common import one_line_errors, start

log = start(snakemake)  # noqa: F821 (snakemake is injected by Snakemake)

from rekalm.llm.hf import DeviceUnavailableError
from rekalm.training.train import TrainingJob, TrainingSettings, run_training_job

job = TrainingJob(
    train_jsonl=snakemake.input.train_set,
    base_model_dir=snakemake.input.base_model,
    adapter_dir=snakemake.output.adapter,
    log_tsv=snakemake.output.log_tsv,
    loss_png=snakemake.output.loss_png,
    checkpoint_dir=snakemake.params.checkpoint_dir,
    settings=TrainingSettings.from_config(snakemake.params.settings, where=f"training.{snakemake.params.preset_name}"),
    threads=snakemake.threads,
    trust_remote_code=snakemake.params.trust_remote_code,
    gpus=int(snakemake.resources.get("gpu", 0)),
    where=(
        f"rule train ({snakemake.wildcards.dataset}/{snakemake.wildcards.ablation}), preset "
        f"training.{snakemake.params.preset_name}"
    ),
)
with one_line_errors(log, DeviceUnavailableError):
    result = run_training_job(job)
log.info("trained %s/%s: %s", snakemake.wildcards.dataset, snakemake.wildcards.ablation, result)
