"""build_sets on the original study's Last.FM data, and the lexicalize and build_sets rules
run end to end by snakemake."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from build_sets_world import MOVIE
from snakemake_helpers import run_snakemake

from rekalm.common.io import read_jsonl, write_parquet
from rekalm.llm import build_inputs
from rekalm.llm import build_sets as bs

# ----------------------------------------------------------------- original study data


@pytest.mark.slow
def test_lastfm_sets_from_original_data(original_data: Path, tokenizer):
    """Last.FM users split the original way: no test user in train,
    names intact, every prompt + answer within 2,048 tokens (Last.FM lists are short)."""
    from rekalm.data.split import SplitSettings, split_interactions

    folder = original_data / "lastfm"
    frames = [
        pd.read_csv(folder / "user-item" / f"{part}.tsv", sep="\t", names=["user", "item", "liked"], dtype=str)
        for part in ("train", "test")
    ]
    interactions = pd.concat(frames, ignore_index=True).astype({"liked": "int8", "user": object, "item": object})
    # The first 600 users keep the test to seconds on 2 shared cores (object columns: split.py
    # converts the item column per user, which is slow for Arrow-backed strings).
    interactions = interactions[interactions["user"].isin(pd.unique(interactions["user"])[:600])]
    names = pd.read_csv(folder / "mapping_items.tsv", sep="\t", names=["item", "name"], dtype=str, quoting=3)
    split, candidates = split_interactions(interactions, SplitSettings(method="original"))
    settings = build_inputs.BuildSettings.from_config({}, 2048)
    built = bs.build_sets(split, candidates, names, {}, tokenizer, settings, "music", "no_kn")
    test_users = set(candidates.loc[candidates["user_set"] == "test", "user"])
    assert {r["user"] for r in built.test} <= test_users and len(built.test) > 100
    assert len(built.train) == candidates.loc[candidates["user_set"] == "train", "user"].nunique()
    assert built.stats["train"]["ranking_cuts"]["exceeds_seq_len"] == 0
    assert built.stats["test"]["answer_tokens"]["max"] < 2048
    name_set = set(names["name"])
    assert all(c["name"] in name_set for r in built.test for c in r["candidates"])


# ----------------------------------------------------------------- the two rules, end to end


@pytest.mark.slow
def test_lexicalize_and_build_sets_rules_run_end_to_end(world, smollm2_tokenizer_dir, tmp_path):
    import shutil

    import yaml

    repo = Path(__file__).resolve().parents[2]
    work = tmp_path / "work"
    results = work / "results" / "toy"
    write_parquet(world["items"], results / "prepare" / "items.parquet")
    write_parquet(world["split"], results / "split" / "split.parquet")
    write_parquet(world["candidates"], results / "split" / "candidates.parquet")
    write_parquet(world["collab"], results / "mine_rules" / "rules.parquet")
    write_parquet(world["graph"], results / "lookup_dbpedia" / "triples.parquet")
    shutil.copytree(smollm2_tokenizer_dir, work / "results" / "models" / "smol" / "base")
    config = {
        "datasets": {"toy": {"domain": "movie", "model": "smol", "training": "tiny"}},
        "domains": {"movie": {key: value for key, value in MOVIE.items() if key != "name"}},
        "ablations": {"no_kn": [], "collab_graph": ["collab", "graph"]},
        "training": {"tiny": {"seq_len": 1024}},
        "trust_remote_code": False,
        "lexicalize": {
            "placement": "documents",
            "seed": 22,
            "sources": {
                "collab": {"input": "mine_rules.rules"},
                "graph": {"input": "lookup_dbpedia.triples"},
            },
        },
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (work / "Snakefile").write_text(
        "".join(
            f'include: "{repo}/rules/{stage}.smk"\n'
            for stage in ("common", "mine_rules", "lookup_dbpedia", "lexicalize", "build_sets")
        ),  # real rules + input functions; the tables the producing rules make are given
        encoding="utf-8",
    )
    targets = [
        f"results/toy/build_sets/{ablation}/{name}"
        for ablation in ("no_kn", "collab_graph")
        for name in ("train.jsonl", "test.jsonl", "stats.json")
    ]
    # The producing rules name the sources' tables; the test gives those tables.
    allowed = ["--allowed-rules", "lexicalize", "build_sets"]
    done = run_snakemake(work, targets, [work / "config.yaml"], extra=allowed, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    stats = json.loads((work / "results/toy/build_sets/collab_graph/stats.json").read_text())
    assert stats["train"]["examples_per_kind"] == {"collab": 5, "graph": 5, "ranking": 12}
    assert stats["seq_len"] == 1024 and stats["sources"] == ["collab", "graph"]
    assert json.loads((work / "results/toy/build_sets/no_kn/stats.json").read_text())["train"][
        "examples_per_kind"
    ] == {"ranking": 4}
    assert (work / "results/toy/lexicalize/graph.stats.json").exists()
    assert (work / "logs/toy/lexicalize/collab.log").exists() and (
        work / "logs/toy/build_sets/collab_graph.log"
    ).exists()
    test_rows = read_jsonl(work / "results/toy/build_sets/no_kn/test.jsonl")
    assert [r["user"] for r in test_rows] == ["v1", "v2"]
