"""Every ``rekalm`` module path the project's own files name exists where they name it.

Release 0.2.0 moved the modules into family subpackages, and the 0.1.0 flat paths still
import through the DeprecationWarning aliases of rekalm.moved_modules. So an entry point, an
import or a doc left on an old path would keep working, quietly, until the aliases go in
0.3.0. This test reads the files instead of importing anything: a path counts only when the
package's own files hold it. It checks

- ``python -m rekalm...`` (and a launcher's ``"-m", "rekalm..."``): a module with a
  ``__main__`` block;
- ``from rekalm... import a, b``: each name is a submodule or defined or imported there;
- any other dotted ``rekalm.a.b.Name`` (``import rekalm...``, docstrings, prose): the modules
  exist and the first name after them is defined or imported there;
- a file path ``rekalm/.../x.py``: the file exists.

Scanned: envs/, rules/, the Snakefile, workflow_scripts/, benchmarks/, config/, profiles/,
docs/, README.md, the Makefile and the package itself. Not scanned: rekalm/moved_modules.py
and CHANGELOG.md, which name the old paths on purpose, and tests/, which import what they use
(a wrong path fails there at import; the alias tests name old paths on purpose).
"""

from __future__ import annotations

import ast
import functools
import importlib
import re
from pathlib import Path

import pytest

from rekalm.moved_modules import MOVED, new_name

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "rekalm"
NAMED_ON_PURPOSE = {PACKAGE / "moved_modules.py", REPO / "CHANGELOG.md"}

SCANNED = sorted(
    path
    for pattern in (
        "envs/*",
        "rules/*.smk",
        "Snakefile",
        "Makefile",
        "workflow_scripts/*.py",
        "benchmarks/*.py",
        "benchmarks/*.md",
        "config/*.md",
        "config/*.yaml",
        "profiles/**/*.yaml",
        "docs/**/*.md",
        "*.md",
        "rekalm/**/*.py",
    )
    for path in REPO.glob(pattern)
    if path.is_file() and path not in NAMED_ON_PURPOSE
)

# A dotted path, not part of a longer word or file name (``.rekalm.x``, ``/rekalm.x``).
DOTTED = re.compile(r"(?<![\w./-])rekalm(?:\.[A-Za-z_]\w*)+")
ENTRY_POINT = re.compile(r"""-m\s+(rekalm(?:\.\w+)*)|["']-m["'],\s*["'](rekalm(?:\.\w+)*)["']""")
# The names: a parenthesised list (comments allowed) or comma-separated names on one line.
FROM_IMPORT = re.compile(
    r"\bfrom\s+(rekalm(?:\.\w+)*)\s+import\s+(\([^)]*\)|\w+(?:\s+as\s+\w+)?(?:[ \t]*,[ \t]*\w+(?:\s+as\s+\w+)?)*)"
)
IMPORTED_NAME = re.compile(r"(\w+)(?:\s+as\s+\w+)?")
FILE_PATH = re.compile(r"(?<![\w./-])rekalm/[\w/]+\.py\b")


@functools.cache
def top_level_names(module: Path) -> frozenset[str]:
    """Names a module defines or imports at its top level (inside top-level if/try too)."""
    names: set[str] = set()
    statements = list(ast.parse(module.read_text(encoding="utf-8")).body)
    while statements:
        node = statements.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(name.id for target in targets for name in ast.walk(target) if isinstance(name, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.If | ast.Try):
            statements.extend([*node.body, *node.orelse, *getattr(node, "finalbody", [])])
            statements.extend(child for handler in getattr(node, "handlers", []) for child in handler.body)
    return frozenset(names)


def module_file(dotted: str) -> Path | None:
    """The file of module or package ``dotted`` (``rekalm.a.b``) in this checkout, or None."""
    path = PACKAGE.joinpath(*dotted.split(".")[1:])
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def old_path_hint(dotted: str) -> str:
    parts = dotted.split(".")
    if len(parts) > 1 and parts[1] in MOVED:
        return f" (the 0.1.0 flat path, an alias until 0.3.0: use {new_name(parts[1])})"
    return ""


def unresolved(reference: str) -> str | None:
    """Why ``reference`` (``rekalm.a.b.Name.attr``) names nothing in the package; None when the
    longest module prefix exists and the first name after it is defined or imported there."""
    parts = reference.split(".")
    length = len(parts)
    while length > 1 and module_file(".".join(parts[:length])) is None:
        length -= 1
    module = ".".join(parts[:length])
    if length == len(parts):
        return None
    name = parts[length]
    names = top_level_names(module_file(module))
    if name in names:
        return None
    # A module __getattr__ hands out names it does not hold (rekalm.registries' decorators, each
    # imported from its stage on first use): ask the module itself, which exists in the checkout.
    if "__getattr__" in names and hasattr(importlib.import_module(module), name):
        return None
    missing = ".".join(parts[: length + 1])
    return f"{missing}: no such module, nor a name in {module}{old_path_hint(missing)}"


def problems(text: str) -> list[str]:
    """Every module path in ``text`` that names nothing, with its line number."""
    found = []

    def line_of(match: re.Match[str]) -> int:
        return text.count("\n", 0, match.start()) + 1

    for match in ENTRY_POINT.finditer(text):
        target = match.group(1) or match.group(2)
        path = module_file(target)
        if path is None:
            continue  # the dotted check below names it
        runs = path.parent / "__main__.py" if path.name == "__init__.py" else path
        if not runs.is_file() or '__name__ == "__main__"' not in runs.read_text(encoding="utf-8"):
            found.append(f"{line_of(match)}: python -m {target}: no __main__ block, nothing runs")
    for match in FROM_IMPORT.finditer(text):
        module = match.group(1)
        if module_file(module) is None:
            continue  # the dotted check below names it
        for item in IMPORTED_NAME.findall(re.sub(r"#[^\n]*", "", match.group(2))):
            if reason := unresolved(f"{module}.{item}"):
                found.append(f"{line_of(match)}: from {module} import {item}: {reason}")
    for match in DOTTED.finditer(text):
        if reason := unresolved(match.group(0)):
            found.append(f"{line_of(match)}: {reason}")
    for match in FILE_PATH.finditer(text):
        if not (REPO / match.group(0)).is_file():
            found.append(f"{line_of(match)}: {match.group(0)}: no such file")
    return sorted(set(found), key=lambda line: int(line.split(":")[0]))


@pytest.mark.parametrize("path", SCANNED, ids=lambda path: str(path.relative_to(REPO)))
def test_every_module_path_named_exists(path: Path) -> None:
    stale = problems(path.read_text(encoding="utf-8"))
    assert not stale, f"{path.relative_to(REPO)} names module paths that do not exist:\n" + "\n".join(stale)


def test_the_entry_points_are_among_what_is_checked() -> None:
    """The data-parallel launcher, the conda post-deploy script and the container's test name
    the worker module; the scan must see them (or the test above checks nothing)."""
    seen = {
        path.relative_to(REPO).as_posix(): {m.group(1) or m.group(2) for m in ENTRY_POINT.finditer(path.read_text())}
        for path in SCANNED
    }
    assert "rekalm.training.train" in seen["rekalm/training/data_parallel.py"]
    assert "rekalm.training.train" in seen["envs/llm.post-deploy.sh"]
    assert "rekalm.training.train" in DOTTED.findall((REPO / "envs" / "llm.def").read_text())
    assert {"workflow_scripts/train.py", "envs/llm.def", "README.md"} <= set(seen)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("python -m rekalm.train --job job.json", "use rekalm.training.train"),
        ('[sys.executable, "-m", "rekalm.train", "--job", path]', "use rekalm.training.train"),
        ("python -m rekalm.training.merge", "no __main__ block"),
        ("see `from rekalm.registries import register_lexicaliser`.", "register_lexicaliser"),
        ("python -m rekalm.training", "no __main__ block"),
        ("from rekalm.prepare import register_format", "use rekalm.data.prepare"),
        (
            "from rekalm.registries import (\n    register_format,  # formats\n    register_engines,\n)",
            "register_engines",
        ),
        ("from rekalm.llm import build_sets, prompt", "rekalm.llm.prompt: no such module"),
        ('python -c "import torch, rekalm.train"', "use rekalm.training.train"),
        ("defaults: rekalm.data.split.SplitSetting", "rekalm.data.split.SplitSetting: no such module"),
        ("see `rekalm.lookup_dbpedia.attribute_triples`", "use rekalm.knowledge.lookup_dbpedia"),
        ("the scores (rekalm/scoring.py)", "rekalm/scoring.py: no such file"),
    ],
)
def test_old_and_missing_paths_are_found(text: str, reason: str) -> None:
    found = problems(text)
    assert len(found) == 1 and reason in found[0], found


def test_paths_that_exist_pass() -> None:
    text = (
        "python -m rekalm.training.train --job job.json\n"
        "from rekalm.registries import register_baseline, register_format as fmt\n"
        "from rekalm.llm import build_sets, prompts\n"
        "import torch, rekalm.training.train\n"
        "defaults: rekalm.data.split.SplitSettings.from_config (rekalm/data/split.py); rekalm.__version__\n"
        "rekalm_fingerprint.json, /opt/rekalm/rekalm, src/rekalm.egg-info\n"
    )
    assert problems(text) == []
