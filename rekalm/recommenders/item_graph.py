"""Item-item graphs built from the knowledge a baseline reads, over ``Interactions.items``'
indices (a square scipy CSR matrix, no self-loops), for the item-graph-aware baselines
(:mod:`rekalm.recommenders.graph_aware`).

From facts (:func:`facts_graph`): two items are linked when they share a (relation, value),
weight = the number of (relation, value) pairs they share; symmetric.

Very common values are *cut*, not down-weighted: a (relation, value) held by more than
``max_value_items`` items links no one. An IDF weight would still draw an edge between every
pair of items holding the value, so the edge count stays quadratic in the value's frequency
(a genre on 3,000 of DBbook's 6,000 books alone gives 9 million edges, more than the cornac
models can iterate over per epoch); the cut bounds the edges a value adds by
``max_value_items``^2 and keeps the weight an honest count. The values cut are counted.

From association rules (:func:`rules_graph`): every antecedent item -> consequent item of a
rule, weight = the rule's confidence; directed (a rule's confidence is), the largest
confidence where several rules link the same pair.

Both only read item-side knowledge (facts describe an item; rules are mined from train
users' history), so nothing a test user holds out enters a graph.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemGraph:
    """A square items x items graph and what building it counted."""

    matrix: sparse.csr_matrix
    stats: dict[str, int]


def _check_indices(indices: np.ndarray, n_items: int, what: str) -> None:
    if len(indices) and (indices.min() < 0 or indices.max() >= n_items):
        raise ValueError(f"{what}: item index out of range [0, {n_items}) (expected Interactions.items' indices)")


def facts_graph(facts: pd.DataFrame, n_items: int, max_value_items: int = 100) -> ItemGraph:
    """Items linked by the (relation, value) pairs they share (see the module docstring).

    ``facts``: columns item_index, relation, value (ItemKnowledge.item_facts); a fact repeated
    counts once. ``max_value_items``: a value held by more items than this is cut.
    """
    if max_value_items < 2:
        raise ValueError(f"max_value_items: expected an integer >= 2 (a value links two items), got {max_value_items}")
    facts = facts[["item_index", "relation", "value"]].drop_duplicates()
    items = facts["item_index"].to_numpy(dtype=np.int64)
    _check_indices(items, n_items, "item_facts")
    value_index = facts.groupby(["relation", "value"], sort=False).ngroup().to_numpy()
    n_values = int(value_index.max()) + 1 if len(value_index) else 0
    holders = np.bincount(value_index, minlength=n_values)
    kept = holders[value_index] <= max_value_items
    # item x value incidence; its Gram matrix counts the values each pair shares.
    incidence = sparse.csr_matrix(
        (np.ones(int(kept.sum()), dtype=np.float64), (items[kept], value_index[kept])), shape=(n_items, n_values)
    )
    shared = (incidence @ incidence.T).tocsr()
    shared.setdiag(0)
    shared.eliminate_zeros()
    stats = {
        "facts": len(facts),
        "values": n_values,
        "values_shared": int((holders >= 2).sum()),
        "values_cut": int((holders > max_value_items).sum()),
        "facts_cut": int((~kept).sum()),
        "edges": int(shared.nnz),  # both directions of each link
        "items_linked": int((shared.getnnz(axis=1) > 0).sum()),
    }
    log.info("item graph from facts: %s", stats)
    return ItemGraph(matrix=shared, stats=stats)


def rules_graph(rules: pd.DataFrame, n_items: int) -> ItemGraph:
    """Antecedent item -> consequent item for every rule, weight = confidence (the largest
    where several rules link a pair); ``rules``: ItemKnowledge.item_rules."""
    pairs = rules[["antecedent", "consequent", "confidence"]].explode("antecedent").explode("consequent")
    pairs = pairs.dropna(subset=["antecedent", "consequent"])
    source = pairs["antecedent"].to_numpy(dtype=np.int64)
    target = pairs["consequent"].to_numpy(dtype=np.int64)
    confidence = pairs["confidence"].to_numpy(dtype=np.float64)
    _check_indices(np.concatenate([source, target]), n_items, "item_rules")
    distinct = source != target
    best = (
        pd.DataFrame({"source": source[distinct], "target": target[distinct], "confidence": confidence[distinct]})
        .groupby(["source", "target"], sort=True)["confidence"]
        .max()
        .reset_index()
    )
    matrix = sparse.csr_matrix(
        (best["confidence"].to_numpy(), (best["source"].to_numpy(), best["target"].to_numpy())),
        shape=(n_items, n_items),
    )
    linked = (matrix.getnnz(axis=1) > 0) | (matrix.getnnz(axis=0) > 0)
    stats = {
        "rules": len(rules),
        "item_pairs": len(pairs),
        "edges": int(matrix.nnz),
        "items_linked": int(linked.sum()),
    }
    log.info("item graph from rules: %s", stats)
    return ItemGraph(matrix=matrix, stats=stats)
