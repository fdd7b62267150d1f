import copy
from pathlib import Path

import pytest

from rekalm.config import ConfigError, check_config, load_yaml
from rekalm.systems import ablations_for

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema.yaml"


@pytest.fixture(scope="module")
def shipped_config() -> dict:
    config = load_yaml(REPO / "config" / "config.yaml")
    config.update(load_yaml(REPO / "config" / "domains.yaml"))
    return config


def test_shipped_config_is_valid(shipped_config):
    check_config(shipped_config, SCHEMA)


def with_change(config: dict, path: str, value: object) -> dict:
    changed = copy.deepcopy(config)
    *parents, last = path.split(".")
    node = changed
    for key in parents:
        node = node.setdefault(key, {})
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return changed


@pytest.mark.parametrize(
    "path,value,message",
    [
        (
            "datasets.ml1m.split.test_fraction",
            1.5,
            r"datasets\.ml1m\.split\.test_fraction: 1\.5 is greater than or equal to the maximum of 1",
        ),
        (
            "datasets.ml1m.split.method",
            "random",
            r"datasets\.ml1m\.split\.method: 'random' is not one of \['original', 'seeded'\]",
        ),
        (
            "datasets.ml1m.split.unknown_key",
            1,
            r"datasets\.ml1m\.split: Additional properties are not allowed \('unknown_key' was unexpected\)",
        ),
        ("datasets.ml1m.like_if", "=> 4", r"datasets\.ml1m\.like_if: '=> 4' does not match"),
        ("datasets.ml1m.format", "csv", r"datasets\.ml1m\.format: 'csv' is not one of"),
        ("datasets.ml1m.max_users", "many", r"datasets\.ml1m\.max_users: 'many' is not of type 'integer', 'null'"),
        (
            "datasets.ml1m.knowledge.collab.min_support",
            0,
            r"datasets\.ml1m\.knowledge\.collab\.min_support: 0 is less than or equal to the minimum of 0",
        ),
        ("datasets.ml1m.files.ratings.sha256", "abc", r"datasets\.ml1m\.files\.ratings\.sha256: 'abc' does not match"),
        ("datasets.ml1m.domain", KeyError, r"datasets\.ml1m: 'domain' is a required property"),
        ("ablations.no_kn", ["pictures"], r"ablations\.no_kn\.0: 'pictures' is not one of"),
        ("run.datasets", ["ml1m", "imdb"], r"run\.datasets: 'imdb' is not defined under datasets"),
        ("run.ablations", ["everything"], r"run\.ablations: 'everything' is not defined under ablations"),
        ("datasets.ml1m.domain", "cooking", r"datasets\.ml1m\.domain: 'cooking' is not defined under domains"),
        ("inference.full.mode", "sample", r"inference\.full\.mode: 'sample' is not one of \['score', 'generate'\]"),
        ("inference.cpu_small.device", "gpu0", r"inference\.cpu_small\.device: 'gpu0' does not match"),
        ("metrics.cutoffs", [0, 5], r"metrics\.cutoffs\.0: 0 is less than the minimum of 1"),
        ("metrics.significance.test", "wilcoxon", r"metrics\.significance\.test: 'wilcoxon' is not one of"),
        ("run.zero_shot", ["beam"], r"run\.zero_shot\.0: 'beam' is not one of \['score', 'generate'\]"),
        (
            "ablations.zero_shot_mine",
            [],
            r"ablations\.zero_shot_mine: the name is taken by a zero-shot system or a baseline",
        ),
        ("ablations.ease", ["graph"], r"ablations\.ease: the name is taken"),
        ("surprise", True, r"\(top level\): Additional properties are not allowed \('surprise' was unexpected\)"),
    ],
)
def test_bad_values_name_the_key(shipped_config, path, value, message):
    with pytest.raises(ConfigError, match=message) as error:
        check_config(with_change(shipped_config, path, value), SCHEMA)
    assert "\n" not in str(error.value)


def test_references_to_presets_are_checked(shipped_config):
    for key, block in (("model", "models"), ("training", "training"), ("inference", "inference")):
        if block not in shipped_config:
            continue
        with pytest.raises(ConfigError, match=rf"datasets\.ml1m\.{key}: 'nope' is not defined under {block}"):
            check_config(with_change(shipped_config, f"datasets.ml1m.{key}", "nope"), SCHEMA)


def test_ablations_follow_the_sources_a_dataset_has(shipped_config):
    everything = list(shipped_config["ablations"])
    assert ablations_for(shipped_config, "ml1m", everything) == everything
    mini = ablations_for(shipped_config, "ml1m_mini", everything)
    assert "no_kn" in mini and all("text" not in shipped_config["ablations"][name] for name in mini)


# --- config files are read strictly ---------------------------------------------------


def test_a_duplicate_key_is_rejected_with_file_and_line(tmp_path):
    path = tmp_path / "override.yaml"
    path.write_text("run:\n  datasets: [ml1m_mini]\n  datasets: [ml1m]\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3:3: duplicate key 'datasets' \(first given on line 2\)$"):
        load_yaml(path)


def test_a_duplicate_key_deep_inside_is_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("datasets:\n  ml1m:\n    like_if: '>= 4'\n    split: {seed: 1, seed: 2}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:4:22: duplicate key 'seed'"):
        load_yaml(path)


def test_yaml_merge_keys_may_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("base: &base {seq_len: 64, lr: 1}\nsmall:\n  <<: *base\n  seq_len: 32\n")
    assert load_yaml(path)["small"] == {"seq_len": 32, "lr": 1}


@pytest.mark.parametrize(
    "text,where",
    [
        ("run:\n  datasets: [ml1m\n  ablations: [no_kn]\n", ":3:"),
        ("run:\n\tdatasets: [a]\n", ":2:1:"),
        ("a: 1\n b: 2\n", ":2:"),
    ],
)
def test_a_yaml_syntax_error_names_file_and_line(tmp_path, text, where):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{path}{where}") as error:
        load_yaml(path)
    assert "\n" not in str(error.value)


def test_the_workflow_stops_on_a_duplicate_key_in_a_config_file(tmp_path):
    from snakemake_helpers import CONFIG_FILES, api_run

    override = tmp_path / "override.yaml"
    override.write_text("run:\n  zero_shot: [score]\n  zero_shot: [generate]\n")
    with pytest.raises(Exception, match=r"override\.yaml:3:3: duplicate key 'zero_shot'"):
        api_run(tmp_path, [], "dryrun", [*CONFIG_FILES, override])


# --- hub revisions are pinned -----------------------------------------------------------


@pytest.mark.parametrize("revision", ["main", "v1.0", "1460c22", "1460C22666392E470910CE3D44FFEB2AB7DBD4DF"])
def test_a_hub_revision_that_is_not_a_commit_is_refused(shipped_config, revision):
    changed = with_change(shipped_config, "models.llama3_8b.revision", revision)
    with pytest.raises(
        ConfigError,
        match=(
            rf"models\.llama3_8b\.revision: '{revision}' is not a 40-character commit "
            rf"hash.*allow_unpinned_revisions: true"
        ),
    ):
        check_config(changed, SCHEMA)


def test_the_documented_override_accepts_a_branch_with_a_warning(shipped_config, caplog):
    changed = with_change(
        with_change(shipped_config, "models.llama3_8b.revision", "main"), "allow_unpinned_revisions", True
    )
    check_config(changed, SCHEMA)
    assert "models.llama3_8b.revision: 'main' is not a 40-character commit hash" in caplog.text


# --- a run that would train nothing -------------------------------------------------------


def test_ablations_no_dataset_can_run_are_an_error(shipped_config):
    changed = with_change(shipped_config, "run.ablations", ["text", "graph_text"])
    with pytest.raises(
        ConfigError,
        match=(
            r"run\.ablations: none of \['text', 'graph_text'\] can run on 'ml1m_mini', which provides "
            r"\['collab', 'graph'\]"
        ),
    ):
        check_config(changed, SCHEMA)


def test_a_dataset_that_can_run_none_of_the_ablations_is_named(shipped_config):
    changed = with_change(
        with_change(shipped_config, "run.ablations", ["text"]), "run.datasets", ["ml1m", "ml1m_mini"]
    )
    with pytest.raises(ConfigError, match=r"can run on 'ml1m_mini'"):
        check_config(changed, SCHEMA)
    check_config(with_change(changed, "run.ablations", ["text", "no_kn"]), SCHEMA)  # no_kn runs anywhere


def test_no_ablation_is_a_baselines_only_run_but_no_system_at_all_is_an_error(shipped_config):
    baselines_only = with_change(shipped_config, "run.ablations", [])
    check_config(baselines_only, SCHEMA)  # the real-data test compares baselines alone
    nothing = with_change(with_change(baselines_only, "run.zero_shot", []), "run.baselines", False)
    with pytest.raises(ConfigError, match=r"run: nothing to compare"):
        check_config(nothing, SCHEMA)


# --- --config values arrive as strings ----------------------------------------------------


def read_as_schema_types(config: dict, path: str, value: object) -> tuple[object, list[str]]:
    """The value at ``path`` after ``value`` is set there and the config's strings are read."""
    from rekalm.config_strings import read_strings_as_schema_types
    from rekalm.registries import schema_with_registries

    changed = with_change(config, path, value)
    converted = read_strings_as_schema_types(changed, schema_with_registries(load_yaml(SCHEMA)))
    node = changed
    for key in path.split("."):
        node = node[key]
    return node, converted


@pytest.mark.parametrize(
    "path,text,value",
    [
        ("run.seeds", ["22", "-3", "+4"], [22, -3, 4]),  # array items
        ("run.baselines", "false", False),
        ("run.resplit", "True", True),
        ("allow_unpinned_revisions", "TRUE", True),  # top level (a plain --config key=true)
        ("training.cpu_small.max_steps", "4", 4),  # additionalProperties -> $ref, [integer, null]
        ("training.cpu_small.max_steps", "null", None),
        ("training.cpu_small.max_steps", "~", None),
        ("training.cpu_small.learning_rate", "1e-4", 0.0001),  # number: YAML 1.2's spelling
        ("training.cpu_small.learning_rate", "2", 2),
        ("training.cpu_small.lora_dropout", ".05", 0.05),
        ("training.cpu_small.resources.runtime", "90", 90),  # nested object with defaults
        ("datasets.ml1m.split.seed", "7", 7),  # additionalProperties -> $ref -> $ref
        ("datasets.ml1m.knowledge.collab.min_support", "0.01", 0.01),  # type [object, null]
        ("datasets.ml1m.knowledge.text", "null", None),  # null where a mapping or null is wanted
        ("datasets.ml1m.like_if", "null", None),  # null beside strings: null
        ("dbpedia.local_dump", "null", None),  # oneOf [null, array]
        ("metrics.cutoffs", ["1", "5"], [1, 5]),
        ("metrics.significance.max_p", "5E-2", 0.05),
        ("baselines.grids.ease.l2", ["1e3", "50"], [1000.0, 50]),
        ("merge.tolerance", "0.5", 0.5),
    ],
)
def test_a_string_is_read_as_the_type_the_schema_wants(shipped_config, path, text, value):
    read, converted = read_as_schema_types(shipped_config, path, text)
    assert read == value and type(read) is type(value)
    assert all(type(a) is type(b) for a, b in zip(read, value, strict=True)) if isinstance(value, list) else True
    assert converted and all(line.startswith(path) for line in converted)


@pytest.mark.parametrize(
    "path,text",
    [
        ("training.cpu_small.optim", "22"),  # the schema wants a string: it stays one
        ("datasets.ml1m.files.ratings.sha256", "1" * 64),
        ("datasets.ml1m.like_if", ">= 4"),
        ("inference.cpu_small.device", "cpu"),
        ("run.seeds", ["22.0"]),  # not an integer: left for the validation to name
        ("training.cpu_small.bf16", "yes"),  # YAML 1.1's booleans are not read
        ("training.cpu_small.bf16", "1"),
        ("training.cpu_small.learning_rate", ".inf"),
        ("training.cpu_small.learning_rate", "1_000"),
        ("datasets.ml1m.split.seed", "null"),  # no null here: stays a string
        ("training.cpu_small.target_modules", "all-linear"),  # oneOf [const, array]
    ],
)
def test_a_string_the_schema_takes_or_that_is_no_exact_value_is_left_alone(shipped_config, path, text):
    read, converted = read_as_schema_types(shipped_config, path, text)
    assert read == text and converted == []


@pytest.mark.parametrize(
    "path,text,message",
    [
        ("run.seeds", ["22.0"], r"run\.seeds\.0: '22\.0' is not of type 'integer'"),
        ("training.cpu_small.bf16", "yes", r"training\.cpu_small\.bf16: 'yes' is not of type 'boolean'"),
        ("datasets.ml1m.split.seed", "null", r"datasets\.ml1m\.split\.seed: 'null' is not of type 'integer'"),
        ("training.cpu_small.learning_rate", "1e-4x", r"training\.cpu_small\.learning_rate: '1e-4x' is not of type"),
        ("metrics.cutoffs", ["0"], r"metrics\.cutoffs\.0: 0 is less than the minimum of 1"),  # read, then checked
    ],
)
def test_a_string_that_is_not_read_is_a_one_line_error_naming_the_key(shipped_config, path, text, message):
    with pytest.raises(ConfigError, match=message) as error:
        check_config(with_change(shipped_config, path, text), SCHEMA)
    assert "\n" not in str(error.value)


def test_the_readme_replicate_example_is_read_from_the_command_line(shipped_config, caplog):
    from snakemake.cli import parse_config
    from snakemake.utils import update_config

    readme_example = 'run={"datasets": ["ml1m_mini"], "ablations": ["no_kn", "graph"], "seeds": [22, 23, 24]}'
    override = parse_config([readme_example])
    assert override["run"]["seeds"] == ["22", "23", "24"]  # what Snakemake hands the Snakefile
    config = copy.deepcopy(shipped_config)
    update_config(config, override)
    check_config(config, SCHEMA)
    assert config["run"]["seeds"] == [22, 23, 24]
    lines = [record.getMessage() for record in caplog.records if "string value" in record.getMessage()]
    assert lines == [
        "config: read 3 string value(s) as the schema's types (Snakemake passes a nested --config value as "
        "strings): run.seeds.0 '22' -> 22, run.seeds.1 '23' -> 23, run.seeds.2 '24' -> 24"
    ]


def test_nothing_is_logged_when_no_string_is_read(shipped_config, caplog):
    check_config(copy.deepcopy(shipped_config), SCHEMA)
    assert "string value" not in caplog.text


def test_fill_defaults_reads_strings_too(tmp_path):
    from rekalm.config import fill_defaults

    config = {"run": {"datasets": ["x"], "ablations": [], "seeds": ["5"], "resplit": "true"}}
    fill_defaults(config, SCHEMA)
    assert config["run"]["seeds"] == [5] and config["run"]["resplit"] is True
    assert config["run"]["baselines"] is True  # and the defaults are filled


def test_the_reading_follows_every_place_a_schema_can_put_a_type():
    from rekalm.config_strings import read_strings_as_schema_types

    schema = {
        "$defs": {"count": {"type": "integer"}, "pair": {"type": "object", "properties": {"n": {"type": "number"}}}},
        "type": "object",
        "properties": {
            "tuple": {"type": "array", "prefixItems": [{"type": "string"}, {"$ref": "#/$defs/count"}]},
            "either": {
                "anyOf": [
                    {"type": "array", "items": {"type": "boolean"}},
                    {"type": "array", "items": {"$ref": "#/$defs/pair"}},
                ]
            },
            "choice": {"enum": [1, 2, "auto"]},
            "level": {"enum": [1, 2]},
            "fixed": {"const": False},
            "both": {"allOf": [{"type": ["integer", "string"]}, {"type": ["integer", "null"]}]},
            "free": {},
        },
        "patternProperties": {"^n_": {"type": "integer"}},
        "additionalProperties": {"type": "boolean"},
    }
    config = {
        "tuple": ["7", "7"],
        "either": [{"n": "2.5"}],
        "choice": "1",
        "level": "1",
        "fixed": "false",
        "both": "3",
        "free": "3",
        "n_users": "12",
        "switch": "false",
    }
    converted = read_strings_as_schema_types(config, schema)
    assert config == {
        "tuple": ["7", 7],
        "either": [{"n": 2.5}],
        "choice": "1",  # the enum takes strings
        "level": 1,
        "fixed": False,
        "both": 3,  # allOf: integer is the only type both members take
        "free": "3",  # no type given: anything goes, the string stays
        "n_users": 12,
        "switch": False,
    }
    assert len(converted) == 7


def test_a_null_verdict_metric_means_the_default_headline_metric(shipped_config):
    # The schema said "null = nDCG at the largest cutoff" but refused null.
    from rekalm.evaluation.evaluate import MetricSettings

    config = with_change(shipped_config, "metrics.verdict", {"metric": None})
    check_config(config, SCHEMA)
    assert MetricSettings.from_config(config["metrics"]).verdict_metric == f"ndcg@{max(MetricSettings().cutoffs)}"
