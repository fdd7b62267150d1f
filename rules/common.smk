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
    """Per dataset: the comparison report (which pulls every system's metrics) plus the
    training logs, which no other rule consumes but the report shows."""
    targets = []
    for dataset in config["run"]["datasets"]:
        targets.append(f"results/{dataset}/compare/table.md")
        for ablation in run_ablations(dataset):
            targets.append(f"results/{dataset}/train/{ablation}/loss.png")
    return targets


def collab_options(wildcards):
    return dataset_config(wildcards)["knowledge"]["collab"]


# --- lookup_dbpedia -------------------------------------------------------------------


def knowledge_routes(wildcards):
    """The dataset's graph/text source settings, e.g. {"graph": {"source": "dbpedia"}}."""
    knowledge = config["datasets"][wildcards.dataset].get("knowledge", {})
    return {
        source: knowledge[source]
        for source in ("graph", "text")
        if knowledge.get(source) is not None
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


def original_knowledge_manifest(wildcards):
    """The download manifest naming the original study's knowledge files, for datasets
    whose graph source is `original` (none otherwise)."""
    graph = knowledge_routes(wildcards).get("graph", {})
    if graph.get("source") != "original":
        return []
    return f"results/{wildcards.dataset}/download/manifest.json"


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


# The schema's defaults for a preset's resources block, per preset family.
RESOURCE_DEFAULTS = {
    "training": {"gpu": 0, "mem_mb": 8000, "runtime": 60},
    "inference": {"gpu": 0, "mem_mb": 8000, "runtime": 120},
}


def preset_resource(family, name):
    """A job resource from the dataset's `family` preset (training or inference)."""

    def resource(wildcards):
        preset = config[family][config["datasets"][wildcards.dataset][family]]
        return preset.get("resources", {}).get(name, RESOURCE_DEFAULTS[family][name])

    return resource


def training_resource(name):
    return preset_resource("training", name)


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


def run_baselines():
    """The baselines that join rule all and the comparison (run.baselines)."""
    return list(config["baselines"]["names"]) if config["run"]["baselines"] else []


# --- infer, evaluate, compare ---------------------------------------------------------
# A "system" is anything that ranks the test candidates: a trained ablation, the untrained
# base model (zero_shot_<mode>) or a classical baseline.

ZERO_SHOT_PREFIX = "zero_shot_"
ZERO_SHOT_SYSTEMS = [ZERO_SHOT_PREFIX + mode for mode in ("score", "generate")]


def zero_shot_systems():
    return [ZERO_SHOT_PREFIX + mode for mode in config["run"]["zero_shot"]]


def llm_system_pattern():
    return "|".join([*config["ablations"], *ZERO_SHOT_SYSTEMS])


def any_system_pattern():
    return "|".join([llm_system_pattern(), *config["baselines"]["names"]])


def inference_preset(wildcards):
    return config["inference"][config["datasets"][wildcards.dataset]["inference"]]


def inference_settings(wildcards):
    """The preset minus its resources (a new runtime must not re-rank); zero-shot systems
    use their own mode."""
    preset = inference_preset(wildcards)
    settings = {key: value for key, value in preset.items() if key != "resources"}
    if wildcards.system.startswith(ZERO_SHOT_PREFIX):
        settings["mode"] = wildcards.system.removeprefix(ZERO_SHOT_PREFIX)
    return settings


def inference_resource(name):
    return preset_resource("inference", name)


def infer_inputs(wildcards):
    """Test prompts plus the model: the merged folder, or base + adapter. Zero-shot
    systems rank the no_kn prompts with the untrained base model."""
    dataset, system = wildcards.dataset, wildcards.system
    base = f"results/models/{base_model_name(dataset)}/base"
    if system.startswith(ZERO_SHOT_PREFIX):
        return {"test": f"results/{dataset}/build_sets/no_kn/test.jsonl", "model": base}
    inputs = {"test": f"results/{dataset}/build_sets/{system}/test.jsonl"}
    if inference_preset(wildcards).get("load", "merged") == "merged":
        inputs["model"] = f"results/{dataset}/merge/{system}/model"
    else:
        inputs["model"] = base
        inputs["adapter"] = f"results/{dataset}/train/{system}/adapter"
    return inputs


def ranking_dir(dataset, system):
    """Where a system's predictions.parquet and run.json live."""
    if system in config["baselines"]["names"]:
        return f"results/{dataset}/baselines/{system}"
    return f"results/{dataset}/infer/{system}"


def ranking_files(wildcards):
    folder = ranking_dir(wildcards.dataset, wildcards.system)
    return {"predictions": f"{folder}/predictions.parquet", "run": f"{folder}/run.json"}


def compared_systems(wildcards):
    """Table order: zero-shot rows, the trained ablations, then the baselines."""
    dataset = wildcards.dataset
    return [*zero_shot_systems(), *run_ablations(dataset), *run_baselines()]


def compare_metric_files(wildcards):
    return [
        f"results/{wildcards.dataset}/metrics/{system}.json"
        for system in compared_systems(wildcards)
    ]


def compare_run_files(wildcards):
    return [
        f"{ranking_dir(wildcards.dataset, system)}/run.json"
        for system in compared_systems(wildcards)
    ]
