"""benchmarks/compare_runs.py: what counts as the same run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_runs.py"


def run(tmp_path: Path, **changes: str) -> subprocess.CompletedProcess:
    for side in ("before", "after"):
        files = {
            "results/d/split/split.parquet": "rows",
            "results/d/lookup_dbpedia/stats.json": json.dumps({"items": 3, "elapsed_s": 1.0}),
            "results/d/metrics/s.json": json.dumps({"standard": {"ndcg@10": 0.5}}),
            "results/d/train/s/train_log.tsv": "step\ttokens_per_second\n1\t10\n",
        }
        if side == "after":
            files.update(changes)
        for name, text in files.items():
            (tmp_path / side / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / side / name).write_text(text)
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "before"), str(tmp_path / "after")],
        capture_output=True,
        text=True,
    )


def test_timings_throughput_and_tiny_metric_noise_are_the_same_run(tmp_path):
    done = run(
        tmp_path,
        **{
            "results/d/lookup_dbpedia/stats.json": json.dumps({"items": 3, "elapsed_s": 9.0}),
            "results/d/metrics/s.json": json.dumps({"standard": {"ndcg@10": 0.5 + 1e-9}}),
            "results/d/train/s/train_log.tsv": "step\ttokens_per_second\n1\t12\n",
        },
    )
    assert done.returncode == 0, done.stdout
    assert "1 of 4 files byte-identical" in done.stdout and "train_log.tsv" in done.stdout


def test_a_changed_data_file_or_metric_is_not(tmp_path):
    assert run(tmp_path / "a", **{"results/d/split/split.parquet": "other rows"}).returncode == 1
    changed = json.dumps({"standard": {"ndcg@10": 0.501}})
    done = run(tmp_path / "b", **{"results/d/metrics/s.json": changed})
    assert done.returncode == 1 and "ndcg@10: 0.5 vs 0.501" in done.stdout
