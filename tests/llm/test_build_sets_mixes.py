"""build_sets: mixes and ablations (which rows each knowledge source adds, with what weight)
and the knowledge a prompt carries in place (in_prompt placement)."""

from __future__ import annotations

from collections import Counter

import pytest
from build_sets_world import RULES, build, sections

from rekalm.llm import prompts


def test_two_ablations_differ_exactly_by_their_sources(world, tokenizer):
    one = build(world, tokenizer, ["collab"])
    two = build(world, tokenizer, ["collab", "graph"])
    kinds_one, kinds_two = Counter(r["kind"] for r in one.train), Counter(r["kind"] for r in two.train)
    assert set(kinds_two) - set(kinds_one) == {"graph"} and set(kinds_one) <= set(kinds_two)

    def unique(rows, kind):
        return sorted({(r["prompt"], r["completion"]) for r in rows if r["kind"] == kind})

    assert unique(one.train, "ranking") == unique(two.train, "ranking")
    assert unique(one.train, "collab") == unique(two.train, "collab")
    assert one.test == two.test  # documents placement: knowledge never enters the test prompts
    # the original study's mixes: single source = prompts + documents x3; several = prompts x3 + documents x1
    assert kinds_one == {"ranking": 4, "collab": 3 * len(RULES)}
    assert kinds_two == {"ranking": 3 * 4, "collab": len(RULES), "graph": 5}
    assert one.stats["weights"] == {"ranking": 1, "documents": 3} and two.stats["weights"] == {
        "ranking": 3,
        "documents": 1,
    }


def test_weights_come_from_config(world, tokenizer):
    built = build(world, tokenizer, ["graph"], config={"weights": {"single_source": {"ranking": 2, "documents": 1}}})
    assert Counter(r["kind"] for r in built.train) == {"ranking": 8, "graph": 5}


@pytest.mark.parametrize("seq_len", [2048, 200])
def test_in_prompt_prompt_is_the_plain_prompt_plus_a_knowledge_block(world, tokenizer, seq_len):
    plain = build(world, tokenizer, [], placement="in_prompt", seq_len=seq_len)
    graph = build(world, tokenizer, ["graph"], placement="in_prompt", seq_len=seq_len)
    assert Counter(r["kind"] for r in graph.train) == {"ranking": 4}  # no separate documents
    pairs = list(zip(sorted(r["prompt"] for r in plain.train), sorted(r["prompt"] for r in graph.train)))
    pairs += [(a["prompt"], b["prompt"]) for a, b in zip(plain.test, graph.test)]
    for without, with_facts in pairs:
        knowledge = sections(with_facts)["knowledge"]
        stripped = (
            with_facts.replace("\n\n" + prompts.KNOWLEDGE_HEADER + "\n" + "\n".join(knowledge), "")
            if knowledge
            else with_facts
        )
        assert stripped == without  # same histories, same candidates: only the facts differ
    if seq_len == 200:  # tight: histories cut (identically) and facts dropped, all counted
        assert plain.stats["train"]["ranking_cuts"]["history_cut"] >= 1
        assert (
            graph.stats["train"]["ranking_cuts"]["history_cut"] == plain.stats["train"]["ranking_cuts"]["history_cut"]
        )
        assert (
            graph.stats["train"]["ranking_cuts"]["knowledge_cut"] + graph.stats["test"]["cuts"]["knowledge_cut"] >= 1
        )


def test_in_prompt_facts_are_about_the_candidates(world, tokenizer):
    graph = build(world, tokenizer, ["graph"], placement="in_prompt")
    u1 = next(
        r
        for r in graph.train
        if "Balto (1995)" in sections(r["prompt"])["candidates"]
        and "Toy Story (1995)" in sections(r["prompt"])["candidates"]
    )
    assert sections(u1["prompt"])["knowledge"] == [
        "- Balto (1995) is a movie. Guiding the vision of this movie is the director, Simon Wells.",
        "- Toy Story (1995) is a movie. Guiding the vision of this movie is the director, John Lasseter. This movie "
        "belongs to the Animation genre.",
        "- GoldenEye (1995) is a movie. Guiding the vision of this movie is the director, Martin Campbell.",
    ]
    v2 = next(r for r in graph.test if r["user"] == "v2")  # the test prompt gets the same treatment
    assert sections(v2["prompt"])["knowledge"] == [
        "- Balto (1995) is a movie. Guiding the vision of this movie is the director, Simon Wells."
    ]


def test_documents_cover_rated_items_unless_all_are_asked_for(world, tokenizer):
    rated = build(world, tokenizer, ["graph"])
    everything = build(world, tokenizer, ["graph"], config={"document_items": "all"})

    def graph_docs(built):
        return {r["completion"].split(" is a movie.")[0] for r in built.train if r["kind"] == "graph"}

    assert "Unrated Film (1990)" not in graph_docs(rated) and "Unrated Film (1990)" in graph_docs(everything)
    assert graph_docs(everything) - graph_docs(rated) == {"Unrated Film (1990)"}
    assert rated.stats["train"]["documents_of_items_nobody_rated"] == {"graph": 1}


def test_in_prompt_rules_need_the_whole_antecedent_in_the_liked_history(world, tokenizer):
    built = build(world, tokenizer, ["collab"], placement="in_prompt")
    facts = {tuple(sections(r["prompt"])["candidates"]): sections(r["prompt"])["knowledge"] for r in built.train}
    # u1 liked Heat + Casino: both rules about its candidates Toy Story and GoldenEye apply, highest confidence first
    assert facts[("Balto (1995)", "Toy Story (1995)", "GoldenEye (1995)")] == [
        "- People who like Heat (1995) also tend to like Toy Story (1995).",
        "- People who like Heat (1995) and Casino (1995) also tend to like GoldenEye (1995).",
    ]
    # u2 liked Heat but not Nixon: the Nixon -> Sabrina rule stays out
    assert facts[("Ran (1985)", "Casino (1995)", "Dracula: Dead and Loving It (1995)", "Sabrina (1995)")] == []
    test_facts = {r["user"]: sections(r["prompt"])["knowledge"] for r in built.test}
    assert test_facts["v2"] == ["- People who like Se7en (1995) also tend to like Balto (1995)."]
    capped = build(world, tokenizer, ["collab"], placement="in_prompt", config={"in_prompt": {"max_rules": 1}})
    assert max(len(sections(r["prompt"])["knowledge"]) for r in capped.train) == 1
