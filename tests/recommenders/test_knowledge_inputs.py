"""The item knowledge a baseline reads (rekalm.recommenders.knowledge_inputs): built from
the workflow's files, aligned with the interaction matrix's item indices, only the kinds the
baseline declared, and from train-side data only (no test user's held-out item enters)."""

from __future__ import annotations

import inspect
import json
import logging

import numpy as np
import pandas as pd
import pytest

from rekalm.common.io import write_parquet
from rekalm.evaluation.baselines import BaselineSettings, run_baseline
from rekalm.knowledge.mine_rules import RuleMiningSettings, mine_rules, train_transactions, write_rules
from rekalm.recommenders import registry
from rekalm.recommenders.knowledge_inputs import (
    KNOWLEDGE_KINDS,
    item_facts_table,
    item_rules_table,
    item_text_documents,
    load_item_knowledge,
)

ITEMS = np.array(["a", "b", "c", "d"], dtype=object)


def test_documents_are_aligned_joined_in_file_order_and_empty_where_none():
    rows = [
        {"item": "c", "text": "C is a film."},
        {"item": "zzz", "text": "never rated"},
        {"item": "a", "text": "A first."},
        {"item": "c", "text": "C again."},
    ]
    assert item_text_documents(rows, ITEMS) == ["A first.", "", "C is a film. C again.", ""]


def test_a_rule_keyed_source_is_no_item_text():
    with pytest.raises(ValueError, match="keyed by rule"):
        item_text_documents([{"rule": "r0", "antecedent": ["a"], "text": "..."}], ITEMS)


def test_facts_and_rules_carry_item_indices():
    triples = pd.DataFrame(
        {
            "item": ["b", "b", "b", "zzz"],
            "relation": ["genre", "genre", "year", "genre"],
            "value": ["Drama", "Drama", "1999", "Noir"],
            "source": "attributes",
        }
    )
    facts = item_facts_table(triples, ITEMS)
    assert facts.to_dict("list") == {"item_index": [1, 1], "relation": ["genre", "year"], "value": ["Drama", "1999"]}
    rules = pd.DataFrame(
        {
            "antecedent": [["a", "c"], ["zzz"]],
            "consequent": [["d"], ["a"]],
            "support": [0.5, 0.1],
            "confidence": [0.8, 0.2],
            "lift": [1.0, 1.0],
        }
    )
    table = item_rules_table(rules, ITEMS)
    assert table.to_dict("list") == {
        "antecedent": [[0, 2]],
        "consequent": [[3]],
        "support": [0.5],
        "confidence": [0.8],
    }


def knowledge_files(tmp_path, items_in_rules=("a", "b")):
    (tmp_path / "text.jsonl").write_text(
        "\n".join(json.dumps({"item": item, "text": f"about {item}"}) for item in ("a", "d")) + "\n"
    )
    write_parquet(
        pd.DataFrame({"item": ["a"], "relation": ["genre"], "value": ["Drama"], "source": ["attributes"]}),
        tmp_path / "triples.parquet",
    )
    write_parquet(
        pd.DataFrame(
            {
                "antecedent": [[items_in_rules[0]]],
                "consequent": [[items_in_rules[1]]],
                "support": [0.5],
                "confidence": [1.0],
                "lift": [1.0],
            }
        ),
        tmp_path / "rules.parquet",
    )
    return {
        "item_text": tmp_path / "text.jsonl",
        "item_facts": tmp_path / "triples.parquet",
        "item_rules": tmp_path / "rules.parquet",
    }


def test_only_the_declared_kinds_are_loaded_and_counted(tmp_path, caplog):
    paths = knowledge_files(tmp_path)
    with caplog.at_level(logging.INFO, logger="rekalm.recommenders.knowledge_inputs"):
        knowledge = load_item_knowledge(("item_text",), paths, ITEMS, "toy")
    assert knowledge.item_text == ["about a", "", "", "about d"]
    assert knowledge.item_facts is None and knowledge.item_rules is None
    assert "toy: item_text: 2 of 4 items have a document" in caplog.text
    with caplog.at_level(logging.INFO, logger="rekalm.recommenders.knowledge_inputs"):
        everything = load_item_knowledge(KNOWLEDGE_KINDS, paths, ITEMS, "toy")
    assert len(everything.item_facts) == 1 and len(everything.item_rules) == 1
    assert "toy: item_facts: 1 facts about 1 of 4 items" in caplog.text and "toy: item_rules: 1 rules" in caplog.text
    with pytest.raises(ValueError, match=r"got no file for \['item_rules'\]"):
        load_item_knowledge(("item_text", "item_rules"), {"item_text": paths["item_text"]}, ITEMS, "toy")


# --- train-side only -----------------------------------------------------------------------

SECRET = "secret"  # the item only test users hold out


def leaky_split() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train users like a, b, c; two test users like a, b and hold out SECRET. Mining the
    test users' held-out rows would make {a, b} -> SECRET a rule at these thresholds."""
    rows, candidates = [], []
    for n in range(6):
        user = f"t{n}"
        for item in ("a", "b", "c"):
            rows.append((user, "train", item, 1, "history"))
        rows.append((user, "train", "d", 1, "held_out"))
        candidates.append((user, "train", 0, "d", 1))
        candidates.append((user, "train", 1, "c", 0))
    for n in range(2):
        user = f"x{n}"
        rows += [(user, "test", "a", 1, "history"), (user, "test", "b", 1, "history")]
        rows += [(user, "test", SECRET, 1, "held_out"), (user, "test", "c", 0, "held_out")]
        candidates += [(user, "test", 0, SECRET, 1), (user, "test", 1, "c", 0)]
    split = pd.DataFrame(rows, columns=["user", "user_set", "item", "liked", "side"])
    return split, pd.DataFrame(candidates, columns=["user", "user_set", "position", "item", "liked"])


@pytest.fixture
def spy_baseline():
    saved = (dict(registry.BASELINES), set(registry.SEEDED_BASELINES), dict(registry.BASELINE_READS))
    calls = []

    @registry.register_baseline("spy", reads=KNOWLEDGE_KINDS)
    def fit_spy(data, seed, threads):
        calls.append(data)
        return lambda user_index, item_index: np.zeros(len(user_index))

    yield calls
    for live, old in zip((registry.BASELINES, registry.SEEDED_BASELINES, registry.BASELINE_READS), saved):
        live.clear()
        live.update(old)


def test_knowledge_and_interactions_never_hold_a_test_users_held_out_item(tmp_path, spy_baseline):
    split, candidates = leaky_split()
    # The rules as mine_rules makes them: from train users' history only.
    rules = mine_rules(train_transactions(split), RuleMiningSettings(min_support=0.1, min_confidence=0.1, max_len=3))
    assert len(rules) and not any(SECRET in [*a, *c] for a, c in zip(rules["antecedent"], rules["consequent"]))
    write_rules(rules, tmp_path / "mined.parquet")
    paths = {**knowledge_files(tmp_path), "item_rules": tmp_path / "mined.parquet"}
    # Building the knowledge is given files and item ids, never the split.
    assert "split" not in inspect.signature(load_item_knowledge).parameters

    run_baseline("spy", split, candidates, BaselineSettings(validation_fraction=0.5), paths)

    assert len(spy_baseline) == 2  # one tuning fit (one grid point), one refit
    for data in spy_baseline:
        secret = list(data.items).index(SECRET)  # a candidate, so it has a column
        assert data.matrix[:, secret].nnz == 0  # no test user's held-out like is a training positive
        assert not any(
            secret in [*a, *c]
            for a, c in zip(data.knowledge.item_rules["antecedent"], data.knowledge.item_rules["consequent"])
        )
        assert data.knowledge.item_text[list(data.items).index("a")] == "about a"
        assert set(data.knowledge.item_facts.columns) == {"item_index", "relation", "value"}  # about items only


def test_a_knowledge_reading_baseline_without_its_files_is_refused(spy_baseline):
    split, candidates = leaky_split()
    with pytest.raises(ValueError, match=r"baseline 'spy' reads .* got no file"):
        run_baseline("spy", split, candidates, BaselineSettings())
