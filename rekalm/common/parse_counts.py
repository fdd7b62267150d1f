"""The per-user counts of parsing one generated answer, which are also count columns of the
LLM predictions table (:data:`rekalm.common.tables.LLM_PREDICTIONS`).

Their own module, apart from the matching in :mod:`rekalm.ranking.parse`: the stages that only read
or check predictions (every stage that imports :mod:`rekalm.common.tables`) need the column names,
not rapidfuzz.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ParseCounts:
    """Per-user bookkeeping of one parsed generation."""

    n_generated: int = 0  # list entries read from the output
    n_exact: int = 0  # matched after normalisation
    n_fuzzy: int = 0  # matched by fuzzy similarity only
    n_duplicates: int = 0  # matched a candidate already ranked (dropped)
    n_hallucinated: int = 0  # matched no candidate (dropped)
    n_appended: int = 0  # candidates never named, appended at the end

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


PARSE_COUNT_COLUMNS = tuple(ParseCounts().as_dict())
