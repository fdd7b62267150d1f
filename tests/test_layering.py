"""The package's shape cannot decay silently: each stage family imports only the families it
may (the pipeline order, never against it), and the cross-family contracts at the top are
imported by nobody inside a family. Read from the source (AST), so a function-level import
counts as much as a top-level one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "rekalm"

#: family -> the families it may import besides itself, in the pipeline's order.
ALLOWED: dict[str, set[str]] = {
    "common": set(),
    "data": {"common"},
    "knowledge": {"common", "data"},
    "llm": {"common", "data", "knowledge"},
    "training": {"common", "data", "knowledge", "llm"},
    "ranking": {"common", "data", "knowledge", "llm"},
    "evaluation": {"common", "data", "knowledge"},
}
#: top-level modules a family may import: leaves that import nothing of the package.
FAMILY_MAY_IMPORT_AT_TOP = {"version"}


def imported_rekalm_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every ``rekalm`` import in ``path``; ``from rekalm import x``
    yields ``rekalm.x``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "rekalm"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "rekalm":
                found += [(node.lineno, f"rekalm.{alias.name}") for alias in node.names]
            elif node.module.split(".")[0] == "rekalm":
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(
                f"{path.relative_to(REPO)}:{node.lineno}: relative import; use rekalm.<family>.<module>"
            )
    return found


def family_of(path: Path) -> str | None:
    """The family a library file belongs to; None for the top-level contracts."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else None


def target_of(module: str) -> str:
    """``rekalm.data.prepare`` -> ``data``; ``rekalm.config`` -> ``config`` (a top-level module)."""
    return module.split(".")[1] if "." in module else ""


def test_the_families_on_disk_are_the_ones_the_layering_knows() -> None:
    on_disk = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert on_disk == set(ALLOWED)


@pytest.mark.parametrize("family", sorted(ALLOWED))
def test_a_family_imports_only_the_families_before_it(family: str) -> None:
    wrong = []
    for path in sorted((PACKAGE / family).rglob("*.py")):
        for line, module in imported_rekalm_modules(path):
            target = target_of(module)
            if target == family or target in ALLOWED[family] or target in FAMILY_MAY_IMPORT_AT_TOP:
                continue
            wrong.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    assert not wrong, f"{family} may import {sorted(ALLOWED[family])} only:\n" + "\n".join(wrong)


@pytest.mark.parametrize("family", sorted(ALLOWED))
def test_a_family_package_init_is_a_docstring_only(family: str) -> None:
    tree = ast.parse((PACKAGE / family / "__init__.py").read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"rekalm/{family}/__init__.py: say what the family owns"
    assert len(tree.body) == 1, (
        f"rekalm/{family}/__init__.py: a docstring and no code (importing a family costs nothing)"
    )


def test_the_layering_has_no_cycle_and_follows_the_pipeline_order() -> None:
    order = list(ALLOWED)
    for family, allowed in ALLOWED.items():
        assert all(order.index(other) < order.index(family) for other in allowed), family


def test_the_layering_test_sees_a_violation(tmp_path: Path) -> None:
    # The check must be able to fail: an import against the order is found, function-level too.
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from rekalm.evaluation.evaluate import evaluate\n    import rekalm.config\n")
    assert [target_of(m) for _, m in imported_rekalm_modules(module)] == ["evaluation", "config"]
