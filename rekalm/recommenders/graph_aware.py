"""Item-graph-aware baselines from Cornac 3.0.1: C2PF (Salah & Lauw, IJCAI 2018) and MCF
(Park et al., WWW 2017), each fed an item graph (:mod:`rekalm.recommenders.item_graph`)
as a ``cornac.data.GraphModality`` on exactly the interaction matrix's index spaces
(cornac's user and item ids *are* our row and column indices, mapped to themselves).

==============  ===============  =================================================
baseline        reads            item graph
==============  ===============  =================================================
``c2pf``        ``item_facts``   items sharing a (relation, value): :func:`facts_graph`
``mcf``         ``item_facts``   the same
``c2pf_rules``  ``item_rules``   antecedent -> consequent, weight = confidence
``mcf_rules``   ``item_rules``   the same
==============  ===============  =================================================

Both models are cornac's own code; what is ours is the data they get:

- C2PF (Poisson factorisation with item context) takes the binary liked matrix as counts and
  the graph's weights as context counts, the graph made two-way first (cornac's C++ segfaults
  on a one-way link; for the rules graph a pair is linked when a rule links it either way,
  weight the larger confidence: :func:`symmetric`). Score = user factors . (item factors + context
  factors), the sum cornac's ``C2PF.score`` computes; it is computed here for all items at
  once because cornac's ``score(user, item)`` adds the whole context matrix for one item.
  Cornac draws C2PF's initial values from NumPy's global generator: it is seeded with the
  replicate's seed for the fit and put back as it was afterwards.
- MCF regresses sigmoid(user . item) on the ratings and sigmoid(item . context item) on the
  graph's weights, both scaled to [0, 1]. It was written for explicit ratings: on
  positive-only data every target would be 1 and it would learn nothing that ranks. So it
  gets ``negatives`` sampled unobserved (user, item) pairs per liked pair as 0 ratings and as
  many sampled unlinked item pairs per edge as 0 edges (the standard pointwise recipe for
  implicit feedback); the edge weights are divided by their maximum, so with the 0 edges
  they span [0, 1] and cornac's min-max scaling leaves them as they are (it would otherwise
  map the weakest link to 0, i.e. "not linked"). Cornac's SGD visits rows in the order given
  (no shuffling), so the rows are shuffled once, seeded. Score = user . item factors, the
  ranking of cornac's sigmoid score.

Both are single-threaded (cornac's C++/Cython loops); ``threads`` is not used. Items no
training user liked are left out of the graph by cornac (``get_train_triplet``); a graph left
with no edge is refused with one line naming the baseline (:func:`require_edges`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np
from scipy import sparse

from rekalm.recommenders.global_seed import numpy_global_seed
from rekalm.recommenders.interactions import Interactions, PairScorer, rows_scorer
from rekalm.recommenders.item_graph import ItemGraph, facts_graph, rules_graph
from rekalm.recommenders.registry import register_baseline

log = logging.getLogger(__name__)


def given(data: Interactions, kind: str):
    """The knowledge ``kind`` the baseline declared, or a one-line error when it is missing."""
    value = getattr(data.knowledge, kind)
    if value is None:
        raise ValueError(f"{kind}: not given to a baseline that reads it (declared with reads=({kind!r},))")
    return value


def facts_item_graph(data: Interactions, max_value_items: int) -> ItemGraph:
    return facts_graph(given(data, "item_facts"), len(data.items), max_value_items=int(max_value_items))


def rules_item_graph(data: Interactions) -> ItemGraph:
    return rules_graph(given(data, "item_rules"), len(data.items))


def require_edges(baseline: str, graph: ItemGraph, data: Interactions) -> None:
    """Stop with one line when the graph gives cornac no context to fit: no edge at all, or no
    edge between two items a training user liked. Cornac keeps only the latter
    (``get_train_triplet``) and, left with none, fails deep inside with an IndexError (C2PF) or
    a ``min() arg is an empty sequence`` (MCF) that names neither the model nor the data."""
    if graph.matrix.nnz == 0:
        raise ValueError(
            f"{baseline}: the item graph has no edges: this dataset's knowledge links no two items ({graph.stats})"
        )
    liked = np.asarray(data.matrix.getnnz(axis=0)) > 0
    edges = graph.matrix.tocoo()
    if not (liked[edges.row] & liked[edges.col]).any():
        raise ValueError(
            f"{baseline}: the item graph has no edge between two items liked in training, the only edges cornac "
            f"keeps ({graph.stats}, items liked in training: {int(liked.sum())})"
        )


def symmetric(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    """``matrix`` with every link made two-way, weight = the larger of the two directions.

    Cornac's C2PF C++ (``cpp_c2pf.cpp``) needs a context graph whose *pattern* is symmetric: it
    walks column i of the context matrix as item i's context but reads and writes the per-link
    parameters at (i, j), so a link j -> i without i -> j sends it to entries that do not exist,
    and cornac 3.0.1 dies with a segmentation fault (measured: a single one-way link is
    enough). The facts graph is symmetric already (this is a no-op for it); a rules graph is
    directed (a rule's confidence is), so for C2PF each rule is read as "these two items go
    together", with the larger confidence where rules link the pair both ways, the same
    "largest confidence" convention :func:`rules_graph` uses for several rules on one pair.
    """
    matrix = sparse.csr_matrix(matrix)
    return matrix.maximum(matrix.T).tocsr()


def cornac_dataset(
    user_index: np.ndarray,
    item_index: np.ndarray,
    values: np.ndarray,
    shape: tuple[int, int],
    graph: sparse.csr_matrix | sparse.coo_matrix,
    seed: int,
):
    """A cornac Dataset whose user/item ids are our indices, with ``graph`` as its item graph."""
    from cornac.data import Dataset, GraphModality

    n_users, n_items = shape
    user_map = OrderedDict((u, u) for u in range(n_users))
    item_map = OrderedDict((i, i) for i in range(n_items))
    dataset = Dataset(
        num_users=n_users,
        num_items=n_items,
        uid_map=user_map,
        iid_map=item_map,
        uir_tuple=(np.asarray(user_index, dtype=int), np.asarray(item_index, dtype=int), np.asarray(values, float)),
        seed=seed,
    )
    edges = graph.tocoo()
    modality = GraphModality(data=list(zip(edges.row.tolist(), edges.col.tolist(), edges.data.tolist())))
    dataset.add_modalities(item_graph=modality.build(id_map=item_map))
    return dataset


def fit_c2pf_on(baseline: str, data: Interactions, graph: ItemGraph, seed: int, k: int, max_iter: int) -> PairScorer:
    from cornac.models import C2PF

    require_edges(baseline, graph, data)
    liked = data.matrix.tocoo()
    context = symmetric(graph.matrix)  # cornac's C2PF segfaults on a one-way link: see symmetric()
    dataset = cornac_dataset(liked.row, liked.col, np.ones(liked.nnz), data.matrix.shape, context, seed)
    model = C2PF(k=int(k), max_iter=int(max_iter), variant="c2pf")
    with numpy_global_seed(seed):  # C2PF's C++ draws its starting values from np.random
        model.fit(dataset)
    users = np.asarray(model.Theta, dtype=np.float64)
    items = np.asarray(model.Beta, dtype=np.float64) + np.asarray(model.Xi, dtype=np.float64)
    return lambda user_index, item_index: np.einsum("ij,ij->i", users[user_index], items[item_index])


def _sample_unobserved(
    observed: sparse.csr_matrix, rows: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each given row, a uniformly drawn column it does not hold (one redraw, then the
    rare remaining collisions are dropped)."""
    columns = rng.integers(0, observed.shape[1], size=len(rows))
    if not len(rows):
        return rows, columns
    for _ in range(2):
        hit = np.asarray(observed[rows, columns]).ravel() != 0
        if not hit.any():
            break
        columns[hit] = rng.integers(0, observed.shape[1], size=int(hit.sum()))
    keep = np.asarray(observed[rows, columns]).ravel() == 0
    return rows[keep], columns[keep]


def fit_mcf_on(
    baseline: str,
    data: Interactions,
    graph: ItemGraph,
    seed: int,
    k: int,
    max_iter: int,
    learning_rate: float,
    lamda: float,
    negatives: int,
) -> PairScorer:
    from cornac.models import MCF

    require_edges(baseline, graph, data)
    rng = np.random.default_rng(seed)
    liked = data.matrix.tocoo()
    negative_users, negative_items = _sample_unobserved(
        data.matrix.tocsr(), np.repeat(liked.row, int(negatives)).astype(np.int64), rng
    )
    user_index = np.concatenate([liked.row, negative_users])
    item_index = np.concatenate([liked.col, negative_items])
    values = np.concatenate([np.ones(liked.nnz), np.zeros(len(negative_users))])
    order = rng.permutation(len(values))

    edges = graph.matrix.tocoo()
    linked = graph.matrix.tocsr(copy=True)
    linked.data = np.ones_like(linked.data)  # any link, whatever its weight
    unlinked_source, unlinked_target = _sample_unobserved(
        linked, np.repeat(edges.row, int(negatives)).astype(np.int64), rng
    )
    edge_values = np.concatenate([edges.data / edges.data.max(), np.zeros(len(unlinked_source))])
    edge_order = rng.permutation(len(edge_values))
    weighted = sparse.coo_matrix(
        (
            edge_values[edge_order],
            (
                np.concatenate([edges.row, unlinked_source])[edge_order],
                np.concatenate([edges.col, unlinked_target])[edge_order],
            ),
        ),
        shape=graph.matrix.shape,
    )
    # Kept as COO (not summed to CSR) so the 0 edges stay explicit entries for cornac.
    dataset = cornac_dataset(user_index[order], item_index[order], values[order], data.matrix.shape, weighted, seed)
    model = MCF(
        k=int(k),
        max_iter=int(max_iter),
        learning_rate=float(learning_rate),
        lamda=float(lamda),
        seed=seed,
    )
    model.fit(dataset)
    users = np.asarray(model.U, dtype=np.float64)
    items = np.asarray(model.V, dtype=np.float64)
    return rows_scorer(lambda batch: users[batch] @ items.T)


@register_baseline("c2pf", seeded=True, reads=("item_facts",))
def fit_c2pf(
    data: Interactions, seed: int, threads: int, k: int = 50, max_iter: int = 50, max_value_items: int = 100
) -> PairScorer:
    """C2PF with the facts graph as item context."""
    return fit_c2pf_on("c2pf", data, facts_item_graph(data, max_value_items), seed, k, max_iter)


@register_baseline("c2pf_rules", seeded=True, reads=("item_rules",))
def fit_c2pf_rules(data: Interactions, seed: int, threads: int, k: int = 50, max_iter: int = 50) -> PairScorer:
    """C2PF with the association-rules graph as item context."""
    return fit_c2pf_on("c2pf_rules", data, rules_item_graph(data), seed, k, max_iter)


@register_baseline("mcf", seeded=True, reads=("item_facts",))
def fit_mcf(
    data: Interactions,
    seed: int,
    threads: int,
    k: int = 32,
    max_iter: int = 50,
    learning_rate: float = 0.01,
    lamda: float = 0.001,
    negatives: int = 4,
    max_value_items: int = 100,
) -> PairScorer:
    """MCF co-factorising the liked matrix and the facts graph."""
    graph = facts_item_graph(data, max_value_items)
    return fit_mcf_on("mcf", data, graph, seed, k, max_iter, learning_rate, lamda, negatives)


@register_baseline("mcf_rules", seeded=True, reads=("item_rules",))
def fit_mcf_rules(
    data: Interactions,
    seed: int,
    threads: int,
    k: int = 32,
    max_iter: int = 50,
    learning_rate: float = 0.01,
    lamda: float = 0.001,
    negatives: int = 4,
) -> PairScorer:
    """MCF co-factorising the liked matrix and the association-rules graph."""
    return fit_mcf_on("mcf_rules", data, rules_item_graph(data), seed, k, max_iter, learning_rate, lamda, negatives)
