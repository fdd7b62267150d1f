"""The item graphs the item-graph-aware baselines read, against hand computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rekalm.recommenders.item_graph import facts_graph, rules_graph


def test_facts_graph_counts_shared_values_and_cuts_common_ones():
    # Items 0..3. (genre, drama) is held by 0, 1, 2; (author, a) by 0, 1; (author, b) by 2, 3;
    # (genre, x) by all four, which the cut (max_value_items=3) removes; (country, it) by 3 only.
    facts = pd.DataFrame(
        [
            (0, "genre", "drama"),
            (1, "genre", "drama"),
            (2, "genre", "drama"),
            (0, "author", "a"),
            (1, "author", "a"),
            (1, "author", "a"),  # a repeated fact counts once
            (2, "author", "b"),
            (3, "author", "b"),
            (0, "genre", "x"),
            (1, "genre", "x"),
            (2, "genre", "x"),
            (3, "genre", "x"),
            (3, "country", "it"),
        ],
        columns=["item_index", "relation", "value"],
    )
    graph = facts_graph(facts, n_items=4, max_value_items=3)
    expected = np.array(
        [
            [0, 2, 1, 0],  # 0-1: drama + a; 0-2: drama
            [2, 0, 1, 0],
            [1, 1, 0, 1],  # 2-3: b
            [0, 0, 1, 0],
        ],
        dtype=float,
    )
    np.testing.assert_array_equal(graph.matrix.toarray(), expected)
    assert graph.stats == {
        "facts": 12,
        "values": 5,
        "values_shared": 4,
        "values_cut": 1,
        "facts_cut": 4,
        "edges": 8,
        "items_linked": 4,
    }
    # Without the cut, (genre, x) links every pair once more.
    uncut = facts_graph(facts, n_items=4, max_value_items=4).matrix.toarray()
    np.testing.assert_array_equal(uncut, expected + (1 - np.eye(4)))


def test_rules_graph_holds_the_rules_confidences():
    rules = pd.DataFrame(
        {
            "antecedent": [[0], [0, 1], [2], [3]],
            "consequent": [[2], [2], [0], [3, 1]],
            "support": [0.1, 0.05, 0.1, 0.2],
            "confidence": [0.4, 0.7, 0.5, 0.9],
        }
    )
    graph = rules_graph(rules, n_items=5)
    expected = np.zeros((5, 5))
    expected[0, 2] = 0.7  # rules 1 and 2 both give 0 -> 2: the larger confidence
    expected[1, 2] = 0.7
    expected[2, 0] = 0.5  # directed: 2 -> 0 keeps its own confidence
    expected[3, 1] = 0.9  # 3 -> 3 is no edge
    np.testing.assert_array_equal(graph.matrix.toarray(), expected)
    assert graph.stats == {"rules": 4, "item_pairs": 6, "edges": 4, "items_linked": 4}


def test_indices_outside_the_items_are_refused():
    facts = pd.DataFrame({"item_index": [0, 4], "relation": ["r", "r"], "value": ["v", "v"]})
    with pytest.raises(ValueError, match=r"item_facts: item index out of range \[0, 4\)"):
        facts_graph(facts, n_items=4)
    rules = pd.DataFrame({"antecedent": [[-1]], "consequent": [[0]], "support": [0.1], "confidence": [0.5]})
    with pytest.raises(ValueError, match="item_rules: item index out of range"):
        rules_graph(rules, n_items=4)
