# Input/param functions shared by the rules (the rules themselves stay declarative).
from rekalm.config import ablations_for


def dataset_config(wildcards):
    return config["datasets"][wildcards.dataset]


def dataset_files(wildcards):
    return dataset_config(wildcards)["files"]


def dataset_format(wildcards):
    return dataset_config(wildcards)["format"]


def download_policy(wildcards):
    return config.get("download", {})


def prepare_options(wildcards):
    spec = dataset_config(wildcards)
    keys = (
        "like_if",
        "max_users",
        "slice_seed",
        "min_user_interactions",
        "max_user_interactions",
    )
    return {key: spec[key] for key in keys if key in spec}


def split_options(wildcards):
    return dataset_config(wildcards).get("split", {})


def run_ablations(dataset):
    """The ablations of run.ablations that this dataset's knowledge sources allow."""
    return ablations_for(config, dataset)


def all_targets(wildcards):
    targets = []
    for dataset in config["run"]["datasets"]:
        targets.append(f"results/{dataset}/split/split.parquet")
    return targets
