"""One rule for adding a named unit to a registry: a name that is taken is an error naming
both units, unless the new one says ``replace=True`` (then a warning). Every registry's
decorator (``register_format``, ``register_lexicalizer``, ``register_baseline``,
``register_engine``; documented import path :mod:`rekalm.registries`) adds through
:func:`register`, so the rule holds for each of them.

The same definition registered again (an extension module imported at workflow start and
again in a job, or under a second module name) is no conflict: a unit is identified by its
function's source file and qualified name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

Unit = TypeVar("Unit")

#: The module name of an extension imported from a ``.py`` path starts with this
#: (:mod:`rekalm.extensions` makes it; messages leave it out).
FILE_MODULE_PREFIX = "rekalm_extension_"


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
    """Add ``unit`` to ``registry`` (the registry's name, for messages) under
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
