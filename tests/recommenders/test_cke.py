"""CKE (structural): the knowledge control (issue 24, point 4), the facts as a knowledge
graph, seeding and the device refusal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from planted_knowledge import permuted_facts, planted_world, validation_ndcg

from rekalm.common.device import DeviceUnavailableError
from rekalm.recommenders import cke
from rekalm.recommenders.interactions import Interactions
from rekalm.recommenders.knowledge_inputs import ItemKnowledge
from rekalm.recommenders.registry import BASELINE_READS, SEEDED_BASELINES

# Enough steps on the small world for the KG part to shape the item vectors (about 1 s a fit).
CONTROL = {"epochs": 30, "batch_size": 64, "lr": 0.02, "kg_weight": 3.0, "reg": 1e-3, "device": "cpu"}


def test_informative_facts_beat_the_same_facts_permuted_across_items():
    """Measured on worlds 0, 1, 2: 0.845/0.787, 0.788/0.747, 0.830/0.763 nDCG@10; with
    kg_weight 0 both sides score alike, so a CKE that ignored the facts would fail."""
    data, facts, candidates = planted_world()
    n_items = len(data.items)
    informative = validation_ndcg(cke.fit_cke, data, ItemKnowledge(item_facts=facts), candidates, **CONTROL)
    permuted = validation_ndcg(
        cke.fit_cke, data, ItemKnowledge(item_facts=permuted_facts(facts, n_items)), candidates, **CONTROL
    )
    assert informative > permuted + 0.03, (informative, permuted)


def test_facts_become_item_relation_value_triples_with_one_node_per_value():
    facts = pd.DataFrame(
        {
            "item_index": [0, 1, 1, 2, 2],
            "relation": ["author", "author", "subject", "subject", "subject"],
            "value": ["Eco", "Eco", "Eco", "Semiotics", "Semiotics"],  # the last repeats the one before
        }
    )
    triples, entities, relations = cke.knowledge_triples(facts, n_items=3)
    # items 0..2, then values sorted: Eco = 3, Semiotics = 4; relations sorted: author 0, subject 1
    assert triples.tolist() == [[0, 0, 3], [1, 0, 3], [1, 1, 3], [2, 1, 4]]
    assert (entities, relations) == (5, 2)


def small_data() -> Interactions:
    data, facts, _ = planted_world()
    return Interactions(data.matrix, data.users, data.items, ItemKnowledge(item_facts=facts))


def test_same_seed_same_scores_and_the_global_generator_is_left_alone():
    data = small_data()
    users, items = np.repeat(np.arange(5), len(data.items)), np.tile(np.arange(len(data.items)), 5)
    torch.manual_seed(0)
    expected_draw = torch.rand(1)
    torch.manual_seed(0)
    first = cke.fit_cke(data, 3, 1, epochs=2, device="cpu")(users, items)
    assert torch.equal(torch.rand(1), expected_draw)  # PyG's initialisation ran in a forked generator
    assert np.isfinite(first).all()
    assert np.array_equal(first, cke.fit_cke(data, 3, 1, epochs=2, device="cpu")(users, items))
    assert not np.array_equal(first, cke.fit_cke(data, 4, 1, epochs=2, device="cpu")(users, items))


def test_a_cuda_request_without_cuda_stops_at_once(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        DeviceUnavailableError, match=r"^baselines cke: expected device cuda, 1 needed, but torch"
    ) as error:
        cke.fit_cke(small_data(), 0, 1, device="cuda")
    assert "\n" not in str(error.value)
    assert cke.torch_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="baselines.grids.cke.device: expected one of"):
        cke.torch_device("gpu")


def test_registered_as_a_seeded_facts_reader():
    assert BASELINE_READS["cke"] == ("item_facts",) and "cke" in SEEDED_BASELINES
