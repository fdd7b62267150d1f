# Classical recommenders ranking exactly the test users' candidates (rekalm/evaluation/baselines.py);
# tuned on a validation split of train users. CPU only. Seeded baselines (random, BPR) have
# one replicate per run.seeds entry ({replicate} = '' or .seed<s>); the others only ''.
rule baselines:
    input:
        split="results/{dataset}/split/split.parquet",
        candidates="results/{dataset}/split/candidates.parquet",
    output:
        predictions="results/{dataset}/baselines/{baseline}{replicate}/predictions.parquet",
        run="results/{dataset}/baselines/{baseline}{replicate}/run.json",
        tuning="results/{dataset}/baselines/{baseline}{replicate}/tuning.json",
    log:
        "logs/{dataset}/baselines/{baseline}{replicate}.log",
    benchmark:
        "logs/{dataset}/baselines/{baseline}{replicate}.benchmark.tsv"
    wildcard_constraints:
        baseline="|".join(config["baselines"]["names"]),
        replicate=SUFFIX_PATTERN,
    conda:
        "../envs/data.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        settings=get_baseline_settings,
    script:
        "../workflow_scripts/baselines.py"
