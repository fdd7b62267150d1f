# Training and test sets: one job per dataset and ablation (config ablations: name -> sources).
# Prompts are rendered with the base model's tokenizer (its chat template when it has one).


rule build_sets:
    input:
        unpack(get_build_sets_inputs),
    output:
        train="results/{dataset}/build_sets/{ablation}/train.jsonl",
        test="results/{dataset}/build_sets/{ablation}/test.jsonl",
        stats=report(
            "results/{dataset}/build_sets/{ablation}/stats.json",
            caption="../config/report/build_sets_stats.rst",
            category="Training sets",
            subcategory="{dataset}",
        ),
    log:
        "logs/{dataset}/build_sets/{ablation}.log",
    benchmark:
        "logs/{dataset}/build_sets/{ablation}.benchmark.tsv"
    conda:
        "../envs/llm.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        sources=get_ablation_sources,
        domain=get_domain_spec,
        seq_len=get_training_seq_len,
        lexicalize=config["lexicalize"],
        trust_remote_code=config["trust_remote_code"],
    script:
        "../workflow_scripts/build_sets.py"
