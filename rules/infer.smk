rule infer:
    input:
        unpack(infer_inputs),
    output:
        predictions="results/{dataset}/infer/{ablation}/predictions.parquet",
        run="results/{dataset}/infer/{ablation}/run.json",
    log:
        "logs/{dataset}/infer/{ablation}.log",
    benchmark:
        "logs/{dataset}/infer/{ablation}.benchmark.tsv"
    conda:
        "../envs/llm.yaml"
    threads: 4
    resources:
        gpu=inference_resource("gpu"),
        mem_mb=inference_resource("mem_mb"),
        runtime=inference_resource("runtime"),
    params:
        settings=inference_settings,
        chunk_dir="results/{dataset}/infer_chunks/{ablation}",
        trust_remote_code=config["trust_remote_code"],
    script:
        "../workflow_scripts/infer.py"
