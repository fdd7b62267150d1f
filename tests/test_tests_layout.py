"""The test tree mirrors the package, and its shared helpers are found by name.

Tests of a stage family live in ``tests/<family>/`` (``rekalm/<family>/``); tests of the
contracts and of the workflow as a whole stay at the top. The test folders are not packages,
so pytest imports every file under its bare name: two helper modules with one name in two
folders would be one module (the first imported), and ``from conftest import`` gets
whichever of the conftest.py files pytest loaded last. Shared helpers therefore have names
of their own (``asset_paths``, ``build_sets_world``, ``synthetic_dbpedia``, ...).
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent / "rekalm"
FAMILIES = sorted(path.parent.name for path in PACKAGE.glob("*/__init__.py"))
PYTHON_FILES = sorted(TESTS.rglob("*.py"))


def test_every_test_folder_is_a_family_of_the_package_and_every_family_has_one() -> None:
    folders = {path.parent.name for path in TESTS.glob("*/test_*.py")}
    assert folders <= set(FAMILIES), f"test folders that are no family of rekalm/: {sorted(folders - set(FAMILIES))}"
    assert set(FAMILIES) <= folders, f"families without tests/<family>/: {sorted(set(FAMILIES) - folders)}"


def test_no_two_test_or_helper_modules_share_a_name() -> None:
    names = Counter(path.name for path in PYTHON_FILES if path.name != "conftest.py")
    shared = {name: [str(p.relative_to(TESTS)) for p in PYTHON_FILES if p.name == name] for name, n in names.items()}
    assert all(count == 1 for count in names.values()), {
        name: paths for name, paths in shared.items() if len(paths) > 1
    }


def test_nothing_imports_from_a_conftest() -> None:
    importing = [
        f"{path.relative_to(TESTS)}:{node.lineno}"
        for path in PYTHON_FILES
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if (isinstance(node, ast.ImportFrom) and node.module == "conftest")
        or (isinstance(node, ast.Import) and any(alias.name == "conftest" for alias in node.names))
    ]
    assert not importing, f"import these from a helper module of their own (asset_paths.py): {importing}"
