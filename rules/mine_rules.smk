# Collaborative knowledge: association rules over the liked history items of train users
# (knowledge.collab in config; engine semantics in rekalm/knowledge/mine_rules.py).


rule mine_rules:
    input:
        split="results/{dataset}/split/split.parquet",
    output:
        rules="results/{dataset}/mine_rules/rules.parquet",
    log:
        "logs/{dataset}/mine_rules/mine_rules.log",
    benchmark:
        "logs/{dataset}/mine_rules/mine_rules.benchmark.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        options=get_rule_mining_settings,
    script:
        "../workflow_scripts/mine_rules.py"
