"""Run the workflow one stage at a time and measure each: wall time and peak RSS.

Each stage is one ``snakemake`` invocation (its targets and whatever they still need), in
its own process; the peak RSS is that of the stage's largest process, read with
``getrusage(RUSAGE_CHILDREN)`` in a small wrapper. Used by benchmarks/scale.py and
benchmarks/ml1m_full.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG_FILES = [REPO / "config" / "config.yaml", REPO / "config" / "domains.yaml"]

# Runs one command, then prints the peak RSS of its largest descendant (kilobytes).
_MEASURE = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)"
)


def cpu_stages(dataset: str, lookup: str, baselines: Sequence[str], evaluate: bool) -> list[tuple[str, list[str]]]:
    """(stage name, targets) from prepare to the baselines (and evaluate + compare): the
    `collab_graph` training set, with SmolLM2's tokenizer for the token counts."""
    results = f"results/{dataset}"
    stages = [
        ("download + prepare", [f"{results}/prepare/items.parquet"]),
        ("split", [f"{results}/split/split.parquet"]),
        ("mine_rules", [f"{results}/mine_rules/rules.parquet"]),
        (f"lookup ({lookup})", [f"{results}/lookup_dbpedia/triples.parquet"]),
        ("lexicalize collab + graph", [f"{results}/lexicalize/collab.jsonl", f"{results}/lexicalize/graph.jsonl"]),
        ("prepare_model (tokenizer)", ["results/models/smollm2_135m/base"]),
        ("build_sets collab_graph", [f"{results}/build_sets/collab_graph/stats.json"]),
        *[(f"baselines {name}", [f"{results}/baselines/{name}/predictions.parquet"]) for name in baselines],
    ]
    if evaluate:
        stages += [
            (f"evaluate ({len(baselines)} baselines)", [f"{results}/metrics/{name}.json" for name in baselines]),
            ("compare", [f"{results}/compare/table.md"]),
        ]
    return stages


def run_stage(workdir: Path, overrides: Sequence[Path], targets: Sequence[str], cores: int) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB) of one snakemake invocation building ``targets``."""
    snakemake = Path(sys.executable).parent / "snakemake"
    configs = [str(path) for path in (*CONFIG_FILES, *overrides)]
    command = [
        sys.executable,
        "-c",
        _MEASURE,
        str(snakemake),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        str(cores),
        "--quiet",
        "all",
        "--configfile",
        *configs,
        "--",
        *targets,
    ]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"stage failed ({' '.join(targets)}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return elapsed, int(result.stderr.strip().splitlines()[-1]) / 1024**2


def run_stages(
    workdir: Path, overrides: Sequence[Path], stages: Sequence[tuple[str, Sequence[str]]], cores: int
) -> list[dict[str, object]]:
    """Run ``stages`` (name, targets) in order, printing a table row after each."""
    rows = []
    print(f"{'stage':<30} {'wall s':>8} {'peak RSS GB':>12}", flush=True)
    for stage, targets in stages:
        elapsed, peak = run_stage(workdir, overrides, targets, cores)
        rows.append({"stage": stage, "wall_s": round(elapsed, 1), "peak_rss_gb": round(peak, 2)})
        print(f"{stage:<30} {elapsed:>8.1f} {peak:>12.2f}", flush=True)
    return rows
