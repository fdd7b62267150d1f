"""LightGCN (rekalm/recommenders/lightgcn.py) against dense formulas, a hand-computed loss and
PyG's reference model; early stopping through the tuning step's validation channel
(rekalm/evaluation/baselines.py) and the refit that trains the tuned epoch count."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse

from rekalm.common.device import DeviceUnavailableError
from rekalm.evaluation.baselines import BASELINES, BaselineSettings, run_baseline
from rekalm.recommenders import lightgcn
from rekalm.recommenders.interactions import Interactions, Validation


def random_interactions(users: int = 7, items: int = 9, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    dense = (rng.random((users, items)) < 0.35).astype(np.float32)
    dense[0] = 0.0  # a user without likes: a zero row, no division by zero
    dense[1, 0] = 1.0
    return Interactions(
        matrix=sparse.csr_matrix(dense),
        users=np.array([f"u{n}" for n in range(users)], dtype=object),
        items=np.array([f"i{n}" for n in range(items)], dtype=object),
    )


def dense_adjacency(matrix: sparse.spmatrix) -> np.ndarray:
    R = matrix.toarray().astype(np.float64)
    n_users, n_items = R.shape
    A = np.zeros((n_users + n_items, n_users + n_items))
    A[:n_users, n_users:], A[n_users:, :n_users] = R, R.T
    degree = A.sum(axis=1)
    root = np.array([1.0 / math.sqrt(d) if d else 0.0 for d in degree])
    return root[:, None] * A * root[None, :]


def cooccurrence_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Whoever likes X likes Y, whoever likes P likes Q, Z is liked most but by others only:
    test user t1 (likes X) must get Y first, t2 (likes P) Q first."""
    rows = []
    for n in range(12):
        rows += [(f"x{n}", "train", "X", 1, "history"), (f"x{n}", "train", "Y", 1, "held_out")]
        rows += [(f"x{n}", "train", "Q", 0, "held_out")]
        rows += [(f"p{n}", "train", "P", 1, "history"), (f"p{n}", "train", "Q", 1, "held_out")]
        rows += [(f"p{n}", "train", "Y", 0, "held_out")]
    for n in range(20):
        rows += [(f"z{n}", "train", "Z", 1, "history"), (f"z{n}", "train", "W", 1, "held_out")]
    for user, liked, answer in (("t1", "X", "Y"), ("t2", "P", "Q")):
        rows += [(user, "test", liked, 1, "history")]
        rows += [(user, "test", item, int(item == answer), "held_out") for item in ("Z", "Q", "Y")]
    split = pd.DataFrame(rows, columns=["user", "user_set", "item", "liked", "side"])
    split["liked"] = split["liked"].astype("int8")
    held = split[split["side"] == "held_out"].copy()
    held["position"] = held.groupby("user").cumcount().astype("int32")
    return split, held[["user", "user_set", "position", "item", "liked"]].reset_index(drop=True)


def top_item(predictions: pd.DataFrame, user: str) -> str:
    return predictions[predictions["user"] == user].sort_values("rank")["item"].iloc[0]


SETTINGS = BaselineSettings(seed=7, validation_fraction=0.25, grid={"lr": [0.01], "max_epochs": [30], "patience": [3]})


# --- the formulas ---------------------------------------------------------------------------


def test_normalized_adjacency_equals_the_dense_formula():
    data = random_interactions()
    np.testing.assert_allclose(lightgcn.normalized_adjacency(data.matrix).toarray(), dense_adjacency(data.matrix))


def test_propagation_and_its_gradient_equal_the_dense_formula():
    data = random_interactions()
    A = dense_adjacency(data.matrix)
    adjacency = lightgcn.torch_csr(lightgcn.normalized_adjacency(data.matrix), torch.device("cpu"), torch.float64)
    E = torch.randn(A.shape[0], 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    one_layer = lightgcn.propagate(adjacency, E, layers=1, combination="last")
    np.testing.assert_allclose(one_layer.numpy(), A @ E.numpy(), rtol=1e-12)
    # mean of layers 0..2, and the custom backward (A @ grad, A symmetric) against dense autograd
    E.requires_grad_(True)
    weights = torch.randn(A.shape[0], 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (lightgcn.propagate(adjacency, E, layers=2, combination="mean") * weights).sum().backward()
    dense = torch.tensor(A)
    E_dense = E.detach().clone().requires_grad_(True)
    expected = (E_dense + dense @ E_dense + dense @ (dense @ E_dense)) / 3
    (expected * weights).sum().backward()
    np.testing.assert_allclose(E.grad.numpy(), E_dense.grad.numpy(), rtol=1e-12)
    summed = lightgcn.propagate(adjacency, E.detach(), layers=2, combination="sum")
    np.testing.assert_allclose(summed.numpy(), 3 * expected.detach().numpy(), rtol=1e-12)


def test_bpr_loss_with_regularisation_equals_a_hand_computation():
    # 3 users, 4 items: nodes 0-2 users, 3-6 items. Final embeddings chosen so the scores are
    # easy: s(u0,i0)=1, s(u0,i2)=0; s(u1,i1)=0, s(u1,i3)=2; s(u2,i3)=2, s(u2,i0)=1.
    # Triples (u0, i0, i2), (u1, i1, i3), (u2, i3, i0): softplus(s_uj - s_ui) = sp(-1), sp(2), sp(-1).
    final = torch.tensor(
        [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 3.0], [0.0, 2.0]], dtype=torch.float64
    )
    layer0 = torch.arange(14, dtype=torch.float64).reshape(7, 2) / 10
    users, positives, negatives = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 6]), torch.tensor([5, 6, 3])
    loss = lightgcn.bpr_loss(final, layer0, users, positives, negatives, reg=0.1)
    ranking = (math.log1p(math.exp(-1)) + math.log1p(math.exp(2)) + math.log1p(math.exp(-1))) / 3
    squares = {node: float((layer0[node] ** 2).sum()) for node in range(7)}
    l2 = sum(squares[u] + squares[i] + squares[j] for u, i, j in zip([0, 1, 2], [3, 4, 6], [5, 6, 3]))
    assert float(loss) == pytest.approx(ranking + 0.1 * 0.5 * l2 / 3, rel=1e-12)


def test_negatives_are_never_liked_and_every_like_is_a_positive_once():
    data = random_interactions(users=30, items=12, seed=4)
    users, positives, negatives = lightgcn.sample_triples(data.matrix, np.random.default_rng(0))
    assert sorted(zip(users, positives)) == sorted(zip(*data.matrix.nonzero()))
    assert not np.asarray(data.matrix[users, negatives]).ravel().any()


# --- the model --------------------------------------------------------------------------------


def test_lightgcn_recovers_an_obvious_cooccurrence():
    split, candidates = cooccurrence_tables()
    predictions, _, tuning = run_baseline("lightgcn", split, candidates, SETTINGS)
    assert top_item(predictions, "t1") == "Y" and top_item(predictions, "t2") == "Q"
    assert tuning["chosen_score"] == 1.0


def test_same_seed_same_output_another_seed_other_scores():
    data = random_interactions(users=20, items=10, seed=2)
    u, i = np.repeat(np.arange(20), 10), np.tile(np.arange(10), 20)
    fit = lambda seed: lightgcn.fit_lightgcn(data, seed, 2, embedding_dim=8, max_epochs=5, batch_size=16)(u, i)  # noqa: E731
    np.testing.assert_array_equal(fit(3), fit(3))
    assert not np.allclose(fit(3), fit(4))


def test_a_cuda_request_without_cuda_stops_with_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailableError) as raised:
        lightgcn.fit_lightgcn(random_interactions(), 0, 1, device="cuda")
    assert str(raised.value).startswith("baselines lightgcn: expected device cuda") and "\n" not in str(raised.value)
    with pytest.raises(ValueError, match="expected cpu, cuda or auto"):
        lightgcn.fit_lightgcn(random_interactions(), 0, 1, device="gpu")


def test_the_pyg_reference_gives_the_same_loss_trajectory():
    """PyG's LightGCN (edge_index message passing) from the same layer 0, on the same batches,
    with Adam: the same losses step by step. PyG's BPRLoss has no 1/2 in its L2 term and takes
    the regularised rows as given: lambda_reg = reg / 2 on the batch's (user, pos, neg) rows."""
    from torch_geometric.nn.models import LightGCN

    data = random_interactions(users=40, items=25, seed=5)
    n_users, n_items = data.matrix.shape
    dim, layers, reg, lr, batch_size = 8, 3, 1e-2, 1e-2, 32
    adjacency = lightgcn.torch_csr(lightgcn.normalized_adjacency(data.matrix), torch.device("cpu"))
    ours = torch.nn.Parameter(lightgcn.initial_embedding(n_users + n_items, dim, seed=11))
    optimizer = torch.optim.Adam([ours], lr=lr)
    ours_losses = []
    for _ in range(3):
        ours_losses += lightgcn.train_epoch(
            adjacency, ours, optimizer, data.matrix, np.random.default_rng(5), layers, "mean", reg, batch_size
        )

    reference = LightGCN(n_users + n_items, dim, num_layers=layers)
    with torch.no_grad():
        reference.embedding.weight.copy_(lightgcn.initial_embedding(n_users + n_items, dim, seed=11))
    rows, cols = data.matrix.nonzero()
    edge_index = torch.tensor(np.array([np.r_[rows, cols + n_users], np.r_[cols + n_users, rows]]), dtype=torch.long)
    reference_optimizer = torch.optim.Adam(reference.parameters(), lr=lr)
    reference_losses = []
    for _ in range(3):
        users, positives, negatives = lightgcn.sample_triples(data.matrix, np.random.default_rng(5))
        for start in range(0, len(users), batch_size):
            u = torch.from_numpy(users[start : start + batch_size])
            i = torch.from_numpy(positives[start : start + batch_size] + n_users)
            j = torch.from_numpy(negatives[start : start + batch_size] + n_users)
            reference_optimizer.zero_grad()
            ranks = reference(edge_index, torch.stack([torch.cat([u, u]), torch.cat([i, j])]))
            positive, negative = ranks.chunk(2)
            loss = reference.recommendation_loss(positive, negative, node_id=torch.cat([u, i, j]), lambda_reg=reg / 2)
            loss.backward()
            reference_optimizer.step()
            reference_losses.append(float(loss.detach()))
    assert len(ours_losses) == len(reference_losses) > 6
    np.testing.assert_allclose(ours_losses, reference_losses, rtol=1e-4)
    assert ours_losses[-1] < ours_losses[0]  # it does learn


# --- early stopping and the refit ---------------------------------------------------------------


def test_patience_stops_early_and_keeps_the_best_epoch():
    """A planted validation curve peaking at epoch 3: with patience 2 training stops after
    epoch 5, asks the refit for 3 epochs, and returns epoch 3's model (the same as 3 epochs
    trained without validation, since the batches are drawn from the same seeded stream)."""
    data = random_interactions(users=20, items=10, seed=2)
    curve = iter([0.1, 0.2, 0.5, 0.4, 0.3, 0.9, 0.9])
    validation = Validation(score=lambda scorer: next(curve))
    params = dict(embedding_dim=8, batch_size=16, max_epochs=50, patience=2)
    u, i = np.repeat(np.arange(20), 10), np.tile(np.arange(10), 20)
    validated = Interactions(data.matrix, data.users, data.items, validation=validation)
    early = lightgcn.fit_lightgcn(validated, 3, 1, **params)
    assert validation.refit == {"max_epochs": 3}
    assert next(curve) == 0.9  # epochs 1-5 were scored, epoch 6 was not trained
    three = lightgcn.fit_lightgcn(data, 3, 1, **{**params, "max_epochs": 3})
    np.testing.assert_array_equal(early(u, i), three(u, i))


def test_the_refit_trains_the_tuned_epoch_count(monkeypatch):
    split, candidates = cooccurrence_tables()
    calls: list[tuple[bool, dict]] = []
    real_fit = BASELINES["lightgcn"]

    def spy(data, seed, threads, **params):
        calls.append((data.validation is not None, params))
        return real_fit(data, seed, threads, **params)

    spy.__signature__ = inspect.signature(real_fit)
    monkeypatch.setitem(BASELINES, "lightgcn", spy)
    _, _, tuning = run_baseline("lightgcn", split, candidates, SETTINGS)
    (tuned, tuning_params), (refit_validated, refit_params) = calls
    assert tuned and not refit_validated  # validation reaches the tuning fit only
    epochs = tuning["grid"][0]["refit"]["max_epochs"]
    assert tuning_params["max_epochs"] == 30 and 1 <= epochs < 30  # stopped early
    assert refit_params == {**tuning_params, "max_epochs": epochs} == tuning["chosen"]
