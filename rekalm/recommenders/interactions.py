"""What a recommender learns from: the liked rows every baseline may see, as a binary users x
items matrix, and the scorer type a fitted model returns.

Training data (:func:`training_rows`): every split row except a test user's held-out ones,
i.e. train users' history and held-out sides plus test users' history side. Only *liked*
rows become positive implicit feedback (value 1). Dislikes are left out of training and
treated like unobserved pairs: these models learn from positive-only feedback, and feeding
a dislike as a positive would push disliked items up. A disliked item is still ranked when
it is a candidate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from rekalm.common.tables import SPLIT, require_columns
from rekalm.recommenders.knowledge_inputs import ItemKnowledge

# The split columns a baseline reads (the split's row numbers it does not need).
SPLIT_NEEDED = SPLIT.select("user", "user_set", "item", "liked", "side")
USER_BATCH = 512  # users scored at once: bounds the dense (users x items) score block

PairScorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Validation:
    """The early-stopping channel a fit function gets during tuning (``Interactions.validation``).

    ``score(scorer)`` is the tuning metric (nDCG@``validation_cutoff`` on the validation users'
    candidates) of a scorer, so an iterative model can score itself after every epoch and keep
    its best one. What it chose by validation it writes into ``refit`` (e.g. ``{"max_epochs":
    12}``): the tuning report records it and the final refit, on all training rows and without
    validation, runs with the grid point's parameters updated by it.
    """

    score: Callable[[PairScorer], float]
    refit: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Interactions:
    """Positive feedback as a binary users x items matrix, with the ids of its rows/columns,
    the item knowledge the baseline declared it reads (none for the classical ones) and,
    while tuning, the validation channel for early stopping (:class:`Validation`)."""

    matrix: sparse.csr_matrix
    users: np.ndarray  # row index -> user id
    items: np.ndarray  # column index -> item id
    knowledge: ItemKnowledge = field(default_factory=ItemKnowledge)
    validation: Validation | None = None  # set during tuning only (early stopping)


def rows_scorer(row_scores: Callable[[np.ndarray], np.ndarray]) -> PairScorer:
    """Turn "scores of all items for these users" into a scorer of (user, item) pairs."""

    def score_pairs(user_index: np.ndarray, item_index: np.ndarray) -> np.ndarray:
        scores = np.empty(len(user_index), dtype=np.float64)
        unique_users, inverse = np.unique(user_index, return_inverse=True)
        for start in range(0, len(unique_users), USER_BATCH):
            batch = unique_users[start : start + USER_BATCH]
            block = np.asarray(row_scores(batch), dtype=np.float64)
            in_batch = (inverse >= start) & (inverse < start + len(batch))
            scores[in_batch] = block[inverse[in_batch] - start, item_index[in_batch]]
        return scores

    return score_pairs


def training_rows(split: pd.DataFrame) -> pd.DataFrame:
    """Rows a baseline may learn from: everything but a test user's held-out side."""
    require_columns(split, SPLIT_NEEDED, "split")
    unknown = sorted(set(split["side"]) - {"history", "held_out"})
    if unknown:
        raise ValueError(f"split: side has unexpected value(s) {unknown}; expected 'history' or 'held_out'")
    return split[~((split["user_set"] == "test") & (split["side"] == "held_out"))]


def build_interactions(rows: pd.DataFrame, users: np.ndarray, items: np.ndarray) -> Interactions:
    """Binary users x items matrix of the liked rows (repeated likes count once)."""
    liked = rows[rows["liked"].astype(int) == 1]
    user_index = pd.Index(users).get_indexer(liked["user"].astype(str))
    item_index = pd.Index(items).get_indexer(liked["item"].astype(str))
    matrix = sparse.csr_matrix(
        (np.ones(len(liked), dtype=np.float32), (user_index, item_index)), shape=(len(users), len(items))
    )
    matrix.data[:] = 1.0  # duplicates were summed by the constructor
    return Interactions(matrix=matrix, users=users, items=items)
