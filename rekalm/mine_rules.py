"""Association rules for the ``collab`` knowledge source (protocol.md, "Knowledge sources").

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
below the threshold and drop such rules (the issue measured 12 of ~115 ML-1M-like rules
sitting exactly at 0.05). Engines that work on rounded supports are therefore run with
both thresholds lowered by :data:`THRESHOLD_RTOL` (relative 1e-9: far more than their
few-ulp rounding error, so they lose nothing) and their output is re-filtered on the
exact integer counts (which removes whatever the slack let in), so every engine returns
the identical rule set with identical float values.

Engines (``engine`` in config; all return the same table):

- ``bitset`` (default): vertical Apriori written here. Items are bitsets over
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp
from tqdm.auto import tqdm

from rekalm.io import atomic_path, read_parquet

log = logging.getLogger(__name__)

RULE_COLUMNS = ["antecedent", "consequent", "support", "confidence", "lift"]
# In-memory dtype of antecedent/consequent (Arrow lists: no Python object per rule).
ITEM_LIST = pd.ArrowDtype(pa.list_(pa.string()))
# Written explicitly: an empty table must still say list<string>, not null.
RULES_SCHEMA = pa.schema(
    [
        ("antecedent", pa.list_(pa.string())),
        ("consequent", pa.list_(pa.string())),
        ("support", pa.float64()),
        ("confidence", pa.float64()),
        ("lift", pa.float64()),
    ]
)
# Relative slack for engines that compare rounded supports with the thresholds; see the
# module docstring. Their output is re-filtered on exact integer counts afterwards.
THRESHOLD_RTOL = 1e-9
# Memory bounds: candidates are generated and pruned in chunks of _CANDIDATE_CHUNK, and
# counted in cache-sized blocks of _BLOCK_WORDS 64-bit words (2 MB); the pair product is
# taken over column blocks holding about _CHUNK_WORDS entries.
_CANDIDATE_CHUNK = 1 << 20
_BLOCK_WORDS = 1 << 18
_CHUNK_WORDS = 1 << 22
_SPLIT_COLUMNS = ("user", "user_set", "item", "liked", "side")


@dataclass(frozen=True)
class RuleParams:
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
    split = read_parquet(path, required=_SPLIT_COLUMNS)
    checks = {"user_set": {"train", "test"}, "side": {"history", "held_out"}, "liked": {0, 1}}
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
    transactions = [t if isinstance(t, (list, tuple)) else list(t) for t in transactions]
    lengths = np.fromiter(map(len, transactions), dtype=np.int64, count=len(transactions))
    flat = pa.array(itertools.chain.from_iterable(transactions), type=pa.string())
    # Arrow's dictionary encoding + a sort of the distinct ids is ~3x faster than
    # pandas.factorize(sort=True) on Python strings; UTF-8 byte order = str order.
    encoded = flat.dictionary_encode()
    by_name = pc.sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(by_name), dtype=np.int64)
    rank[by_name] = np.arange(len(by_name))
    codes = rank[encoded.indices.to_numpy(zero_copy_only=False)] if len(flat) else np.zeros(0, dtype=np.int64)
    items = encoded.dictionary.take(pa.array(by_name, type=pa.int64())).to_numpy(zero_copy_only=False).astype(object)
    rows = np.repeat(np.arange(len(transactions)), lengths)
    matrix = sp.csr_matrix((np.ones(len(codes), dtype=bool), (rows, codes)), shape=(len(transactions), len(items)))
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
#
# Engines return a RuleCounts: antecedent / consequent as item-code matrices padded with -1
# (each row ascending), and the three integer counts every measure derives from.


@dataclass(frozen=True)
class RuleCounts:
    antecedent: np.ndarray  # (rules, width) int64, -1 padded
    consequent: np.ndarray
    count: np.ndarray  # count(A u C)
    antecedent_count: np.ndarray
    consequent_count: np.ndarray

    @staticmethod
    def empty() -> RuleCounts:
        none = np.zeros((0, 1), dtype=np.int64)
        zero = np.zeros(0, dtype=np.int64)
        return RuleCounts(none, none, zero, zero, zero)

    @staticmethod
    def concat(parts: list[RuleCounts]) -> RuleCounts:
        if not parts:
            return RuleCounts.empty()
        width = max(max(p.antecedent.shape[1], p.consequent.shape[1]) for p in parts)
        return RuleCounts(
            np.concatenate([_pad(p.antecedent, width) for p in parts]),
            np.concatenate([_pad(p.consequent, width) for p in parts]),
            *(
                np.concatenate([getattr(p, name) for p in parts]).astype(np.int64)
                for name in ("count", "antecedent_count", "consequent_count")
            ),
        )


def _pad(codes: np.ndarray, width: int) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.int64).reshape(len(codes), -1)
    return np.pad(codes, ((0, 0), (0, width - codes.shape[1])), constant_values=-1)


def _from_code_tuples(rules: Iterable[tuple[Sequence[int], Sequence[int], int, int, int]]) -> RuleCounts:
    rows = list(rules)
    if not rows:
        return RuleCounts.empty()
    width = max(max(len(a), len(c)) for a, c, *_ in rows)
    antecedent = np.full((len(rows), width), -1, dtype=np.int64)
    consequent = np.full((len(rows), width), -1, dtype=np.int64)
    for row, (ante, cons, *_) in enumerate(rows):
        antecedent[row, : len(ante)] = sorted(ante)
        consequent[row, : len(cons)] = sorted(cons)
    counts = np.array([r[2:] for r in rows], dtype=np.int64)
    return RuleCounts(antecedent, consequent, counts[:, 0], counts[:, 1], counts[:, 2])


def rule_table(rules: RuleCounts, items: np.ndarray, n_transactions: int, params: RuleParams) -> pd.DataFrame:
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
    arrow = pa.Table.from_pandas(table[RULE_COLUMNS], schema=RULES_SCHEMA, preserve_index=False)
    with atomic_path(path) as temp:
        pq.write_table(arrow.replace_schema_metadata(None), temp)


def read_rules(path: str | os.PathLike[str]) -> pd.DataFrame:
    """``rules.parquet`` with list columns as Arrow lists, as :func:`mine_rules` returns them."""
    table = pq.read_table(path)
    missing = sorted(set(RULE_COLUMNS) - set(table.column_names))
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    return table.select(RULE_COLUMNS).cast(RULES_SCHEMA).to_pandas(types_mapper=_arrow_lists)


# --------------------------------------------------------------------------- bitset engine


def _popcount_words(words: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Set bits of every uint64 word, as uint8."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(words, out=out)
    out[...] = np.unpackbits(words.view(np.uint8), axis=-1).reshape(*words.shape, 64).sum(axis=-1)
    return out


def _item_bitsets(matrix: sp.csr_matrix) -> np.ndarray:
    """One row of 64-bit words per item; bit t set when transaction t holds the item."""
    csc = matrix.tocsc()
    words = max(1, -(-matrix.shape[0] // 64))
    bits = np.zeros((matrix.shape[1], words), dtype=np.uint64)
    rows = csc.indices.astype(np.int64)
    cols = np.repeat(np.arange(matrix.shape[1]), np.diff(csc.indptr))
    np.bitwise_or.at(bits, (cols, rows >> 6), np.left_shift(np.uint64(1), (rows & 63).astype(np.uint64)))
    return bits


def _frequent_pairs(matrix: sp.csr_matrix, min_count: int) -> tuple[np.ndarray, np.ndarray]:
    """All item pairs (i < j) with co-occurrence >= min_count, lexicographically sorted."""
    csc = matrix.astype(np.int32).tocsc()
    n_items = matrix.shape[1]
    block = max(1, _CHUNK_WORDS // max(n_items, 1))  # bound the dense-ish product block
    lefts, rights, counts = [], [], []
    for start in range(0, n_items, block):
        product = (csc.T @ csc[:, start : start + block]).tocoo()
        right = product.col + start
        keep = (product.row < right) & (product.data >= min_count)
        lefts.append(product.row[keep])
        rights.append(right[keep])
        counts.append(product.data[keep])
    left, right, count = (np.concatenate(x).astype(np.int64) for x in (lefts, rights, counts))
    order = np.lexsort((right, left))
    return np.stack([left[order], right[order]], axis=1), count[order]


def _prefix_pair_chunks(itemsets: np.ndarray, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Index pairs (i < j) of lexicographically sorted itemsets sharing all but the last
    item (Apriori's join), yielded in order in chunks of about ``chunk`` pairs."""
    m = len(itemsets)
    new_group = np.ones(m, dtype=bool)
    if itemsets.shape[1] > 1:
        new_group[1:] = (itemsets[1:, :-1] != itemsets[:-1, :-1]).any(axis=1)
    group_start = np.flatnonzero(new_group)
    group_end = np.append(group_start[1:], m)
    later = np.repeat(group_end, group_end - group_start) - np.arange(m) - 1  # partners after row i
    pairs_through = np.cumsum(later)
    first_row = 0
    while first_row < m:
        done_before = pairs_through[first_row - 1] if first_row else 0
        stop_row = max(first_row + 1, int(np.searchsorted(pairs_through, done_before + chunk, side="right")))
        counts = later[first_row:stop_row]
        left = np.repeat(np.arange(first_row, stop_row), counts)
        offset_in_row = np.arange(len(left)) - np.repeat(np.cumsum(counts) - counts, counts)
        yield left, left + 1 + offset_in_row
        first_row = stop_row


@dataclass
class _Level:
    """Frequent itemsets of one size, lexicographically sorted rows of local item codes.

    ``keys`` identify each row exactly as ``prefix_row * n_items + last_item``, where
    ``prefix_row`` is the row of its first ``size - 1`` items one level down. Any itemset
    is then found by walking its prefixes through integer hash look-ups: exact, and much
    cheaper than hashing whole rows.
    """

    itemsets: np.ndarray  # (m, size) int64
    counts: np.ndarray  # (m,) int64
    keys: pd.Index


class _ItemsetIndex:
    # Pairs get a dense row table when it is small (<= 4096^2 int32 = 64 MB): the pair
    # look-up is the hot one (Apriori prune at size 3, most rule antecedents).
    _DENSE_PAIRS_MAX_ITEMS = 4096

    def __init__(self, n_items: int):
        self.n_items = n_items
        self.levels: dict[int, _Level] = {}
        self.pair_rows: np.ndarray | None = None

    def add(self, itemsets: np.ndarray, counts: np.ndarray, prefix_rows: np.ndarray) -> None:
        keys = prefix_rows.astype(np.int64) * self.n_items + itemsets[:, -1]
        self.levels[itemsets.shape[1]] = _Level(itemsets, counts, pd.Index(keys))
        if itemsets.shape[1] == 2 and self.n_items <= self._DENSE_PAIRS_MAX_ITEMS:
            self.pair_rows = np.full((self.n_items, self.n_items), -1, dtype=np.int32)
            self.pair_rows[itemsets[:, 0], itemsets[:, 1]] = np.arange(len(itemsets), dtype=np.int32)

    def rows(self, columns: Sequence[np.ndarray]) -> np.ndarray:
        """Row of each itemset in its level, -1 where it is not frequent.

        ``columns`` are the itemsets' items column by column (ascending across columns),
        so callers pass views and gathered columns instead of building row matrices.
        """
        found = columns[0].astype(np.int64)  # level 1 holds every frequent item, row = code
        first = 1
        if self.pair_rows is not None and len(columns) >= 2:
            found, first = self.pair_rows[columns[0], columns[1]].astype(np.int64), 2
        for j in range(first, len(columns)):
            # A missing prefix (-1) makes a negative key, which matches nothing: stays -1.
            found = self.levels[j + 1].keys.get_indexer(found * self.n_items + columns[j])
        return found

    def counts(self, columns: Sequence[np.ndarray]) -> np.ndarray:
        rows = self.rows(columns)
        if (rows < 0).any():
            raise AssertionError("a subset of a frequent itemset is missing: downward closure violated")
        return self.levels[len(columns)].counts[rows]


def _all_subsets_frequent(
    level: _Level, prefix_rows: np.ndarray, last: np.ndarray, index: _ItemsetIndex
) -> np.ndarray:
    """Apriori prune of candidates ``level.itemsets[prefix_rows] + last``: every subset one
    item smaller must be frequent. Dropping the last item or the prefix's last item gives
    the two joined parents, frequent by construction; the other drops are looked up."""
    ok = np.ones(len(prefix_rows), dtype=bool)
    width = level.itemsets.shape[1]
    for dropped in range(width - 1):
        kept = np.flatnonzero(ok)
        rows = prefix_rows[kept]
        columns = [level.itemsets[rows, j] for j in range(width) if j != dropped] + [last[kept]]
        ok[kept[index.rows(columns) < 0]] = False
    return ok


def _and_counts(
    prefix_bits: np.ndarray, prefix_rows: np.ndarray, item_bits: np.ndarray, items: np.ndarray
) -> np.ndarray:
    """popcount(prefix_bits[prefix_rows] & item_bits[items]) per candidate.

    Worked in blocks of ~2 MB with reused buffers: blocks that stay in cache and avoid
    fresh page faults were ~3x faster than one big vectorised expression. Per-word counts
    are summed by a float32 matrix-vector product (exact: sums stay far below 2^24),
    which was 3x faster than an integer row sum.
    """
    words = prefix_bits.shape[1]
    block = max(64, _BLOCK_WORDS // words)
    left = np.empty((block, words), dtype=np.uint64)
    right = np.empty((block, words), dtype=np.uint64)
    word_counts = np.empty((block, words), dtype=np.uint8)
    as_float = np.empty((block, words), dtype=np.float32)
    ones = np.ones(words, dtype=np.float32)
    counts = np.empty(len(prefix_rows), dtype=np.int64)
    for start in range(0, len(prefix_rows), block):
        n = min(block, len(prefix_rows) - start)
        np.take(prefix_bits, prefix_rows[start : start + n], axis=0, out=left[:n])
        np.take(item_bits, items[start : start + n], axis=0, out=right[:n])
        np.bitwise_and(left[:n], right[:n], out=left[:n])
        _popcount_words(left[:n], out=word_counts[:n])
        np.copyto(as_float[:n], word_counts[:n])
        counts[start : start + n] = np.rint(as_float[:n] @ ones)
    return counts


def _next_level(
    level: _Level, bitsets: np.ndarray, item_bits: np.ndarray, index: _ItemsetIndex, min_count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Join prefix-sharing itemsets, prune, count by AND + popcount, keep the frequent ones.

    A candidate is (row of its prefix, last item) until it proves frequent: only the few
    frequent ones are ever built as item rows. Returns (itemsets, counts, prefix rows,
    bitsets) of the next size.
    """
    found_rows, found_last, found_counts = [], [], []
    for prefix_rows, partner_rows in _prefix_pair_chunks(level.itemsets, _CANDIDATE_CHUNK):
        last = level.itemsets[partner_rows, -1]
        ok = _all_subsets_frequent(level, prefix_rows, last, index)
        prefix_rows, last = prefix_rows[ok], last[ok]
        counts = _and_counts(bitsets, prefix_rows, item_bits, last)
        frequent = counts >= min_count
        found_rows.append(prefix_rows[frequent])
        found_last.append(last[frequent])
        found_counts.append(counts[frequent])
    prefix_rows = np.concatenate(found_rows) if found_rows else np.zeros(0, dtype=np.int64)
    last = np.concatenate(found_last) if found_last else np.zeros(0, dtype=level.itemsets.dtype)
    counts = np.concatenate(found_counts) if found_counts else np.zeros(0, dtype=np.int64)
    itemsets = np.concatenate([level.itemsets[prefix_rows], last[:, None]], axis=1)
    # Bitsets only for the frequent ones (few): recomputing beats keeping every candidate's.
    return itemsets, counts, prefix_rows, bitsets[prefix_rows] & item_bits[last]


def frequent_itemsets_bitset(matrix: sp.csr_matrix, min_count: int, max_len: int) -> tuple[np.ndarray, _ItemsetIndex]:
    """Every frequent itemset of up to ``max_len`` items.

    Returns (frequent item codes, index of levels in local codes 0..f-1 of those items).
    """
    item_counts = np.asarray(matrix.sum(axis=0)).ravel().astype(np.int64)
    singles = np.flatnonzero(item_counts >= min_count)
    index = _ItemsetIndex(len(singles))
    local = np.arange(len(singles), dtype=np.int64)
    index.add(local.reshape(-1, 1), item_counts[singles], np.zeros(len(singles), dtype=np.int64))
    if max_len < 2 or len(singles) < 2:
        return singles, index
    sub = matrix[:, singles].tocsr()
    pairs, pair_counts = _frequent_pairs(sub, min_count)
    index.add(pairs, pair_counts, prefix_rows=pairs[:, 0])
    item_bits = _item_bitsets(sub)
    bitsets = item_bits[pairs[:, 0]] & item_bits[pairs[:, 1]]
    with tqdm(total=max_len, initial=2, desc="itemset levels", unit="level", leave=False) as progress:
        for size in range(3, max_len + 1):
            level = index.levels[size - 1]
            if len(level.itemsets) < 2:
                break
            itemsets, counts, prefix_rows, bitsets = _next_level(level, bitsets, item_bits, index, min_count)
            if not len(itemsets):
                break
            index.add(itemsets, counts, prefix_rows)
            progress.update(1)
    return singles, index


def rules_from_itemsets(index: _ItemsetIndex, min_confidence: float) -> RuleCounts:
    """Every (antecedent, consequent) split of every frequent itemset that reaches
    ``min_confidence``, with its counts.

    Brute force over the 2^k - 2 splits instead of efficient-apriori's ap-genrules pruning:
    confidence only falls as items move to the consequent, so both give the same rules,
    and whole columns of splits go through vectorised look-ups at once.
    """
    parts: list[RuleCounts] = []
    for size, level in index.levels.items():
        if size < 2 or not len(level.itemsets):
            continue
        for antecedent_size in range(1, size):
            for columns in itertools.combinations(range(size), antecedent_size):
                rest = [c for c in range(size) if c not in columns]
                antecedent_counts = index.counts([level.itemsets[:, c] for c in columns])
                confident = level.counts / antecedent_counts >= min_confidence
                if not confident.any():
                    continue
                itemsets = level.itemsets[confident]
                consequent_counts = index.counts([itemsets[:, c] for c in rest])
                parts.append(
                    RuleCounts(
                        itemsets[:, list(columns)],
                        itemsets[:, rest],
                        level.counts[confident],
                        antecedent_counts[confident],
                        consequent_counts,
                    )
                )
    return RuleCounts.concat(parts)


def _bitset_engine(encoded: EncodedTransactions, params: RuleParams) -> RuleCounts:
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


def _code_transactions(encoded: EncodedTransactions) -> list[list[int]]:
    matrix = encoded.matrix
    return [matrix.indices[matrix.indptr[r] : matrix.indptr[r + 1]].tolist() for r in range(matrix.shape[0])]


def _efficient_apriori_engine(encoded: EncodedTransactions, params: RuleParams) -> RuleCounts:
    from efficient_apriori import apriori

    _, rules = apriori(
        _code_transactions(encoded),
        min_support=params.min_support,
        min_confidence=params.min_confidence,
        max_length=params.max_len,
    )
    return _from_code_tuples((r.lhs, r.rhs, r.count_full, r.count_lhs, r.count_rhs) for r in rules)


def _mlxtend_engine(algorithm: str, **options: bool) -> Callable[[EncodedTransactions, RuleParams], RuleCounts]:
    def run(encoded: EncodedTransactions, params: RuleParams) -> RuleCounts:
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
        return _from_code_tuples(
            (tuple(a), tuple(c), counts[a | c], counts[a], counts[c])
            for a, c in zip(rules["antecedents"], rules["consequents"])
        )

    return run


ENGINES: dict[str, Callable[[EncodedTransactions, RuleParams], RuleCounts]] = {
    "bitset": _bitset_engine,
    "efficient_apriori": _efficient_apriori_engine,
    "mlxtend_fpgrowth": _mlxtend_engine("fpgrowth"),
    "mlxtend_apriori": _mlxtend_engine("apriori"),
    "mlxtend_apriori_low_memory": _mlxtend_engine("apriori", low_memory=True),
}


# --------------------------------------------------------------------------- entry points


def mine_rules(transactions: Sequence[Iterable[str]], params: RuleParams) -> pd.DataFrame:
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
    split_path: str | os.PathLike[str], rules_path: str | os.PathLike[str], params: RuleParams
) -> pd.DataFrame:
    """split.parquet -> rules.parquet (written atomically); returns the table."""
    table = mine_rules(train_transactions(load_split(split_path)), params)
    write_rules(table, rules_path)
    return table
