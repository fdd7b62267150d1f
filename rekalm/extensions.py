"""Extension modules and rule files named by the config's ``extensions:`` list.

An entry is one of

- a Python module name (``my_lab.rekalm_units``) or a ``.py`` file path: imported when the
  workflow starts and again at the start of every job, so what it registers (a dataset
  format, a lexicalizer, a baseline: :mod:`rekalm.registries`) is known to the config
  check and to the stage that looks it up;
- a ``.smk`` rule file: included by the Snakefile, for a knowledge source that needs a
  stage of its own (its rule, with its thin script beside it).

Relative paths are relative to the working directory, where Snakemake runs the jobs too.

Example::

    extensions: [lab/reviews.py, lab/reviews.smk]
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from rekalm.common.registry import FILE_MODULE_PREFIX

RULE_FILE_SUFFIX = ".smk"


def rule_files(entries: Sequence[str]) -> list[str]:
    """The ``.smk`` entries, as absolute paths (Snakemake's include resolves relative ones
    against the including file, not the working directory)."""
    files = [Path(entry) for entry in entries if entry.endswith(RULE_FILE_SUFFIX)]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"extensions: rule file(s) {missing} not found (relative to {Path.cwd()})")
    return [str(path.resolve()) for path in files]


def _import_file(path: Path) -> ModuleType:
    # A stable module name per file, so that importing the same file twice (the Snakefile,
    # then a job in the same process) registers its units once.
    name = FILE_MODULE_PREFIX + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"extensions: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_extensions(entries: Sequence[str]) -> list[ModuleType]:
    """Import every Python entry (module name or ``.py`` path); rule files are skipped."""
    modules = []
    for entry in entries:
        if entry.endswith(RULE_FILE_SUFFIX):
            continue
        if entry.endswith(".py"):
            path = Path(entry)
            if not path.is_file():
                raise FileNotFoundError(f"extensions: {entry} is not a file (relative to {Path.cwd()})")
            modules.append(_import_file(path))
        else:
            modules.append(importlib.import_module(entry))
    return modules
