"""What a failing job says, and where (workflow_scripts/_common.py): its log holds the error
once, and the console shows the one-line reason too, not only Snakemake's `message: None`."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest
from snakemake_helpers import CONFIG_FILES, REPO, load_config, run_snakemake, write_override


def closed_port() -> int:
    with socket.socket() as probe:  # nothing listens there once it is closed: connection refused
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_a_failing_jobs_one_line_reason_reaches_the_console_once(tmp_path):
    """Two cheap failures in one run: lookup_dbpedia logs its one-line error (an unreachable
    endpoint), prepare raises one (user filters that keep nobody)."""
    endpoint = f"http://127.0.0.1:{closed_port()}/sparql"
    mini = load_config()["datasets"]["ml1m_mini"]
    override = write_override(
        tmp_path,
        {
            "datasets": {
                "ml1m_mini": {"knowledge": {"text": {"source": "dbpedia"}}},
                "ml1m_nobody": {**mini, "min_user_interactions": 100000},
            },
            "dbpedia": {"endpoint": endpoint, "retries": 0, "cache_dir": None},
        },
    )
    targets = ["results/ml1m_mini/lookup_dbpedia/triples.parquet", "results/ml1m_nobody/prepare/items.parquet"]
    # No --show-failed-logs: the console must carry the reason on its own.
    done = run_snakemake(tmp_path, targets, [*CONFIG_FILES, override], snakefile=REPO / "Snakefile", extra=["-k"])
    console = done.stdout + done.stderr
    assert done.returncode != 0

    unreachable = f"ml1m_mini: SPARQL endpoint {endpoint} is unreachable ([Errno 111] Connection refused) after 1"
    assert console.count(f"rule lookup_dbpedia (dataset=ml1m_mini): {unreachable}") == 1, console[-3000:]
    log = (tmp_path / "logs/ml1m_mini/lookup_dbpedia.log").read_text()
    (error,) = [line for line in log.splitlines() if " ERROR " in line]  # once
    assert error.endswith(f"ERROR rekalm.lookup_dbpedia: {unreachable} attempt(s)")

    nobody = (
        "ValueError: the user filters keep none of the 6040 users (min_user_interactions=100000, "
        "max_user_interactions=None, max_users=120); loosen them"
    )
    expected = f"rule prepare (dataset=ml1m_nobody): {nobody} (traceback in logs/ml1m_nobody/prepare.log)"
    assert console.count(expected) == 1, console[-3000:]
    prepare_log = (tmp_path / "logs/ml1m_nobody/prepare.log").read_text()
    assert "Traceback (most recent call last)" in prepare_log and prepare_log.count(nobody) == 1


def test_a_job_whose_stderr_is_its_log_writes_each_error_once(tmp_path):
    """When the job's own stderr already is its log file (a wrapper that redirects it), the
    console copy of an ERROR line would be a second copy in the log: it is left out."""
    log_file = tmp_path / "job.log"
    script = textwrap.dedent(
        f"""
        import sys
        from types import SimpleNamespace

        sys.path.insert(0, {str(REPO / "workflow_scripts")!r})
        from _common import start

        job = SimpleNamespace(log=[{str(log_file)!r}], rule="toy", wildcards={{"dataset": "d"}}, config={{}})
        start(job).error("the one-line reason")
        """
    )
    with open(log_file, "w") as stderr:
        done = subprocess.run([sys.executable, "-c", script], stderr=stderr, cwd=tmp_path, timeout=120)
    assert done.returncode == 0
    assert log_file.read_text().count("the one-line reason") == 1
    with open(tmp_path / "console.txt", "w") as stderr:  # a console of its own: one copy each
        done = subprocess.run([sys.executable, "-c", script], stderr=stderr, cwd=tmp_path, timeout=120)
    assert done.returncode == 0 and log_file.read_text().count("the one-line reason") == 1
    assert (tmp_path / "console.txt").read_text() == "rule toy (dataset=d): the one-line reason\n"
