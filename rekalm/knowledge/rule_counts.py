"""The common output of every rule-mining engine: rules as item codes plus the three
integer counts every measure derives from.

Antecedents and consequents are item-code matrices padded with -1, each row ascending;
``count`` is count(A ∪ C), ``antecedent_count`` count(A), ``consequent_count`` count(C).
For transactions ``[[0, 1], [0, 1], [0]]`` the rule {0} -> {1} is one row::

    antecedent = [[0]], consequent = [[1]], count = [2], antecedent_count = [3], consequent_count = [2]

from which the rule table computes support 2/3, confidence 2/3 and lift 1.0. Keeping
integers until that one step is what makes every engine's floats identical.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


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


def from_code_tuples(rules: Iterable[tuple[Sequence[int], Sequence[int], int, int, int]]) -> RuleCounts:
    """RuleCounts from (antecedent codes, consequent codes, count, antecedent count, consequent count) rows."""
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
