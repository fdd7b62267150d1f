"""User split and candidate lists, as the original study split its users and items.

Two methods produce the same *sizes* (20 % test users; per user ``int(0.5 * n) + 1`` of
the liked and of the disliked items held out):

- ``original`` reproduces the original study's code bit for bit: ``random.seed(22)`` is
  re-applied before *every* ``random.sample`` call, users are taken in order of first
  appearance in the interaction file and each user's rows in file order. The test users,
  per-user lists and Apriori input then match the original's shipped files.
- ``seeded`` is independent of file row order: users are sorted, and each user's draw
  comes from its own generator seeded with ``(seed, user)``, so adding a user changes
  nobody else's split.

Outputs (both methods):

``split`` — one row per kept interaction:
    user (str), user_set ('train'|'test'), item (str), liked (int8),
    side ('history'|'held_out'), row (int64: the interaction's row in interactions.parquet)
``candidates`` — the held-out items of every user, shuffled:
    user (str), user_set (str), position (int32, 0-based rank in the shuffled list),
    item (str), liked (int8)

Optional caps (for small models and CPU runs; off by default) shorten histories to the
most recent items and cut candidate lists while keeping liked and disliked items in
proportion. They are applied after the split, so they never change who is a test user.

A test user whose candidates are all liked (or all disliked) cannot be ranked
meaningfully: such users are counted (``candidates_all_liked``, ``candidates_all_disliked``
in the stats) with a warning, and a split in which no test user has both is an error.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar, cast

import numpy as np
import pandas as pd

from rekalm.common.tables import CANDIDATES, INTERACTIONS, SPLIT, Table, require_columns

log = logging.getLogger(__name__)

T = TypeVar("T")

SplitMethod = Literal["original", "seeded"]


@dataclass(frozen=True)
class SplitSettings:
    method: SplitMethod = "original"
    seed: int = 22
    test_fraction: float = 0.2
    held_out_fraction: float = 0.5
    held_out_margin: int = 1
    max_history_liked: int | None = None
    max_history_disliked: int | None = None
    max_candidates: int | None = None


def original_sample(values: Sequence[T], fraction: float, margin: int, seed: int) -> tuple[list[T], list[T]]:
    """The original's helper: re-seed, sample ``int(fraction*n)+margin``, return (rest, sample).

    The returned lists are sorted by position in ``values`` (the original returned set
    order, which for strings depends on PYTHONHASHSEED); membership is what matters.
    """
    size = min(int(fraction * len(values)) + margin, len(values))
    random.seed(seed)
    sample = random.sample(list(values), size)
    chosen = set(sample)
    rest = [v for v in values if v not in chosen]
    return rest, [v for v in values if v in chosen]


def _user_rng(seed: int, user: str) -> np.random.Generator:
    # A stable per-user stream: hash() of a str varies between processes, sha256 does not.
    digest = hashlib.sha256(f"{seed}:{user}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _seeded_sample(
    values: Sequence[T], fraction: float, margin: int, rng: np.random.Generator
) -> tuple[list[T], list[T]]:
    size = min(int(fraction * len(values)) + margin, len(values))
    picked = set(rng.choice(len(values), size=size, replace=False).tolist()) if size else set()
    rest = [v for i, v in enumerate(values) if i not in picked]
    return rest, [v for i, v in enumerate(values) if i in picked]


def select_test_users(users_in_order: Sequence[str], config: SplitSettings) -> set[str]:
    if config.method == "original":
        _, test = original_sample(users_in_order, config.test_fraction, 0, config.seed)
        return set(test)
    ordered = sorted(users_in_order)
    size = int(config.test_fraction * len(ordered))
    rng = np.random.default_rng(config.seed)
    return {ordered[i] for i in rng.choice(len(ordered), size=size, replace=False)}


def _hold_out(rows: list[int], user: str, config: SplitSettings) -> tuple[list[int], list[int]]:
    """Split one user's liked (or disliked) row positions into (history, held_out)."""
    if not rows:
        return [], []
    if config.method == "original":
        return original_sample(rows, config.held_out_fraction, config.held_out_margin, config.seed)
    return _seeded_sample(rows, config.held_out_fraction, config.held_out_margin, _user_rng(config.seed, user))


def _cap_history(rows: list[int], cap: int | None, recency: pd.Series) -> list[int]:
    """Keep the ``cap`` most recent rows (by timestamp, else by file order)."""
    if cap is None or len(rows) <= cap:
        return rows
    kept = sorted(rows, key=lambda r: (recency.iat[r], r))[-cap:]
    return sorted(kept)


def _proportional_caps(n_liked: int, n_disliked: int, cap: int) -> tuple[int, int]:
    """How many liked/disliked candidates to keep under ``cap``, in proportion, >= 1 each if present."""
    total = n_liked + n_disliked
    if total <= cap:
        return n_liked, n_disliked
    liked = round(cap * n_liked / total)
    if n_liked:
        liked = max(liked, 1)
    if n_disliked:
        liked = min(liked, cap - 1)
    liked = min(liked, n_liked)
    return liked, min(cap - liked, n_disliked)


def split_interactions(interactions: pd.DataFrame, config: SplitSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split canonical interactions (user, item, liked[, timestamp]) into (split, candidates)."""
    require_columns(interactions, INTERACTIONS.select("user", "item", "liked"), "interactions")
    frame = interactions.reset_index(drop=True)
    if frame.empty:
        raise ValueError("interactions: no rows, nothing to split (prepare kept no interaction)")
    recency = (
        frame["timestamp"]
        if "timestamp" in frame and frame["timestamp"].notna().all()
        else pd.Series(np.arange(len(frame)))
    )
    users_in_order = list(pd.unique(frame["user"]))
    test_users = select_test_users(users_in_order, config)
    if not test_users or len(test_users) == len(users_in_order):
        empty = "test" if not test_users else "train"
        raise ValueError(
            f"split.test_fraction={config.test_fraction:g} of {len(users_in_order)} users leaves no {empty} user; "
            f"{'raise' if empty == 'test' else 'lower'} split.test_fraction or keep more users"
        )
    # numpy copies once: indexing Arrow-backed pandas columns per user is quadratic-ish.
    liked_flags = frame["liked"].to_numpy()
    item_ids = frame["item"].astype(str).to_numpy(dtype=object)

    # Row indices are collected per user and both tables are built once at the end:
    # one DataFrame per user made ML-1M's split take minutes.
    split_rows: list[int] = []
    split_sides: list[str] = []
    candidate_rows: list[int] = []
    candidate_positions: list[int] = []
    # Each group's positions are an ndarray and users are strings (prepare writes them with
    # astype(str)); pandas-stubs types `indices` as {Hashable: ndarray | Index | list[int]}.
    groups = cast("dict[str, np.ndarray]", frame.groupby("user", sort=False).indices)
    for user, positions in groups.items():
        rows = sorted(positions.tolist())
        if config.method == "seeded":  # draw over items, not file positions
            rows = sorted(rows, key=lambda r: (item_ids[r], r))
        liked_rows = [r for r in rows if liked_flags[r] == 1]
        disliked_rows = [r for r in rows if liked_flags[r] != 1]
        liked_history, liked_held = _hold_out(liked_rows, user, config)
        disliked_history, disliked_held = _hold_out(disliked_rows, user, config)
        history = sorted(
            _cap_history(liked_history, config.max_history_liked, recency)
            + _cap_history(disliked_history, config.max_history_disliked, recency)
        )
        candidates = _shuffled_candidates(liked_held, disliked_held, user, config)
        split_rows += history + sorted(candidates)
        split_sides += ["history"] * len(history) + ["held_out"] * len(candidates)
        candidate_rows += candidates
        candidate_positions += range(len(candidates))
    user_sets = np.where(frame["user"].isin(test_users).to_numpy(), "test", "train")
    split = _table(frame, user_sets, split_rows, {"side": split_sides, "row": split_rows}, SPLIT)
    candidates_table = _table(frame, user_sets, candidate_rows, {"position": candidate_positions}, CANDIDATES)
    _check_rankable(candidates_table, len(test_users))
    return split, candidates_table


def one_sided_users(candidates: pd.DataFrame, user_set: str = "test") -> tuple[int, int]:
    """How many users of ``user_set`` have only liked, and only disliked, candidates."""
    liked = candidates.loc[candidates["user_set"] == user_set].groupby("user")["liked"].agg(["sum", "size"])
    return int((liked["sum"] == liked["size"]).sum()), int((liked["sum"] == 0).sum())


def _check_rankable(candidates: pd.DataFrame, n_test_users: int) -> None:
    """A list whose candidates are all liked (or all disliked) ranks the same whatever the
    order: with every rating liked (``like_if: ">= 1"`` on a 1-5 scale), precision and nDCG
    are 1.0 for any system. Such test users are counted and warned about; none left that
    could be ranked is an error, as none with a liked held-out item is."""
    test_likes = candidates.loc[candidates["user_set"] == "test", "liked"]
    if not (test_likes == 1).any():
        raise ValueError(
            f"split: none of the {n_test_users} test users has a liked held-out item, so every metric would be "
            "0; check like_if or the data"
        )
    all_liked, all_disliked = one_sided_users(candidates)
    if all_liked + all_disliked == n_test_users:
        raise ValueError(
            f"split: none of the {n_test_users} test users has both a liked and a disliked held-out item "
            f"({all_liked} only liked, {all_disliked} only disliked), so every ranking scores the same; "
            "check like_if (is every rating a like?) or the data"
        )
    if all_liked or all_disliked:
        log.warning(
            "split: %d of %d test users have only liked candidates and %d only disliked ones: their rankings "
            "cannot be told apart (test.candidates_all_liked/_all_disliked in stats.json)",
            all_liked,
            n_test_users,
            all_disliked,
        )


def _shuffled_candidates(liked: list[int], disliked: list[int], user: str, config: SplitSettings) -> list[int]:
    rng = _user_rng(config.seed + 1, user)  # a stream of its own: shuffling must not move the split
    if config.max_candidates is not None:
        keep_liked, keep_disliked = _proportional_caps(len(liked), len(disliked), config.max_candidates)
        liked = [liked[i] for i in sorted(rng.choice(len(liked), keep_liked, replace=False))] if liked else []
        disliked = (
            [disliked[i] for i in sorted(rng.choice(len(disliked), keep_disliked, replace=False))] if disliked else []
        )
    pool = liked + disliked
    return [pool[i] for i in rng.permutation(len(pool))]


def _table(
    frame: pd.DataFrame, user_sets: np.ndarray, rows: list[int], extra: dict[str, list], contract: Table
) -> pd.DataFrame:
    index = np.asarray(rows, dtype=np.int64)
    table = pd.DataFrame(
        {
            "user": frame["user"].astype(str).to_numpy(dtype=object)[index],
            "user_set": user_sets[index],
            "item": frame["item"].astype(str).to_numpy(dtype=object)[index],
            "liked": frame["liked"].to_numpy()[index],
            **extra,
        }
    )
    return table[list(contract.columns)].astype(dict(contract.dtypes)).reset_index(drop=True)


def split_stats(split: pd.DataFrame, candidates: pd.DataFrame) -> dict[str, dict[str, float | int]]:
    """Per user set: users, history/held-out rows, candidate list sizes, and the users whose
    candidates are all liked or all disliked (nothing to rank)."""
    stats: dict[str, dict[str, float | int]] = {}
    for user_set in ("train", "test"):
        rows = split[split["user_set"] == user_set]
        sizes = candidates[candidates["user_set"] == user_set].groupby("user").size()
        all_liked, all_disliked = one_sided_users(candidates, user_set)
        stats[user_set] = {
            "users": int(rows["user"].nunique()),
            "history": int((rows["side"] == "history").sum()),
            "held_out": int((rows["side"] == "held_out").sum()),
            "candidates_mean": round(float(sizes.mean()), 2) if len(sizes) else 0.0,
            "candidates_median": float(sizes.median()) if len(sizes) else 0.0,
            "candidates_max": int(sizes.max()) if len(sizes) else 0,
            "candidates_all_liked": all_liked,
            "candidates_all_disliked": all_disliked,
        }
    return stats
