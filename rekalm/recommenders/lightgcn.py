"""LightGCN (He et al., SIGIR 2020) on the train graph the other baselines use.

Users and items are the nodes of the bipartite graph of the liked training rows
(``Interactions.matrix``). Layer 0 is a free embedding per node (normal, std 0.1, as the
official PyTorch code); layer k+1 = A_hat @ layer k with A_hat = D^-1/2 A D^-1/2 (no self
loops); the final embedding combines the layers (``combination``: ``mean`` = alpha_k =
1/(K+1) as the paper, ``sum``, or ``last``); score = user . item. Training: BPR loss on
(user, liked item, sampled unliked item) triples, every liked pair once per epoch, plus the
official code's L2 term on the batch's layer-0 embeddings, reg * 1/2 (||e_u||^2 + ||e_i||^2 +
||e_j||^2) summed over the batch / batch size (``tf.nn.l2_loss`` in the TF code, an explicit
1/2 in the PyTorch one), optimised with Adam.

Early stopping: during tuning ``data.validation`` scores the model on the validation users
after every epoch; training stops after ``patience`` epochs without improvement, keeps the best
epoch's embeddings and asks the refit (on all training rows, where there is no validation) to
train exactly that many epochs (:class:`rekalm.recommenders.interactions.Validation`).

Propagation is a torch sparse CSR product (CPU and CUDA), not PyG's ``LightGCN``: its
``edge_index`` message passing (gather + scatter per edge) was 2-37x slower per epoch, one
thread, same batches and losses: Last.FM 3.1 s vs 0.48 s, DBbook 2.3 vs 1.1, ML-1M 1,185 vs 32,
with 2.5-8x the memory (``benchmarks/lightgcn.py``). PyG's model stays the reference the tests
compare the loss trajectory with. The backward of A_hat @ E is A_hat @ grad (A_hat is
symmetric), written out so autograd never transposes the CSR matrix.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

from rekalm.common.device import resolve_device as resolve
from rekalm.recommenders.interactions import Interactions, PairScorer
from rekalm.recommenders.registry import register_baseline

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

COMBINATIONS = ("mean", "sum", "last")
INIT_STD = 0.1  # layer-0 initialisation, as the official PyTorch code
NEGATIVE_RETRIES = 50  # resampling rounds for a negative that is a liked item


def normalized_adjacency(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    """A_hat = D^-1/2 A D^-1/2 of the bipartite graph A = [[0, R], [R^T, 0]] (users first,
    then items); a node without edges keeps a zero row (no division by zero)."""
    liked = sparse.coo_matrix(matrix)
    n_users, n_items = liked.shape
    # Built from its COO entries rather than sparse.bmat, whose scipy-stubs return type
    # (spmatrix) mypy cannot do arithmetic on; the same matrix.
    rows = np.concatenate([liked.row, liked.col + n_users])
    columns = np.concatenate([liked.col + n_users, liked.row])
    size = n_users + n_items
    adjacency = sparse.csr_matrix((np.ones(len(rows), dtype=np.float64), (rows, columns)), shape=(size, size))
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inverse_root = np.zeros_like(degree)
    np.divide(1.0, np.sqrt(degree), out=inverse_root, where=degree > 0)
    scale = sparse.diags(inverse_root)
    return sparse.csr_matrix(scale @ adjacency @ scale)


def torch_csr(matrix: sparse.csr_matrix, device: torch.device, dtype: Any = None) -> torch.Tensor:
    import torch

    matrix = sparse.csr_matrix(matrix)
    with warnings.catch_warnings():
        # "Sparse CSR tensor support is in beta state": the one product used here is tested
        # against the dense formula (tests/recommenders/test_lightgcn.py).
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(np.int64)),
            torch.from_numpy(matrix.indices.astype(np.int64)),
            torch.from_numpy(matrix.data),
            size=matrix.shape,
            dtype=dtype or torch.float32,
            device=device,
            check_invariants=True,  # once, at construction: a malformed matrix fails here
        )


def _symmetric_product() -> Any:  # a torch.autograd.Function subclass, built on first use
    """A @ X for a *symmetric* sparse A, differentiable in X: the backward pass is A @ grad
    (A^T = A), so autograd never transposes the CSR matrix (a CSC conversion per step)."""
    import torch

    class SymmetricProduct(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, adjacency: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
            ctx.adjacency = adjacency
            return adjacency @ dense

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
            return None, ctx.adjacency @ grad

    return SymmetricProduct


def propagate(
    adjacency: torch.Tensor, embedding: torch.Tensor, layers: int, combination: str = "mean"
) -> torch.Tensor:
    """The final node embeddings: layers 0..K of E_{k+1} = A_hat E_k, combined."""
    if combination not in COMBINATIONS:
        raise ValueError(f"lightgcn: combination: expected one of {list(COMBINATIONS)}, got {combination!r}")
    product = _symmetric_product()
    current, total = embedding, embedding
    for _ in range(int(layers)):
        current = product.apply(adjacency, current)
        total = total + current
    if combination == "last":
        return current
    return total / (int(layers) + 1) if combination == "mean" else total


def bpr_loss(
    final: torch.Tensor,
    embedding: torch.Tensor,
    users: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    reg: float,
) -> torch.Tensor:
    """Mean BPR loss -log sigmoid(s_ui - s_uj) over the batch plus the official code's
    reg * 1/2 (||e0_u||^2 + ||e0_i||^2 + ||e0_j||^2) / batch size. Node indices: users
    first, items offset by the user count (``positives``/``negatives`` already offset)."""
    import torch

    positive_scores = (final[users] * final[positives]).sum(dim=1)
    negative_scores = (final[users] * final[negatives]).sum(dim=1)
    ranking = torch.nn.functional.softplus(negative_scores - positive_scores).mean()
    layer0 = embedding[users].pow(2).sum() + embedding[positives].pow(2).sum() + embedding[negatives].pow(2).sum()
    return ranking + float(reg) * 0.5 * layer0 / len(users)


def sample_triples(matrix: sparse.csr_matrix, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every liked (user, item) pair once, in a seeded random order, each with an item the
    user did not like drawn uniformly (redrawn while it is a liked one)."""
    coo = matrix.tocoo()
    order = rng.permutation(coo.nnz)
    users = coo.row[order].astype(np.int64)
    positives = coo.col[order].astype(np.int64)
    negatives = rng.integers(0, matrix.shape[1], size=len(users))
    for _ in range(NEGATIVE_RETRIES):
        liked = np.asarray(matrix[users, negatives]).ravel() > 0
        if not liked.any():
            break
        negatives[liked] = rng.integers(0, matrix.shape[1], size=int(liked.sum()))
    return users, positives, negatives


def initial_embedding(nodes: int, dim: int, seed: int) -> torch.Tensor:
    """Layer 0, normal with std 0.1 (the official code), drawn on the CPU from the seed."""
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    return torch.empty(nodes, int(dim)).normal_(0.0, INIT_STD, generator=generator)


def train_epoch(
    adjacency: torch.Tensor,
    embedding: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    matrix: sparse.csr_matrix,
    rng: np.random.Generator,
    layers: int,
    combination: str,
    reg: float,
    batch_size: int,
) -> list[float]:
    """One epoch of Adam steps on :func:`sample_triples`' batches (every batch propagates the
    whole graph, as the official code); the batch losses."""
    import torch

    n_users = matrix.shape[0]
    users, positives, negatives = sample_triples(matrix, rng)
    losses = []
    for start in range(0, len(users), int(batch_size)):
        stop = start + int(batch_size)
        batch_users, batch_positives, batch_negatives = (
            torch.from_numpy(part[start:stop]).to(embedding.device)
            for part in (users, positives + n_users, negatives + n_users)
        )
        optimizer.zero_grad()
        final = propagate(adjacency, embedding, layers, combination)
        loss = bpr_loss(final, embedding, batch_users, batch_positives, batch_negatives, reg=reg)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def resolve_device(setting: str) -> torch.device:
    """``cpu``, ``cuda`` (a GPU must be there: one-line stop otherwise) or ``auto``."""
    if setting not in ("cpu", "cuda", "auto"):
        raise ValueError(f"baselines.grids.lightgcn.device: expected cpu, cuda or auto, got {setting!r}")
    return resolve(setting, where="baselines lightgcn")


@register_baseline("lightgcn", seeded=True)
def fit_lightgcn(
    data: Interactions,
    seed: int,
    threads: int,
    embedding_dim: int = 64,
    layers: int = 3,
    combination: str = "mean",
    lr: float = 1e-3,
    reg: float = 1e-4,
    batch_size: int = 2048,
    max_epochs: int = 200,
    patience: int = 10,
    device: str = "cpu",
) -> PairScorer:
    """LightGCN; with ``data.validation`` (tuning) it stops early and records the best epoch
    count, without it (the refit) it trains ``max_epochs`` epochs."""
    import torch

    if combination not in COMBINATIONS:
        raise ValueError(f"baselines.grids.lightgcn.combination: expected one of {list(COMBINATIONS)}")
    where = resolve_device(device)
    n_users, n_items = data.matrix.shape
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        adjacency = torch_csr(normalized_adjacency(data.matrix), where)
        embedding = torch.nn.Parameter(initial_embedding(n_users + n_items, embedding_dim, seed).to(where))
        optimizer = torch.optim.Adam([embedding], lr=float(lr))
        matrix = sparse.csr_matrix(data.matrix)

        def final_embeddings() -> tuple[np.ndarray, np.ndarray]:
            with torch.no_grad():
                final = propagate(adjacency, embedding, layers, combination).double().cpu().numpy()
            return final[:n_users], final[n_users:]

        validation = data.validation
        best_score, best_epoch, best_state = -np.inf, 0, embedding.detach().clone()
        for epoch in range(1, int(max_epochs) + 1):
            losses = train_epoch(adjacency, embedding, optimizer, matrix, rng, layers, combination, reg, batch_size)
            if validation is None:
                continue
            score = validation.score(_dot_scorer(*final_embeddings()))
            log.info("lightgcn epoch %d: mean batch loss %.5f, validation %.4f", epoch, np.mean(losses), score)
            if score > best_score:  # NaN never improves
                best_score, best_epoch, best_state = score, epoch, embedding.detach().clone()
            elif epoch - best_epoch >= int(patience):
                break
        if validation is not None:
            with torch.no_grad():
                embedding.copy_(best_state)
            validation.refit["max_epochs"] = max(1, best_epoch)
        return _dot_scorer(*final_embeddings())
    finally:
        torch.set_num_threads(previous_threads)


def _dot_scorer(user_factors: np.ndarray, item_factors: np.ndarray) -> PairScorer:
    return lambda user_index, item_index: np.einsum("ij,ij->i", user_factors[user_index], item_factors[item_index])
