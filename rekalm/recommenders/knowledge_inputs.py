"""The knowledge a baseline may read, aligned with the interaction matrix's item indices.

A knowledge-aware baseline declares what it reads (``register_baseline(..., reads=...)``):

===============  =====================================================  =========================
kind             what the fit function gets (``data.knowledge.<kind>``)  built from
===============  =====================================================  =========================
``item_text``    one document per item index ("" where an item has none)  a lexicalized source's
                                                                           ``<source>.jsonl``
``item_facts``   rows (item_index, relation, value)                      ``triples.parquet``
``item_rules``   rows (antecedent item indices, consequent item indices,  ``rules.parquet``
                 support, confidence)
===============  =====================================================  =========================

Every kind is about items, never about a user: facts and documents describe an item; rules
are mined from train users' history only. Nothing a test user holds out can reach them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from rekalm.common.io import read_jsonl, read_parquet
from rekalm.common.tables import RULES, TRIPLES, require_columns

log = logging.getLogger(__name__)

#: The kinds of knowledge a baseline may declare in ``reads``.
KNOWLEDGE_KINDS = ("item_text", "item_facts", "item_rules")


@dataclass(frozen=True)
class ItemKnowledge:
    """What a baseline declared it reads; the kinds it did not declare are None."""

    item_text: list[str] | None = None  # index = item index of Interactions.items
    item_facts: pd.DataFrame | None = None  # columns item_index (int), relation (str), value (str)
    item_rules: pd.DataFrame | None = (
        None  # columns antecedent, consequent (lists of item indices), support, confidence
    )


#: Which knowledge source provides each kind (``datasets.<name>.knowledge.<source>``), for the
#: kinds whose source is fixed; ``item_text`` names its sources in ``baselines.knowledge``.
KIND_SOURCES = {"item_facts": "graph", "item_rules": "collab"}


def item_text_documents(rows: Iterable[Mapping[str, Any]], items: np.ndarray) -> list[str]:
    """One document per item index from an item-keyed lexicalized source's rows
    (``{"item": id, "text": ...}``): an item's rows joined in file order, "" where none.
    Rows about items outside ``items`` (never rated in the split) are left out."""
    index = pd.Index(items)
    parts: list[list[str]] = [[] for _ in range(len(items))]
    for number, row in enumerate(rows, start=1):
        if "item" not in row or "text" not in row:
            raise ValueError(
                f"item_text: row {number} has keys {sorted(row)}; expected an item-keyed source's "
                '{"item": id, "text": ...} (the collab source is keyed by rule, not by item)'
            )
        position = index.get_indexer([str(row["item"])])[0]
        if position >= 0 and str(row["text"]).strip():
            parts[position].append(str(row["text"]).strip())
    return [" ".join(texts) for texts in parts]


def item_facts_table(triples: pd.DataFrame, items: np.ndarray) -> pd.DataFrame:
    """``triples.parquet`` rows (item, relation, value) as (item_index, relation, value),
    distinct, for the items of ``items``."""
    require_columns(triples, TRIPLES.select("item", "relation", "value"), "item_facts")
    position = pd.Index(items).get_indexer(triples["item"].astype(str))
    facts = pd.DataFrame(
        {
            "item_index": position.astype(np.int64),
            "relation": triples["relation"].astype(str).to_numpy(),
            "value": triples["value"].astype(str).to_numpy(),
        }
    )
    return facts[facts["item_index"] >= 0].drop_duplicates().reset_index(drop=True)


def item_rules_table(rules: pd.DataFrame, items: np.ndarray) -> pd.DataFrame:
    """``rules.parquet`` rows with antecedent/consequent as lists of item indices; a rule
    naming an item outside ``items`` is left out (mine_rules only sees rated items, so none
    is expected)."""
    require_columns(rules, RULES.select("antecedent", "consequent", "support", "confidence"), "item_rules")
    index = pd.Index(items)

    def indices(values: Iterable[Any]) -> list[int]:
        return [int(i) for i in index.get_indexer([str(v) for v in values])]

    antecedent = [indices(values) for values in rules["antecedent"]]
    consequent = [indices(values) for values in rules["consequent"]]
    keep = [min(a + c, default=-1) >= 0 for a, c in zip(antecedent, consequent)]
    table = pd.DataFrame(
        {
            "antecedent": antecedent,
            "consequent": consequent,
            "support": rules["support"].astype(float).to_numpy(),
            "confidence": rules["confidence"].astype(float).to_numpy(),
        }
    )
    return table[keep].reset_index(drop=True)


def load_item_knowledge(
    reads: Sequence[str], paths: Mapping[str, str | os.PathLike[str]], items: np.ndarray, baseline: str = "baseline"
) -> ItemKnowledge:
    """The knowledge a baseline declared it reads, from the workflow's files (``paths``:
    kind -> file: the lexicalized jsonl for item_text, triples.parquet, rules.parquet),
    aligned with ``items``. It reads those files only: no split, so no user's rows."""
    missing = [kind for kind in reads if kind not in paths]
    if missing:
        raise ValueError(f"baseline {baseline!r} reads {list(reads)} but got no file for {missing}")
    loaded: dict[str, Any] = {}
    if "item_text" in reads:
        documents = item_text_documents(read_jsonl(paths["item_text"]), items)
        loaded["item_text"] = documents
        log.info("%s: item_text: %d of %d items have a document", baseline, sum(map(bool, documents)), len(items))
    if "item_facts" in reads:
        facts = item_facts_table(read_parquet(paths["item_facts"]), items)
        loaded["item_facts"] = facts
        log.info(
            "%s: item_facts: %d facts about %d of %d items",
            baseline,
            len(facts),
            facts["item_index"].nunique(),
            len(items),
        )
    if "item_rules" in reads:
        # pyarrow, not mine_rules.read_rules: importing mine_rules would bring its mining
        # engines (efficient-apriori, mlxtend) into the baselines env.
        columns = list(RULES.select("antecedent", "consequent", "support", "confidence"))
        table = pq.read_table(paths["item_rules"], columns=columns).to_pydict()
        rules = item_rules_table(pd.DataFrame(table), items)
        loaded["item_rules"] = rules
        log.info("%s: item_rules: %d rules", baseline, len(rules))
    return ItemKnowledge(**loaded)
