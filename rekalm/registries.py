"""The project's registries and the configuration choices each one backs.

Four kinds of unit are looked up by a config name, each in one registry owned by its stage's
module, where a decorator adds to it:

===================  =====================================  ==============================
registry             add one with                           config choice it backs
===================  =====================================  ==============================
dataset formats      ``rekalm.prepare.register_format``      ``datasets.<ds>.format``
knowledge sources    ``rekalm.lexicalize.register_lexicalizer``  ``ablations.<name>`` items,
                                                            ``datasets.<ds>.knowledge``
baselines            ``rekalm.baselines.register_baseline``  ``baselines.names``
rule-mining engines  ``rekalm.mine_rules.register_engine``   ``knowledge.collab.engine``
===================  =====================================  ==============================

``config/schema.yaml`` lists the built-in names as enums (so the file documents them, and
``tests/test_registries.py`` checks that they equal the registries); :func:`schema_with_registries`
replaces those enums by the registries' keys, so that units registered by an extension
module (``extensions:`` in the config, :mod:`rekalm.extensions`) validate like built-in ones.

Every decorator adds through :func:`register`, the one rule for a name that is taken: a
different unit under an existing name is an error naming both (an extension's ``graph``
lexicalizer would otherwise replace the built-in one without a word), unless it passes
``replace=True``, which is logged as a warning. The same definition registered again (an
extension module imported at workflow start and again in a job, or under a second module
name) is no conflict: a unit is identified by its function's source file and qualified name.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

Unit = TypeVar("Unit")

#: registry -> the paths of the schema's enums it backs (keys into the schema mapping).
SCHEMA_ENUMS: dict[str, tuple[tuple[str, ...], ...]] = {
    "dataset formats": (("$defs", "dataset", "properties", "format", "enum"),),
    "knowledge sources": (("properties", "ablations", "additionalProperties", "items", "enum"),),
    "baselines": (("properties", "baselines", "properties", "names", "items", "enum"),),
    "rule-mining engines": (("$defs", "knowledge", "properties", "collab", "properties", "engine", "enum"),),
}
_KNOWLEDGE_BLOCKS = ("$defs", "knowledge", "properties")
_BASELINE_GRIDS = ("properties", "baselines", "properties", "grids", "properties")


class RegistryError(ValueError):
    """A name is registered twice with different units; the message names both origins."""


def _identity(function: Any) -> tuple[str, str]:
    # Source file + qualified name, not the function object or its module name: the same
    # file imported as ``lab.units`` and as ``lab/units.py`` (or re-imported in a job)
    # defines the same unit twice, which is harmless.
    code = getattr(function, "__code__", None)
    where = str(Path(code.co_filename).resolve()) if code is not None else getattr(function, "__module__", "?")
    return where, getattr(function, "__qualname__", repr(function))


def origin(function: Any) -> str:
    """Where a unit's function is defined, for messages: ``module.qualname (file)``; an
    extension ``.py`` file's made-up module name is left out (its path says it)."""
    from rekalm.extensions import FILE_MODULE_PREFIX

    module = getattr(function, "__module__", None) or "?"
    qualname = getattr(function, "__qualname__", None) or repr(function)
    code = getattr(function, "__code__", None)
    named = qualname if module.startswith(FILE_MODULE_PREFIX) else f"{module}.{qualname}"
    return named + (f" ({code.co_filename})" if code is not None else "")


def register(
    registry: MutableMapping[str, Unit],
    kind: str,
    name: str,
    unit: Unit,
    function_of: Callable[[Unit], Any] = lambda unit: unit,
    replace: bool = False,
) -> None:
    """Add ``unit`` to ``registry`` (the ``kind`` of :data:`SCHEMA_ENUMS`, for messages) under
    ``name``; ``function_of`` gives a unit's defining function. A name held by another
    unit is a :class:`RegistryError` unless ``replace`` (then a warning)."""
    if name in registry:
        old, new = function_of(registry[name]), function_of(unit)
        if _identity(old) != _identity(new):
            if not replace:
                raise RegistryError(
                    f"{kind}: {name!r} is already registered by {origin(old)}; {origin(new)} cannot take the name "
                    "(choose another name, or register it with replace=True to replace it on purpose)"
                )
            log.warning("%s: %r of %s replaced by %s (replace=True)", kind, name, origin(old), origin(new))
    registry[name] = unit


def registry_keys() -> dict[str, list[str]]:
    """Each registry's names, in registration order (built-ins first, then extensions)."""
    from rekalm.baselines import BASELINES
    from rekalm.lexicalize import LEXICALIZERS
    from rekalm.mine_rules import ENGINES
    from rekalm.prepare import FORMATS

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
