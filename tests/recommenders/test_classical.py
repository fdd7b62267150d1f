"""The classical models against their known answers (closed forms, numeric limits); their
ranking through the baselines stage is tests/evaluation/test_baselines.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from rekalm.recommenders import classical
from rekalm.recommenders.interactions import Interactions


def test_ease_matches_its_closed_form():
    # X'X + l2 I inverted by hand for a 3-item example; B = -P/diag(P) with a zero diagonal.
    X = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1], [1, 0, 0]], dtype=float)
    users, items = np.array(["a", "b", "c", "d"], dtype=object), np.array(["i0", "i1", "i2"], dtype=object)
    data = Interactions(matrix=sparse.csr_matrix(X), users=users, items=items)
    P = np.linalg.inv(X.T @ X + 2.0 * np.eye(3))
    B = -P / np.diag(P)
    np.fill_diagonal(B, 0.0)
    u, i = np.repeat(np.arange(4), 3), np.tile(np.arange(3), 4)
    np.testing.assert_allclose(classical.fit_ease(data, seed=0, threads=1, l2=2.0)(u, i), (X @ B)[u, i], rtol=1e-10)


def test_ease_switches_to_float32_past_the_lapack_limit(monkeypatch):
    """SciPy's OpenBLAS crashes in dpotrf on large float64 matrices (BoardGameGeek's 21,772
    items): past 12,000 items EASE runs in float32, and past float32's limit it stops with
    one line."""
    rng = np.random.default_rng(3)
    X = sparse.csr_matrix((rng.random((30, 12)) < 0.3).astype(np.float32))
    data = Interactions(
        matrix=X, users=np.array([f"u{n}" for n in range(30)]), items=np.array([f"i{n}" for n in range(12)])
    )
    u, i = np.repeat(np.arange(30), 12), np.tile(np.arange(12), 30)
    exact = classical.fit_ease(data, seed=0, threads=1, l2=2.0)(u, i)
    active = int((X.getnnz(axis=0) > 0).sum())
    monkeypatch.setattr(classical, "_FLOAT64_MAX_ITEMS", active - 1)
    assert classical.lapack_dtype(active) == np.float32
    np.testing.assert_allclose(classical.fit_ease(data, seed=0, threads=1, l2=2.0)(u, i), exact, rtol=1e-4, atol=1e-5)
    monkeypatch.setattr(classical, "_LAPACK_MAX_BYTES", active * active * 4 - 1)
    with pytest.raises(ValueError, match=rf"EASE: {active} items exceed what SciPy's LAPACK"):
        classical.fit_ease(data, seed=0, threads=1, l2=2.0)
