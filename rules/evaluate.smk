rule evaluate:
    input:
        predictions="results/{dataset}/infer/{ablation}/predictions.parquet",
        run="results/{dataset}/infer/{ablation}/run.json",
        candidates="results/{dataset}/split/candidates.parquet",
        split="results/{dataset}/split/split.parquet",
    output:
        report(
            "results/{dataset}/metrics/{ablation}.json",
            caption="../config/report/evaluate_metrics.rst",
            category="Metrics",
            subcategory="{dataset}",
        ),
    log:
        "logs/{dataset}/evaluate/{ablation}.log",
    conda:
        "../envs/metrics.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        metrics=config["metrics"],
    script:
        "../workflow_scripts/evaluate.py"
