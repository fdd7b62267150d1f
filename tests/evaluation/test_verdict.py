"""The verdict table: paired differences, t-intervals and the word read off them."""

import numpy as np
import pytest
from scipy import stats

from rekalm.evaluation.verdict import (
    BETTER,
    NO_DIFFERENCE,
    WORSE,
    paired_interval,
    verdict_rows,
    verdict_word,
    verdicts,
)


def test_interval_matches_the_paired_t_test():
    rng = np.random.default_rng(0)
    for shift in (0.0, 0.05, 0.3, -0.3):
        a = rng.uniform(0, 1, 40)
        b = np.clip(a - shift + rng.normal(0, 0.2, 40), 0, 1)
        difference, low, high = paired_interval(a, b, 0.95)
        assert difference == pytest.approx(np.mean(a - b))
        p_value = stats.ttest_rel(a, b).pvalue
        # the interval excludes 0 exactly when the two-sided paired t-test rejects at 5 %
        assert (low > 0 or high < 0) == (p_value < 0.05), (shift, p_value, low, high)
        assert verdict_word(low, high) == (NO_DIFFERENCE if p_value >= 0.05 else BETTER if difference > 0 else WORSE)


def test_words_follow_the_interval():
    assert verdict_word(0.01, 0.2) == BETTER
    assert verdict_word(-0.2, -0.01) == WORSE
    assert verdict_word(-0.01, 0.2) == NO_DIFFERENCE
    assert verdict_word(0.0, 0.2) == NO_DIFFERENCE  # touching 0 is not excluding it
    assert verdict_word(None, None) == NO_DIFFERENCE  # one user: no interval
    assert paired_interval(np.array([1.0]), np.array([0.0]), 0.95) == (1.0, None, None)
    with pytest.raises(ValueError, match="no test user"):
        paired_interval(np.array([]), np.array([]), 0.95)


def test_each_knowledge_ablation_against_the_reference_and_the_best_baseline():
    users = 30
    base = np.linspace(0.2, 0.8, users)
    scores = {
        "no_kn": {"ndcg@10": base},
        "graph": {"ndcg@10": base + 0.1},  # better than no_kn for every user
        "collab": {"ndcg@10": base - 0.1 + np.tile([0.0, 0.02], users // 2)},
        "zero_shot_score": {"ndcg@10": base + 0.5},  # not a trained ablation, not a baseline: ignored
        "popularity": {"ndcg@10": base + 0.05},
        "ease": {"ndcg@10": base + 0.2},  # the best baseline
    }
    kinds = {
        "no_kn": "ablation",
        "graph": "ablation",
        "collab": "ablation",
        "zero_shot_score": "zero_shot",
        "popularity": "baseline",
        "ease": "baseline",
    }
    results = verdicts(scores, kinds, "ndcg@10", "no_kn", 0.95, {"graph": 0.01, "ease": None})
    assert [(r.system, r.comparator, r.role) for r in results] == [
        ("graph", "no_kn", "reference"),
        ("graph", "ease", "best baseline"),
        ("collab", "no_kn", "reference"),
        ("collab", "ease", "best baseline"),
    ]
    words = {(r.system, r.comparator): r.word for r in results}
    assert words == {
        ("graph", "no_kn"): BETTER,
        ("graph", "ease"): WORSE,
        ("collab", "no_kn"): WORSE,
        ("collab", "ease"): WORSE,
    }
    graph = results[0]
    assert graph.difference == pytest.approx(0.1) and graph.users == users and graph.system_sd == 0.01
    headers, rows = verdict_rows(results)
    assert headers[2] == "Δ ndcg@10" and headers[3] == "95% CI"
    assert rows[0][:3] == ["graph", "no_kn (reference)", "+0.1000"] and rows[0][4] == BETTER
    assert rows[0][5] == "0.0100 / –"


def test_no_reference_ablation_leaves_only_the_baseline_rows():
    scores = {"graph": {"m": np.array([0.5, 0.6])}, "random": {"m": np.array([0.5, 0.6])}}
    results = verdicts(scores, {"graph": "ablation", "random": "baseline"}, "m", "no_kn", 0.95, {})
    assert [(r.comparator, r.word) for r in results] == [("random", NO_DIFFERENCE)]
