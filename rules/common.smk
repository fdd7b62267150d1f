# Input, param and resource functions of the rules (the rules themselves stay declarative).
# Naming: a function a rule directive calls is `get_<what>(wildcards)` (or, for a resource
# family, `get_<family>_resource(name)` returning one); plain helpers take a dataset name.
# Defaults are the schema's (filled in before any rule is read) or the settings dataclasses'
# (see config/README.md); what a *system* is lives in rekalm/systems.py.
import dataclasses
from pathlib import Path

from rekalm import systems
from rekalm.config import fill_defaults
from rekalm.evaluation.baselines import SEEDED_BASELINES, BaselineSettings
from rekalm.replicates import (
    SUFFIX_PATTERN,
    check_seeds,
    replicate_names,
    replicate_seed,
    split_replicate,
)
from rekalm.ranking.inference_inputs import InferenceSettings
from rekalm.data.prepare import PrepareSettings
from rekalm.training.train import TrainingSettings

# The schema's defaults, for rule files included on their own (tests run single rules on a
# config holding only what those rules read); a no-op after the Snakefile's check_config.
fill_defaults(config, Path(workflow.current_basedir).parent / "config" / "schema.yaml")


# --- datasets and replicates (run.seeds, run.resplit; rekalm/replicates.py) -------------
# Without run.resplit a replicate is a suffix on a system ({replicate}: '' or .seed<s>).
# With run.resplit the replicate of seed s (not the first) is a dataset variant
# "<dataset>.seed<s>" whose split is drawn with seed s: every stage from the split on runs
# under results/<dataset>.seed<s>/, and the split-free stages stay the base dataset's.
SPLIT_FREE_STAGES = ("download", "prepare", "lookup_dbpedia")


def resplit():
    # .get: the rule tests run single rules on configs holding only what those rules read
    return bool(config.get("run", {}).get("resplit", False))


def run_seeds():
    """run.seeds: one replicate of every seeded system per seed (rekalm/replicates.py)."""
    return check_seeds(config["run"]["seeds"])


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


def get_dataset_config(wildcards):
    return dataset_block(wildcards.dataset)


def get_replicate_seed(wildcards):
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


def get_all_targets(wildcards):
    """Per dataset: the comparison report (which pulls every system's metrics) plus the
    training logs of every replicate, which no other rule consumes but the report shows.
    """
    targets = []
    for dataset in config["run"]["datasets"]:
        targets.append(f"results/{dataset}/compare/table.md")
        for ablation in systems.ablations_for(config, dataset):
            for replicate in system_replicates(dataset, ablation):
                name = f"results/{replicate['dataset']}/train/{replicate['name']}"
                targets.append(f"{name}/loss.png")
    return targets


# --- download, prepare, split, mine_rules -------------------------------------------------


def get_dataset_files(wildcards):
    return get_dataset_config(wildcards)["files"]


def get_dataset_format(wildcards):
    return get_dataset_config(wildcards)["format"]


def get_download_settings(wildcards):
    return config.get("download", {})


# The dataset keys the prepare stage reads: the fields of its settings class.
PREPARE_KEYS = [field.name for field in dataclasses.fields(PrepareSettings)]


def get_prepare_settings(wildcards):
    spec = get_dataset_config(wildcards)
    return {key: spec[key] for key in PREPARE_KEYS if key in spec}


def get_split_input(wildcards):
    return stage_path(
        wildcards.dataset, "results/{dataset}/prepare/interactions.parquet"
    )


def get_split_settings(wildcards):
    """The dataset's split settings; with run.resplit the variant's seed draws the split."""
    options = dict(get_dataset_config(wildcards).get("split", {}))
    if resplit():
        options["seed"] = dataset_seed(wildcards.dataset)
    return options


def get_rule_mining_settings(wildcards):
    return get_dataset_config(wildcards)["knowledge"]["collab"]


# --- lookup_dbpedia -------------------------------------------------------------------


def get_knowledge_routes(wildcards):
    """The dataset's graph/text source settings, e.g. {"graph": {"source": "dbpedia"}}."""
    knowledge = get_dataset_config(wildcards).get("knowledge", {})
    return {
        source: knowledge[source]
        for source in ("graph", "text")
        if knowledge.get(source) is not None
    }


def get_domain_name(wildcards):
    return get_dataset_config(wildcards)["domain"]


def get_domain_settings(wildcards):
    """What the lookup needs of the dataset's domain: relation IRIs and attribute columns,
    not sentence templates, so editing a template does not re-run the lookup."""
    domain = config["domains"][get_domain_name(wildcards)]
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


def uses_dbpedia(wildcards):
    return any(
        block.get("source") == "dbpedia"
        for block in get_knowledge_routes(wildcards).values()
    )


def get_original_knowledge_manifest(wildcards):
    """The download manifest naming the original study's knowledge files, for datasets
    whose graph source is `original` (none otherwise)."""
    graph = get_knowledge_routes(wildcards).get("graph", {})
    if graph.get("source") != "original":
        return []
    return f"results/{wildcards.dataset}/download/manifest.json"


def get_dbpedia_settings(wildcards):
    """The dbpedia block for datasets that query DBpedia; {} for offline ones, so that
    editing it does not re-run their lookup."""
    return config.get("dbpedia", {}) if uses_dbpedia(wildcards) else {}


def get_dbpedia_dump_files(wildcards):
    """Local RDF dump files served through oxigraph (none for a remote endpoint)."""
    return (
        (config.get("dbpedia", {}).get("local_dump") or [])
        if uses_dbpedia(wildcards)
        else []
    )


# --- lexicalize, build_sets -----------------------------------------------------------


def source_table(source):
    """The path template of a knowledge source's input table: the named output of the rule
    that produces it (lexicalize.sources.<source>.input = "<rule>.<output>")."""
    reference = config["lexicalize"]["sources"][source]["input"]
    rule_name, output_name = reference.split(".", 1)
    where = f"lexicalize.sources.{source}.input: {reference!r}"
    if not hasattr(rules, rule_name):
        raise ValueError(
            f"{where}: {rule_name!r} names no rule; known: {sorted(rules._rules)}"
        )
    outputs = getattr(rules, rule_name).output
    if output_name not in outputs.keys():
        raise ValueError(
            f"{where}: {rule_name} has no output {output_name!r}; its outputs are {list(outputs.keys())}"
        )
    return getattr(outputs, output_name)


def lexicalized_path(dataset, source):
    """A source's text for a dataset variant: the base dataset's when its input table
    comes from a split-free stage (facts, descriptions), the variant's otherwise (rules).
    """
    table = source_table(source)
    return f"results/{stage_owner(dataset, table)}/lexicalize/{source}.jsonl"


def get_domain_spec(wildcards):
    """The dataset's domain block plus its name (item noun, templates, label)."""
    domain = get_domain_name(wildcards)
    return {"name": domain, **config["domains"][domain]}


def get_lexicalize_inputs(wildcards):
    """The source's table (lexicalize.sources.<source>.input) and the item names."""
    return {
        "knowledge": stage_path(wildcards.dataset, source_table(wildcards.source)),
        "item_names": stage_path(
            wildcards.dataset, "results/{dataset}/prepare/items.parquet"
        ),
    }


def get_ablation_sources(wildcards):
    """The knowledge sources of an ablation, in config order."""
    return list(config["ablations"][wildcards.ablation])


def base_model_dir(dataset):
    """The prepared base model (and tokenizer) folder of the dataset's model."""
    return f"results/models/{dataset_block(dataset)['model']}/base"


def get_build_sets_inputs(wildcards):
    """Split, names, base tokenizer folder and the lexicalized file of each of the ablation's sources."""
    dataset = wildcards.dataset
    inputs = {
        "split": f"results/{dataset}/split/split.parquet",
        "candidates": f"results/{dataset}/split/candidates.parquet",
        "item_names": stage_path(dataset, "results/{dataset}/prepare/items.parquet"),
        "tokenizer": base_model_dir(dataset),
    }
    for source in get_ablation_sources(wildcards):
        inputs[f"knowledge_{source}"] = lexicalized_path(dataset, source)
    return inputs


def training_preset(dataset):
    return config["training"][dataset_block(dataset)["training"]]


def get_training_seq_len(wildcards):
    """The dataset's training sequence length: prompts + answers are fitted to it."""
    return training_preset(wildcards.dataset).get("seq_len", TrainingSettings.seq_len)


# --- prepare_model, train, merge ------------------------------------------------------


def get_base_model_dir(wildcards):
    return base_model_dir(wildcards.dataset)


def get_model_source(wildcards):
    return config["models"][wildcards.model]


def get_training_preset_name(wildcards):
    return get_dataset_config(wildcards)["training"]


def get_training_settings(wildcards):
    """The preset minus its resources (changing a job's runtime must not retrain it), with
    the replicate's seed (training seed and data order)."""
    preset = training_preset(wildcards.dataset)
    settings = {key: value for key, value in preset.items() if key != "resources"}
    return {**settings, "seed": get_replicate_seed(wildcards)}


# CPU threads per training worker (data collation, the optimizer step, logging): a job
# with N GPUs starts N workers, so it asks for N times as many CPUs.
CPUS_PER_TRAINING_WORKER = 8


def get_preset_resource(family, name):
    """A job resource from the dataset's `family` preset (training or inference); the
    defaults are the schema's, filled in when the workflow starts."""

    def resource(wildcards):
        preset = config[family][get_dataset_config(wildcards)[family]]
        return preset["resources"][name]

    return resource


def get_training_resource(name):
    return get_preset_resource("training", name)


def get_training_workers(wildcards):
    """Data-parallel workers of a train job: one per GPU, or the preset's `processes`."""
    preset = training_preset(wildcards.dataset)
    gpus = get_training_resource("gpu")(wildcards)
    return max(gpus, preset.get("processes") or 1, 1)


def get_training_threads(wildcards):
    return CPUS_PER_TRAINING_WORKER * get_training_workers(wildcards)


def get_training_retries():
    """Resubmissions of a train job: each resumes from the newest checkpoint, so a preset
    that needs `resources.max_slices` wall-time slices finishes within its retries.
    Snakemake takes one retry count per rule, so this is the largest any preset needs.
    """
    presets = config["training"].values()
    return max(preset["resources"]["max_slices"] - 1 for preset in presets)


def get_merged_model_output():
    model_dir = directory("results/{dataset}/merge/{ablation}{replicate}/model")
    return temp(model_dir) if config["merge"]["temporary"] else model_dir


# --- baselines ------------------------------------------------------------------------


def get_baseline_seed(wildcards):
    """A seeded baseline's replicate seed; deterministic baselines have one replicate and
    take the validation seed, so that a new run.seeds does not re-run them."""
    if systems.is_seeded(config, wildcards.baseline):
        return get_replicate_seed(wildcards)
    if wildcards.replicate:
        raise ValueError(
            f"baseline {wildcards.baseline!r} is deterministic and has no replicate "
            f"{wildcards.replicate!r}; seeded baselines: {sorted(SEEDED_BASELINES)}"
        )
    return config["baselines"].get("validation_seed", BaselineSettings.validation_seed)


# The keys of the baselines block every baseline reads (rekalm.evaluation.baselines.BaselineSettings).
BASELINE_SHARED_KEYS = ("validation_seed", "validation_fraction", "validation_cutoff")


def get_baseline_settings(wildcards):
    """One baseline's settings: the shared keys plus its own grid only, so that editing one
    grid re-runs only that baseline (params are a rerun trigger)."""
    block = config["baselines"]
    return {
        "seed": get_baseline_seed(wildcards),
        **{key: block[key] for key in BASELINE_SHARED_KEYS if key in block},
        "grid": block["grids"].get(wildcards.baseline, {}),
    }


# --- infer, evaluate, compare ---------------------------------------------------------


def system_replicates(dataset, system):
    """The replicates of a compared system, each {seed, dataset, name}: with run.resplit
    one per dataset variant for every system; else one per seed for trained ablations and
    seeded baselines, and a single one (seed None) for deterministic systems."""
    if resplit():
        return [
            {"seed": seed, "dataset": variant, "name": system}
            for seed, variant in dataset_variants(dataset)
        ]
    if systems.is_seeded(config, system):
        names = replicate_names(system, run_seeds())
        return [
            {"seed": seed, "dataset": dataset, "name": name}
            for seed, name in zip(run_seeds(), names)
        ]
    return [{"seed": None, "dataset": dataset, "name": system}]


def get_inference_preset_name(wildcards):
    return get_dataset_config(wildcards)["inference"]


def inference_preset(wildcards):
    return config["inference"][get_inference_preset_name(wildcards)]


def inference_settings(dataset, system):
    """The preset minus its resources (a new runtime must not re-rank); zero-shot systems
    use their own mode."""
    preset = config["inference"][dataset_block(dataset)["inference"]]
    settings = {key: value for key, value in preset.items() if key != "resources"}
    mode = systems.zero_shot_mode(system)
    if mode is not None:
        settings["mode"] = mode
    return settings


def get_inference_settings(wildcards):
    return inference_settings(wildcards.dataset, wildcards.system)


def check_ranks_every_user(dataset, system):
    """A compared LLM system ranks every test user: the paired tests keep only the users
    every system ranked, so a generate-mode cap would shrink them all to its N users."""
    # No preset, no cap (the rule tests run compare on configs without presets).
    no_preset = "inference" not in dataset_block(dataset)
    if systems.system_kind(config, system) == "baseline" or no_preset:
        return
    settings = inference_settings(dataset, system)
    cap = settings.get("generate_max_users")
    if settings.get("mode", InferenceSettings.mode) == "generate" and cap is not None:
        raise ValueError(
            f"compare {dataset}: {system} ranks in generate mode only the first {cap} test users "
            f"(inference.{dataset_block(dataset)['inference']}.generate_max_users), which would shrink "
            "every paired test to them; set it to null, or build that system's metrics alone "
            f"(results/{dataset}/metrics/{system}.json) and leave it out of run.zero_shot / run.ablations"
        )


def get_inference_resource(name):
    return get_preset_resource("inference", name)


def get_infer_inputs(wildcards):
    """Test prompts plus the model: the merged folder, or base + adapter. Zero-shot
    systems rank the no_kn prompts with the untrained base model."""
    dataset, system = wildcards.dataset, wildcards.system
    base = base_model_dir(dataset)
    if systems.zero_shot_mode(system) is not None:
        return {"test": f"results/{dataset}/build_sets/no_kn/test.jsonl", "model": base}
    ablation, suffix = split_replicate(system)
    replicate_seed(suffix, run_seeds())  # a one-line error for a seed not in run.seeds
    inputs = {"test": f"results/{dataset}/build_sets/{ablation}/test.jsonl"}
    if inference_preset(wildcards).get("load", InferenceSettings.load) == "merged":
        inputs["model"] = f"results/{dataset}/merge/{system}/model"
    else:
        inputs["model"] = base
        inputs["adapter"] = f"results/{dataset}/train/{system}/adapter"
    return inputs


def get_ranking_files(wildcards):
    folder = systems.ranking_dir(config, wildcards.dataset, wildcards.system)
    return {"predictions": f"{folder}/predictions.parquet", "run": f"{folder}/run.json"}


def get_compared_replicates(wildcards):
    """The compare rule's systems in table order, each with its kind and replicates
    [{seed, dataset, name}]; the metrics and run inputs follow the same order."""
    if split_replicate(wildcards.dataset)[1]:
        raise ValueError(
            f"compare {wildcards.dataset!r}: split replicates are compared together under "
            f"results/{base_dataset(wildcards.dataset)}/compare/"
        )
    compared = systems.compared_systems(config, wildcards.dataset)
    for system in compared:
        check_ranks_every_user(wildcards.dataset, system)
    return [
        {
            "name": system,
            "kind": systems.system_kind(config, system),
            "replicates": system_replicates(wildcards.dataset, system),
        }
        for system in compared
    ]


def get_compare_metric_files(wildcards):
    return [
        f"results/{r['dataset']}/metrics/{r['name']}.json"
        for system in get_compared_replicates(wildcards)
        for r in system["replicates"]
    ]


def get_compare_run_files(wildcards):
    return [
        f"{systems.ranking_dir(config, r['dataset'], r['name'])}/run.json"
        for system in get_compared_replicates(wildcards)
        for r in system["replicates"]
    ]


def get_compare_candidate_files(wildcards):
    """One candidates table per split: the dataset's, or with run.resplit each variant's
    (in run.seeds order), whose test users that seed's replicates rank."""
    return [
        f"results/{variant}/split/candidates.parquet"
        for _, variant in dataset_variants(wildcards.dataset)
    ]
