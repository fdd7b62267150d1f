# Classical recommenders ranking exactly the test users' candidates (rekalm/baselines.py);
# tuned on a validation split of train users. CPU only.
rule baselines:
    input:
        split="results/{dataset}/split/split.parquet",
        candidates="results/{dataset}/split/candidates.parquet",
    output:
        predictions="results/{dataset}/baselines/{baseline}/predictions.parquet",
        run="results/{dataset}/baselines/{baseline}/run.json",
        tuning="results/{dataset}/baselines/{baseline}/tuning.json",
    log:
        "logs/{dataset}/baselines/{baseline}.log",
    benchmark:
        "logs/{dataset}/baselines/{baseline}.benchmark.tsv"
    wildcard_constraints:
        baseline="|".join(config["baselines"]["names"]),
    conda:
        "../envs/data.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        settings=baseline_settings,
    script:
        "../workflow_scripts/baselines.py"
