"""Metrics against hand-computed values: standard (ranx), ClayRS definitions, popularity@k."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rekalm.common.parse_counts import PARSE_COUNT_COLUMNS
from rekalm.common.tables import run_from_predictions
from rekalm.evaluation.evaluate import (
    MetricSettings,
    average_popularity,
    candidate_popularity,
    clayrs_metrics,
    clayrs_ndcg,
    clayrs_user_metrics,
    configure_numba_cache,
    evaluate_ranking,
    held_out_judgements,
    item_popularity,
    parsing_summary,
    rankings_from_predictions,
    relevant_qrels,
    run_for_qrels,
    standard_metric_names,
)

REPO = Path(__file__).resolve().parents[2]

LOG2_3 = math.log2(3)

# Test users u1, u2, u4 have liked held-out items; u3 has none; t1, t2 are train users.
CANDIDATES = pd.DataFrame(
    [
        ("u1", "test", "a", 1),
        ("u1", "test", "b", 0),
        ("u1", "test", "c", 1),
        ("u1", "test", "d", 0),
        ("u2", "test", "x", 1),
        ("u2", "test", "y", 0),
        ("u3", "test", "p", 0),
        ("u3", "test", "q", 0),
        ("u4", "test", "m", 1),
        ("u4", "test", "n", 0),
        ("t1", "train", "c", 1),
        ("t2", "train", "x", 0),
    ],
    columns=["user", "user_set", "item", "liked"],
)
CANDIDATES["position"] = CANDIDATES.groupby("user").cumcount().astype("int32")

# (user, item, source) in rank order; counts = what parsing reported for the user.
RANKED = {
    "u1": (
        [("b", "model"), ("a", "model"), ("c", "appended"), ("d", "appended")],
        {"n_generated": 3, "n_exact": 2, "n_hallucinated": 1, "n_appended": 2},
    ),
    "u2": ([("y", "model"), ("x", "model")], {"n_generated": 2, "n_exact": 1, "n_fuzzy": 1}),
    "u3": ([("q", "model"), ("p", "appended")], {"n_generated": 2, "n_exact": 1, "n_duplicates": 1, "n_appended": 1}),
    "u4": ([("n", "model"), ("m", "appended")], {"n_generated": 1, "n_exact": 1, "n_appended": 1}),
}

SPLIT = pd.DataFrame(
    [
        ("t1", "train", "a", 1, "history"),
        ("t1", "train", "b", 0, "history"),
        ("t1", "train", "c", 1, "held_out"),
        ("t2", "train", "a", 1, "history"),
        ("t2", "train", "x", 0, "held_out"),
        ("u1", "test", "a", 1, "history"),
        ("u1", "test", "y", 0, "history"),
        # test users' held-out rows are what is evaluated: never counted as popularity
        ("u1", "test", "a", 1, "held_out"),
        ("u1", "test", "b", 0, "held_out"),
        ("u1", "test", "c", 1, "held_out"),
        ("u1", "test", "d", 0, "held_out"),
        ("u2", "test", "x", 1, "held_out"),
        ("u2", "test", "y", 0, "held_out"),
    ],
    columns=["user", "user_set", "item", "liked", "side"],
)
SPLIT["row"] = np.arange(len(SPLIT), dtype="int64")


def make_predictions() -> pd.DataFrame:
    rows = []
    for user, (ranked, counts) in RANKED.items():
        for rank, (item, source) in enumerate(ranked, start=1):
            row = {"user": user, "item": item, "rank": rank, "score": 1 - (rank - 1) / len(ranked), "source": source}
            row.update({column: counts.get(column, 0) for column in PARSE_COUNT_COLUMNS})
            rows.append(row)
    return pd.DataFrame(rows)


# --- inputs ----------------------------------------------------------------------------------


def test_relevance_is_liked_held_out_of_test_users() -> None:
    judgements = held_out_judgements(CANDIDATES)
    assert set(judgements) == {"u1", "u2", "u3", "u4"}  # train users' candidates are not judged
    assert relevant_qrels(judgements) == {"u1": {"a": 1, "c": 1}, "u2": {"x": 1}, "u4": {"m": 1}}


def test_rankings_full_and_model_only() -> None:
    predictions = make_predictions().sample(frac=1.0, random_state=0)  # row order must not matter
    assert rankings_from_predictions(predictions)["u1"] == ["b", "a", "c", "d"]
    model_only = rankings_from_predictions(predictions, model_only=True)
    assert model_only["u1"] == ["b", "a"] and model_only["u4"] == ["n"]


def test_run_must_cover_judged_users() -> None:
    qrels = relevant_qrels(held_out_judgements(CANDIDATES))
    with pytest.raises(ValueError, match="not ranked"):
        run_for_qrels({"u1": {"a": 1.0}}, qrels)


# --- ClayRS definitions, by hand -----------------------------------------------------------


def test_clayrs_precision_divides_by_returned_length() -> None:
    values = clayrs_user_metrics(["y", "x"], {"x": 1, "y": 0}, [1, 3])
    assert values["precision@1"] == 0.0
    assert values["precision@3"] == pytest.approx(1 / 2)  # min(3, 2) returned items
    assert values["recall@3"] == 1.0
    assert values["f1@3"] == pytest.approx(2 / 3)
    assert values["mrr"] == 0.5


def test_clayrs_ndcg_takes_the_ideal_from_the_returned_list() -> None:
    labels = {"a": 1, "b": 0, "c": 1, "d": 0}
    # returned b, a (c is relevant but was never returned): ideal = [1, 0] -> 1.0
    assert clayrs_ndcg(["b", "a"], labels, 3) == pytest.approx(1 / LOG2_3)
    # the standard ideal would use both relevant items: (1/log2 3) / (1 + 1/log2 3)
    assert clayrs_ndcg(["b", "a"], labels, 1) == 0.0
    # items outside the truth are skipped, not counted as positions
    assert clayrs_ndcg(["zzz", "a", "b"], labels, 3) == pytest.approx(1.0)
    # no relevant item returned: NaN (left out of the mean), and an empty list too
    assert math.isnan(clayrs_ndcg(["b", "d"], labels, 3))
    assert math.isnan(clayrs_ndcg([], labels, 3))


def test_clayrs_system_values_by_hand() -> None:
    judged = {user: labels for user, labels in held_out_judgements(CANDIDATES).items() if user in ("u1", "u2", "u4")}
    values = clayrs_metrics(rankings_from_predictions(make_predictions(), model_only=True), judged, [1, 3])
    # u1: [b, a]; u2: [y, x]; u4: [n]
    assert values["precision@1"] == 0.0
    assert values["precision@3"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert values["recall@3"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert values["f1@3"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert values["ndcg@3"] == pytest.approx(1 / LOG2_3)  # u4 is NaN and left out
    assert values["ndcg@1"] == 0.0
    assert values["mrr"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert values["precision"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)


def test_clayrs_exceeds_standard_on_incomplete_lists() -> None:
    # The original's lists lost unmatched names: ClayRS's ideal shrinks with them.
    labels = {"a": 1, "b": 0, "c": 1, "d": 0, "e": 1}
    returned = ["a", "b", "c"]  # e was never returned
    clayrs = clayrs_ndcg(returned, labels, 3)
    standard = (1 + 1 / 2) / (1 + 1 / LOG2_3 + 1 / 2)
    assert clayrs == pytest.approx((1 + 1 / 2) / (1 + 1 / LOG2_3)) and clayrs > standard


# --- popularity ------------------------------------------------------------------------------


def test_item_popularity_from_training_interactions() -> None:
    popularity = item_popularity(SPLIT)
    # training rows: t1 a b c, t2 a x, u1 a y (history); 3 users
    assert popularity == pytest.approx({"a": 1.0, "b": 1 / 3, "c": 1 / 3, "x": 1 / 3, "y": 1 / 3})
    assert "d" not in popularity  # only seen as a test user's held-out item


def test_average_popularity_at_k_by_hand() -> None:
    popularity = item_popularity(SPLIT)
    values = average_popularity(rankings_from_predictions(make_predictions()), popularity, [1, 3])
    # top-1: b 1/3, y 1/3, q 0, n 0
    assert values["avg_popularity@1"] == pytest.approx((1 / 3 + 1 / 3) / 4)
    # top-3: u1 (b, a, c) = 5/9; u2 (y, x) = 1/3; u3, u4 = 0
    assert values["avg_popularity@3"] == pytest.approx((5 / 9 + 1 / 3) / 4)
    assert values["avg_popularity"] == pytest.approx(((1 / 3 + 1 + 1 / 3) / 4 + 1 / 3) / 4)
    assert candidate_popularity(held_out_judgements(CANDIDATES), popularity) == pytest.approx((5 / 12 + 1 / 3) / 4)


def test_popularity_favours_popular_first() -> None:
    popularity = {"hit": 0.9, "niche": 0.1}
    assert average_popularity({"u": ["hit", "niche"]}, popularity, [1])["avg_popularity@1"] == 0.9
    assert average_popularity({"u": ["niche", "hit"]}, popularity, [1])["avg_popularity@1"] == 0.1


# --- parsing summary -------------------------------------------------------------------------


def test_parsing_summary_counts_users_once() -> None:
    summary = parsing_summary(make_predictions())
    assert summary["users"] == 4
    assert summary["hallucinated_total"] == 1 and summary["duplicates_total"] == 1
    assert summary["appended_total"] == 4 and summary["users_with_appended"] == 3
    assert summary["appended_per_user"] == pytest.approx(1.0)


# --- settings and the numba cache ------------------------------------------------------------


def test_metric_settings_validation() -> None:
    settings = MetricSettings.from_config(
        {"cutoffs": [10, 1, 5, 3], "definitions": ["standard"], "significance": {"test": "fisher", "max_p": 0.01}}
    )
    assert settings.cutoffs == (1, 3, 5, 10) and settings.stat_test == "fisher"
    for bad in (
        {"cutoffs": [0]},
        {"definitions": ["trec"]},
        {"significance": {"test": "anova"}},
        {"significance": {"max_p": 2}},
    ):
        with pytest.raises(ValueError, match="metrics"):
            MetricSettings.from_config(bad)
    assert "ndcg@10" in standard_metric_names([10]) and "ndcg" in standard_metric_names([10])


def test_numba_cache_moves_only_when_needed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(os, "access", lambda path, mode: True)
    assert configure_numba_cache() is None  # a writable install keeps numba's default
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert configure_numba_cache() == str(tmp_path / "xdg" / "rekalm" / "numba")  # read-only install
    assert (tmp_path / "xdg" / "rekalm" / "numba").is_dir()
    assert configure_numba_cache(tmp_path / "explicit") == str(tmp_path / "explicit")  # config wins


def test_importing_ranx_writes_nothing_in_home(tmp_path: Path) -> None:
    """`import ranx` imports ir_datasets, which made ~/.ir_datasets (about 60 folders)."""
    home = tmp_path / "home"
    home.mkdir()
    environment = {
        key: value for key, value in os.environ.items() if key not in ("IR_DATASETS_HOME", "XDG_CACHE_HOME")
    }
    # What a job has: MPLCONFIGDIR (workflow_scripts/_common.py), NUMBA_CACHE_DIR (Makefile).
    environment.update(
        HOME=str(home),
        MPLCONFIGDIR=str(tmp_path / "matplotlib"),
        NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", str(tmp_path / "numba")),
        PYTHONPATH=str(REPO),
    )
    code = (
        "import os; from rekalm.evaluation.evaluate import import_ranx; import_ranx(); "
        "print(os.getenv('IR_DATASETS_HOME'))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(path.name for path in home.iterdir()) == []
    assert not Path(done.stdout.strip()).exists()  # ir_datasets' folders went with the process
    environment["IR_DATASETS_HOME"] = str(tmp_path / "mine")  # a home of the user's own is kept
    done = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == str(tmp_path / "mine") and (tmp_path / "mine").is_dir()


# --- the whole stage (ranx: compiles with numba once per environment) ------------------------


@pytest.mark.slow
def test_evaluate_ranking_standard_values_by_hand(tmp_path: Path) -> None:
    predictions = make_predictions()
    run = json.loads(json.dumps(run_from_predictions(predictions)))  # as read from run.json
    settings = MetricSettings(cutoffs=(1, 3), numba_cache_dir=os.environ.get("NUMBA_CACHE_DIR"))
    metrics = evaluate_ranking(predictions, run, CANDIDATES, SPLIT, settings, labels={"ablation": "demo"})
    assert metrics["ablation"] == "demo"
    assert metrics["users"] == {"ranked": 4, "evaluated": 3, "without_relevant": 1, "not_ranked": 0}
    standard = metrics["standard"]
    # complete lists: u1 b a c d (a, c relevant); u2 y x (x); u4 n m (m)
    ndcg3_u1 = (1 / LOG2_3 + 1 / 2) / (1 + 1 / LOG2_3)
    assert standard["precision@1"] == 0.0
    assert standard["precision@3"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 3) / 3)  # ranx divides by k
    assert standard["recall@3"] == pytest.approx(1.0)
    assert standard["f1@3"] == pytest.approx((0.8 + 0.5 + 0.5) / 3)
    assert standard["ndcg@3"] == pytest.approx((ndcg3_u1 + 1 / LOG2_3 + 1 / LOG2_3) / 3)
    assert standard["ndcg"] == pytest.approx(standard["ndcg@3"])
    assert standard["precision"] == pytest.approx(0.5)
    assert standard["mrr"] == pytest.approx(0.5)
    assert standard["hit_rate@1"] == 0.0 and standard["hit_rate@3"] == 1.0
    # ClayRS over the returned (model) lists: u4 has no relevant returned item -> left out of nDCG
    assert metrics["clayrs"]["ndcg@3"] == pytest.approx(1 / LOG2_3)
    assert metrics["clayrs"]["precision@3"] == pytest.approx(1 / 3)
    assert metrics["popularity"]["avg_popularity@1"] == pytest.approx(1 / 6)
    assert metrics["parsing"]["hallucinated_total"] == 1
    json.dumps(metrics, allow_nan=False)  # writable as strict JSON


def test_evaluate_rejects_users_outside_the_test_set() -> None:
    predictions = make_predictions()
    predictions.loc[predictions["user"] == "u1", "user"] = "stranger"
    with pytest.raises(ValueError, match="not test users"):
        evaluate_ranking(
            predictions, run_from_predictions(predictions), CANDIDATES, SPLIT, MetricSettings(definitions=("clayrs",))
        )


def test_users_without_a_prompt_are_counted_not_evaluated() -> None:
    predictions = make_predictions()
    predictions = predictions[predictions["user"] != "u2"]
    metrics = evaluate_ranking(
        predictions,
        run_from_predictions(predictions),
        CANDIDATES,
        SPLIT,
        MetricSettings(cutoffs=(3,), definitions=("clayrs",)),
    )
    assert metrics["users"] == {"ranked": 3, "evaluated": 2, "without_relevant": 1, "not_ranked": 1}
    assert metrics["clayrs"]["recall@3"] == pytest.approx((1 / 2 + 0) / 2)  # u1 and u4 only
