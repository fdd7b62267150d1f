"""The project's registries and the configuration choices each one backs.

Four kinds of unit are looked up by a config name, each in one registry owned by its stage's
module, where a decorator adds to it. Extension authors import every decorator from here
(``from rekalm.registries import register_format``), the one documented path:

===================  ========================  ===================================================
registry             add one with              config choice it backs
===================  ========================  ===================================================
dataset formats      ``register_format``       ``datasets.<ds>.format``
knowledge sources    ``register_lexicalizer``  ``ablations.<name>`` items, ``datasets.<ds>.knowledge``
baselines            ``register_baseline``     ``baselines.names``
rule-mining engines  ``register_engine``       ``knowledge.collab.engine``
===================  ========================  ===================================================

``config/schema.yaml`` lists the built-in names as enums (so the file documents them, and
``tests/test_registries.py`` checks that they equal the registries); :func:`schema_with_registries`
replaces those enums by the registries' keys, so that units registered by an extension
module (``extensions:`` in the config, :mod:`rekalm.extensions`) validate like built-in ones.

Every decorator adds through :func:`rekalm.common.registry.register`, the one rule for a
name that is taken: a
different unit under an existing name is an error naming both (an extension's ``graph``
lexicalizer would otherwise replace the built-in one without a word), unless it passes
``replace=True``, which is logged as a warning. The same definition registered again (an
extension module imported at workflow start and again in a job, or under a second module
name) is no conflict: a unit is identified by its function's source file and qualified name.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from typing import Any

from rekalm.common.registry import RegistryError, origin, register

#: The decorators that add to each registry, importable from here (the one documented path
#: for extension authors); each lives with the registry it fills and is imported on first use,
#: so that importing this module costs no stage's dependencies.
DECORATORS: dict[str, str] = {
    "register_format": "rekalm.data.prepare",
    "register_lexicalizer": "rekalm.knowledge.lexicalize",
    "register_baseline": "rekalm.evaluation.baselines",
    "register_engine": "rekalm.knowledge.mine_rules",
}

__all__ = ["RegistryError", "origin", "register", "registry_keys", "schema_with_registries", *DECORATORS]


def __getattr__(name: str) -> Any:
    if name in DECORATORS:
        return getattr(importlib.import_module(DECORATORS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: registry -> the paths of the schema's enums it backs (keys into the schema mapping).
SCHEMA_ENUMS: dict[str, tuple[tuple[str, ...], ...]] = {
    "dataset formats": (("$defs", "dataset", "properties", "format", "enum"),),
    "knowledge sources": (("properties", "ablations", "additionalProperties", "items", "enum"),),
    "baselines": (("properties", "baselines", "properties", "names", "items", "enum"),),
    "rule-mining engines": (("$defs", "knowledge", "properties", "collab", "properties", "engine", "enum"),),
}
_KNOWLEDGE_BLOCKS = ("$defs", "knowledge", "properties")
_BASELINE_GRIDS = ("properties", "baselines", "properties", "grids", "properties")


def registry_keys() -> dict[str, list[str]]:
    """Each registry's names, in registration order (built-ins first, then extensions)."""
    from rekalm.data.prepare import FORMATS
    from rekalm.evaluation.baselines import BASELINES
    from rekalm.knowledge.lexicalize import LEXICALIZERS
    from rekalm.knowledge.mine_rules import ENGINES

    return {
        "dataset formats": list(FORMATS),
        "knowledge sources": list(LEXICALIZERS),
        "baselines": list(BASELINES),
        "rule-mining engines": list(ENGINES),
    }


def _at(schema: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = schema
    for key in path:
        node = node[key]
    return node


def schema_enum(schema: Mapping[str, Any], path: tuple[str, ...]) -> list[str]:
    return list(_at(schema, path))


def schema_with_registries(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` whose registry-backed enums list the registries' current keys,
    whose ``datasets.<ds>.knowledge`` block accepts every registered knowledge source (a
    source the schema does not describe takes a mapping of settings, or null), and whose
    ``baselines.grids`` accepts a grid for every registered baseline."""
    extended = copy.deepcopy(dict(schema))
    keys = registry_keys()
    for registry, paths in SCHEMA_ENUMS.items():
        for path in paths:
            # The schema's order first (its error messages list it), then extension units.
            listed = [name for name in _at(extended, path) if name in keys[registry]]
            _at(extended, path[:-1])[path[-1]] = listed + [name for name in keys[registry] if name not in listed]
    blocks = _at(extended, _KNOWLEDGE_BLOCKS)
    for source in keys["knowledge sources"]:
        blocks.setdefault(
            source, {"type": ["object", "null"], "description": "settings of a registered knowledge source"}
        )
    grids = _at(extended, _BASELINE_GRIDS)
    for baseline in keys["baselines"]:
        # The parameter names are the fit function's keywords, checked when the grid expands.
        grids.setdefault(baseline, {"type": "object", "additionalProperties": {"type": "array", "minItems": 1}})
    return extended
