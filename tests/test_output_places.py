"""Nothing is written outside results/, logs/, .snakemake/ and documented caches."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rule_paths(directive: str) -> list[tuple[str, str]]:
    """(file, path) for every quoted path under ``directive:`` in rules/*.smk."""
    found = []
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text()
        for match in re.finditer(rf"^\s+{directive}:\n((?:\s{{8,}}.*\n)+)", text, re.MULTILINE):
            found += [(smk.name, path) for path in re.findall(r'"([^"]+)"', match.group(1))]
    return found


def test_benchmark_and_log_files_go_under_logs():
    paths = rule_paths("benchmark") + rule_paths("log")
    assert len(rule_paths("benchmark")) >= 7
    # Every rule that logs is benchmarked too, beside its log.
    assert sorted(path.removesuffix(".benchmark.tsv") for _, path in rule_paths("benchmark")) == sorted(
        path.removesuffix(".log") for _, path in rule_paths("log")
    )
    outside = [(name, path) for name, path in paths if not path.startswith("logs/")]
    assert outside == []


def test_a_job_script_keeps_matplotlib_out_of_home(tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    job = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from types import SimpleNamespace\n"
        "from _common import start\n"
        "start(SimpleNamespace(log=[], rule='compare', wildcards={}, config={}))\n"
        "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2]); plt.savefig('results.png')\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MPL", "XDG_"))}
    env["HOME"] = str(home)
    subprocess.run(
        [sys.executable, "-c", job, str(REPO / "workflow_scripts")], cwd=work, env=env, check=True, capture_output=True
    )
    assert list(home.rglob("*")) == []
    assert (work / ".snakemake" / "matplotlib").is_dir()
