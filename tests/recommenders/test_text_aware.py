"""CTR and HFT (rekalm.recommenders.text_aware): they rank on our index spaces, score items
no training user liked, and use their text: on planted data, informative item text beats
the same documents permuted across items on validation nDCG (the control of issue 24)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rekalm.evaluation.baselines import BaselineSettings, choose_validation_users, tune
from rekalm.recommenders.interactions import Interactions, build_interactions, training_rows
from rekalm.recommenders.knowledge_inputs import ItemKnowledge
from rekalm.recommenders.registry import BASELINE_READS, SEEDED_BASELINES, get_baseline

CLUSTERS = 4
WARM, COLD = 8, 3  # per cluster: items train users like in their history / only held out
WORDS = [
    "castle dragon knight sword wizard quest kingdom armor",
    "galaxy rocket planet alien orbit laser starship android",
    "detective murder clue suspect alibi police witness crime",
    "kitchen recipe flavor baking spice dessert chef oven",
]
USERS = 100


def planted(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    """Split, candidates, item ids and documents: each train user likes one cluster's warm
    items; a validation user's held-out like is a cold item of its cluster (nobody liked it
    in training: only its text can place it), among cold items of the other clusters."""
    rng = np.random.default_rng(seed)
    items = [f"i{c}_{j:02d}" for c in range(CLUSTERS) for j in range(WARM + COLD)]
    vocab = [line.split() for line in WORDS]
    documents = [" ".join(rng.choice(vocab[int(item[1])], size=12)) for item in items]
    users = [f"u{n:03d}" for n in range(USERS)]
    validation = set(choose_validation_users(pd.DataFrame({"user": users, "user_set": "train"}), 0.2, 22))
    rows, candidates = [], []
    for n, user in enumerate(users):
        cluster = n % CLUSTERS
        warm = [f"i{cluster}_{j:02d}" for j in range(WARM)]
        for item in rng.choice(warm, size=5, replace=False):
            rows.append((user, "train", item, 1, "history"))
        if user in validation:
            liked = f"i{cluster}_{WARM + rng.integers(COLD):02d}"
            others = [f"i{c}_{WARM + rng.integers(COLD):02d}" for c in range(CLUSTERS) if c != cluster]
            listed = [liked, *others]
        else:
            listed = [str(rng.choice([w for w in warm if (user, "train", w, 1, "history") not in rows]))]
        order = rng.permutation(len(listed))
        for position, k in enumerate(order):
            item = listed[k]
            rows.append((user, "train", item, int(k == 0), "held_out"))
            candidates.append((user, "train", position, item, int(k == 0)))
    split = pd.DataFrame(rows, columns=["user", "user_set", "item", "liked", "side"])
    return split, pd.DataFrame(candidates, columns=["user", "user_set", "position", "item", "liked"]), items, documents


def validation_ndcg(name: str, documents: list[str], grid: dict) -> float:
    split, candidates, items, _ = planted()
    users = np.array(sorted(split["user"].unique()), dtype=object)
    order = np.argsort(items)
    item_ids = np.array(items, dtype=object)[order]
    knowledge = ItemKnowledge(item_text=[documents[i] for i in order])
    settings = BaselineSettings(seed=3, grid={key: [value] for key, value in grid.items()})
    report = tune(name, split, candidates, users, item_ids, settings, knowledge)
    return float(report["chosen_score"])


FAST = {
    "ctr": {"k": 4, "max_iter": 15, "lambda_v": 10.0},
    "hft": {"k": 4, "max_iter": 10, "grad_iter": 5, "lambda_text": 0.5, "negatives": 3},
}


@pytest.mark.parametrize("name", ["ctr", "hft"])
def test_informative_text_beats_permuted_text(name):
    _, _, items, documents = planted()
    informative = validation_ndcg(name, documents, FAST[name])
    permuted = list(np.random.default_rng(5).permutation(documents))
    shuffled = validation_ndcg(name, permuted, FAST[name])
    assert informative > shuffled + 0.1, (informative, shuffled)


@pytest.mark.parametrize("name", ["ctr", "hft"])
def test_declares_item_text_and_is_seeded(name):
    assert BASELINE_READS[name] == ("item_text",)
    assert name in SEEDED_BASELINES


@pytest.mark.parametrize("name", ["ctr", "hft"])
def test_scores_every_item_including_unliked_ones_and_is_reproducible(name):
    split, _, items, documents = planted()
    users = np.array(sorted(split["user"].unique()), dtype=object)
    item_ids = np.array(items, dtype=object)
    data = build_interactions(training_rows(split), users, item_ids)
    data = Interactions(data.matrix, data.users, data.items, ItemKnowledge(item_text=documents))
    assert (np.asarray(data.matrix.sum(axis=0)).ravel() == 0).any()  # some items nobody liked
    user_index = np.repeat(np.arange(len(users)), len(items))
    item_index = np.tile(np.arange(len(items)), len(users))
    first = get_baseline(name)(data, 7, 1, **FAST[name])(user_index, item_index)
    again = get_baseline(name)(data, 7, 1, **FAST[name])(user_index, item_index)
    assert first.shape == (len(user_index),) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, again)


def test_refuses_missing_or_empty_text():
    split, _, items, _ = planted()
    users = np.array(sorted(split["user"].unique()), dtype=object)
    data = build_interactions(training_rows(split), users, np.array(items, dtype=object))
    with pytest.raises(ValueError, match="one item_text document per item"):
        get_baseline("ctr")(data, 1, 1)
    empty = Interactions(data.matrix, data.users, data.items, ItemKnowledge(item_text=[""] * len(items)))
    with pytest.raises(ValueError, match="every item_text document is empty"):
        get_baseline("hft")(empty, 1, 1)
