"""Finished results survive the 0.2.0 module move when the user follows the documented advice.

Release 0.2.0 moved every library module into its family's subpackage, so the import lines of
every workflow script changed (``from rekalm.split import ...`` became ``from rekalm.data.split
import ...``). Snakemake's ``code`` rerun trigger re-runs a ``script:`` job whose script file is
newer than its outputs, and updating a checkout rewrites every changed file: without advice, a
finished run would be re-run from ``download`` on. docs/hpc.md and CHANGELOG.md advise
``--rerun-triggers mtime params input software-env`` (every trigger but ``code``) or ``--touch``.

The test does what an update does, through the real ``snakemake`` command line: in a copy of the
workflow whose scripts import the 0.1.0 flat paths (which still work, with a DeprecationWarning),
it finishes the data stages of the embedded default, then puts the shipped scripts back. A plain
dry-run then plans those jobs again, for the changed code; the advised command plans none; and
``--touch`` marks the outputs up to date without changing a byte, after which a plain dry-run
plans none either. About 30 s on 2 cores.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest
from snakemake_helpers import REPO, run_snakemake

from rekalm.moved_modules import MOVED

# What a run of the workflow reads; copied, since the scripts are edited.
WORKFLOW_PATHS = ("Snakefile", "rules", "workflow_scripts", "config", "rekalm", "envs", "pyproject.toml")
DATASET = "ml1m_mini"
TARGET = f"results/{DATASET}/split/split.parquet"  # download, prepare, split: the cheapest stages
JOBS = ("download", "prepare", "split")
ADVICE = ("--rerun-triggers", "mtime", "params", "input", "software-env")
NOTHING_TO_DO = "Nothing to be done"
NEW_PATH = re.compile(r"\brekalm\.(common|data|knowledge|llm|training|ranking|evaluation)\.(\w+)\b")


def flat_imports(source: str) -> str:
    """A script as it was before the move: each moved module under its 0.1.0 flat path."""
    return NEW_PATH.sub(lambda m: f"rekalm.{m[2]}" if MOVED.get(m[2]) == m[1] else m[0], source)


def dry_run(workdir: Path, *extra: str) -> str:
    done = run_snakemake(workdir, [TARGET], configfiles(workdir), extra=["-n", *extra], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def configfiles(workdir: Path) -> list[Path]:
    return [workdir / "config" / "config.yaml", workdir / "config" / "domains.yaml"]


def digests(workdir: Path) -> dict[str, str]:
    """sha256 of every file under results/: what "keeping the results" must not change."""
    return {
        str(path.relative_to(workdir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((workdir / "results").rglob("*"))
        if path.is_file()
    }


def test_flat_imports_undo_the_move_for_moved_modules_only() -> None:
    assert flat_imports("from rekalm.data.split import SplitSettings") == "from rekalm.split import SplitSettings"
    assert flat_imports("from rekalm.common.io import write_json") == "from rekalm.io import write_json"
    # common.text is new in 0.2.0 (no flat path); a module under the wrong family is left alone
    assert flat_imports("from rekalm.common.text import one_line") == "from rekalm.common.text import one_line"
    assert flat_imports("import rekalm.data.train") == "import rekalm.data.train"


@pytest.fixture
def finished_before_the_move(tmp_path: Path) -> Path:
    """A workdir whose data stages finished with the 0.1.0 import lines, then updated to the
    shipped scripts (newer files, as a checkout writes them)."""
    for name in WORKFLOW_PATHS:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, tmp_path / name)
    scripts = sorted((tmp_path / "workflow_scripts").glob("*.py"))
    shipped = {script: script.read_text(encoding="utf-8") for script in scripts}
    before = {script: flat_imports(text) for script, text in shipped.items()}
    assert sum(before[script] != shipped[script] for script in scripts) >= len(JOBS)
    for script, text in before.items():
        script.write_text(text, encoding="utf-8")

    done = run_snakemake(tmp_path, [TARGET], configfiles(tmp_path), cores=2, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "moved to rekalm.data.split in rekalm 0.2.0" in (tmp_path / f"logs/{DATASET}/split.log").read_text()
    assert NOTHING_TO_DO in dry_run(tmp_path), "a finished run plans nothing before the update"

    for script, text in shipped.items():  # the update
        script.write_text(text, encoding="utf-8")
    newest_output = max(path.stat().st_mtime_ns for path in (tmp_path / "results").rglob("*"))
    assert all(script.stat().st_mtime_ns > newest_output for script in scripts)
    return tmp_path


@pytest.mark.slow
def test_the_documented_advice_keeps_results_finished_before_the_move(finished_before_the_move: Path) -> None:
    workdir = finished_before_the_move
    kept = digests(workdir)

    # Without advice, every job re-runs because its script changed.
    plain = dry_run(workdir)
    assert NOTHING_TO_DO not in plain
    assert plain.count("reason: Code has changed since last execution") >= 1
    for rule in JOBS:
        assert re.search(rf"^{rule}\s+1$", plain, re.MULTILINE), f"{rule} is not planned again:\n{plain[-2000:]}"

    # Every trigger but `code`: nothing to do.
    assert NOTHING_TO_DO in dry_run(workdir, *ADVICE)

    # --touch records the outputs as up to date (new mtimes only), so a plain run is quiet too.
    touched = run_snakemake(workdir, [TARGET], configfiles(workdir), extra=["--touch"], timeout=300)
    assert touched.returncode == 0, touched.stderr[-3000:]
    assert NOTHING_TO_DO in dry_run(workdir)
    assert digests(workdir) == kept


def test_the_advice_is_the_one_the_docs_give() -> None:
    advice = "--rerun-triggers " + " ".join(ADVICE[1:])
    for document in ("docs/hpc.md", "CHANGELOG.md"):
        text = " ".join((REPO / document).read_text(encoding="utf-8").split())  # wrapped lines joined
        assert advice in text and "--touch" in text, document
