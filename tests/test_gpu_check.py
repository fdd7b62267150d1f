"""benchmarks/gpu_check.py --smoke: the GPU check's own code, on the CPU with a tiny shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_part_and_its_checks_pass(tmp_path, smollm2_tokenizer_dir):
    out = tmp_path / "gpu_check.json"
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "gpu_check.py"),
        "--smoke",
        "--tokenizer",
        str(smollm2_tokenizer_dir),
        "--out",
        str(out),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.read_text())
    parts = {r["part"]: r for r in report["results"]}
    assert list(parts) == [
        "train:plain:off",
        "train:plain:on",
        "train:rekalm:on",
        "train:rekalm:off",
        "rank:score",
        "rank:generate",
        "rank:pipeline",
        "packed",
        "long_prompt",
    ]
    assert all(
        parts[f"train:{v}"]["tokens_per_second"] > 0 for v in ("plain:off", "plain:on", "rekalm:on", "rekalm:off")
    )
    assert (
        parts["train:plain:on"]["activation_checkpointing"]
        and not parts["train:plain:off"]["activation_checkpointing"]
    )
    assert parts["train:rekalm:on"]["packing"] and not parts["train:plain:on"]["packing"]
    assert all(parts[f"rank:{engine}"]["candidates_per_s"] > 0 for engine in ("score", "generate", "pipeline"))
    assert parts["packed"]["passed"] and parts["packed"]["attention"] == "sdpa"
    assert parts["long_prompt"]["passed"] and parts["long_prompt"]["candidates"] == 24
    assert report["facts"]["CUDA available"] is False and report["facts"]["attention for Llama"] == "sdpa"
    for heading in ("## facts", "## training", "## ranking", "## correctness"):
        assert heading in done.stdout


def test_train_throughput_data_works_without_a_chat_template(smollm2_tokenizer_dir):
    """Llama-3-8B base has no chat template: the benchmark renders prompts as the workflow
    does (rekalm.llm.prompts' plain template) instead of failing in apply_chat_template."""
    import importlib.util

    from rekalm.llm.hf import load_tokenizer

    spec = importlib.util.spec_from_file_location("train_throughput", REPO / "benchmarks" / "train_throughput.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    tokenizer = load_tokenizer(smollm2_tokenizer_dir)
    tokenizer.chat_template = None
    rows = benchmark.synthetic_rows(tokenizer, users=2)
    ranking = [row for row in rows if row["kind"] == "ranking"]
    assert len(ranking) == 6 and all(row["prompt"].endswith("### Assistant\n") for row in ranking)
