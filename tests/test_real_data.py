"""The real workflow on the original study's DBbook and Last.FM files, at full size, offline:
local copies (an extra config file), the original's knowledge (graph: {source: original}),
and every CPU stage up to the comparison of the classical baselines (no LLM).

Skipped when ../shared/data/rekalm-original is absent (see tests/conftest.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from snakemake_helpers import local_original_files, run_workflow, write_override

from rekalm.config import load_yaml

REPO = Path(__file__).resolve().parents[1]
# The reproduction figures: the original's shipped split and rule files (see
# tests/test_mine_rules.py for the 13,244 / 13,390 rules).
EXPECTED = {
    "dbbook": {"test_users": 1132, "train_users": 4528, "rules": 13244},
    "lastfm": {"test_users": 376, "train_users": 1505, "rules": 13390},
}
BASELINES = ["popularity", "random", "itemknn", "bpr", "ease"]


@pytest.mark.slow
def test_dbbook_and_lastfm_full_size_through_every_cpu_stage(
    original_data: Path, tiny_llama_dir: Path, tmp_path: Path
):
    datasets = {
        name: {
            "files": local_original_files(original_data, name),
            # The original's facts, offline; text would need DBpedia (abstracts).
            "knowledge": {"graph": {"source": "original"}, "text": None},
            "model": "tiny",  # build_sets only needs the tokenizer (SmolLM2's)
        }
        for name in EXPECTED
    }
    override = write_override(
        tmp_path,
        {
            "run": {"datasets": list(EXPECTED), "ablations": [], "zero_shot": []},  # baselines only
            "datasets": datasets,
            "models": {"tiny": {"source": "local", "path": str(tiny_llama_dir)}},
            # One grid point per baseline keeps CI short; tuning itself is tested in test_baselines.
            "baselines": {
                "grids": {
                    "ease": {"l2": [500]},
                    "itemknn": {"k": [50]},
                    "bpr": {"factors": [32], "lr": [0.05], "reg": [0.01], "iterations": [30]},
                }
            },
        },
    )
    targets = [
        f"results/{name}/{target}"
        for name in EXPECTED
        for target in ("compare/table.md", "build_sets/collab_graph/stats.json")
    ]
    run_workflow(tmp_path, targets=targets, overrides=[override], cores=2)

    for name, expected in EXPECTED.items():
        check_dataset(tmp_path / "results" / name, "book" if name == "dbbook" else "music", expected)


def check_dataset(results: Path, domain_name: str, expected: dict[str, int]) -> None:
    """The reproduction figures, the original's facts and every baseline's full ranking."""
    name = results.name
    domain = load_yaml(REPO / "config" / "domains.yaml")["domains"][domain_name]
    manifest = json.loads((results / "download/manifest.json").read_text())
    assert {entry["origin"] for entry in manifest.values()} == {"path"}, name
    split = json.loads((results / "split/stats.json").read_text())
    assert (split["test"]["users"], split["train"]["users"]) == (expected["test_users"], expected["train_users"]), name
    assert len(pd.read_parquet(results / "mine_rules/rules.parquet")) == expected["rules"], name

    triples = pd.read_parquet(results / "lookup_dbpedia/triples.parquet")
    assert set(triples["source"]) == {"original"} and len(triples) > 15000, name
    assert set(triples["relation"]) <= set(domain["relations"]), name
    graph_documents = (results / "lexicalize/graph.jsonl").read_text().splitlines()
    assert len(graph_documents) == triples["item"].nunique(), name
    build = json.loads((results / "build_sets/collab_graph/stats.json").read_text())
    assert build["test"]["users"] == expected["test_users"], name
    documents = build["train"]["unique_examples_per_kind"]
    assert (documents["collab"], documents["graph"]) == (expected["rules"], len(graph_documents)), name

    candidates = pd.read_parquet(results / "split/candidates.parquet")
    test = candidates[candidates["user_set"] == "test"]
    assert test["user"].nunique() == expected["test_users"]
    for baseline in BASELINES:
        ranked = pd.read_parquet(results / "baselines" / baseline / "predictions.parquet")
        assert sorted(zip(ranked["user"], ranked["item"])) == sorted(zip(test["user"], test["item"])), (name, baseline)
        metrics = json.loads((results / "metrics" / f"{baseline}.json").read_text())
        # Users whose held-out items are all dislikes have nothing relevant to rank.
        users = metrics["users"]
        assert (users["ranked"], users["not_ranked"]) == (expected["test_users"], 0), (name, baseline)
        assert users["evaluated"] + users["without_relevant"] == expected["test_users"], (name, baseline)
        for definition in ("standard", "clayrs"):
            values = metrics[definition]
            assert values and all(math.isfinite(v) and 0 <= v <= 1 for v in values.values()), (
                name,
                baseline,
                definition,
            )
    table = (results / "compare/table.md").read_text()
    assert all(f"| {baseline} |" in table for baseline in BASELINES), name
