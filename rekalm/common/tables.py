"""The inter-stage tables: each one's columns (in order), fixed dtypes, and the one column check.

Every parquet file one stage writes and another reads is declared here once, so a stage
imports its columns instead of spelling them out::

    interactions  user, item, liked, timestamp                   prepare -> split
    items         item, name, year, genres, dbpedia_uri, ...     prepare -> lookup_dbpedia, build_sets
    split         user, user_set, item, liked, side, row         split -> mine_rules, build_sets, baselines, evaluate
    candidates    user, user_set, position, item, liked          split -> build_sets, baselines, evaluate
    predictions   user, item, rank, score, source                infer, baselines -> evaluate, compare
    rules         antecedent, consequent, support, confidence, lift   mine_rules -> lexicalize
    mapping       item, dbpedia_uri, how                         lookup_dbpedia
    triples       item, relation, value, source                  lookup_dbpedia -> lexicalize
    abstracts     item, abstract                                 lookup_dbpedia -> lexicalize

A reader that needs only some columns names them with :meth:`Table.select`, which refuses a
column the table does not have, so a renamed column cannot be required under its old name.

Worked example of the check::

    >>> import pandas as pd
    >>> split = pd.DataFrame({"user": ["u1"], "item": ["i1"]})
    >>> require_columns(split, SPLIT.select("user", "side"), "split.parquet")
    Traceback (most recent call last):
    ...
    ValueError: split.parquet: missing column(s) ['side']; expected ['user', 'side'], found ['user', 'item']

The ``score`` of a prediction is derived from its rank (:func:`rank_scores`): the i-th of n
items (1-based) scores ``1 - (i - 1) / n``, distinct within a user, so ranx reproduces the
order of ``rank`` exactly even where a model's raw scores tie.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from rekalm.common.parse_counts import PARSE_COUNT_COLUMNS


@dataclass(frozen=True)
class Table:
    """One inter-stage table: its name (the file stem), its columns in order, fixed dtypes."""

    name: str
    columns: tuple[str, ...]
    dtypes: Mapping[str, Any] = field(default_factory=dict)

    def select(self, *names: str) -> tuple[str, ...]:
        """Some of this table's columns, for a reader that needs only those."""
        unknown = [name for name in names if name not in self.columns]
        if unknown:
            raise KeyError(f"table {self.name!r} has no column(s) {unknown}; its columns are {list(self.columns)}")
        return names

    def empty(self) -> pd.DataFrame:
        """A zero-row frame with this table's columns and dtypes: an empty output keeps its schema."""
        return pd.DataFrame({column: pd.Series([], dtype=self.dtypes[column]) for column in self.columns})


def require_columns(
    frame: pd.DataFrame | pa.Table, columns: Table | Iterable[str], where: str | os.PathLike[str]
) -> None:
    """Fail with one line naming ``where`` and the missing columns unless ``frame`` has all of ``columns``."""
    expected = list(columns.columns if isinstance(columns, Table) else columns)
    present = list(frame.column_names if isinstance(frame, pa.Table) else frame.columns)
    missing = sorted(set(expected) - set(present))
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; expected {expected}, found {present}")


INTERACTIONS = Table("interactions", ("user", "item", "liked", "timestamp"))
# Format-specific attribute columns (BoardGameGeek: mechanics, min_players, ...) follow these.
ITEMS = Table("items", ("item", "name", "year", "genres", "dbpedia_uri"))
SPLIT = Table(
    "split",
    ("user", "user_set", "item", "liked", "side", "row"),
    {"user": str, "user_set": str, "item": str, "liked": "int8", "side": str, "row": "int64"},
)
CANDIDATES = Table(
    "candidates",
    ("user", "user_set", "position", "item", "liked"),
    {"user": str, "user_set": str, "position": "int32", "item": str, "liked": "int8"},
)
PREDICTIONS = Table("predictions", ("user", "item", "rank", "score", "source"))
# Per user, how many candidates the prompt lost to the context limit or the answer budget.
CONTEXT_COUNT_COLUMNS = ("n_context_cut", "n_budget_cut")
# An LLM's predictions carry each user's parse and context counts (repeated on every row).
LLM_PREDICTIONS = Table("predictions", (*PREDICTIONS.columns, *PARSE_COUNT_COLUMNS, *CONTEXT_COUNT_COLUMNS))
# Written with this Arrow schema: an empty table must still say list<string>, not null.
RULES_SCHEMA = pa.schema(
    [
        ("antecedent", pa.list_(pa.string())),
        ("consequent", pa.list_(pa.string())),
        ("support", pa.float64()),
        ("confidence", pa.float64()),
        ("lift", pa.float64()),
    ]
)
RULES = Table("rules", tuple(RULES_SCHEMA.names))
MAPPING = Table("mapping", ("item", "dbpedia_uri", "how"), dict.fromkeys(("item", "dbpedia_uri", "how"), "str"))
TRIPLES = Table(
    "triples", ("item", "relation", "value", "source"), dict.fromkeys(("item", "relation", "value", "source"), "str")
)
ABSTRACTS = Table("abstracts", ("item", "abstract"), dict.fromkeys(("item", "abstract"), "str"))


def rank_scores(ranks: np.ndarray, count: int) -> np.ndarray:
    """The ``score`` column of predictions: 1 - (rank - 1) / count (the original's 1 - i/len)."""
    return 1.0 - (ranks - 1) / max(count, 1)


def run_from_predictions(predictions: pd.DataFrame) -> dict[str, dict[str, float]]:
    """ranx Run as a dict {user: {item: score}} with the rank scores of the predictions
    contract (distinct per user), so ranx reproduces exactly the order in ``rank`` even where
    a model's raw scores tie."""
    run: dict[str, dict[str, float]] = {}
    for user, group in predictions.groupby("user", sort=True):
        ranks = group["rank"].to_numpy()
        run[str(user)] = {
            str(item): float(score) for item, score in zip(group["item"], rank_scores(ranks, len(ranks)))
        }
    return run
