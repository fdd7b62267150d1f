"""One owner per registry and per default: the schema's enums are the registries' keys, no
config key has a default in two places, and what a system is comes from rekalm.systems."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from rekalm import registries, systems
from rekalm.baselines import BaselineSettings
from rekalm.build_inputs import BuildSettings
from rekalm.config import ConfigError, check_config
from rekalm.dbpedia import DbpediaSettings
from rekalm.download import DownloadSettings
from rekalm.evaluate import MetricSettings
from rekalm.inference_inputs import InferenceSettings
from rekalm.mine_rules import RuleMiningSettings
from rekalm.prepare import FORMATS, PrepareSettings
from rekalm.split import SplitSettings
from rekalm.train import TrainingSettings

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
D, P = SCHEMA["$defs"], SCHEMA["properties"]


def shipped_config() -> dict:
    config: dict = {}
    for name in ("config.yaml", "domains.yaml"):
        config.update(yaml.safe_load((REPO / "config" / name).read_text()))
    return config


@pytest.mark.parametrize("registry", sorted(registries.SCHEMA_ENUMS))
def test_the_schema_enums_are_the_registries_keys(registry):
    keys = registries.registry_keys()[registry]
    for path in registries.SCHEMA_ENUMS[registry]:
        assert sorted(registries.schema_enum(SCHEMA, path)) == sorted(keys), (registry, path)


def test_the_knowledge_sources_of_a_dataset_are_the_registered_lexicalizers():
    sources = sorted(registries.registry_keys()["knowledge sources"])
    assert sorted(D["knowledge"]["properties"]) == sources
    assert sorted(P["lexicalize"]["properties"]["sources"]["default"]) == sources


# Each config block a settings class is the typed view of: (schema block, class, keys that
# are fields under another name or nested blocks the class flattens).
SETTINGS_BLOCKS = {
    "training preset": (D["training_preset"], TrainingSettings),
    "inference preset": (D["inference_preset"], InferenceSettings),
    "split": (D["split"], SplitSettings),
    "knowledge.collab": (D["knowledge"]["properties"]["collab"], RuleMiningSettings),
    "dbpedia": (P["dbpedia"], DbpediaSettings),
    "lexicalize": (P["lexicalize"], BuildSettings),
    "metrics": (P["metrics"], MetricSettings),
    "baselines": (P["baselines"], BaselineSettings),
    "download": (P["download"], DownloadSettings),
    "dataset (prepare keys)": (D["dataset"], PrepareSettings),
}
# Keys the workflow layer reads to plan jobs: their defaults are the schema's.
WORKFLOW_KEYS = {"resources", "sources", "names", "grids"}


def _defaults_within(block: dict) -> list[str]:
    found = []
    for key, spec in block.get("properties", {}).items():
        if key in WORKFLOW_KEYS:
            continue
        if "default" in spec and spec["default"] != {}:
            found.append(key)
        found += [f"{key}.{inner}" for inner in _defaults_within(spec)]
    return found


@pytest.mark.parametrize("block", sorted(SETTINGS_BLOCKS))
def test_a_settings_class_owns_its_blocks_defaults(block):
    """A stage setting's default is its settings dataclass's, not also the schema's."""
    schema_block, settings_class = SETTINGS_BLOCKS[block]
    fields = {field.name for field in dataclasses.fields(settings_class)}
    prepare_keys = {f.name for f in dataclasses.fields(PrepareSettings)}
    duplicated = [
        key for key in _defaults_within(schema_block) if block != "dataset (prepare keys)" or key in prepare_keys
    ]
    assert duplicated == [], f"{block}: schema defaults {duplicated} duplicate {settings_class.__name__}'s"
    assert fields, settings_class


def test_a_preset_without_settings_gets_the_settings_classes_defaults():
    config = shipped_config()
    config["training"]["cpu_small"] = {"resources": {"gpu": 0}}
    check_config(config, REPO / "config" / "schema.yaml")
    preset = config["training"]["cpu_small"]
    assert preset["resources"] == {"gpu": 0, "mem_mb": 8000, "runtime": 60, "max_slices": 1}  # the schema's
    assert TrainingSettings.from_config({k: v for k, v in preset.items() if k != "resources"}) == TrainingSettings()


def test_every_format_names_the_roles_it_reads():
    for name, spec in FORMATS.items():
        assert spec.roles and not set(spec.roles) & set(spec.optional_roles), name


def test_a_dataset_missing_a_role_of_its_format_is_refused_at_validation():
    config = shipped_config()
    del config["datasets"]["ml1m_mini"]["files"]["items"]
    with pytest.raises(
        ConfigError, match=r"datasets\.ml1m_mini\.files: format 'ml1m_recbole' needs the file role\(s\) \['items'\]"
    ):
        check_config(config, REPO / "config" / "schema.yaml")


def test_systems_name_kind_place_and_order():
    config = copy.deepcopy(shipped_config())
    check_config(config, REPO / "config" / "schema.yaml")
    dataset = "ml1m_mini"
    names = systems.compared_systems(config, dataset)
    kinds = [systems.system_kind(config, name) for name in names]
    assert kinds == sorted(kinds, key=systems.KINDS.index)  # zero-shot rows, ablations, baselines
    assert names[: len(config["run"]["zero_shot"])] == [systems.zero_shot_name(m) for m in config["run"]["zero_shot"]]
    assert systems.ranking_dir(config, dataset, "bpr.seed23") == f"results/{dataset}/baselines/bpr.seed23"
    assert systems.ranking_dir(config, dataset, "no_kn.seed23") == f"results/{dataset}/infer/no_kn.seed23"
    assert systems.zero_shot_mode("zero_shot_generate") == "generate" and systems.zero_shot_mode("no_kn") is None
    assert (
        systems.is_seeded(config, "no_kn")
        and systems.is_seeded(config, "bpr")
        and not systems.is_seeded(config, "ease")
    )
    assert list(systems.ZERO_SHOT_MODES) == P["run"]["properties"]["zero_shot"]["items"]["enum"]
    assert list(systems.ZERO_SHOT_MODES) == D["inference_preset"]["properties"]["mode"]["enum"]
