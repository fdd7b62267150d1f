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

from dataclasses import dataclass

import pandas as pd

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
