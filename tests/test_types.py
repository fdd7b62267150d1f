"""The type check: mypy over ``rekalm/`` with pyproject.toml's [tool.mypy], as ruff is the style gate.

mypy keeps its cache in the repository's ``.mypy_cache/`` (gitignored): the first run on a
clean clone reads torch and transformers once (a minute or two); later runs take seconds.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"


def run_mypy(*args: str) -> subprocess.CompletedProcess:
    # From the repository root: mypy reads pyproject.toml and finds this checkout's rekalm there.
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_the_library_type_checks_clean() -> None:
    result = run_mypy()  # what to check and how strictly: pyproject.toml [tool.mypy]
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_fails_on_a_planted_error(tmp_path: Path) -> None:
    """The same configuration rejects a wrong use of rekalm's own types and a stale ignore."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from rekalm.common.text import one_line\n"
        "\n"
        'count: int = one_line("a\\nb")\n'
        'label: str = one_line("a")  # type: ignore[assignment]\n',
        encoding="utf-8",
    )
    result = run_mypy("--config-file", str(PYPROJECT), str(planted))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "planted.py:3: error: Incompatible types in assignment" in result.stdout, result.stdout
    assert 'planted.py:4: error: Unused "type: ignore" comment' in result.stdout, result.stdout


def test_only_named_untyped_libraries_are_let_off() -> None:
    """No blanket switch hides rekalm's own errors: missing imports are ignored per library,
    never globally and never for rekalm."""
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["mypy"]
    for blanket in ("ignore_missing_imports", "ignore_errors", "disable_error_code", "follow_imports"):
        assert blanket not in config, f"[tool.mypy] {blanket} applies to rekalm too; set it per library"
    assert config["warn_unused_ignores"] is True
    for override in config.get("overrides", []):
        modules = override["module"] if isinstance(override["module"], list) else [override["module"]]
        assert not [m for m in modules if m.split(".")[0] == "rekalm"], override
        assert set(override) == {"module", "ignore_missing_imports"}, override
