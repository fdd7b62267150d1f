# Rank each test user's candidates with a trained ablation or the untrained base model
# (zero_shot_<mode>). Resumable in chunks under infer_chunks/: a killed job loses at most
# one chunk. GPU resources come from the dataset's inference preset.
rule infer:
    input:
        unpack(get_infer_inputs),
    output:
        predictions="results/{dataset}/infer/{system}/predictions.parquet",
        run="results/{dataset}/infer/{system}/run.json",
    log:
        "logs/{dataset}/infer/{system}.log",
    benchmark:
        "logs/{dataset}/infer/{system}.benchmark.tsv"
    wildcard_constraints:
        system=systems.llm_system_pattern(config),
    conda:
        "../envs/llm.yaml"
    container:
        "envs/llm.sif"
    threads: 2
    resources:
        gpu=get_inference_resource("gpu"),
        mem_mb=get_inference_resource("mem_mb"),
        runtime=get_inference_resource("runtime"),
    params:
        settings=get_inference_settings,
        preset_name=get_inference_preset_name,
        chunk_dir="results/{dataset}/infer_chunks/{system}",
        trust_remote_code=config["trust_remote_code"],
    script:
        "../workflow_scripts/infer.py"
