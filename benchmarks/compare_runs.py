"""Compare the results/ of two workflow runs (e.g. the embedded default before and after a
restructuring):

    python benchmarks/compare_runs.py WORKDIR_BEFORE WORKDIR_AFTER

Prints how many files are byte-identical. The data and knowledge stages (download, prepare,
split, mine_rules, lookup_dbpedia, lexicalize, build_sets) must be identical apart from the
timing fields of their stats JSON, and metrics JSON must agree to 1e-6; every other file that
differs is listed (training logs' throughput, code fingerprints, ...) for the reader to judge.
Exits 1 when a data/knowledge file or a metric differs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

STRICT_STAGES = ("download", "prepare", "split", "mine_rules", "lookup_dbpedia", "lexicalize", "build_sets")
TIMING_FIELDS = {"elapsed_s", "seconds", "wall_s", "train_runtime_s", "tokens_per_second", "peak_memory_mb"}
METRIC_TOLERANCE = 1e-6


def without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: without_timings(inner) for key, inner in value.items() if key not in TIMING_FIELDS}
    if isinstance(value, list):
        return [without_timings(inner) for inner in value]
    return value


def numeric_differences(before: Any, after: Any, path: str = "") -> list[str]:
    """Where two JSON values differ, numbers compared to METRIC_TOLERANCE."""
    if isinstance(before, dict) and isinstance(after, dict):
        if before.keys() != after.keys():
            return [f"{path}: keys {sorted(set(before) ^ set(after))}"]
        return [line for key in before for line in numeric_differences(before[key], after[key], f"{path}.{key}")]
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            return [f"{path}: {len(before)} vs {len(after)} entries"]
        pairs = enumerate(zip(before, after))
        return [line for i, (x, y) in pairs for line in numeric_differences(x, y, f"{path}[{i}]")]
    numbers = (int, float)
    if isinstance(before, numbers) and isinstance(after, numbers) and not isinstance(before, bool):
        if math.isnan(before) and math.isnan(after):
            return []
        return [] if abs(before - after) <= METRIC_TOLERANCE else [f"{path}: {before} vs {after}"]
    return [] if before == after else [f"{path}: {before!r} vs {after!r}"]


def compare(before_dir: Path, after_dir: Path) -> bool:
    before, after = before_dir / "results", after_dir / "results"
    files_before = {p.relative_to(before) for p in before.rglob("*") if p.is_file()}
    files_after = {p.relative_to(after) for p in after.rglob("*") if p.is_file()}
    print("only before:", sorted(map(str, files_before - files_after)))
    print("only after:", sorted(map(str, files_after - files_before)))
    identical, strict_bad, metric_bad, others = 0, [], [], []
    for relative in sorted(files_before & files_after):
        old, new = before / relative, after / relative
        if old.read_bytes() == new.read_bytes():
            identical += 1
            continue
        stage = relative.parts[1] if len(relative.parts) > 1 else ""
        if stage in STRICT_STAGES:
            timing_only = relative.suffix == ".json" and without_timings(json.loads(old.read_text())) == (
                without_timings(json.loads(new.read_text()))
            )
            (others if timing_only else strict_bad).append(
                f"{relative}{' (timing fields only)' if timing_only else ''}"
            )
        elif stage == "metrics":
            problems = numeric_differences(json.loads(old.read_text()), json.loads(new.read_text()))
            (metric_bad if problems else others).append(f"{relative} {problems[:3] or '(within 1e-6)'}")
        else:
            others.append(str(relative))
    common = len(files_before & files_after)
    print(f"{identical} of {common} files byte-identical, {common - identical} differ")
    print("data/knowledge stages differing:", strict_bad)
    print(f"metrics beyond {METRIC_TOLERANCE:g}:", metric_bad)
    print("other files differing:")
    for line in others:
        print("  ", line)
    return not (strict_bad or metric_bad or files_before ^ files_after)


def main() -> None:
    parser = argparse.ArgumentParser(description="Compare the results/ of two workflow runs.")
    parser.add_argument("before", type=Path, help="working directory of the first run")
    parser.add_argument("after", type=Path, help="working directory of the second run")
    args = parser.parse_args()
    sys.exit(0 if compare(args.before, args.after) else 1)


if __name__ == "__main__":
    main()
