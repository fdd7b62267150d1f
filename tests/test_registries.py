"""One owner per registry and per default: the schema's enums are the registries' keys, no
config key has a default in two places, and what a system is comes from rekalm.systems."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import sys
from pathlib import Path

import pytest
import yaml

from rekalm import registries, systems
from rekalm.config import ConfigError, check_config
from rekalm.data.download import DownloadSettings
from rekalm.data.prepare import FORMATS, PrepareSettings
from rekalm.data.split import SplitSettings
from rekalm.evaluation.baselines import BASELINES, SEEDED_BASELINES, BaselineSettings, register_baseline
from rekalm.evaluation.evaluate import MetricSettings
from rekalm.extensions import load_extensions
from rekalm.knowledge.dbpedia import DbpediaSettings
from rekalm.knowledge.lexicalize import LEXICALIZERS
from rekalm.knowledge.mine_rules import ENGINES, RuleMiningSettings
from rekalm.knowledge.original_knowledge import OriginalGraphSettings
from rekalm.llm.build_inputs import BuildSettings
from rekalm.ranking.inference_inputs import InferenceSettings
from rekalm.training.train import TrainingSettings

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
    "knowledge.graph (source: original)": (D["knowledge"]["properties"]["graph"], OriginalGraphSettings),
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


# ---------------------------------------------------------------- a name that is taken


@dataclasses.dataclass(frozen=True)
class Decorator:
    """How an extension registers into one registry, and how to read a unit's function back."""

    module: str
    name: str
    arguments: str  # the decorator's arguments after the name
    built_in: str  # a name the project registers itself
    units: dict
    function_of: object = staticmethod(lambda unit: unit)

    def source(self, name: str, replace: bool = False, function: str = "my_unit") -> str:
        extra = self.arguments + (", replace=True" if replace else "")
        return (
            f"from {self.module} import {self.name}\n\n\n@{self.name}({name!r}{extra})\n"
            f"def {function}(*args, **kwargs):\n    return None\n"
        )


DECORATORS = {
    "knowledge sources": Decorator(
        "rekalm.knowledge.lexicalize",
        "register_lexicalizer",
        ", key='item', required_columns=('item',)",
        "graph",
        LEXICALIZERS,
        lambda unit: unit.function,
    ),
    "baselines": Decorator("rekalm.evaluation.baselines", "register_baseline", "", "popularity", BASELINES),
    "dataset formats": Decorator(
        "rekalm.data.prepare",
        "register_format",
        ", roles=('ratings',)",
        "ml1m_recbole",
        FORMATS,
        lambda unit: unit.parse,
    ),
    "rule-mining engines": Decorator("rekalm.knowledge.mine_rules", "register_engine", "", "bitset", ENGINES),
}


def test_every_registry_has_its_decorator_under_test():
    assert sorted(DECORATORS) == sorted(registries.SCHEMA_ENUMS)


@pytest.fixture
def restored_registries():
    """Every registry as it was before the test (extension files register into them)."""
    saved = [(decorator.units, dict(decorator.units)) for decorator in DECORATORS.values()]
    seeded = set(SEEDED_BASELINES)
    yield
    for units, contents in saved:
        units.clear()
        units.update(contents)
    SEEDED_BASELINES.clear()
    SEEDED_BASELINES.update(seeded)


def write_unit(path: Path, source: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    return str(path)


@pytest.mark.parametrize("registry", sorted(DECORATORS))
def test_an_extension_under_a_built_in_name_is_an_error_naming_both(registry, tmp_path, restored_registries):
    """An extension lexicalizer called `graph` (or a baseline called `popularity`) used to
    replace the built-in one silently: every row of graph.jsonl was the extension's."""
    decorator = DECORATORS[registry]
    built_in = decorator.units[decorator.built_in]
    path = write_unit(tmp_path / "lab" / "clash.py", decorator.source(decorator.built_in))
    with pytest.raises(registries.RegistryError) as error:
        load_extensions([path])
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{registry}: {decorator.built_in!r} is already registered by {decorator.module}.")
    assert f"my_unit ({path}) cannot take the name" in message and "replace=True" in message
    assert decorator.units[decorator.built_in] is built_in


@pytest.mark.parametrize("registry", sorted(DECORATORS))
def test_replace_true_takes_a_built_in_name_with_a_warning(registry, tmp_path, restored_registries, caplog):
    decorator = DECORATORS[registry]
    path = write_unit(tmp_path / "replacing.py", decorator.source(decorator.built_in, replace=True))
    with caplog.at_level("WARNING", logger="rekalm.common.registry"):
        (module,) = load_extensions([path])
    assert f"replaced by my_unit ({path}) (replace=True)" in caplog.text
    assert decorator.function_of(decorator.units[decorator.built_in]) is module.my_unit


def test_the_same_definition_imported_again_is_no_conflict(tmp_path, restored_registries, monkeypatch):
    """Extensions are imported at workflow start and in every job; a module may also be
    reached by its file path and by its module name, or reloaded: one definition, no error."""
    decorator = DECORATORS["baselines"]
    path = write_unit(tmp_path / "toy_units.py", decorator.source("toy_baseline"))
    (first,) = load_extensions([path])
    assert load_extensions([path]) == [first]
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        importlib.reload(importlib.import_module("toy_units"))  # the same file under another module name
    finally:
        sys.modules.pop("toy_units", None)
    assert BASELINES["toy_baseline"].__code__.co_filename == path
    # Another function under that name is a conflict, wherever it is defined.
    other = write_unit(tmp_path / "toy_units_2.py", decorator.source("toy_baseline", function="another_unit"))
    with pytest.raises(registries.RegistryError, match=r"'toy_baseline' is already registered by toy_units\.my_unit"):
        load_extensions([other])


def test_a_replacing_baseline_takes_its_own_seededness(restored_registries):
    @register_baseline("random", replace=True)
    def deterministic_random(data, seed, threads):
        return lambda users, items: items * 0.0

    assert "random" not in SEEDED_BASELINES and BASELINES["random"] is deterministic_random


def test_every_decorator_has_one_documented_import_path():
    # Extension authors import from rekalm.registries; it hands out the very function the stage owns.
    from rekalm.data.prepare import register_format
    from rekalm.evaluation.baselines import register_baseline
    from rekalm.knowledge.lexicalize import register_lexicalizer
    from rekalm.knowledge.mine_rules import register_engine

    owned = [register_format, register_lexicalizer, register_baseline, register_engine]
    assert [getattr(registries, name) for name in registries.DECORATORS] == owned
    assert set(registries.DECORATORS) <= set(registries.__all__)
    with pytest.raises(AttributeError, match="register_nothing"):
        registries.register_nothing  # noqa: B018


def test_old_module_paths_still_work_for_one_release_with_a_deprecation_warning():
    import importlib
    import sys
    import warnings

    from rekalm.moved_modules import MOVED, new_name

    for old in MOVED:
        sys.modules.pop(f"rekalm.{old}", None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(f"rekalm.{old}")
        assert module is importlib.import_module(new_name(f"rekalm.{old}")), old
        assert any(
            issubclass(w.category, DeprecationWarning) and new_name(f"rekalm.{old}") in str(w.message) for w in caught
        ), old
    # An extension written for 0.1.0 registers into the one registry.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from rekalm.prepare import FORMATS as old_formats
    from rekalm.data.prepare import FORMATS

    assert old_formats is FORMATS


def test_the_old_paths_map_every_moved_module_and_nothing_else():
    from rekalm.moved_modules import MOVED

    package = REPO / "rekalm"
    moved = {path.stem: path.parent.name for path in package.glob("*/*.py") if path.stem != "__init__"}
    new_since_the_move = {"text", "registry"}  # no old path to keep
    assert MOVED == {name: family for name, family in moved.items() if name not in new_since_the_move}
