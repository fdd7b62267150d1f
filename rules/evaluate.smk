# Metrics of one system's ranking (an LLM system's or a baseline's) with ranx, in the
# standard and the ClayRS (original study) definitions, plus popularity and parse counts.
rule evaluate:
    input:
        unpack(get_ranking_files),
        candidates="results/{dataset}/split/candidates.parquet",
        split="results/{dataset}/split/split.parquet",
    output:
        report(
            "results/{dataset}/metrics/{system}.json",
            caption="../config/report/evaluate_metrics.rst",
            category="Metrics",
            subcategory="{dataset}",
        ),
    log:
        "logs/{dataset}/evaluate/{system}.log",
    benchmark:
        "logs/{dataset}/evaluate/{system}.benchmark.tsv"
    wildcard_constraints:
        system=systems.any_system_pattern(config),
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
