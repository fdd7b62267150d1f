# Merge an ablation's adapter into the base model (merge_and_unload, safetensors, base
# tokenizer) after checking that the merged logits match base + adapter. Optional:
# inference can load base + adapter instead. The merged folder is as large as the base
# model, so merge.temporary marks it temp() (deleted once inference has read it).


rule merge:
    input:
        base_model=get_base_model_dir,
        adapter="results/{dataset}/train/{ablation}{replicate}/adapter",
    output:
        model_dir=get_merged_model_output(),
    log:
        "logs/{dataset}/merge/{ablation}{replicate}.log",
    benchmark:
        "logs/{dataset}/merge/{ablation}{replicate}.benchmark.tsv"
    wildcard_constraints:
        replicate=SUFFIX_PATTERN,
    conda:
        "../envs/llm.yaml"
    container:
        "envs/llm.sif"
    threads: 4
    resources:
        gpu=config["merge"]["gpu"],
        mem_mb=config["merge"]["mem_mb"],
        runtime=config["merge"]["runtime"],
    params:
        dtype=config["merge"]["dtype"],
        device=config["merge"]["device"],
        tolerance=config["merge"]["tolerance"],
        trust_remote_code=config["trust_remote_code"],
    script:
        "../workflow_scripts/merge.py"
