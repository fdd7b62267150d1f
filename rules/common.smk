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
        for ablation in run_ablations(dataset):
            targets.append(f"results/{dataset}/train/{ablation}/adapter")
        targets += baseline_targets(dataset)
    return targets


def collab_options(wildcards):
    return dataset_config(wildcards)["knowledge"]["collab"]


# --- lookup_dbpedia -------------------------------------------------------------------


def knowledge_routes(wildcards):
    """The dataset's graph/text source settings, e.g. {"graph": {"source": "dbpedia"}}."""
    knowledge = config["datasets"][wildcards.dataset].get("knowledge", {})
    return {
        source: knowledge[source] for source in ("graph", "text") if source in knowledge
    }


def dataset_domain(wildcards):
    return config["datasets"][wildcards.dataset]["domain"]


def domain_settings(wildcards):
    """What the lookup needs of the dataset's domain: relation IRIs and attribute columns,
    not sentence templates, so editing a template does not re-run the lookup."""
    domain = config["domains"][dataset_domain(wildcards)]
    keys = ("dbpedia_types", "label_qualifiers", "year_property")
    settings = {key: domain[key] for key in keys if key in domain}
    settings["relations"] = {
        name: {"uri": spec["uri"]}
        for name, spec in (domain.get("relations") or {}).items()
    }
    settings["attribute_relations"] = {
        name: {"column": spec["column"]}
        for name, spec in (domain.get("attribute_relations") or {}).items()
    }
    return settings


def _uses_dbpedia(wildcards):
    return any(
        block.get("source") == "dbpedia"
        for block in knowledge_routes(wildcards).values()
    )


def dbpedia_settings(wildcards):
    """The dbpedia block for datasets that query DBpedia; {} for offline ones, so that
    editing it does not re-run their lookup."""
    return config.get("dbpedia", {}) if _uses_dbpedia(wildcards) else {}


def dbpedia_dump_files(wildcards):
    """Local RDF dump files served through oxigraph (none for a remote endpoint)."""
    return (
        (config.get("dbpedia", {}).get("local_dump") or [])
        if _uses_dbpedia(wildcards)
        else []
    )


# --- lexicalize, build_sets -----------------------------------------------------------


def domain_spec(wildcards):
    """The dataset's domain block plus its name (item noun, templates, label)."""
    domain = config["datasets"][wildcards.dataset]["domain"]
    return {"name": domain, **config["domains"][domain]}


def lexicalize_inputs(wildcards):
    """The source's table (lexicalize.sources.<source>.input) and the item names."""
    source = config["lexicalize"]["sources"][wildcards.source]
    return {
        "knowledge": source["input"].format(dataset=wildcards.dataset),
        "item_names": f"results/{wildcards.dataset}/prepare/items.parquet",
    }


def ablation_sources(wildcards):
    """The knowledge sources of an ablation, in config order."""
    return list(config["ablations"][wildcards.ablation])


def base_model_name(dataset):
    return config["datasets"][dataset]["model"]


def build_sets_inputs(wildcards):
    """Split, names, base tokenizer folder and the lexicalized file of each of the ablation's sources."""
    dataset = wildcards.dataset
    inputs = {
        "split": f"results/{dataset}/split/split.parquet",
        "candidates": f"results/{dataset}/split/candidates.parquet",
        "item_names": f"results/{dataset}/prepare/items.parquet",
        "tokenizer": f"results/models/{base_model_name(dataset)}/base",
    }
    for source in ablation_sources(wildcards):
        inputs[f"knowledge_{source}"] = f"results/{dataset}/lexicalize/{source}.jsonl"
    return inputs


def training_preset(dataset):
    return config["training"][config["datasets"][dataset]["training"]]


def training_seq_len(wildcards):
    """The dataset's training sequence length: prompts + answers are fitted to it."""
    return training_preset(wildcards.dataset).get(
        "seq_len", 2048
    )  # rekalm.train.TrainingSettings default


# --- prepare_model, train, merge ------------------------------------------------------


def base_model_dir(wildcards):
    return f"results/models/{base_model_name(wildcards.dataset)}/base"


def model_source(wildcards):
    return config["models"][wildcards.model]


def training_preset_name(wildcards):
    return config["datasets"][wildcards.dataset]["training"]


def training_settings(wildcards):
    """The preset minus its resources: changing a job's runtime must not retrain it."""
    preset = config["training"][training_preset_name(wildcards)]
    return {key: value for key, value in preset.items() if key != "resources"}


TRAINING_RESOURCE_DEFAULTS = {"gpu": 0, "mem_mb": 8000, "runtime": 60}


def training_resource(name):
    def resource(wildcards):
        preset = config["training"][training_preset_name(wildcards)]
        return preset.get("resources", {}).get(name, TRAINING_RESOURCE_DEFAULTS[name])

    return resource


def merged_model_output():
    model_dir = directory("results/{dataset}/merge/{ablation}/model")
    return temp(model_dir) if config["merge"]["temporary"] else model_dir


# --- baselines ------------------------------------------------------------------------


def baseline_settings(wildcards):
    """One baseline's settings: the shared keys plus its own grid only, so that editing one
    grid re-runs only that baseline (params are a rerun trigger)."""
    block = config["baselines"]
    return {
        "seed": block["seed"],
        "validation_fraction": block["validation_fraction"],
        "validation_cutoff": block["validation_cutoff"],
        "grid": block["grids"].get(wildcards.baseline, {}),
    }


def baseline_targets(dataset):
    """Every configured baseline's ranx run for a dataset (for rule all / compare)."""
    return [
        f"results/{dataset}/baselines/{name}/run.json"
        for name in config["baselines"]["names"]
    ]
