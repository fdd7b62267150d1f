rule download:
    output:
        "results/{dataset}/download/manifest.json",
    log:
        "logs/{dataset}/download.log",
    benchmark:
        "logs/{dataset}/download.benchmark.tsv"
    conda:
        "../envs/data.yaml"
    params:
        files=get_dataset_files,
        retry=get_download_settings,
    script:
        "../workflow_scripts/download.py"
