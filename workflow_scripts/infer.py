from _common import start

log = start(snakemake)  # noqa: F821 (snakemake is injected by Snakemake)

from rekalm.infer import InferenceSettings, run_inference
from rekalm.io import write_json, write_parquet

predictions, run = run_inference(
    test_path=snakemake.input.test,
    model_dir=snakemake.input.model,
    adapter_dir=snakemake.input.get("adapter"),
    settings=InferenceSettings.from_config(snakemake.params.settings),
    chunk_dir=snakemake.params.chunk_dir,
    threads=snakemake.threads,
    trust_remote_code=snakemake.params.trust_remote_code,
)
write_parquet(predictions, snakemake.output.predictions)
write_json(run, snakemake.output.run)
