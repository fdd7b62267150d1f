"""Rank one system's test prompts with its model, stopping at once when a requested GPU is
missing (rekalm.ranking.infer)."""

from _common import one_line_errors, start

log = start(snakemake)  # noqa: F821 (snakemake is injected by Snakemake)

from rekalm.llm.hf import DeviceUnavailableError
from rekalm.ranking.infer import run_inference
from rekalm.ranking.inference_inputs import InferenceSettings
from rekalm.common.io import write_json, write_parquet

with one_line_errors(log, DeviceUnavailableError):
    predictions, run = run_inference(
        test_path=snakemake.input.test,
        model_dir=snakemake.input.model,
        adapter_dir=snakemake.input.get("adapter"),
        settings=InferenceSettings.from_config(snakemake.params.settings),
        chunk_dir=snakemake.params.chunk_dir,
        threads=snakemake.threads,
        trust_remote_code=snakemake.params.trust_remote_code,
        gpus=int(snakemake.resources.get("gpu", 0)),
        where=(
            f"rule infer ({snakemake.wildcards.dataset}/{snakemake.wildcards.system}), preset "
            f"inference.{snakemake.params.preset_name}"
        ),
    )
write_parquet(predictions, snakemake.output.predictions)
write_json(run, snakemake.output.run)
