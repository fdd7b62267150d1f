"""Reading the strings of a nested ``--config`` value as the types the schema wants there.

Snakemake parses ``--config key=value`` with YAML's BaseLoader when the value is a mapping
or a list, so in ``--config 'run={"seeds": [22, 23]}'`` the seeds arrive as ``"22"`` and
``"23"`` (and ``true``, ``0.5``, ``null`` as strings too). :func:`read_strings_as_schema_types`
walks the config beside the schema and reads each such string as the integer, number,
boolean or null the schema wants at its place; :func:`rekalm.config.check_config` calls it
before validating and logs what it read.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

import jsonschema

# The spellings a string from ``--config`` is read as when the schema wants another type
# there: YAML 1.2's core schema (what JSON writes, plus its capitalised variants), decimal
# only. YAML 1.1's yes/no/on/off are not booleans here ("no" may be a name), and .inf/.nan
# are no number a setting wants.
_NULL_SPELLINGS = frozenset({"null", "Null", "NULL", "~"})
_BOOLEAN_SPELLINGS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INTEGER_SPELLING = re.compile(r"[-+]?[0-9]+")
_NUMBER_SPELLING = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_JSON_TYPES = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _parts(schema: Any, root: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """``schema`` and every schema that applies with it unconditionally (its ``$ref`` and
    ``allOf`` members, recursively). ``if``/``then``/``else`` are not followed: the schema
    uses them for required keys only, never for a type."""
    if not isinstance(schema, Mapping):
        return []  # ``true``/``false`` schemas say nothing about a type
    parts = [schema]
    reference = schema.get("$ref")
    if isinstance(reference, str) and reference.startswith("#/"):
        target: Any = root
        for token in reference[2:].split("/"):
            target = target[token.replace("~1", "/").replace("~0", "~")]
        parts += _parts(target, root)
    for member in schema.get("allOf", []):
        parts += _parts(member, root)
    return parts


def _accepted_types(parts: list[Mapping[str, Any]], root: Mapping[str, Any]) -> set[str]:
    """The JSON types a value may have where all of ``parts`` apply (``integer`` within
    ``number``); a part without ``type``, ``enum`` or ``const`` accepts every type."""
    accepted = set(_JSON_TYPES)
    for part in parts:
        if "type" in part:
            types = {part["type"]} if isinstance(part["type"], str) else set(part["type"])
            accepted &= types | ({"integer"} if "number" in types else set())
        if "enum" in part:
            accepted &= {_json_type(member) for member in part["enum"]}
        if "const" in part:
            accepted &= {_json_type(part["const"])}
        for keyword in ("oneOf", "anyOf"):
            if keyword in part:
                accepted &= set().union(*(_accepted_types(_parts(branch, root), root) for branch in part[keyword]))
    return accepted


def _read_scalar(text: str, accepted: set[str]) -> Any:
    """``text`` as the type the schema wants there, or ``text`` itself (the validation then
    names the key). A null spelling is null wherever null is allowed, even beside strings
    (``path: null`` from ``--config`` means no path); any other string stays one wherever
    strings are allowed."""
    if text in _NULL_SPELLINGS and "null" in accepted:
        return None
    if "string" in accepted:
        return text
    if accepted & {"integer", "number"} and _INTEGER_SPELLING.fullmatch(text):
        return int(text)
    if "number" in accepted and _NUMBER_SPELLING.fullmatch(text):
        return float(text)
    if "boolean" in accepted and text in _BOOLEAN_SPELLINGS:
        return _BOOLEAN_SPELLINGS[text]
    return text


def _child_schemas(parts: list[Mapping[str, Any]], key: str) -> list[Any]:
    """The schemas that apply to ``instance[key]`` of a mapping where ``parts`` apply."""
    children = []
    for part in parts:
        properties = part.get("properties") or {}
        own = [properties[key]] if key in properties else []
        own += [child for pattern, child in (part.get("patternProperties") or {}).items() if re.search(pattern, key)]
        if not own and isinstance(part.get("additionalProperties"), Mapping):
            own = [part["additionalProperties"]]
        children += own
    return children


def _item_schemas(parts: list[Mapping[str, Any]], index: int) -> list[Any]:
    """The schemas that apply to ``instance[index]`` of an array where ``parts`` apply."""
    children = []
    for part in parts:
        prefix = part.get("prefixItems") or []
        if index < len(prefix):
            children.append(prefix[index])
        elif isinstance(part.get("items"), Mapping):
            children.append(part["items"])
    return children


def _read_strings(
    value: Any, schemas: list[Any], root: Mapping[str, Any], path: str, converted: list[str] | None
) -> Any:
    """``value`` with every string the schema wants as another type read as that type (in
    place for mappings and arrays); each conversion is appended to ``converted``."""
    parts = [part for schema in schemas for part in _parts(schema, root)]
    if isinstance(value, str):
        result = _read_scalar(value, _accepted_types(parts, root))
        if result is not value and converted is not None:
            converted.append(f"{path} {value!r} -> {result!r}")
        return result
    if not isinstance(value, dict | list):
        return value
    parts += [part for branch in _fitting_branches(value, parts, root) for part in _parts(branch, root)]
    if isinstance(value, dict):
        for key in value:
            child_path = f"{path}.{key}" if path else str(key)
            value[key] = _read_strings(value[key], _child_schemas(parts, str(key)), root, child_path, converted)
    else:
        for index, item in enumerate(value):
            value[index] = _read_strings(item, _item_schemas(parts, index), root, f"{path}.{index}", converted)
    return value


def _fitting_branches(value: dict | list, parts: list[Mapping[str, Any]], root: Mapping[str, Any]) -> list[Any]:
    """For each ``oneOf``/``anyOf`` among ``parts``, the branch a mapping or array is read
    under: the only one that takes its type, else the first it is valid against once read
    (none when it fits none: the validation then names the key)."""
    chosen = []
    for part in parts:
        for keyword in ("oneOf", "anyOf"):
            branches = [
                branch
                for branch in part.get(keyword, [])
                if _json_type(value) in _accepted_types(_parts(branch, root), root)
            ]
            if len(branches) == 1:
                chosen += branches
                continue
            for branch in branches:
                trial = _read_strings(copy.deepcopy(value), [branch], root, "", None)
                if jsonschema.Draft202012Validator(root).evolve(schema=branch).is_valid(trial):
                    chosen.append(branch)
                    break
    return chosen


def read_strings_as_schema_types(config: dict[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Convert, in place, each string of ``config`` that stands where the schema wants an
    integer, number, boolean or null and that is spelled exactly as one; return one
    ``key 'text' -> value`` per conversion.

    Snakemake reads a nested ``--config`` value with YAML's BaseLoader, so in
    ``--config 'run={"seeds": [22, 23]}'`` every scalar arrives as a string. The schema's
    types decide, wherever it places them (nested objects, arrays, ``additionalProperties``,
    ``patternProperties``, ``$ref``, ``allOf``/``oneOf``/``anyOf``, unions such as
    ``[integer, "null"]``): an integer is decimal digits with an optional sign (``"22.0"``
    is not one); a number also takes a decimal point and an exponent (``"1e-4"``); a
    boolean is ``true``/``false`` (or ``True``, ``TRUE``, ...: YAML 1.2's spellings, not
    ``yes``/``no``/``on``/``off``); ``null`` (``Null``, ``NULL``, ``~``) becomes null wherever
    the schema allows null, even where it allows strings too. A string where the schema
    allows strings (and is not a null spelling where null is allowed) is left alone, and so
    is anything else: the validation then names its key.
    """
    converted: list[str] = []
    _read_strings(config, [schema], schema, "", converted)
    return converted
