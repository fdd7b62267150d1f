"""Config validation with one-line messages, and the questions the workflow asks of it.

The Snakefile calls :func:`check_config_files` and :func:`check_config` before anything
else. The first reads every config file strictly: a YAML syntax error or a key given twice
in one mapping (which YAML loaders resolve silently to the last value) stops the run with
``path:line:column: ...``. The second turns JSON-Schema errors into
``config: datasets.ml1m.split.test_fraction: 1.5 is greater than ...`` instead of a schema
dump, and catches names that point nowhere (an ablation using an unknown source, a dataset
naming a missing model preset), a run that would train nothing, and hub models whose
revision is a branch rather than a commit, before any job starts. Before it validates, it
reads a string where the schema wants an integer, number, boolean or null as that type when
it is spelled exactly as one (:mod:`rekalm.config_strings`): Snakemake hands every scalar
of a nested ``--config`` value over as a string.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from rekalm.config_strings import read_strings_as_schema_types
from rekalm.data.prepare import FORMATS
from rekalm.knowledge.original_knowledge import FILE_ROLES as ORIGINAL_KNOWLEDGE_ROLES
from rekalm.registries import schema_with_registries
from rekalm.systems import ablations_for, dataset_sources, reserved_name_errors

log = logging.getLogger(__name__)

Config = Mapping[str, Any]

_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (merge keys ``<<`` aside)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {seen[key]})", key_node.start_mark
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping; syntax errors and duplicate keys come back as ``path:line:column: ...``."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.load(handle, Loader=_StrictLoader) or {}  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        detail = " ".join(part for part in (error.context, error.problem) if part)
        raise ConfigError(f"{where}: {detail}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 (byte {error.start})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def check_config_files(paths: Iterable[str | Path]) -> None:
    """Read each existing config file strictly (see :func:`load_yaml`) before Snakemake does."""
    for path in paths:
        if Path(path).is_file():
            load_yaml(path)


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "(top level)"


def schema_errors(config: Config, schema: Mapping[str, Any]) -> list[str]:
    """Every schema violation as 'key.path: message', most specific first."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (-len(e.absolute_path), _key_path(e)))
    messages = []
    for error in errors:
        # oneOf/anyOf failures hide the useful reason in their context.
        detail = min(error.context, key=lambda e: len(e.message)).message if error.context else error.message
        messages.append(f"{_key_path(error)}: {detail}")
    return messages


def reference_errors(config: Config) -> list[str]:
    """Names used in one block that must be defined in another."""
    messages = []
    for name in config["run"]["datasets"]:
        if name not in config["datasets"]:
            messages.append(
                f"run.datasets: {name!r} is not defined under datasets (known: {sorted(config['datasets'])})"
            )
    for name in config["run"]["ablations"]:
        if name not in config["ablations"]:
            messages.append(
                f"run.ablations: {name!r} is not defined under ablations (known: {sorted(config['ablations'])})"
            )
    messages += reserved_name_errors(config)
    sources = config["lexicalize"]["sources"]
    for name, ablation_sources in config["ablations"].items():
        for source in ablation_sources:
            if source not in sources:
                messages.append(
                    f"ablations.{name}: source {source!r} has no lexicalize.sources.{source} entry naming its "
                    f"input table (known: {sorted(sources)})"
                )
    known = all(name in config["ablations"] for name in config["run"]["ablations"])
    # run.ablations: [] is a deliberate baselines/zero-shot-only run; a list of which a
    # dataset can run nothing trains nothing there without a word.
    for dataset in config["run"]["datasets"]:
        if (
            known
            and config["run"]["ablations"]
            and dataset in config["datasets"]
            and not ablations_for(config, dataset)
        ):
            messages.append(
                f"run.ablations: none of {list(config['run']['ablations'])} can run on {dataset!r}, which provides "
                f"{dataset_sources(config, dataset)}; add one it can (no_kn needs no source) or run {dataset!r} "
                "separately"
            )
    run = config["run"]
    if not run["ablations"] and run.get("zero_shot") == [] and run.get("baselines") is False:
        messages.append("run: nothing to compare: run.ablations is [], run.zero_shot is [] and run.baselines is false")
    for dataset, spec in config["datasets"].items():
        for key, block in (("model", "models"), ("training", "training"), ("inference", "inference")):
            if key in spec and block in config and spec[key] not in config[block]:
                messages.append(
                    f"datasets.{dataset}.{key}: {spec[key]!r} is not defined under {block} (known: "
                    f"{sorted(config[block])})"
                )
        needed = FORMATS[spec["format"]].roles
        missing = [role for role in needed if role not in spec["files"]]
        if missing:
            messages.append(
                f"datasets.{dataset}.files: format {spec['format']!r} needs the file role(s) {missing} "
                f"(it reads {list(needed)}, optionally {list(FORMATS[spec['format']].optional_roles)})"
            )
        graph = (spec.get("knowledge") or {}).get("graph") or {}
        if graph.get("source") == "original":
            missing = [role for role in ORIGINAL_KNOWLEDGE_ROLES if role not in spec["files"]]
            if missing:
                messages.append(
                    f"datasets.{dataset}.knowledge.graph.source: 'original' needs the file role(s) {missing} under "
                    f"datasets.{dataset}.files"
                )
        if "domains" in config and spec["domain"] not in config["domains"]:
            messages.append(
                f"datasets.{dataset}.domain: {spec['domain']!r} is not defined under domains (known: "
                f"{sorted(config['domains'])})"
            )
    return messages


def revision_errors(config: Config) -> list[str]:
    """Hub models must be pinned to a commit unless ``allow_unpinned_revisions`` is set."""
    messages = []
    for name, spec in (config.get("models") or {}).items():
        revision = spec.get("revision")
        if spec.get("source") != "hub" or _COMMIT_SHA.match(str(revision or "")):
            continue
        problem = f"models.{name}.revision: {revision!r} is not a 40-character commit hash (a branch or tag can move)"
        if config.get("allow_unpinned_revisions"):
            log.warning("%s; accepted because allow_unpinned_revisions is true", problem)
        else:
            messages.append(f"{problem}; pin the commit shown on the Hub, or set allow_unpinned_revisions: true")
    return messages


FILE_ORIGINS = ("url", "path", "package")


def resolve_local_copies(config: dict[str, Any]) -> list[str]:
    """Apply the local-copy rule to every file spec, in place; return one line per change.

    A user who holds a file points at it with ``path`` from an extra config file or
    ``--config``, on top of the shipped spec that has a ``url``. Rule: a ``path`` wins over
    ``url`` (and ``package``): the URL keys are dropped and the ``sha256`` is still checked
    when given. A ``member`` spec's ``sha256`` pins the *archive*, not the extracted file
    the path names, so it is dropped with the URL. Keys set to null count as absent.
    """
    changes = []
    for dataset, spec in (config.get("datasets") or {}).items():
        for role, file_spec in ((spec or {}).get("files") or {}).items():
            if not isinstance(file_spec, dict):
                continue
            for key in [key for key, value in file_spec.items() if value is None and key != "path"]:
                del file_spec[key]
            if not file_spec.get("path"):
                continue
            dropped = [key for key in ("url", "package", "resource", "filename") if key in file_spec]
            if "member" in file_spec:
                dropped += ["member"] + (["sha256"] if "sha256" in file_spec else [])
            for key in dropped:
                del file_spec[key]
            if dropped:
                changes.append(
                    f"datasets.{dataset}.files.{role}: local path {file_spec['path']} replaces {', '.join(dropped)}"
                )
    return changes


def origin_errors(config: Config) -> list[str]:
    """No file spec has two origins; the local paths of the datasets to run exist."""
    messages = []
    running = set(config["run"]["datasets"])
    for dataset, spec in config["datasets"].items():
        for role, file_spec in spec["files"].items():
            where = f"datasets.{dataset}.files.{role}"
            origins = [key for key in FILE_ORIGINS if file_spec.get(key)]
            # No origin at all (BoardGameGeek's `path: null`) is left to the download job,
            # so that the full grid can still be planned without the Kaggle files.
            if len(origins) > 1:
                messages.append(f"{where}: give one of url, path, package; got {origins}")
            elif (
                dataset in running and origins == ["path"] and not Path(str(file_spec["path"])).expanduser().is_file()
            ):
                messages.append(f"{where}.path: {file_spec['path']} is not a file")
    return messages


def _default_filling_validator(schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    """jsonschema's validator that also sets each missing key's schema default (the recipe
    of the jsonschema FAQ, which Snakemake's ``validate`` uses too; Snakemake's takes a
    schema *file*, and ours is extended by the registries at run time)."""
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: Any, instance: Any, subschema: Any) -> Any:
        if isinstance(instance, dict):
            for key, spec in properties.items():
                if "default" in spec:
                    instance.setdefault(key, copy.deepcopy(spec["default"]))
        yield from validate_properties(validator, properties, instance, subschema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})(schema)


def _fill(config: dict[str, Any], schema: Mapping[str, Any]) -> None:
    for _ in _default_filling_validator(schema).iter_errors(config):  # the traversal sets the defaults
        pass


def read_config_strings(config: dict[str, Any], schema_path: str | Path) -> None:
    """Read the strings ``--config`` passes where the schema wants another type as that type,
    in place (:mod:`rekalm.config_strings`). The Snakefile calls it before the local-copy
    rule, so that ``"path": null`` from the command line is null there, not a path named
    "null" that would drop the spec's ``url``; :func:`check_config` calls it again (a no-op)."""
    _read_config_strings(config, schema_with_registries(load_yaml(schema_path)))


def _read_config_strings(config: dict[str, Any], schema: Mapping[str, Any]) -> None:
    converted = read_strings_as_schema_types(config, schema)
    if converted:
        # A warning, not info: Snakemake shows a library's warnings on the console, and a
        # value read differently from how it was typed is worth one line there.
        log.warning(
            "config: read %d string value(s) as the schema's types (Snakemake passes a nested --config value "
            "as strings): %s",
            len(converted),
            ", ".join(converted),
        )


def fill_defaults(config: dict[str, Any], schema_path: str | Path) -> None:
    """Fill in the schema's defaults wherever ``config`` leaves a key out, valid or not (the
    rule files call this so that a single rule runs on a config holding only what it reads;
    the workflow's own config is checked by :func:`check_config` first). Strings where the
    schema wants another type are read as that type first, as :func:`check_config` does."""
    schema = schema_with_registries(load_yaml(schema_path))
    _read_config_strings(config, schema)
    _fill(config, schema)


def check_config(config: dict[str, Any], schema_path: str | Path) -> None:
    """Read the strings ``--config`` passes where the schema wants another type as that type
    (:mod:`rekalm.config_strings`, logged in one line), validate ``config`` against the schema
    (its registry-backed enums extended by the registries, :mod:`rekalm.registries`), fill in
    the schema's defaults in place, then check the names that point across blocks. Raise
    ConfigError with the first problem, naming its key.
    """
    schema = schema_with_registries(load_yaml(schema_path))
    _read_config_strings(config, schema)
    problems = schema_errors(config, schema)
    if not problems:
        _fill(config, schema)
        problems = reference_errors(config) + revision_errors(config) + origin_errors(config)
    if problems:
        extra = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(f"config: {problems[0]}{extra}")
