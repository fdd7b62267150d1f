"""Every library module and workflow script opens with a docstring saying what it owns, and no
docstring or comment points the reader at a document the repository does not hold."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The whole package tree (its families are subpackages), the scripts and the benchmarks.
MODULES = sorted((REPO / "rekalm").rglob("*.py")) + sorted((REPO / "workflow_scripts").glob("*.py"))
# Design notes and issue threads live outside the repository: text must state the fact itself.
ABSENT_REFERENCES = re.compile(r"protocol\.md|assets\.md|style\.md|snakemake-and-slurm\.md|design/|\bissue \d+", re.I)


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(REPO)))
def test_module_opens_with_a_docstring(path: Path) -> None:
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert docstring and docstring.strip(), f"{path.relative_to(REPO)}: no module docstring"


@pytest.mark.parametrize(
    "path", MODULES + sorted((REPO / "benchmarks").glob("*.py")), ids=lambda path: str(path.relative_to(REPO))
)
def test_no_reference_to_a_document_outside_the_repository(path: Path) -> None:
    cited = [
        f"{number}: {line.strip()}"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if ABSENT_REFERENCES.search(line)
    ]
    assert not cited, f"{path.relative_to(REPO)} cites text outside the repository:\n" + "\n".join(cited)


LIBRARY = sorted((REPO / "rekalm").rglob("*.py"))
# "No library module over ~500 lines": one purpose per module; the slack is for growth
# within that purpose, not for a second one.
MAX_MODULE_LINES = 520


def module_name(path: Path) -> str:
    """``rekalm/data/prepare.py`` -> ``rekalm.data.prepare`` (a package's ``__init__`` -> the package)."""
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", LIBRARY, ids=module_name)
def test_no_library_module_outgrows_one_purpose(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module_name(path)}: {lines} lines; split it along its sections"


@pytest.mark.parametrize("path", [p for p in LIBRARY if ">>>" in p.read_text(encoding="utf-8")], ids=module_name)
def test_docstring_examples_run(path: Path) -> None:
    import doctest
    import importlib

    module = importlib.import_module(module_name(path))
    assert doctest.testmod(module).failed == 0
