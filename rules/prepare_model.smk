# Base model as a plain HF folder (config["models"][model]): a GGUF file inside an
# installed package (converted once), a Hub repository at a pinned revision (token from
# the environment variable named by token_env), or a local folder. A local rule: hub
# downloads need internet, which Slurm compute nodes often lack, so on a cluster it runs
# where Snakemake runs (the login node); the other sources are light (hard links, one
# small GGUF conversion).


rule prepare_model:
    output:
        model_dir=directory("results/models/{model}/base"),
    log:
        "logs/models/{model}/prepare_model.log",
    benchmark:
        "logs/models/{model}/prepare_model.benchmark.tsv"
    localrule: True
    conda:
        "../envs/llm.yaml"
    container:
        "envs/llm.sif"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        source=get_model_source,
        trust_remote_code=config["trust_remote_code"],
    script:
        "../workflow_scripts/prepare_model.py"
