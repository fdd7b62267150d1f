"""build_sets: its stats, the checks of its settings and inputs, and files that are byte
identical across runs with the same seed."""

from __future__ import annotations

import json

import pytest
from build_sets_world import MOVIE, build, knowledge_for

from rekalm.common.io import read_jsonl, write_jsonl, write_parquet
from rekalm.llm import build_inputs
from rekalm.llm import build_sets as bs


def test_stats_report_kinds_lengths_and_cuts(world, tokenizer):
    built = build(world, tokenizer, ["collab", "graph"])
    stats = built.stats
    assert stats["train"]["examples"] == len(built.train)
    assert stats["train"]["examples_per_kind"] == {"collab": 5, "graph": 5, "ranking": 12}
    assert stats["train"]["unique_examples_per_kind"] == {"ranking": 4, "collab": 5, "graph": 5}
    for block in (
        stats["train"]["ranking_tokens"],
        stats["train"]["document_tokens"]["graph"],
        stats["test"]["prompt_tokens"],
    ):
        assert set(block) == {"count", "p50", "p95", "max"} and 0 < block["p50"] <= block["p95"] <= block["max"]
    assert stats["test"]["users"] == 2 and stats["test"]["answers_over_512_tokens"] == 0
    json.dumps(stats)  # serialisable


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"placement": "sideways"}, "lexicalize.placement: expected one of"),
        ({"document_items": "some"}, "lexicalize.document_items: expected one of"),
        (
            {"weights": {"single_source": {"documents": -1}}},
            r"weights.single_source.documents: expected a non-negative integer",
        ),
        ({"system_prompt": "Rank things."}, "'{domain}' placeholder"),
    ],
)
def test_bad_settings_raise_value_error(config, message):
    with pytest.raises(ValueError, match=message):
        build_inputs.BuildSettings.from_config(config, 2048)


def test_missing_items_raise_value_error(world, tokenizer):
    items = world["items"][world["items"]["item"] != "m10"]
    with pytest.raises(ValueError, match=r"candidates.parquet: 1 item\(s\) not in items.parquet"):
        bs.build_sets(world["split"], world["candidates"], items, {}, tokenizer, build_inputs.BuildSettings(), "movie")


def test_outputs_are_byte_identical_across_runs_with_the_same_seed(world, smollm2_tokenizer_dir, tmp_path):
    paths = {name: tmp_path / f"{name}.parquet" for name in ("split", "candidates", "items")}
    for name, path in paths.items():
        write_parquet(world[name], path)
    knowledge = {}
    for source, rows in knowledge_for(world, ["collab", "graph", "text"]).items():
        knowledge[source] = tmp_path / f"{source}.jsonl"
        write_jsonl(rows, knowledge[source])
    outputs = []
    for run, seed in (("a", 22), ("b", 22), ("c", 23)):
        out = tmp_path / run
        settings = build_inputs.BuildSettings.from_config({"seed": seed}, 2048)
        bs.build_sets_files(
            paths["split"],
            paths["candidates"],
            paths["items"],
            knowledge,
            smollm2_tokenizer_dir,
            settings,
            MOVIE,
            out / "train.jsonl",
            out / "test.jsonl",
            out / "stats.json",
            ablation="all",
        )
        outputs.append([(out / name).read_bytes() for name in ("train.jsonl", "test.jsonl", "stats.json")])
    assert outputs[0] == outputs[1]
    assert outputs[0][0] != outputs[2][0]  # another seed, another order ...
    assert sorted(outputs[0][0].splitlines()) == sorted(outputs[2][0].splitlines())  # ... of the same rows
    assert len(read_jsonl(tmp_path / "a" / "train.jsonl")) == 3 * 4 + 5 + 5 + 2
