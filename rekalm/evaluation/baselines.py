"""Classical recommenders scored on exactly the LLM's candidate lists.

Each baseline ranks every candidate (held-out item) of every *test* user and nothing else,
so its metrics sit in the same table as the LLM ablations.

Training data (:func:`training_rows`): every split row except a test user's held-out ones,
i.e. train users' history and held-out sides plus test users' history side. Only *liked*
rows become positive implicit feedback (value 1). Dislikes are left out of training and
treated like unobserved pairs: these models (BPR, EASE, cosine ItemKNN, popularity) learn
from positive-only feedback, and feeding a dislike as a positive would push disliked items
up. A disliked item is still ranked when it is a candidate.

Tuning (:func:`tune`): a seeded ``validation_fraction`` of the *train* users is set aside;
their held-out rows leave the tuning data and their candidate lists act as validation
candidates. Every grid point is fitted and scored by nDCG@``validation_cutoff`` (plain
numpy, standard definition: ideal DCG over all liked candidates; users without a liked
candidate are skipped). The best point (first in grid order on ties) is refitted on the full
training data. (The original study tuned on the test set instead.)

A baseline is one fit function registered with :func:`register_baseline`:
``fit(data, seed, threads, **params)`` returning a scorer of (user index, item index) pairs;
its keyword parameters (with their defaults) are what ``baselines.grids.<name>`` may tune.
A new one lives in an extension module (``extensions:`` in the config) plus its config
entry; no project file changes.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from rekalm.common.io import json_safe
from rekalm.common.registry import register
from rekalm.common.tables import CANDIDATES, PREDICTIONS, SPLIT, require_columns, run_from_predictions

log = logging.getLogger(__name__)

# The split columns a baseline reads (the split's row numbers it does not need).
SPLIT_NEEDED = SPLIT.select("user", "user_set", "item", "liked", "side")
USER_BATCH = 512  # users scored at once: bounds the dense (users x items) score block

PairScorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Interactions:
    """Positive feedback as a binary users x items matrix, with the ids of its rows/columns."""

    matrix: sparse.csr_matrix
    users: np.ndarray  # row index -> user id
    items: np.ndarray  # column index -> item id


Baseline = Callable[..., PairScorer]
#: The registry (``baselines.names``): name -> fit function ``fit(data, seed, threads, **grid)``
#: returning a scorer of (user index, item index) pairs; its keyword parameters are the
#: tunable grid (``baselines.grids.<name>``).
BASELINES: dict[str, Baseline] = {}
#: Baselines whose result depends on their seed: they run once per seed of run.seeds
#: (rekalm.replicates); the others are deterministic and run once.
SEEDED_BASELINES: set[str] = set()


def register_baseline(name: str, seeded: bool = False, replace: bool = False) -> Callable[[Baseline], Baseline]:
    """Register a fit function as baseline ``name``; ``seeded``: its scores depend on the seed.
    A name already taken is an error unless ``replace`` (:func:`rekalm.common.registry.register`)."""

    def decorate(fit: Baseline) -> Baseline:
        register(BASELINES, "baselines", name, fit, replace=replace)
        if seeded:
            SEEDED_BASELINES.add(name)
        else:
            SEEDED_BASELINES.discard(name)  # a replacement that does not depend on the seed
        return fit

    return decorate


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


# --- the baselines -----------------------------------------------------------------------


def _rows_scorer(row_scores: Callable[[np.ndarray], np.ndarray]) -> PairScorer:
    """Turn "scores of all items for these users" into a scorer of (user, item) pairs."""

    def score_pairs(user_index: np.ndarray, item_index: np.ndarray) -> np.ndarray:
        scores = np.empty(len(user_index), dtype=np.float64)
        unique_users, inverse = np.unique(user_index, return_inverse=True)
        for start in range(0, len(unique_users), USER_BATCH):
            batch = unique_users[start : start + USER_BATCH]
            block = np.asarray(row_scores(batch), dtype=np.float64)
            in_batch = (inverse >= start) & (inverse < start + len(batch))
            scores[in_batch] = block[inverse[in_batch] - start, item_index[in_batch]]
        return scores

    return score_pairs


@register_baseline("popularity")
def fit_popularity(data: Interactions, seed: int, threads: int) -> PairScorer:
    """Score = number of training users who liked the item."""
    likes = np.asarray(data.matrix.sum(axis=0)).ravel().astype(np.float64)
    return lambda user_index, item_index: likes[item_index]


@register_baseline("random", seeded=True)
def fit_random(data: Interactions, seed: int, threads: int) -> PairScorer:
    """A uniform score per (seed, user, item).

    Hashing the ids (rather than drawing from one stream) makes a user's order independent
    of which other users or items exist, so it is stable across data slices.
    """

    def score_pairs(user_index: np.ndarray, item_index: np.ndarray) -> np.ndarray:
        keys = (f"{seed}\x1f{data.users[u]}\x1f{data.items[i]}".encode() for u, i in zip(user_index, item_index))
        return np.array(
            [int.from_bytes(hashlib.sha256(key).digest()[:8], "little") / 2.0**64 for key in keys], dtype=np.float64
        )

    return score_pairs


@register_baseline("itemknn")
def fit_itemknn(data: Interactions, seed: int, threads: int, k: int = 50) -> PairScorer:
    """Cosine item-item kNN (implicit's CosineRecommender); score = sum of similarities
    between the candidate and the user's liked items, each item keeping its k neighbours."""
    # implicit is imported on use: the other baselines (and this module's tests of them)
    # need only numpy/scipy.
    from implicit.nearest_neighbours import CosineRecommender
    from implicit.utils import ParameterWarning

    # implicit counts an item among its own neighbours (similarity 1 on the diagonal):
    # K = k + 1 keeps k real neighbours.
    model = CosineRecommender(K=int(k) + 1, num_threads=threads)
    with warnings.catch_warnings():
        # CosineRecommender normalises into a CSC matrix itself and then warns about it.
        warnings.simplefilter("ignore", ParameterWarning)
        model.fit(data.matrix, show_progress=False)
    similarity = model.similarity.tocsr()
    return _rows_scorer(lambda users: (data.matrix[users] @ similarity).toarray())


@register_baseline("bpr", seeded=True)
def fit_bpr(
    data: Interactions,
    seed: int,
    threads: int,
    factors: int = 64,
    lr: float = 0.01,
    reg: float = 0.01,
    iterations: int = 100,
) -> PairScorer:
    """BPR-MF (implicit's CPU BayesianPersonalizedRanking); score = user . item factors.

    One thread always: implicit's multi-threaded SGD updates factors without locks
    (Hogwild), so the result would depend on thread timing and no seed could fix it.
    """
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    model = BayesianPersonalizedRanking(
        factors=int(factors),
        learning_rate=float(lr),
        regularization=float(reg),
        iterations=int(iterations),
        num_threads=1,
        random_state=seed,
    )
    model.fit(data.matrix.astype(np.float32), show_progress=False)
    user_factors = np.asarray(model.user_factors, dtype=np.float64)
    item_factors = np.asarray(model.item_factors, dtype=np.float64)
    return lambda user_index, item_index: np.einsum("ij,ij->i", user_factors[user_index], item_factors[item_index])


# SciPy's OpenBLAS (0.3.30, 32-bit indices) segfaults in dpotrf on large float64 matrices:
# seen at 16,000 and 21,772 items (BoardGameGeek's size), while 12,000 works. Beyond 12,000
# items EASE runs in float32 (spotrf/spotri checked at 21,772); a float32 matrix must stay
# under 2^31 bytes (23,170 items).
_FLOAT64_MAX_ITEMS = 12_000
_LAPACK_MAX_BYTES = 2**31 - 1


def lapack_dtype(size: int) -> type[np.floating]:
    """float64 for a size x size matrix SciPy's LAPACK can take, else float32."""
    if size <= _FLOAT64_MAX_ITEMS:
        return np.float64
    if size * size * 4 > _LAPACK_MAX_BYTES:
        raise ValueError(
            f"EASE: {size} items exceed what SciPy's LAPACK (32-bit indices) can invert (at most 23,170); drop rare "
            "items first"
        )
    return np.float32


def _spd_inverse(matrix: np.ndarray, block: int = 2048) -> np.ndarray:
    """The inverse of a symmetric positive definite matrix, computed in its own memory.

    LAPACK potrf + potri (Cholesky, then the inverse from it): n^3 flops and a single n^2
    array, where a Cholesky solve against the identity costs 2.3 n^3 and holds two (EASE's
    whole cost). potri fills one triangle; the other is copied over in row blocks so no
    n^2 temporary is made. float64 up to 12,000 items, float32 beyond (1.9 GB at 21,772),
    and a one-line error past float32's limit.
    """
    if matrix.dtype != lapack_dtype(matrix.shape[0]):
        matrix = matrix.astype(lapack_dtype(matrix.shape[0]))
    potrf, potri = (lapack.spotrf, lapack.spotri) if matrix.dtype == np.float32 else (lapack.dpotrf, lapack.dpotri)
    # Symmetric: the transpose of a C-ordered array is the same matrix in LAPACK's Fortran
    # order, as a view (np.asfortranarray would copy it).
    matrix = matrix.T if matrix.flags.c_contiguous else np.asfortranarray(matrix)
    factor, info = potrf(matrix, lower=False, overwrite_a=True, clean=False)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: X'X + l2 I is not positive definite (potrf info {info})")
    inverse, info = potri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: inverse failed (potri info {info})")
    for start in range(0, inverse.shape[0], block):
        stop = min(start + block, inverse.shape[0])
        inverse[start:stop, :start] = inverse[:start, start:stop].T  # upper triangle -> lower
        rows = inverse[start:stop, start:stop]
        rows[:] = np.triu(rows) + np.triu(rows, 1).T
    return inverse


@register_baseline("ease")
def fit_ease(data: Interactions, seed: int, threads: int, l2: float = 500.0) -> PairScorer:
    """EASE (Steck 2019): B = I - P diagMat(1/diag(P)), P = (X'X + l2 I)^-1; score = X_u B.

    Hand-written: implicit has no EASE; cornac 3.0.1 has one, but it would bring a second
    recommender framework (its own Dataset and id mapping) for a closed form of four numpy
    lines, tested here against the formula. Items nobody liked in training have a zero
    column in X and hence a zero column in B, so they are left out of the (dense, items^2)
    solve to save memory and time; their score is 0.
    """
    active = np.flatnonzero(data.matrix.getnnz(axis=0) > 0)
    dtype = lapack_dtype(len(active))
    if dtype != np.float64:
        log.info(
            "EASE: %d items: computed in float32 (SciPy's LAPACK crashes on float64 matrices this large)", len(active)
        )
    active_matrix = data.matrix[:, active].astype(dtype)
    weights = (active_matrix.T @ active_matrix).toarray()
    weights[np.diag_indices_from(weights)] += float(l2)
    weights = _spd_inverse(weights)
    weights /= -np.diag(weights).copy()
    weights[np.diag_indices_from(weights)] = 0.0

    def row_scores(users: np.ndarray) -> np.ndarray:
        scores = np.zeros((len(users), data.matrix.shape[1]), dtype=np.float64)
        scores[:, active] = active_matrix[users] @ weights
        return scores

    return _rows_scorer(row_scores)


def get_baseline(name: str) -> Baseline:
    if name not in BASELINES:
        raise ValueError(f"baselines.names: unknown baseline {name!r}; expected one of {sorted(BASELINES)}")
    return BASELINES[name]


def tunable_parameters(name: str) -> dict[str, Any]:
    """The keyword parameters of a baseline's fit function, with their defaults."""
    signature = inspect.signature(get_baseline(name))
    return {key: p.default for key, p in signature.parameters.items() if key not in ("data", "seed", "threads")}


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


# --- data --------------------------------------------------------------------------------


def training_rows(split: pd.DataFrame) -> pd.DataFrame:
    """Rows a baseline may learn from: everything but a test user's held-out side."""
    require_columns(split, SPLIT_NEEDED, "split")
    unknown = sorted(set(split["side"]) - {"history", "held_out"})
    if unknown:
        raise ValueError(f"split: side has unexpected value(s) {unknown}; expected 'history' or 'held_out'")
    return split[~((split["user_set"] == "test") & (split["side"] == "held_out"))]


def choose_validation_users(split: pd.DataFrame, fraction: float, seed: int) -> list[str]:
    """A seeded share of the train users (sorted first, so file order does not matter)."""
    train_users = sorted(split.loc[split["user_set"] == "train", "user"].astype(str).unique())
    size = min(len(train_users), max(1, round(fraction * len(train_users)))) if train_users else 0
    picked = np.random.default_rng(seed).choice(len(train_users), size=size, replace=False)
    return sorted(train_users[i] for i in picked)


def build_interactions(rows: pd.DataFrame, users: np.ndarray, items: np.ndarray) -> Interactions:
    """Binary users x items matrix of the liked rows (repeated likes count once)."""
    liked = rows[rows["liked"].astype(int) == 1]
    user_index = pd.Index(users).get_indexer(liked["user"].astype(str))
    item_index = pd.Index(items).get_indexer(liked["item"].astype(str))
    matrix = sparse.csr_matrix(
        (np.ones(len(liked), dtype=np.float32), (user_index, item_index)), shape=(len(users), len(items))
    )
    matrix.data[:] = 1.0  # duplicates were summed by the constructor
    return Interactions(matrix=matrix, users=users, items=items)


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
) -> float:
    scorer = get_baseline(name)(data, settings.seed, settings.threads, **params)
    ranked = rank_candidates(candidates, score_candidates(scorer, data, candidates))
    return mean_ndcg(ranked, settings.validation_cutoff)


def tune(
    name: str,
    split: pd.DataFrame,
    candidates: pd.DataFrame,
    users: np.ndarray,
    items: np.ndarray,
    settings: BaselineSettings,
) -> dict[str, Any]:
    """Fit every grid point on the tuning data and score it on the validation candidates."""
    validation_users = choose_validation_users(split, settings.validation_fraction, settings.validation_seed)
    rows = training_rows(split)
    held_out_of_validation = rows["user"].astype(str).isin(validation_users) & (rows["side"] == "held_out")
    tuning_data = build_interactions(rows[~held_out_of_validation], users, items)
    validation = candidates[
        (candidates["user_set"] == "train") & candidates["user"].astype(str).isin(validation_users)
    ]
    metric = f"ndcg@{settings.validation_cutoff}"
    results: list[dict[str, Any]] = []
    for params in tqdm(expand_grid(name, settings.grid), desc=f"tune {name}", unit="fit"):
        score = validation_score(name, params, tuning_data, validation, settings) if len(validation) else float("nan")
        log.info("%s %s: %s = %.4f", name, params, metric, score)
        results.append({"params": params, metric: score})
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
        "chosen": best["params"],
        "chosen_score": best[metric],
    }


# --- the stage ---------------------------------------------------------------------------


def _index_ids(split: pd.DataFrame, candidates: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    users = np.array(sorted(set(split["user"].astype(str)) | set(candidates["user"].astype(str))), dtype=object)
    items = np.array(sorted(set(split["item"].astype(str)) | set(candidates["item"].astype(str))), dtype=object)
    return users, items


def run_baseline(
    name: str, split: pd.DataFrame, candidates: pd.DataFrame, settings: BaselineSettings
) -> tuple[pd.DataFrame, dict[str, dict[str, float]], dict[str, Any]]:
    """Tune ``name`` on train users, refit on all training rows, rank each test user's
    candidates: (predictions, ranx run dict, tuning report)."""
    fit = get_baseline(name)
    require_columns(split, SPLIT_NEEDED, "split")
    require_columns(candidates, CANDIDATES, "candidates")
    users, items = _index_ids(split, candidates)
    with threadpool_limits(limits=settings.threads):
        tuning = tune(name, split, candidates, users, items, settings)
        data = build_interactions(training_rows(split), users, items)
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
