rule download:
    output:
        "results/{dataset}/download/manifest.json",
    log:
        "logs/{dataset}/download.log",
    conda:
        "../envs/data.yaml"
    params:
        files=dataset_files,
        retry=download_policy,
    script:
        "../workflow_scripts/download.py"
