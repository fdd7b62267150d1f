# LoRA training of one (dataset, ablation) with the dataset's training preset
# (config["training"][datasets.<dataset>.training]). Checkpoints are written every
# save_steps to results/{dataset}/checkpoints/{ablation}/, outside the outputs: a re-run
# after a kill, a Slurm time-out or a failure resumes from the newest complete one, and
# the rule is resubmitted up to resources.max_slices - 1 times, so a training longer than
# one wall-time limit finishes in slices. The preset's resources.gpu = N > 1 gives the job
# N GPUs on one node, N x 8 CPUs, and N data-parallel workers (`accelerate launch`);
# `processes: N` starts N CPU workers the same way (gloo). {replicate} is '' for the first
# seed of run.seeds and .seed<s> for the others (rekalm/replicates.py): same training set,
# another seed.


rule train:
    input:
        train_set="results/{dataset}/build_sets/{ablation}/train.jsonl",
        base_model=get_base_model_dir,
    output:
        adapter=directory("results/{dataset}/train/{ablation}{replicate}/adapter"),
        log_tsv="results/{dataset}/train/{ablation}{replicate}/train_log.tsv",
        loss_png=report(
            "results/{dataset}/train/{ablation}{replicate}/loss.png",
            caption="../config/report/train_loss.rst",
            category="Training",
            subcategory="{dataset}",
        ),
    log:
        "logs/{dataset}/train/{ablation}{replicate}.log",
    benchmark:
        "logs/{dataset}/train/{ablation}{replicate}.benchmark.tsv"
    wildcard_constraints:
        replicate=SUFFIX_PATTERN,
    retries: get_training_retries()
    conda:
        "../envs/llm.yaml"
    container:
        "envs/llm.sif"
    threads: get_training_threads
    resources:
        gpu=get_training_resource("gpu"),
        mem_mb=get_training_resource("mem_mb"),
        runtime=get_training_resource("runtime"),
        nodes=1,
    params:
        settings=get_training_settings,
        preset_name=get_training_preset_name,
        checkpoint_dir="results/{dataset}/checkpoints/{ablation}{replicate}",
        trust_remote_code=config["trust_remote_code"],
    script:
        "../workflow_scripts/train.py"
