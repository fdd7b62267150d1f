# Input/param functions shared by the rules (the rules themselves stay declarative).
from rekalm.baselines import SEEDED_BASELINES
from rekalm.config import ablations_for
from rekalm.replicates import (
    SUFFIX_PATTERN,
    check_seeds,
    replicate_names,
    replicate_seed,
    split_replicate,
)


def dataset_config(wildcards):
    return dataset_block(wildcards.dataset)


# --- replicates (run.seeds, run.resplit; rekalm/replicates.py) ------------------------
# Without run.resplit a replicate is a suffix on a system ({replicate}: '' or .seed<s>).
# With run.resplit the replicate of seed s (not the first) is a dataset variant
# "<dataset>.seed<s>" whose split is drawn with seed s: every stage from the split on runs
# under results/<dataset>.seed<s>/, and the split-free stages stay the base dataset's.
SPLIT_FREE_STAGES = ("download", "prepare", "lookup_dbpedia")


def resplit():
    # .get: the rule tests run single rules on configs holding only what those rules read
    return bool(config.get("run", {}).get("resplit", False))


def base_dataset(dataset):
    return split_replicate(dataset)[0]


def dataset_seed(dataset):
    """The seed of a dataset variant (the first of run.seeds for the base dataset)."""
    suffix = split_replicate(dataset)[1]
    if suffix and not resplit():
        raise ValueError(
            f"dataset {dataset!r}: {suffix!r} names a split replicate, "
            "which needs run.resplit: true"
        )
    return replicate_seed(suffix, run_seeds())


def dataset_block(dataset):
    """config["datasets"][...] of a dataset or of one of its split replicates."""
    base, suffix = split_replicate(dataset)
    if suffix:
        dataset_seed(dataset)  # a one-line error for a variant outside run.seeds
    return config["datasets"][base]


def dataset_variants(dataset):
    """[(seed, dataset variant)]: one per seed with run.resplit, else the dataset alone."""
    if resplit():
        return list(zip(run_seeds(), replicate_names(dataset, run_seeds())))
    return [(run_seeds()[0], dataset)]


def stage_owner(dataset, path_template):
    """Whose results/{dataset}/<stage>/... file a dataset variant reads: the base
    dataset's for split-free stages, its own otherwise."""
    stage = path_template.split("/")[2]
    return base_dataset(dataset) if stage in SPLIT_FREE_STAGES else dataset


def stage_path(dataset, path_template):
    return path_template.format(dataset=stage_owner(dataset, path_template))


def lexicalized_path(dataset, source):
    """A source's text for a dataset variant: the base dataset's when its input table
    comes from a split-free stage (facts, descriptions), the variant's otherwise (rules).
    """
    table = config["lexicalize"]["sources"][source]["input"]
    return f"results/{stage_owner(dataset, table)}/lexicalize/{source}.jsonl"


def split_input(wildcards):
    return stage_path(
        wildcards.dataset, "results/{dataset}/prepare/interactions.parquet"
    )


def compare_candidate_files(wildcards):
    """One candidates table per split: the dataset's, or with run.resplit each variant's
    (in run.seeds order), whose test users that seed's replicates rank."""
    return [
        f"results/{variant}/split/candidates.parquet"
        for _, variant in dataset_variants(wildcards.dataset)
    ]


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
        "max_unnamed_share",
    )
    return {key: spec[key] for key in keys if key in spec}


def split_options(wildcards):
    """The dataset's split settings; with run.resplit the variant's seed draws the split."""
    options = dict(dataset_config(wildcards).get("split", {}))
    if resplit():
        options["seed"] = dataset_seed(wildcards.dataset)
    return options


def run_ablations(dataset):
    """The ablations of run.ablations that this dataset's knowledge sources allow."""
    return ablations_for(config, dataset)


def run_seeds():
    """run.seeds: one replicate of every seeded system per seed (rekalm/replicates.py)."""
    return check_seeds(config["run"]["seeds"])


def replicate_seed_of(wildcards):
    """The seed of the job's replicate: {replicate} ('' = the first of run.seeds,
    '.seed<s>' = s), or with run.resplit the dataset variant's seed."""
    if resplit():
        if wildcards.replicate:
            raise ValueError(
                f"replicate {wildcards.replicate!r}: with run.resplit the replicates are "
                f"the dataset variants {[v for _, v in dataset_variants(base_dataset(wildcards.dataset))]}"
            )
        return dataset_seed(wildcards.dataset)
    return replicate_seed(wildcards.replicate, run_seeds())


def all_targets(wildcards):
    """Per dataset: the comparison report (which pulls every system's metrics) plus the
    training logs of every replicate, which no other rule consumes but the report shows.
    """
    targets = []
    for dataset in config["run"]["datasets"]:
        targets.append(f"results/{dataset}/compare/table.md")
        for ablation in run_ablations(dataset):
            for replicate in system_replicates(dataset, ablation):
                name = f"results/{replicate['dataset']}/train/{replicate['name']}"
                targets.append(f"{name}/loss.png")
    return targets


def collab_options(wildcards):
    return dataset_config(wildcards)["knowledge"]["collab"]


# --- lookup_dbpedia -------------------------------------------------------------------


def knowledge_routes(wildcards):
    """The dataset's graph/text source settings, e.g. {"graph": {"source": "dbpedia"}}."""
    knowledge = dataset_config(wildcards).get("knowledge", {})
    return {
        source: knowledge[source]
        for source in ("graph", "text")
        if knowledge.get(source) is not None
    }


def dataset_domain(wildcards):
    return dataset_config(wildcards)["domain"]


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
    domain = dataset_domain(wildcards)
    return {"name": domain, **config["domains"][domain]}


def lexicalize_inputs(wildcards):
    """The source's table (lexicalize.sources.<source>.input) and the item names."""
    source = config["lexicalize"]["sources"][wildcards.source]
    return {
        "knowledge": stage_path(wildcards.dataset, source["input"]),
        "item_names": stage_path(
            wildcards.dataset, "results/{dataset}/prepare/items.parquet"
        ),
    }


def ablation_sources(wildcards):
    """The knowledge sources of an ablation, in config order."""
    return list(config["ablations"][wildcards.ablation])


def base_model_name(dataset):
    return dataset_block(dataset)["model"]


def build_sets_inputs(wildcards):
    """Split, names, base tokenizer folder and the lexicalized file of each of the ablation's sources."""
    dataset = wildcards.dataset
    inputs = {
        "split": f"results/{dataset}/split/split.parquet",
        "candidates": f"results/{dataset}/split/candidates.parquet",
        "item_names": stage_path(dataset, "results/{dataset}/prepare/items.parquet"),
        "tokenizer": f"results/models/{base_model_name(dataset)}/base",
    }
    for source in ablation_sources(wildcards):
        inputs[f"knowledge_{source}"] = lexicalized_path(dataset, source)
    return inputs


def training_preset(dataset):
    return config["training"][dataset_block(dataset)["training"]]


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
    return dataset_config(wildcards)["training"]


def training_settings(wildcards):
    """The preset minus its resources (changing a job's runtime must not retrain it), with
    the replicate's seed (training seed and data order)."""
    preset = config["training"][training_preset_name(wildcards)]
    settings = {key: value for key, value in preset.items() if key != "resources"}
    return {**settings, "seed": replicate_seed_of(wildcards)}


# The schema's defaults for a preset's resources block, per preset family.
RESOURCE_DEFAULTS = {
    "training": {"gpu": 0, "mem_mb": 8000, "runtime": 60, "max_slices": 1},
    "inference": {"gpu": 0, "mem_mb": 8000, "runtime": 120},
}
# CPU threads per training worker (data collation, the optimizer step, logging): a job
# with N GPUs starts N workers, so it asks for N times as many CPUs.
CPUS_PER_TRAINING_WORKER = 8


def preset_resource(family, name):
    """A job resource from the dataset's `family` preset (training or inference)."""

    def resource(wildcards):
        preset = config[family][dataset_config(wildcards)[family]]
        return preset.get("resources", {}).get(name, RESOURCE_DEFAULTS[family][name])

    return resource


def training_resource(name):
    return preset_resource("training", name)


def training_workers(wildcards):
    """Data-parallel workers of a train job: one per GPU, or the preset's `processes`."""
    preset = training_preset(wildcards.dataset)
    gpus = training_resource("gpu")(wildcards)
    return max(gpus, preset.get("processes") or 1, 1)


def training_threads(wildcards):
    return CPUS_PER_TRAINING_WORKER * training_workers(wildcards)


def training_retries():
    """Resubmissions of a train job: each resumes from the newest checkpoint, so a preset
    that needs `resources.max_slices` wall-time slices finishes within its retries.
    Snakemake takes one retry count per rule, so this is the largest any preset needs.
    """
    presets = config["training"].values()
    return max(
        preset.get("resources", {}).get("max_slices", 1) - 1 for preset in presets
    )


def merged_model_output():
    model_dir = directory("results/{dataset}/merge/{ablation}{replicate}/model")
    return temp(model_dir) if config["merge"]["temporary"] else model_dir


# --- baselines ------------------------------------------------------------------------


def baseline_seed(wildcards):
    """A seeded baseline's replicate seed; deterministic baselines have one replicate and
    take the validation seed, so that a new run.seeds does not re-run them."""
    if wildcards.baseline in SEEDED_BASELINES:
        return replicate_seed_of(wildcards)
    if wildcards.replicate:
        raise ValueError(
            f"baseline {wildcards.baseline!r} is deterministic and has no replicate "
            f"{wildcards.replicate!r}; seeded baselines: {sorted(SEEDED_BASELINES)}"
        )
    return config["baselines"]["validation_seed"]


def baseline_settings(wildcards):
    """One baseline's settings: the shared keys plus its own grid only, so that editing one
    grid re-runs only that baseline (params are a rerun trigger)."""
    block = config["baselines"]
    return {
        "seed": baseline_seed(wildcards),
        "validation_seed": block["validation_seed"],
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


def _alternatives(names):
    return "(" + "|".join(names) + ")"


def llm_system_pattern():
    """A trained ablation's replicate or a zero-shot system (deterministic: no replicates)."""
    return f"{_alternatives(config['ablations'])}{SUFFIX_PATTERN}|{_alternatives(ZERO_SHOT_SYSTEMS)}"


def any_system_pattern():
    return f"{llm_system_pattern()}|{_alternatives(config['baselines']['names'])}{SUFFIX_PATTERN}"


def system_replicates(dataset, system):
    """The replicates of a compared system, each {seed, dataset, name}: with run.resplit
    one per dataset variant for every system; else one per seed for trained ablations and
    seeded baselines, and a single one (seed None) for deterministic systems."""
    if resplit():
        return [
            {"seed": seed, "dataset": variant, "name": system}
            for seed, variant in dataset_variants(dataset)
        ]
    if system in config["ablations"] or system in SEEDED_BASELINES:
        names = replicate_names(system, run_seeds())
        return [
            {"seed": seed, "dataset": dataset, "name": name}
            for seed, name in zip(run_seeds(), names)
        ]
    return [{"seed": None, "dataset": dataset, "name": system}]


def system_kind(system):
    if system.startswith(ZERO_SHOT_PREFIX):
        return "zero_shot"
    return "baseline" if system in config["baselines"]["names"] else "ablation"


def inference_preset(wildcards):
    return config["inference"][dataset_config(wildcards)["inference"]]


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
    ablation, suffix = split_replicate(system)
    replicate_seed(suffix, run_seeds())  # a one-line error for a seed not in run.seeds
    inputs = {"test": f"results/{dataset}/build_sets/{ablation}/test.jsonl"}
    if inference_preset(wildcards).get("load", "merged") == "merged":
        inputs["model"] = f"results/{dataset}/merge/{system}/model"
    else:
        inputs["model"] = base
        inputs["adapter"] = f"results/{dataset}/train/{system}/adapter"
    return inputs


def ranking_dir(dataset, system):
    """Where a system replicate's predictions.parquet and run.json live."""
    if split_replicate(system)[0] in config["baselines"]["names"]:
        return f"results/{dataset}/baselines/{system}"
    return f"results/{dataset}/infer/{system}"


def ranking_files(wildcards):
    folder = ranking_dir(wildcards.dataset, wildcards.system)
    return {"predictions": f"{folder}/predictions.parquet", "run": f"{folder}/run.json"}


def compared_systems(wildcards):
    """Table order: zero-shot rows, the trained ablations, then the baselines."""
    dataset = wildcards.dataset
    return [*zero_shot_systems(), *run_ablations(dataset), *run_baselines()]


def compared_replicates(wildcards):
    """The compare rule's systems in table order, each with its kind and replicates
    [{seed, dataset, name}]; the metrics and run inputs follow the same order."""
    if split_replicate(wildcards.dataset)[1]:
        raise ValueError(
            f"compare {wildcards.dataset!r}: split replicates are compared together under "
            f"results/{base_dataset(wildcards.dataset)}/compare/"
        )
    return [
        {
            "name": system,
            "kind": system_kind(system),
            "replicates": system_replicates(wildcards.dataset, system),
        }
        for system in compared_systems(wildcards)
    ]


def compare_metric_files(wildcards):
    return [
        f"results/{r['dataset']}/metrics/{r['name']}.json"
        for system in compared_replicates(wildcards)
        for r in system["replicates"]
    ]


def compare_run_files(wildcards):
    return [
        f"{ranking_dir(r['dataset'], r['name'])}/run.json"
        for system in compared_replicates(wildcards)
        for r in system["replicates"]
    ]
