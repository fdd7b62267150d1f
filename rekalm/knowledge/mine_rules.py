"""Association rules for the ``collab`` knowledge source: settings, transactions, the engine
registry (:data:`ENGINES`, :func:`register_engine`), the rule table and its file.

Transactions are the liked *history-side* items of TRAIN users only: one transaction per
train user, in order of first appearance in ``split.parquet``; a train user with no liked
history item still counts as an (empty) transaction, because the original's support
denominator is the number of train users. Held-out items and test users never enter.

Rule semantics are those of efficient-apriori, the engine the original study used:

- itemsets of up to ``max_len`` items (8 by default);
- every split of a frequent itemset ``I`` into a non-empty antecedent ``A`` and a
  non-empty consequent ``C = I - A`` is a candidate rule, so consequents of ANY size;
- support = count(I) / n, confidence = count(I) / count(A),
  lift = (count(I) / n) / (count(A) * count(C) / n**2), n = number of transactions;
- an itemset is frequent when ``count / n >= min_support`` and a rule is kept when
  ``count(I) / count(A) >= min_confidence``, both as one float division of integers.

Confidence threshold, documented tolerance: we divide the integer counts once, so a rule
whose exact ratio equals the threshold (1/20 at 0.05) rounds to the threshold's own
double and is kept, as efficient-apriori keeps it. mlxtend recomputes confidence from
supports that were already rounded, ``((c/n)*n) / ((cA/n)*n)``, which can land one ulp
below the threshold and drop such rules (measured: 12 of ~115 ML-1M-like rules sit
exactly at 0.05). Engines that work on rounded supports are therefore run with
both thresholds lowered by :data:`THRESHOLD_RTOL` (relative 1e-9: far more than their
few-ulp rounding error, so they lose nothing) and their output is re-filtered on the
exact integer counts (which removes whatever the slack let in), so every engine returns
the identical rule set with identical float values.

Engines (``engine`` in config; all return the same table):

- ``bitset`` (default): vertical Apriori (:mod:`rekalm.knowledge.bitset_apriori`). Items are bitsets over
  transactions; pair counts come from one sparse matrix product, longer itemsets from
  AND + popcount over prefix-sharing pairs, and rules from vectorised subset look-ups.
  Hand-written because no maintained package on PyPI gives efficient-apriori's rule set
  fast: pyfim's rule mode yields single-item consequents only (its last release is a
  2020 sdist that needs a C compiler); mlxtend's fpgrowth is ~30x slower on ML-1M and its
  apriori materialises a transactions x candidates x k boolean array (GBs).
- ``efficient_apriori``: the original's engine (pure Python, slow; the semantic reference).
- ``mlxtend_fpgrowth``, ``mlxtend_apriori``, ``mlxtend_apriori_low_memory``: mlxtend,
  the project's declared dependency, kept as the independent reference in tests.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from rekalm.common.io import atomic_path, read_parquet
from rekalm.common.registry import register
from rekalm.common.tables import RULES, RULES_SCHEMA, SPLIT, require_columns
from rekalm.knowledge.bitset_apriori import frequent_itemsets_bitset, rules_from_itemsets
from rekalm.knowledge.rule_counts import RuleCounts, from_code_tuples

log = logging.getLogger(__name__)

# Relative slack for engines that compare rounded supports with the thresholds; see the
# module docstring. Their output is re-filtered on exact integer counts afterwards.
THRESHOLD_RTOL = 1e-9
# The split columns rule mining reads (the split's row numbers it does not need).
_SPLIT_NEEDED = SPLIT.select("user", "user_set", "item", "liked", "side")


@dataclass(frozen=True)
class RuleMiningSettings:
    """``datasets.<name>.knowledge.collab`` in config.yaml."""

    min_support: float
    min_confidence: float
    max_len: int = 8
    max_rules_per_consequent: int | None = None
    engine: str = "bitset"

    def __post_init__(self) -> None:
        where = "knowledge.collab"
        if not (isinstance(self.min_support, (int, float)) and 0 < self.min_support <= 1):
            raise ValueError(f"{where}.min_support: expected a number in (0, 1], got {self.min_support!r}")
        if not (isinstance(self.min_confidence, (int, float)) and 0 <= self.min_confidence <= 1):
            raise ValueError(f"{where}.min_confidence: expected a number in [0, 1], got {self.min_confidence!r}")
        if isinstance(self.max_len, bool) or not isinstance(self.max_len, int) or self.max_len < 1:
            raise ValueError(f"{where}.max_len: expected an integer >= 1, got {self.max_len!r}")
        cap = self.max_rules_per_consequent
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f"{where}.max_rules_per_consequent: expected null or an integer >= 1, got {cap!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"{where}.engine: expected one of {sorted(ENGINES)}, got {self.engine!r}")


# --------------------------------------------------------------------------- transactions


def load_split(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``split.parquet`` and check the columns and values rule mining relies on."""
    split = read_parquet(path, required=_SPLIT_NEEDED)
    checks: dict[str, set[object]] = {"user_set": {"train", "test"}, "side": {"history", "held_out"}, "liked": {0, 1}}
    for column, allowed in checks.items():
        unexpected = set(pd.unique(split[column])) - allowed
        if unexpected:
            raise ValueError(
                f"{path}: column {column!r} has {sorted(map(str, unexpected))[:5]}; expected "
                f"{sorted(map(str, allowed))}"
            )
    return split


def train_transactions(split: pd.DataFrame) -> list[list[str]]:
    """Liked history items of every train user, one sorted list per user (possibly empty).

    Users come in order of first appearance; test users and held-out items never enter.
    """
    train = split[split["user_set"] == "train"]
    users = pd.unique(train["user"])
    liked_history = train[(train["side"] == "history") & (train["liked"] == 1)]
    user_rows = pd.Categorical(liked_history["user"], categories=users).codes
    items = liked_history["item"].to_numpy(dtype=object)
    order = np.argsort(user_rows, kind="stable")
    bounds = np.searchsorted(user_rows[order], np.arange(len(users) + 1))
    grouped = items[order]
    return [sorted(set(grouped[bounds[u] : bounds[u + 1]])) for u in range(len(users))]


@dataclass(frozen=True)
class EncodedTransactions:
    """Transactions as a sparse boolean matrix (transactions x items).

    ``items`` is sorted, so ascending item codes are ascending item ids: a sorted code
    tuple decodes to a sorted id list without another sort.
    """

    matrix: sp.csr_matrix
    items: np.ndarray

    @property
    def n_transactions(self) -> int:
        return self.matrix.shape[0]


def encode_transactions(transactions: Sequence[Iterable[str]]) -> EncodedTransactions:
    listed: list[Sequence[str]] = [t if isinstance(t, (list, tuple)) else list(t) for t in transactions]
    lengths = np.fromiter(map(len, listed), dtype=np.int64, count=len(listed))
    flat = pa.array(itertools.chain.from_iterable(listed), type=pa.string())
    # Arrow's dictionary encoding + a sort of the distinct ids is ~3x faster than
    # pandas.factorize(sort=True) on Python strings; UTF-8 byte order = str order.
    encoded = flat.dictionary_encode()
    by_name = pc.sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(by_name), dtype=np.int64)
    rank[by_name] = np.arange(len(by_name))
    codes = rank[encoded.indices.to_numpy(zero_copy_only=False)] if len(flat) else np.zeros(0, dtype=np.int64)
    items = encoded.dictionary.take(pa.array(by_name, type=pa.int64())).to_numpy(zero_copy_only=False).astype(object)
    rows = np.repeat(np.arange(len(listed)), lengths)
    matrix = sp.csr_matrix((np.ones(len(codes), dtype=bool), (rows, codes)), shape=(len(listed), len(items)))
    matrix.sum_duplicates()  # a repeated item in one transaction counts once
    matrix.data[:] = True
    return EncodedTransactions(matrix=matrix, items=items)


def min_count_for(min_support: float, n_transactions: int) -> int:
    """Smallest count c with ``c / n >= min_support`` under float division, as efficient-apriori tests it."""
    count = max(1, math.ceil(min_support * n_transactions) - 2)
    while count / n_transactions < min_support:
        count += 1
    return count


# --------------------------------------------------------------------------- rule tables


def rule_table(rules: RuleCounts, items: np.ndarray, n_transactions: int, params: RuleMiningSettings) -> pd.DataFrame:
    """Measures from counts, exact confidence filter, deterministic order, optional cap."""
    keep = rules.count / np.maximum(rules.antecedent_count, 1) >= params.min_confidence
    rules = RuleCounts(*(getattr(rules, name)[keep] for name in RuleCounts.__dataclass_fields__))
    n = max(n_transactions, 1)
    support = rules.count / n
    confidence = rules.count / rules.antecedent_count
    # Same expression as efficient-apriori's Rule.lift, so the floats agree bit for bit.
    lift = support / ((rules.antecedent_count * rules.consequent_count) / n**2)
    order = _deterministic_order(confidence, lift, support, rules.antecedent, rules.consequent)
    if params.max_rules_per_consequent is not None:
        order = _cap_per_consequent(order, rules.consequent, params.max_rules_per_consequent)
    return pd.DataFrame(
        {
            "antecedent": _item_lists(rules.antecedent[order], items),
            "consequent": _item_lists(rules.consequent[order], items),
            "support": support[order].astype(np.float64),
            "confidence": confidence[order].astype(np.float64),
            "lift": lift[order].astype(np.float64),
        }
    )


def _deterministic_order(
    confidence: np.ndarray, lift: np.ndarray, support: np.ndarray, antecedent: np.ndarray, consequent: np.ndarray
) -> np.ndarray:
    """Strongest rules first; ties broken by antecedent then consequent (item id order)."""
    keys = [consequent[:, j] for j in reversed(range(consequent.shape[1]))]
    keys += [antecedent[:, j] for j in reversed(range(antecedent.shape[1]))]
    keys += [-support, -lift, -confidence]
    return np.lexsort(keys) if len(confidence) else np.zeros(0, dtype=np.int64)


def _cap_per_consequent(order: np.ndarray, consequent: np.ndarray, cap: int) -> np.ndarray:
    if not len(order):
        return order
    _, group = np.unique(consequent[order], axis=0, return_inverse=True)
    rank_in_group = pd.Series(group.ravel()).groupby(group.ravel(), sort=False).cumcount().to_numpy()
    return order[rank_in_group < cap]


def _item_lists(codes: np.ndarray, items: np.ndarray) -> pd.arrays.ArrowExtensionArray:
    """Code matrix (-1 padded) -> an Arrow list<string> column. Built from offsets with no
    Python object per rule: half a million small lists cost more in GC than the mining."""
    present = codes >= 0
    offsets = np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int32)
    values = pa.array(items[codes[present]], type=pa.string())
    return pd.arrays.ArrowExtensionArray(pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), values))


def _arrow_lists(arrow_type: pa.DataType) -> pd.ArrowDtype | None:
    return pd.ArrowDtype(arrow_type) if pa.types.is_list(arrow_type) else None


def empty_rules() -> pd.DataFrame:
    return RULES_SCHEMA.empty_table().to_pandas(types_mapper=_arrow_lists)


def write_rules(table: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write ``rules.parquet`` atomically with the fixed schema (also when empty).

    pandas' own metadata is left out: pandas 3.1 cannot read back the list dtype name it
    writes there; without it, readers get plain list<string> columns.
    """
    arrow = pa.Table.from_pandas(table[list(RULES.columns)], schema=RULES_SCHEMA, preserve_index=False)
    with atomic_path(path) as temp:
        pq.write_table(arrow.replace_schema_metadata(None), temp)


def read_rules(path: str | os.PathLike[str]) -> pd.DataFrame:
    """``rules.parquet`` with list columns as Arrow lists, as :func:`mine_rules` returns them."""
    table = pq.read_table(path)
    require_columns(table, RULES, path)
    return table.select(list(RULES.columns)).cast(RULES_SCHEMA).to_pandas(types_mapper=_arrow_lists)


# --------------------------------------------------------------------------- bitset engine


def _bitset_engine(encoded: EncodedTransactions, params: RuleMiningSettings) -> RuleCounts:
    min_count = min_count_for(params.min_support, encoded.n_transactions)
    singles, index = frequent_itemsets_bitset(encoded.matrix, min_count, params.max_len)
    log.info("frequent itemsets per size: %s", {size: len(level.counts) for size, level in index.levels.items()})
    rules = rules_from_itemsets(index, params.min_confidence)
    to_global = np.append(singles, -1)  # local code -> item code; the -1 padding stays -1
    return RuleCounts(
        to_global[rules.antecedent],
        to_global[rules.consequent],
        rules.count,
        rules.antecedent_count,
        rules.consequent_count,
    )


# --------------------------------------------------------------------------- reference engines

# What every engine is: encoded transactions and settings in, integer rule counts out.
Engine = Callable[[EncodedTransactions, RuleMiningSettings], RuleCounts]


def _code_transactions(encoded: EncodedTransactions) -> list[list[int]]:
    matrix = encoded.matrix
    return [matrix.indices[matrix.indptr[r] : matrix.indptr[r + 1]].tolist() for r in range(matrix.shape[0])]


def _efficient_apriori_engine(encoded: EncodedTransactions, params: RuleMiningSettings) -> RuleCounts:
    from efficient_apriori import apriori

    _, rules = apriori(
        _code_transactions(encoded),
        min_support=params.min_support,
        min_confidence=params.min_confidence,
        max_length=params.max_len,
    )
    return from_code_tuples((r.lhs, r.rhs, r.count_full, r.count_lhs, r.count_rhs) for r in rules)


def _mlxtend_engine(
    algorithm: str, **options: bool
) -> Callable[[EncodedTransactions, RuleMiningSettings], RuleCounts]:
    def run(encoded: EncodedTransactions, params: RuleMiningSettings) -> RuleCounts:
        from mlxtend import frequent_patterns

        n = encoded.n_transactions
        # mlxtend's documented input: a dense boolean one-hot frame (its fastest path).
        onehot = pd.DataFrame(encoded.matrix.toarray(), columns=range(encoded.matrix.shape[1]))
        mine = getattr(frequent_patterns, algorithm)
        itemsets = mine(
            onehot,
            min_support=params.min_support * (1 - THRESHOLD_RTOL),
            use_colnames=True,
            max_len=params.max_len,
            **options,
        )
        # Supports are count / n: rounding back recovers the integer counts exactly.
        support_counts = np.rint(itemsets["support"].to_numpy() * n).astype(np.int64)
        frequent = support_counts >= min_count_for(params.min_support, n)
        itemsets = itemsets[frequent]
        counts = dict(zip(map(frozenset, itemsets["itemsets"]), support_counts[frequent].tolist()))
        if not (itemsets["itemsets"].map(len) > 1).any():
            return RuleCounts.empty()
        rules = frequent_patterns.association_rules(
            itemsets,
            num_itemsets=n,
            metric="confidence",
            min_threshold=params.min_confidence * (1 - THRESHOLD_RTOL),
            return_metrics=["support"],
        )
        return from_code_tuples(
            (tuple(a), tuple(c), counts[a | c], counts[a], counts[c])
            for a, c in zip(rules["antecedents"], rules["consequents"])
        )

    return run


#: The registry (``knowledge.collab.engine``): name -> engine, built-ins first.
ENGINES: dict[str, Engine] = {}


def register_engine(name: str, replace: bool = False) -> Callable[[Engine], Engine]:
    """Register ``engine(encoded, settings) -> RuleCounts`` as rule-mining engine ``name``; a
    name already taken is an error unless ``replace`` (:func:`rekalm.common.registry.register`)."""

    def decorate(engine: Engine) -> Engine:
        register(ENGINES, "rule-mining engines", name, engine, replace=replace)
        return engine

    return decorate


register_engine("bitset")(_bitset_engine)
register_engine("efficient_apriori")(_efficient_apriori_engine)
register_engine("mlxtend_fpgrowth")(_mlxtend_engine("fpgrowth"))
register_engine("mlxtend_apriori")(_mlxtend_engine("apriori"))
register_engine("mlxtend_apriori_low_memory")(_mlxtend_engine("apriori", low_memory=True))


# --------------------------------------------------------------------------- entry points


def mine_rules(transactions: Sequence[Iterable[str]], params: RuleMiningSettings) -> pd.DataFrame:
    """Rules table (antecedent, consequent, support, confidence, lift) for the transactions."""
    encoded = encode_transactions(transactions)
    log.info(
        "%d transactions (%d empty), %d distinct items, engine %s",
        encoded.n_transactions,
        int((encoded.matrix.getnnz(axis=1) == 0).sum()),
        len(encoded.items),
        params.engine,
    )
    no_items = encoded.matrix.shape[1] == 0  # no transactions, or all empty: nothing to mine
    rules = RuleCounts.empty() if no_items else ENGINES[params.engine](encoded, params)
    table = rule_table(rules, encoded.items, encoded.n_transactions, params)
    if table.empty:
        log.warning(
            "no association rule reaches min_support=%s and min_confidence=%s over %d transactions; the rules table "
            "is empty",
            params.min_support,
            params.min_confidence,
            encoded.n_transactions,
        )
        return empty_rules()
    log.info("%d rules", len(table))
    return table


def mine_rules_file(
    split_path: str | os.PathLike[str], rules_path: str | os.PathLike[str], params: RuleMiningSettings
) -> pd.DataFrame:
    """split.parquet -> rules.parquet (written atomically); returns the table."""
    table = mine_rules(train_transactions(load_split(split_path)), params)
    write_rules(table, rules_path)
    return table
