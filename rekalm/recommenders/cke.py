"""CKE, structural part (Zhang et al., "Collaborative Knowledge Base Embedding for
Recommender Systems", KDD 2016), as baseline ``cke`` reading ``item_facts``.

The model: user u has a vector p_u; item i has a collaborative offset eta_i and an entity
embedding v_i of the item's node in a knowledge graph whose other nodes are the facts' values
(one node per distinct value string, so a person who is both author and subject is one node)
and whose edges are the facts (item, relation, value). The item's vector is eta_i + v_i;
score(u, i) = p_u . (eta_i + v_i). Trained by minimising, jointly, per step

    BPR:  -ln sigmoid(score(u, i) - score(u, j))     a liked pair (u, i), j uniform
    KG:   -ln sigmoid(f(h, r, t) - f(h, r, t'))      a fact, its tail t' replaced at random
    L2:   reg * (|p_u|^2 + |eta_i + v_i|^2 + |eta_j + v_j|^2) / batch

    loss = BPR + kg_weight * KG + L2

Faithful to the paper: the item vector as the sum of a CF offset and the KG entity
embedding; the pairwise (Bayesian) ranking losses on both parts, optimised jointly; tail
corruption for the KG negatives.

Adapted:

- TransE instead of TransR for f: the knowledge-graph embedding is PyG's
  ``torch_geometric.nn.kge.TransE`` with the L2 norm (f = -|norm(e_h) + e_r - norm(e_t)|_2,
  entities unit-normalised), because PyG has no TransR and the facts here have few
  relations, where TransR's per-relation projection matters least. Its ``loss`` (margin
  ranking, negatives from the global torch generator) is not used; the negatives are drawn
  here from a seeded generator, with the paper's log-sigmoid.
- v_i is the item's entity embedding as TransE scores it, unit-normalised: TransE's
  initial entity vectors are large (uniform in +-6/sqrt(d)) and only their direction is
  trained by f, so the raw vectors would swamp eta_i with noise (measured on the planted
  control of tests/recommenders/test_cke.py: informative minus permuted facts gave
  0.005-0.03 nDCG@10 with the raw vectors, 0.04-0.05 normalised).
- Only the structural knowledge (the paper's textual and visual parts are other baselines:
  CTR/HFT read the text).
- Adam with mini-batches instead of the paper's SGD; one KG batch (facts drawn with
  replacement) per BPR batch, so the two losses are weighed per step.
- The number of epochs is a grid parameter (tuned on validation users like the rest), not
  early stopping.

Seeded (initialisation and sampling from ``seed``); ``threads`` caps torch's CPU threads for
the fit; ``device``: ``cpu``, ``cuda`` (stops at once with one line when torch sees no CUDA
device) or ``auto`` (CUDA when available).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rekalm.common.device import resolve_device
from rekalm.recommenders.graph_aware import given
from rekalm.recommenders.interactions import Interactions, PairScorer
from rekalm.recommenders.registry import register_baseline

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "auto")


def torch_device(setting: str) -> torch.device:
    """The torch device for ``cpu`` | ``cuda`` | ``auto``; a cuda request without CUDA stops
    at once with one line (:func:`rekalm.common.device.resolve_device`, the one owner)."""
    if setting not in DEVICES:
        raise ValueError(f"baselines.grids.cke.device: expected one of {list(DEVICES)}, got {setting!r}")
    return resolve_device(setting, where="baselines cke")


def knowledge_triples(facts: pd.DataFrame, n_items: int) -> tuple[np.ndarray, int, int]:
    """Facts as (head, relation, tail) index rows: items are entities 0..n_items-1, each
    distinct value string an entity after them. Returns (triples, entities, relations)."""
    facts = facts[["item_index", "relation", "value"]].drop_duplicates()
    head = facts["item_index"].to_numpy(dtype=np.int64)
    if len(head) and (head.min() < 0 or head.max() >= n_items):
        raise ValueError(f"item_facts: item index out of range [0, {n_items})")
    relation_codes, relations = pd.factorize(facts["relation"].astype(str), sort=True)
    value_codes, values = pd.factorize(facts["value"].astype(str), sort=True)
    triples = np.stack([head, relation_codes.astype(np.int64), n_items + value_codes.astype(np.int64)], axis=1)
    return triples, n_items + len(values), max(len(relations), 1)


@register_baseline("cke", seeded=True, reads=("item_facts",))
def fit_cke(
    data: Interactions,
    seed: int,
    threads: int,
    factors: int = 64,
    epochs: int = 30,
    lr: float = 0.01,
    reg: float = 1e-3,
    kg_weight: float = 1.0,
    batch_size: int = 1024,
    device: str = "auto",
) -> PairScorer:
    """CKE (structural): BPR-MF whose item vector adds the item's TransE entity embedding."""
    import torch
    import torch.nn.functional as F
    from torch_geometric.nn.kge import TransE

    target = torch_device(device)
    n_users, n_items = data.matrix.shape
    triples, n_entities, n_relations = knowledge_triples(given(data, "item_facts"), n_items)
    liked = data.matrix.tocoo()
    positives = torch.as_tensor(np.stack([liked.row, liked.col], axis=1), dtype=torch.long)
    facts = torch.as_tensor(triples, dtype=torch.long)

    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        with torch.random.fork_rng(devices=[]):  # PyG initialises from the global generator
            torch.manual_seed(seed)
            kge = TransE(n_entities, n_relations, int(factors), p_norm=2.0)
            users = torch.nn.Embedding(n_users, int(factors))
            offsets = torch.nn.Embedding(n_items, int(factors))
            torch.nn.init.normal_(users.weight, std=0.1)
            torch.nn.init.normal_(offsets.weight, std=0.01)
        modules = torch.nn.ModuleList([kge, users, offsets]).to(target)
        optimizer = torch.optim.Adam(modules.parameters(), lr=float(lr))
        generator = torch.Generator().manual_seed(seed)

        def item_vectors(index: torch.Tensor) -> torch.Tensor:
            return offsets(index) + F.normalize(kge.node_emb(index), p=2.0, dim=-1)

        steps = max(1, -(-len(positives) // int(batch_size)))
        for epoch in range(int(epochs)):
            order = torch.randperm(len(positives), generator=generator)
            total = 0.0
            for step in range(steps):
                batch = positives[order[step * int(batch_size) : (step + 1) * int(batch_size)]]
                negative = torch.randint(n_items, (len(batch),), generator=generator)
                kg_batch = facts[torch.randint(len(facts), (len(batch),), generator=generator)] if len(facts) else None
                corrupted = torch.randint(n_entities, (len(batch),), generator=generator)
                user, item, negative = batch[:, 0].to(target), batch[:, 1].to(target), negative.to(target)
                p, q_pos, q_neg = users(user), item_vectors(item), item_vectors(negative)
                loss = -F.logsigmoid((p * q_pos).sum(-1) - (p * q_neg).sum(-1)).mean()
                loss = loss + float(reg) * (p.pow(2).sum() + q_pos.pow(2).sum() + q_neg.pow(2).sum()) / len(batch)
                if kg_batch is not None:
                    head, relation, tail = (kg_batch[:, column].to(target) for column in range(3))
                    kg_loss = -F.logsigmoid(kge(head, relation, tail) - kge(head, relation, corrupted.to(target)))
                    loss = loss + float(kg_weight) * kg_loss.mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
            log.debug("cke epoch %d: mean loss %.4f", epoch + 1, total / steps)
        with torch.no_grad():
            user_matrix = users.weight.detach().cpu().numpy().astype(np.float64)
            item_matrix = item_vectors(torch.arange(n_items, device=target)).cpu().numpy().astype(np.float64)
    finally:
        torch.set_num_threads(threads_before)
    return lambda user_index, item_index: np.einsum("ij,ij->i", user_matrix[user_index], item_matrix[item_index])
