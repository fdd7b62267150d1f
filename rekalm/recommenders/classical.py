"""Classical collaborative filtering on the interaction matrix alone: popularity, random,
cosine ItemKNN (implicit), BPR-MF (implicit) and EASE (closed form)."""

from __future__ import annotations

import hashlib
import logging
import warnings

import numpy as np
from scipy.linalg import lapack

from rekalm.recommenders.interactions import Interactions, PairScorer, rows_scorer
from rekalm.recommenders.registry import register_baseline

log = logging.getLogger(__name__)


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
    return rows_scorer(lambda users: (data.matrix[users] @ similarity).toarray())


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

    return rows_scorer(row_scores)
