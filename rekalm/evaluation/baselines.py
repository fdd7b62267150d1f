"""Classical recommenders scored on exactly the LLM's candidate lists.

Each baseline ranks every candidate (held-out item) of every *test* user and nothing else,
so its metrics sit in the same table as the LLM ablations.

Training data: :func:`rekalm.recommenders.interactions.training_rows` (every split row but a
test user's held-out ones; liked rows are the positives).

Tuning (:func:`tune`): a seeded ``validation_fraction`` of the *train* users is set aside;
their held-out rows leave the tuning data and their candidate lists act as validation
candidates. Every grid point is fitted and scored by nDCG@``validation_cutoff`` (plain
numpy, standard definition: ideal DCG over all liked candidates; users without a liked
candidate are skipped). The best point (first in grid order on ties) is refitted on the full
training data. (The original study tuned on the test set instead.) An iterative model may stop
early: while tuning, its data carries ``validation``
(:class:`rekalm.recommenders.interactions.Validation`), which scores it on the validation
candidates whenever it asks (LightGCN: after every epoch); what it chose
(the best epoch count) is recorded as the grid row's ``refit`` and merged into ``chosen``, so
the refit, which has no validation users to stop on, trains exactly that long.

The models live in :mod:`rekalm.recommenders` (the registry, one module per model family);
this module imports the built-in ones, so that importing it registers them all.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

import rekalm.recommenders.cke  # noqa: F401  (CKE; torch and PyG are imported only when it fits)
import rekalm.recommenders.classical  # noqa: F401  (registers the built-in baselines)
import rekalm.recommenders.graph_aware  # noqa: F401  (C2PF, MCF; cornac is imported only when they fit)
import rekalm.recommenders.lightgcn  # noqa: F401  (LightGCN; torch is imported only when it fits)
import rekalm.recommenders.text_aware  # noqa: F401  (CTR, HFT; cornac is imported only when they fit)
from rekalm.common.io import json_safe
from rekalm.common.tables import CANDIDATES, PREDICTIONS, require_columns, run_from_predictions
from rekalm.recommenders.interactions import (
    SPLIT_NEEDED,
    Interactions,
    PairScorer,
    Validation,
    build_interactions,
    training_rows,
)
from rekalm.recommenders.knowledge_inputs import ItemKnowledge, load_item_knowledge
from rekalm.recommenders.registry import (
    BASELINE_READS,
    BASELINES,
    SEEDED_BASELINES,
    Baseline,
    get_baseline,
    register_baseline,
    tunable_parameters,
)

log = logging.getLogger(__name__)

#: Names that lived here in 0.1.0, still importable from this module (extensions written
#: for 0.1.0 import them through this module's old flat path).
__all__ = [
    "BASELINES",
    "SEEDED_BASELINES",
    "Baseline",
    "BaselineSettings",
    "Interactions",
    "PairScorer",
    "build_interactions",
    "expand_grid",
    "get_baseline",
    "register_baseline",
    "run_baseline",
    "training_rows",
    "tunable_parameters",
]


@dataclass(frozen=True)
class BaselineSettings:
    seed: int = 22  # the model's randomness (random scores, BPR initialisation): the replicate seed
    validation_seed: int = 22  # which train users validate the grid: fixed, like the data split
    validation_fraction: float = 0.2
    validation_cutoff: int = 10
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)  # this baseline's grid only
    threads: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"baselines.validation_fraction: expected a number in (0, 1), got {self.validation_fraction!r}"
            )
        if self.validation_cutoff < 1:
            raise ValueError(f"baselines.validation_cutoff: expected an integer >= 1, got {self.validation_cutoff!r}")


# --- grids --------------------------------------------------------------------------------


def expand_grid(name: str, grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values (defaults for parameters it leaves out)."""
    defaults = tunable_parameters(name)
    unknown = sorted(set(grid) - set(defaults))
    if unknown:
        raise ValueError(
            f"baselines.grids.{name}: unknown parameter(s) {unknown}; expected some of {sorted(defaults)}"
        )
    values: dict[str, list[Any]] = {}
    for key, default in defaults.items():
        given = grid.get(key, [default])
        given = list(given) if isinstance(given, (list, tuple)) else [given]
        if not given:
            raise ValueError(f"baselines.grids.{name}.{key}: expected at least one value")
        values[key] = given
    return [dict(zip(values, combination)) for combination in itertools.product(*values.values())]


def choose_validation_users(split: pd.DataFrame, fraction: float, seed: int) -> list[str]:
    """A seeded share of the train users (sorted first, so file order does not matter)."""
    train_users = sorted(split.loc[split["user_set"] == "train", "user"].astype(str).unique())
    size = min(len(train_users), max(1, round(fraction * len(train_users)))) if train_users else 0
    picked = np.random.default_rng(seed).choice(len(train_users), size=size, replace=False)
    return sorted(train_users[i] for i in picked)


# --- ranking and the validation metric --------------------------------------------------


def score_candidates(scorer: PairScorer, data: Interactions, candidates: pd.DataFrame) -> np.ndarray:
    user_index = pd.Index(data.users).get_indexer(candidates["user"].astype(str))
    item_index = pd.Index(data.items).get_indexer(candidates["item"].astype(str))
    return scorer(user_index, item_index)


def rank_candidates(candidates: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    """Candidates sorted per user by score (best first), with a 1-based ``rank``.

    Ties keep the shuffled list order, which is random with respect to the labels, so no
    baseline gains from them; NaN scores (a diverged fit during tuning) go last."""
    kept = [column for column in ("user", "item", "position", "liked") if column in candidates]
    table = candidates[kept].copy()
    table["user"] = table["user"].astype(str)
    table["item"] = table["item"].astype(str)
    table["score"] = np.asarray(scores, dtype=np.float64)
    table["_order"] = np.where(np.isfinite(table["score"]), -table["score"], np.inf)
    table = table.sort_values(["user", "_order", "position"], kind="stable")
    table["rank"] = (table.groupby("user", sort=False).cumcount() + 1).astype("int32")
    return table.drop(columns=["_order"]).reset_index(drop=True)


def mean_ndcg(ranked: pd.DataFrame, cutoff: int) -> float:
    """Mean nDCG@cutoff of a ranked table (user, rank, liked) over users with a liked
    candidate: binary gains, ideal DCG over all the user's likes (the ranx definition)."""
    gains = ranked["liked"].to_numpy(dtype=np.float64)
    ranks = ranked["rank"].to_numpy(dtype=np.float64)
    discount = np.where(ranks <= cutoff, 1.0 / np.log2(ranks + 1.0), 0.0)
    frame = pd.DataFrame({"user": ranked["user"].to_numpy(), "dcg": gains * discount, "likes": gains})
    per_user = frame.groupby("user", sort=False).agg(dcg=("dcg", "sum"), likes=("likes", "sum"))
    per_user = per_user[per_user["likes"] > 0]
    if per_user.empty:
        return float("nan")
    ideal_by_likes = np.cumsum(1.0 / np.log2(np.arange(2, cutoff + 2)))
    ideal = ideal_by_likes[np.minimum(per_user["likes"].to_numpy().astype(int), cutoff) - 1]
    return float(np.mean(per_user["dcg"].to_numpy() / ideal))


def validation_score(
    name: str, params: Mapping[str, Any], data: Interactions, candidates: pd.DataFrame, settings: BaselineSettings
) -> tuple[float, dict[str, Any]]:
    """The grid point's validation metric, and what the fit chose by validation for the refit
    (``Validation.refit``: e.g. the early-stopped epoch count; empty for one-shot models)."""

    def score(scorer: PairScorer) -> float:
        ranked = rank_candidates(candidates, score_candidates(scorer, data, candidates))
        return mean_ndcg(ranked, settings.validation_cutoff)

    validation = Validation(score=score)
    scorer = get_baseline(name)(replace(data, validation=validation), settings.seed, settings.threads, **params)
    return score(scorer), validation.refit


def tune(
    name: str,
    split: pd.DataFrame,
    candidates: pd.DataFrame,
    users: np.ndarray,
    items: np.ndarray,
    settings: BaselineSettings,
    knowledge: ItemKnowledge | None = None,
) -> dict[str, Any]:
    """Fit every grid point on the tuning data and score it on the validation candidates;
    ``knowledge``: the item knowledge the baseline reads (about items only, so the same
    for tuning and refit)."""
    validation_users = choose_validation_users(split, settings.validation_fraction, settings.validation_seed)
    rows = training_rows(split)
    held_out_of_validation = rows["user"].astype(str).isin(validation_users) & (rows["side"] == "held_out")
    tuning_data = build_interactions(rows[~held_out_of_validation], users, items)
    if knowledge is not None:
        tuning_data = replace(tuning_data, knowledge=knowledge)
    validation = candidates[
        (candidates["user_set"] == "train") & candidates["user"].astype(str).isin(validation_users)
    ]
    metric = f"ndcg@{settings.validation_cutoff}"
    results: list[dict[str, Any]] = []
    for params in tqdm(expand_grid(name, settings.grid), desc=f"tune {name}", unit="fit"):
        score, refit = float("nan"), dict[str, Any]()
        if len(validation):
            score, refit = validation_score(name, params, tuning_data, validation, settings)
        log.info("%s %s: %s = %.4f%s", name, params, metric, score, f" (refit with {refit})" if refit else "")
        results.append({"params": params, metric: score, **({"refit": refit} if refit else {})})
    scored = [r for r in results if math.isfinite(r[metric])]
    best = max(scored, key=lambda r: r[metric]) if scored else results[0]  # max keeps the first on ties
    return {
        "baseline": name,
        "metric": metric,
        "seed": settings.seed,
        "validation_seed": settings.validation_seed,
        "validation_fraction": settings.validation_fraction,
        "validation_users": len(validation_users),
        "validation_users_with_likes": int(validation.loc[validation["liked"].astype(int) == 1, "user"].nunique()),
        "grid": results,
        # The refit runs with what validation chose on top of the grid point (early stopping's
        # epoch count), so it trains as long as the best tuning fit did.
        "chosen": {**best["params"], **best.get("refit", {})},
        "chosen_score": best[metric],
    }


# --- the stage ---------------------------------------------------------------------------


def _index_ids(split: pd.DataFrame, candidates: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    users = np.array(sorted(set(split["user"].astype(str)) | set(candidates["user"].astype(str))), dtype=object)
    items = np.array(sorted(set(split["item"].astype(str)) | set(candidates["item"].astype(str))), dtype=object)
    return users, items


def run_baseline(
    name: str,
    split: pd.DataFrame,
    candidates: pd.DataFrame,
    settings: BaselineSettings,
    knowledge_paths: Mapping[str, str | os.PathLike[str]] | None = None,
) -> tuple[pd.DataFrame, dict[str, dict[str, float]], dict[str, Any]]:
    """Tune ``name`` on train users, refit on all training rows, rank each test user's
    candidates: (predictions, ranx run dict, tuning report). ``knowledge_paths``: kind ->
    file of the knowledge the baseline declared it reads (``register_baseline(reads=...)``)."""
    fit = get_baseline(name)
    require_columns(split, SPLIT_NEEDED, "split")
    require_columns(candidates, CANDIDATES, "candidates")
    users, items = _index_ids(split, candidates)
    reads = BASELINE_READS.get(name, ())
    knowledge = load_item_knowledge(reads, knowledge_paths or {}, items, name) if reads else None
    with threadpool_limits(limits=settings.threads):
        tuning = tune(name, split, candidates, users, items, settings, knowledge)
        data = build_interactions(training_rows(split), users, items)
        if knowledge is not None:
            data = replace(data, knowledge=knowledge)
        test = candidates[candidates["user_set"] == "test"]
        scores = score_candidates(fit(data, settings.seed, settings.threads, **tuning["chosen"]), data, test)
    if not np.isfinite(scores).all():
        raise ValueError(
            f"baseline {name}: non-finite scores with parameters {tuning['chosen']} (diverged?); narrow "
            f"baselines.grids.{name}"
        )
    predictions = rank_candidates(test, scores).assign(source="model")[list(PREDICTIONS.columns)]
    tuning["chosen_score"] = json_safe(tuning["chosen_score"])
    tuning["grid"] = [{**row, tuning["metric"]: json_safe(row[tuning["metric"]])} for row in tuning["grid"]]
    tuning["training"] = {
        "users": int(data.matrix.shape[0]),
        "items": int(data.matrix.shape[1]),
        "positive_interactions": int(data.matrix.nnz),
        "test_users": int(test["user"].nunique()),
        "test_candidates": int(len(test)),
    }
    return predictions, run_from_predictions(predictions), tuning
