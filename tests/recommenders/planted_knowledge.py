"""A small world whose item facts are informative, for the knowledge controls (issue 24,
point 4): a knowledge-aware baseline must rank better with these facts than with the same
facts permuted across items, or it ignores its input.

Items fall into clusters; every user likes items of one cluster only. Each item's facts
name its cluster (genre) and a sub-group of it (author), so items sharing a fact are items
the same users like. Interactions are sparse (two training likes per user, every item liked
by a few users), so collaborative signal alone leaves room for the facts to help.
Validation users hold out three likes of their cluster; their candidates are those plus
items of other clusters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from rekalm.evaluation.baselines import mean_ndcg, rank_candidates, score_candidates
from rekalm.recommenders.interactions import Interactions
from rekalm.recommenders.knowledge_inputs import ItemKnowledge

CLUSTERS, ITEMS_PER_CLUSTER, USERS, VALIDATION_USERS = 8, 12, 240, 60
TRAIN_LIKES, HELD_OUT_LIKES, OTHER_CANDIDATES = 2, 3, 12


def planted_world(seed: int = 0) -> tuple[Interactions, pd.DataFrame, pd.DataFrame]:
    """(training interactions without knowledge, informative facts, validation candidates)."""
    rng = np.random.default_rng(seed)
    n_items = CLUSTERS * ITEMS_PER_CLUSTER
    cluster_of_item = np.repeat(np.arange(CLUSTERS), ITEMS_PER_CLUSTER)
    cluster_of_user = np.arange(USERS) % CLUSTERS
    rows, columns, candidates = [], [], []
    for user in range(USERS):
        own = rng.permutation(np.flatnonzero(cluster_of_item == cluster_of_user[user]))
        rows += [user] * TRAIN_LIKES
        columns += own[:TRAIN_LIKES].tolist()
        if user < VALIDATION_USERS:
            others = rng.choice(np.flatnonzero(cluster_of_item != cluster_of_user[user]), OTHER_CANDIDATES, False)
            held_out = own[TRAIN_LIKES : TRAIN_LIKES + HELD_OUT_LIKES]
            listed = rng.permutation(np.concatenate([held_out, others]))
            candidates += [
                {"user": f"u{user}", "item": f"i{item}", "position": position, "liked": int(item in held_out)}
                for position, item in enumerate(listed)
            ]
    matrix = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, columns)), shape=(USERS, n_items))
    users = np.array([f"u{n}" for n in range(USERS)], dtype=object)
    items = np.array([f"i{n}" for n in range(n_items)], dtype=object)
    facts = pd.DataFrame(
        {
            "item_index": np.concatenate([np.arange(n_items), np.arange(n_items)]),
            "relation": ["genre"] * n_items + ["author"] * n_items,
            "value": [f"g{c}" for c in cluster_of_item] + [f"a{i // 4}" for i in range(n_items)],
        }
    )
    return Interactions(matrix=matrix, users=users, items=items), facts, pd.DataFrame(candidates)


def planted_rules() -> pd.DataFrame:
    """Association rules between items of one author group (i -> j, confidence 0.5), as
    rules mined from users who like one cluster would link them."""
    groups = np.arange(CLUSTERS * ITEMS_PER_CLUSTER) // 4
    pairs = [(i, j) for i in range(len(groups)) for j in range(len(groups)) if i != j and groups[i] == groups[j]]
    return pd.DataFrame(
        {
            "antecedent": [[i] for i, _ in pairs],
            "consequent": [[j] for _, j in pairs],
            "support": 0.01,
            "confidence": 0.5,
        }
    )


def permuted_rules(rules: pd.DataFrame, n_items: int, seed: int = 1) -> pd.DataFrame:
    """The same rules with every item replaced by its image under a permutation of items."""
    permutation = np.random.default_rng(seed).permutation(n_items)
    return rules.assign(
        antecedent=[permutation[items].tolist() for items in rules["antecedent"]],
        consequent=[permutation[items].tolist() for items in rules["consequent"]],
    )


def permuted_facts(facts: pd.DataFrame, n_items: int, seed: int = 1) -> pd.DataFrame:
    """The same facts, each item's set handed to another item (a permutation of items)."""
    permutation = np.random.default_rng(seed).permutation(n_items)
    return facts.assign(item_index=permutation[facts["item_index"].to_numpy()])


def validation_ndcg(
    fit: Callable[..., Any], data: Interactions, knowledge: ItemKnowledge, candidates: pd.DataFrame, **params: Any
) -> float:
    """nDCG@10 of the validation candidates, as the baselines stage tunes on it."""
    with_knowledge = Interactions(matrix=data.matrix, users=data.users, items=data.items, knowledge=knowledge)
    scorer = fit(with_knowledge, 7, 1, **params)
    ranked = rank_candidates(candidates, score_candidates(scorer, with_knowledge, candidates))
    return mean_ndcg(ranked, 10)
