"""Cost of the knowledge-aware baselines on the original study's DBbook and Last.FM.

    .venv/bin/python benchmarks/knowledge_baselines.py [--data DIR] [--datasets dbbook,lastfm]
        [--baselines c2pf,mcf,c2pf_rules,mcf_rules,cke,ease] [--threads 2]
        [--extensions MODULE,...]

Data: the original's files (``--data``, else REKALM_ORIGINAL_DATA, else
../shared/data/rekalm-original beside the checkout). Training = the liked rows of
``user-item/train.tsv`` (every user's history side); candidates = ``user-item/test.tsv``
(each user's test list, liked as shipped, position = file order); item facts =
``item-prop/train.tsv`` with the original's relation and value ids (names do not matter to
these models); rules = mined from the training rows' liked items with the dataset's
``knowledge.collab`` thresholds of config/config.yaml and ``max_len`` 2 (the item -> item
rules the rules graph draws). A baseline gets exactly the knowledge it declares
(``register_baseline(reads=...)``); one reading ``item_text`` is skipped with a line (the
original's text needs DBpedia). ``--extensions`` imports modules that register more
baselines (e.g. the text-aware ones).

Each baseline fits once with its default parameters (the cost of one fit: the stage fits
every grid point on the tuning data, then once more) in a process of its own, BLAS and
torch capped at ``--threads``. Printed per (dataset, baseline): fit and scoring wall
seconds, the process's peak RSS (data loading included: the first row, ``ease``, shows that
floor), and nDCG@10 over the test users' candidates (ties by position, as the stage ranks;
default parameters, untuned). Results also go to benchmarks/out/knowledge_baselines.json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUT = REPO / "benchmarks" / "out"
DEFAULT_BASELINES = ["ease", "c2pf", "mcf", "c2pf_rules", "mcf_rules", "cke"]
BUILT_IN = ["rekalm.recommenders.classical", "rekalm.recommenders.graph_aware", "rekalm.recommenders.cke"]


def default_data() -> Path:
    return Path(os.environ.get("REKALM_ORIGINAL_DATA") or REPO.parent / "shared" / "data" / "rekalm-original")


def load(folder: Path, dataset: str, needs: set[str]):
    """(training Interactions without knowledge, candidates, {kind: knowledge})."""
    import numpy as np
    import pandas as pd
    import yaml

    from rekalm.knowledge.mine_rules import RuleMiningSettings, mine_rules
    from rekalm.knowledge.original_knowledge import read_item_props, read_relations
    from rekalm.recommenders.interactions import build_interactions

    columns = ["user", "item", "liked"]
    train = pd.read_csv(folder / "user-item/train.tsv", sep="\t", header=None, names=columns, dtype=str)
    test = pd.read_csv(folder / "user-item/test.tsv", sep="\t", header=None, names=columns, dtype=str)
    train["liked"], test["liked"] = train["liked"].astype(int), test["liked"].astype(int)
    test["position"] = test.groupby("user", sort=False).cumcount()
    users = np.array(sorted(set(train["user"]) | set(test["user"])), dtype=object)
    items = np.array(sorted(set(train["item"]) | set(test["item"])), dtype=object)
    data = build_interactions(train, users, items)
    item_index = pd.Index(items)
    knowledge = {}
    if "item_facts" in needs:
        props = read_item_props(folder / "item-prop/train.tsv", set(read_relations(folder / "mapping_relations.tsv")))
        index = item_index.get_indexer(props["item"].astype(str))
        kept = index >= 0  # facts about items no one rated describe no candidate
        knowledge["item_facts"] = pd.DataFrame(
            {
                "item_index": index[kept],
                "relation": props["relation"].astype(str)[kept].to_numpy(),
                "value": props["value"].astype(str)[kept].to_numpy(),
            }
        )
    if "item_rules" in needs:
        config = yaml.safe_load((REPO / "config/config.yaml").read_text())
        collab = dict(config["datasets"][dataset]["knowledge"]["collab"], max_len=2)
        liked = train[train["liked"] == 1]
        transactions = [sorted(set(group)) for _, group in liked.groupby("user", sort=True)["item"]]
        rules = mine_rules(transactions, RuleMiningSettings(**collab))
        knowledge["item_rules"] = pd.DataFrame(
            {
                "antecedent": [item_index.get_indexer(list(ids)).tolist() for ids in rules["antecedent"]],
                "consequent": [item_index.get_indexer(list(ids)).tolist() for ids in rules["consequent"]],
                "support": rules["support"].to_numpy(),
                "confidence": rules["confidence"].to_numpy(),
            }
        )
    return data, test, knowledge


def run_one(folder: Path, dataset: str, name: str, threads: int, extensions: list[str]) -> dict:
    """Fit and score one baseline in this process (the child of :func:`main`)."""
    from threadpoolctl import threadpool_limits

    for module in BUILT_IN + extensions:
        importlib.import_module(module)
    from rekalm.evaluation.baselines import mean_ndcg, rank_candidates, score_candidates
    from rekalm.recommenders.interactions import Interactions
    from rekalm.recommenders.knowledge_inputs import ItemKnowledge
    from rekalm.recommenders.registry import BASELINE_READS, get_baseline

    reads = set(BASELINE_READS.get(name, ()))
    if "item_text" in reads:
        return {"dataset": dataset, "baseline": name, "skipped": "reads item_text (the original's needs DBpedia)"}
    data, candidates, knowledge = load(folder, dataset, reads)
    data = Interactions(data.matrix, data.users, data.items, ItemKnowledge(**knowledge))
    with threadpool_limits(limits=threads):
        start = time.perf_counter()
        scorer = get_baseline(name)(data, 22, threads)
        fitted = time.perf_counter()
        scores = score_candidates(scorer, data, candidates)
        scored = time.perf_counter()
    ranked = rank_candidates(candidates, scores)
    return {
        "dataset": dataset,
        "baseline": name,
        "users": int(data.matrix.shape[0]),
        "items": int(data.matrix.shape[1]),
        "positives": int(data.matrix.nnz),
        "candidates": len(candidates),
        "fit_s": round(fitted - start, 2),
        "score_s": round(scored - fitted, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "ndcg@10": round(mean_ndcg(ranked, 10), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--datasets", default="dbbook,lastfm")
    parser.add_argument("--baselines", default=",".join(DEFAULT_BASELINES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--extensions", default="", help="modules to import that register more baselines")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # dataset:baseline, run in this process
    args = parser.parse_args()
    extensions = [module for module in args.extensions.split(",") if module]
    if args.one:
        dataset, name = args.one.split(":")
        print(json.dumps(run_one(args.data / dataset, dataset, name, args.threads, extensions)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads)}
    results = []
    print(f"{'dataset':8} {'baseline':11} {'fit s':>8} {'score s':>8} {'peak MB':>8} {'nDCG@10':>8}")
    for dataset in args.datasets.split(","):
        for name in args.baselines.split(","):
            command = [sys.executable, __file__, "--data", str(args.data), "--threads", str(args.threads)]
            command += ["--extensions", args.extensions, "--one", f"{dataset}:{name}"]
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                print(f"{dataset:8} {name:11} failed: {done.stderr.strip().splitlines()[-1:]}")
                results.append({"dataset": dataset, "baseline": name, "error": done.stderr[-2000:]})
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(row)
            if "skipped" in row:
                print(f"{dataset:8} {name:11} skipped: {row['skipped']}")
            else:
                print(
                    f"{dataset:8} {name:11} {row['fit_s']:8.2f} {row['score_s']:8.2f} {row['peak_rss_mb']:8.0f} "
                    f"{row['ndcg@10']:8.4f}",
                    flush=True,
                )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "knowledge_baselines.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
