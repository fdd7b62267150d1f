"""The modules' old flat paths (``rekalm.prepare``, ...), kept for one release.

Release 0.2.0 moved every stage module into the subpackage of its family (``rekalm.data``,
``rekalm.knowledge``, ...). Code written against 0.1.0 (an extension registering a format
with ``from rekalm.prepare import register_format``) keeps working: importing an old path
gives the moved module itself (the same object, so registries stay one) and a
``DeprecationWarning`` naming the new path. Registration functions have one documented
path, :mod:`rekalm.registries`. The aliases go in 0.3.0.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

#: old module name (under ``rekalm.``) -> its family subpackage.
MOVED: dict[str, str] = {
    "io": "common",
    "tables": "common",
    "fingerprinted_folder": "common",
    "parse_counts": "common",
    "download": "data",
    "raw_files": "data",
    "prepare": "data",
    "split": "data",
    "mine_rules": "knowledge",
    "bitset_apriori": "knowledge",
    "rule_counts": "knowledge",
    "lookup_dbpedia": "knowledge",
    "dbpedia": "knowledge",
    "dbpedia_facts": "knowledge",
    "domains": "knowledge",
    "label_match": "knowledge",
    "sparql": "knowledge",
    "oxigraph_server": "knowledge",
    "request_deadline": "common",
    "original_knowledge": "knowledge",
    "lexicalize": "knowledge",
    "hf": "llm",
    "prompts": "llm",
    "prepare_model": "llm",
    "build_sets": "llm",
    "build_inputs": "llm",
    "prompt_fit": "llm",
    "train": "training",
    "training_data": "training",
    "training_log": "training",
    "checkpoints": "training",
    "data_parallel": "training",
    "merge": "training",
    "infer": "ranking",
    "inference_inputs": "ranking",
    "scoring": "ranking",
    "generation": "ranking",
    "parse": "ranking",
    "baselines": "evaluation",
    "evaluate": "evaluation",
    "verdict": "evaluation",
    "compare": "evaluation",
    "report": "evaluation",
}


def new_name(old: str) -> str:
    """``"rekalm.prepare"`` -> ``"rekalm.data.prepare"``."""
    return f"rekalm.{MOVED[old.removeprefix('rekalm.')]}.{old.removeprefix('rekalm.')}"


class _AliasLoader(importlib.abc.Loader):
    """Loads an old path as the moved module itself (one module object, one registry)."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        target = new_name(spec.name)
        warnings.warn(
            f"{spec.name} moved to {target} in rekalm 0.2.0; the old path goes in 0.3.0",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(target)

    def exec_module(self, module: ModuleType) -> None:
        # The moved module is already executed; the import system then binds the old name to it.
        pass


class _OldPathFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        prefix, _, name = fullname.partition(".")
        if prefix != "rekalm" or name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader())


def install() -> None:
    """Make the old paths importable (once per process). First in line: an editable install
    of an older checkout must not answer an old path with that checkout's stale file."""
    if not any(isinstance(finder, _OldPathFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _OldPathFinder())
