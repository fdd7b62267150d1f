"""The real workflow on the original study's DBbook and Last.FM files, at full size, offline:
local copies (an extra config file), the original's knowledge (graph: {source: original}),
every CPU stage up to the comparison of the classical baselines, and then, on Last.FM, the
LLM stages on real item names, history lengths and candidate counts: build_sets, train (a
tiny model, two steps), infer (score mode for every test user, generate mode for a handful),
evaluate and compare.

Skipped when ../shared/data/rekalm-original is absent (see tests/conftest.py)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from snakemake_helpers import local_original_files, run_workflow, write_override

from rekalm.common.io import read_jsonl
from rekalm.config import load_yaml
from rekalm.llm.build_sets import describe_lengths
from rekalm.llm.prompts import ranking_answer
from rekalm.ranking.generation import generation_budget
from rekalm.ranking.inference_inputs import InferenceSettings, read_test_prompts
from rekalm.ranking.scoring import answer_tokens

REPO = Path(__file__).resolve().parents[1]
# The reproduction figures: the original's shipped split and rule files (see
# tests/test_mine_rules.py for the 13,244 / 13,390 rules).
EXPECTED = {
    "dbbook": {"test_users": 1132, "train_users": 4528, "rules": 13244},
    "lastfm": {"test_users": 376, "train_users": 1505, "rules": 13390},
}
BASELINES = ["popularity", "random", "itemknn", "bpr", "ease"]
# The LLM stages on Last.FM: a trained ablation (both knowledge sources) and zero-shot
# ranking in score mode for every test user, and zero-shot generate mode for the first few
# (inference.<preset>.generate_max_users). Prompts are fitted to SEQ_LEN tokens, so the
# longest real histories get cut; the tiny model claims MODEL_CONTEXT positions, below the
# longest prompts (~320 tokens at SEQ_LEN), so some candidates get no room (score) and
# generation budgets are cut (generate): every counter of build_sets and infer is then
# checked against a recount of its own files.
LLM_DATASET, LLM_ABLATION = "lastfm", "collab_graph"
SEQ_LEN, MODEL_CONTEXT, GENERATED_USERS = 512, 300, 4


@pytest.mark.slow
def test_dbbook_and_lastfm_full_size_through_every_stage(original_data: Path, tiny_llama_dir: Path, tmp_path: Path):
    model_dir = short_context_copy(tiny_llama_dir, tmp_path / "tiny_model", MODEL_CONTEXT)
    shipped = load_yaml(REPO / "config" / "config.yaml")
    datasets = {
        name: {
            "files": local_original_files(original_data, name),
            # The original's facts, offline; text would need DBpedia (abstracts).
            "knowledge": {"graph": {"source": "original"}, "text": None},
            "model": "tiny",  # build_sets needs its tokenizer (SmolLM2's); Last.FM trains and ranks with it
        }
        for name in EXPECTED
    }
    datasets[LLM_DATASET] |= {"training": "tiny", "inference": "tiny"}
    config = {
        "run": {"datasets": list(EXPECTED), "ablations": [], "zero_shot": []},  # baselines only
        "datasets": datasets,
        "models": {"tiny": {"source": "local", "path": str(model_dir)}},
        # Two optimizer steps on the CPU; the embedded default's CPU inference preset.
        "training": {"tiny": shipped["training"]["cpu_small"] | {"seq_len": SEQ_LEN, "max_steps": 2}},
        "inference": {"tiny": shipped["inference"]["cpu_small"] | {"generate_max_users": GENERATED_USERS}},
        # One grid point per baseline keeps CI short; tuning itself is tested in test_baselines.
        "baselines": {
            "grids": {
                "ease": {"l2": [500]},
                "itemknn": {"k": [50]},
                "bpr": {"factors": [32], "lr": [0.05], "reg": [0.01], "iterations": [30]},
            }
        },
    }
    override = write_override(tmp_path, config)
    targets = [
        f"results/{name}/{target}"
        for name in EXPECTED
        for target in ("compare/table.md", "build_sets/collab_graph/stats.json")
    ]
    run_workflow(tmp_path, targets=targets, overrides=[override], cores=2)

    for name, expected in EXPECTED.items():
        check_dataset(tmp_path / "results" / name, "book" if name == "dbbook" else "music", expected)

    # The same workdir and settings, now with the LLM systems of Last.FM: only their jobs run.
    config["run"] = {"datasets": [LLM_DATASET], "ablations": [LLM_ABLATION], "zero_shot": ["score"]}
    llm_override = write_override(tmp_path, config, name="llm.yaml")
    results = tmp_path / "results" / LLM_DATASET
    targets = [f"results/{LLM_DATASET}/compare/compare.json", f"results/{LLM_DATASET}/metrics/zero_shot_generate.json"]
    run_workflow(tmp_path, targets=targets, overrides=[llm_override], cores=2)
    check_llm_stages(results, model_dir, EXPECTED[LLM_DATASET]["test_users"])


def short_context_copy(model_dir: Path, copy: Path, positions: int) -> Path:
    """The tiny model with ``positions`` as its context (rotary positions: the weights do not
    change), so that the context rule of inference cuts real prompts."""
    shutil.copytree(model_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(config | {"max_position_embeddings": positions}))
    return copy


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


def check_llm_stages(results: Path, model_dir: Path, test_users: int) -> None:
    """Every test user ranked over exactly their candidates (those with a usable name);
    build_sets' prompt lengths and cuts and infer's context counters equal a recount of the
    files; finite metrics."""
    from transformers import AutoTokenizer

    from rekalm.knowledge.lexicalize import item_names
    from rekalm.llm.build_inputs import BuildSettings

    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def count(text: str) -> int:  # as build_sets counts: special tokens are part of the rendered text
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    candidates = pd.read_parquet(results / "split/candidates.parquet")
    # Names shorter than min_name_length (Last.FM has a few, e.g. "U2") stay out of prompts, as in the original.
    names = item_names(pd.read_parquet(results / "prepare/items.parquet"))
    short = {item for item, name in names.items() if len(name.strip()) < BuildSettings.min_name_length}
    test = candidates[(candidates["user_set"] == "test") & ~candidates["item"].isin(short)]
    lists = {user: group for user, group in test.groupby("user", sort=False)}
    assert len(lists) == test_users and len(test) < (candidates["user_set"] == "test").sum()

    for ablation in ("no_kn", LLM_ABLATION):  # zero-shot ranks the no_kn prompts
        rows = read_jsonl(results / "build_sets" / ablation / "test.jsonl")
        all_stats = json.loads((results / "build_sets" / ablation / "stats.json").read_text())
        assert all_stats["counts"]["short_name_dropped_from_candidates"] == candidates["item"].isin(short).sum()
        stats = all_stats["test"]
        assert stats["users"] == len(rows) == test_users, ablation
        prompt_tokens, answer_tokens_, over = [], [], 0
        for row in rows:
            mine = lists[row["user"]].set_index("item")
            items = [c["item"] for c in row["candidates"]]
            assert sorted(items) == sorted(mine.index), (ablation, row["user"])  # exactly their candidates
            # The answer build_sets fitted: held-out likes first, then dislikes, in candidate order.
            target = [i for i in items if mine.loc[i, "liked"]] + [i for i in items if not mine.loc[i, "liked"]]
            prompt_tokens.append(count(row["prompt"]))
            answer_tokens_.append(count(ranking_answer([names[i] for i in target])))
            over += prompt_tokens[-1] + answer_tokens_[-1] + 1 > SEQ_LEN
        assert stats["prompt_tokens"] == describe_lengths(prompt_tokens), ablation
        assert stats["answer_tokens"] == describe_lengths(answer_tokens_), ablation
        assert stats["cuts"]["exceeds_seq_len"] == over, ablation
        assert stats["cuts"]["history_cut"] > 0, ablation  # real histories do not all fit SEQ_LEN

    prompts = {p.user: p for p in read_test_prompts(results / "build_sets/no_kn/test.jsonl")}
    trained = {p.user: p for p in read_test_prompts(results / "build_sets" / LLM_ABLATION / "test.jsonl")}
    preset = InferenceSettings(generate_max_users=GENERATED_USERS)  # the tiny preset's budget margins
    cut_users = 0
    for system, users in (
        ("zero_shot_score", prompts),
        (LLM_ABLATION, trained),
        ("zero_shot_generate", dict(list(prompts.items())[:GENERATED_USERS])),
    ):
        predictions = pd.read_parquet(results / "infer" / system / "predictions.parquet")
        assert list(dict.fromkeys(predictions["user"])) == list(users), system
        for user, group in predictions.groupby("user", sort=False):
            prompt = users[user]
            assert sorted(group["item"]) == sorted(lists[user]["item"]), (system, user)
            assert group["rank"].tolist() == list(range(1, len(group) + 1)), (system, user)
            tokens = answer_tokens(tokenizer, prompt.prompt, prompt.answer_prefix, prompt.names)
            if system == "zero_shot_generate":
                room = max(MODEL_CONTEXT - len(tokens.context), 0)
                budget_cut = max(generation_budget(tokenizer, prompt.names, preset) - room, 0)
                assert group["n_budget_cut"].iloc[0] == budget_cut, (system, user)
                assert group["n_context_cut"].iloc[0] == (len(prompt.names) if room == 0 else 0), (system, user)
            else:
                no_room = sum(len(tokens.context) + len(c) > MODEL_CONTEXT for c in tokens.continuations)
                assert group["n_context_cut"].iloc[0] == no_room == (group["source"] == "appended").sum()
                cut_users += no_room > 0
        metrics = json.loads((results / "metrics" / f"{system}.json").read_text())
        assert (metrics["users"]["ranked"], metrics["users"]["not_ranked"]) == (len(users), test_users - len(users))
        values = metrics["standard"]
        assert values and all(math.isfinite(v) and 0 <= v <= 1 for v in values.values()), system
        # ClayRS's nDCG leaves out users whose returned list holds no relevant item, which a
        # random model's few generated names may not: null then (rekalm.evaluation.evaluate: JSON has no NaN).
        values = {name: v for name, v in metrics["clayrs"].items() if not (name.startswith("ndcg") and v is None)}
        assert values and all(math.isfinite(v) and 0 <= v <= 1 for v in values.values()), system
    assert 0 < cut_users < 2 * test_users  # the context rule cut some users' candidates, not every user's

    summary = json.loads((results / "compare/compare.json").read_text())
    assert summary["systems"] == ["zero_shot_score", LLM_ABLATION, *BASELINES]
    assert summary["ranx"]["users"] == metrics_users(results, LLM_ABLATION)
    assert [(row["system"], row["role"]) for row in summary["verdict"]] == [(LLM_ABLATION, "best baseline")]
    assert all(math.isfinite(row["difference"]) for row in summary["verdict"])


def metrics_users(results: Path, system: str) -> int:
    """Test users with a liked held-out item: the units of the paired tests."""
    return json.loads((results / "metrics" / f"{system}.json").read_text())["users"]["evaluated"]
