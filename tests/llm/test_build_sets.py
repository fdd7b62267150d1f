"""Training/test sets per ablation: formats, leakage, mixes, placement, length rule,
determinism and the single prompt renderer."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from snakemake_helpers import run_snakemake

from rekalm.common.io import read_jsonl, write_jsonl, write_parquet
from rekalm.knowledge.lexicalize import lexicalize
from rekalm.llm import build_inputs, prompt_fit, prompts
from rekalm.llm import build_sets as bs

MOVIE = {
    "name": "movie",
    "item_noun": "movie",
    "item_intro": "{name} is a {item_noun}.",
    "relations": {
        "director": {"template": "Guiding the vision of this movie is the director, {values}."},
        "genre": {"template": "This movie belongs to the {values} genre."},
    },
}

NAMES = {
    "m01": "Matrix, The (1999)",
    "m02": "Up",  # two characters: never shown in prompt text
    "m03": "Heat (1995)",
    "m04": "Casino (1995)",
    "m05": "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)",
    "m06": "Jumanji (1995)",
    "m07": "Se7en (1995)",
    "m08": "Toy Story (1995)",
    "m09": "GoldenEye (1995)",
    "m10": "Balto (1995)",
    "m11": "Nixon (1995)",
    "m12": "Sabrina (1995)",
    "m13": "Ran (1985)",
    "m14": "Dracula: Dead and Loving It (1995)",
    "m15": "Cutthroat Island (1995)",
    "m16": "Sense and Sensibility (1995)",
    "m17": "Four Rooms (1995)",
    "m18": "Get Shorty (1995)",
    "t1": "Secret Test Film (2000)",  # rated by test users only
    "t2": "Hidden Gem (2001)",  # rated by test users only
    "m99": "Unrated Film (1990)",  # in the catalog, rated by nobody
}

# user -> (user_set, liked history, disliked history, candidates in shuffled order as (item, liked))
USERS = {
    "u1": ("train", ["m01", "m03", "m04", "m05"], ["m06", "m07"], [("m10", 0), ("m08", 1), ("m02", 1), ("m09", 1)]),
    "u2": ("train", ["m03", "m08"], ["m11"], [("m13", 0), ("m04", 1), ("m14", 0), ("m12", 1)]),
    "u3": ("train", ["m05", "m06", "m09"], ["m01"], [("m16", 0), ("m15", 1)]),
    "u4": ("train", ["m02", "m11", "m12"], ["m13"], [("m01", 1), ("m18", 0), ("m17", 1)]),
    "v1": ("test", ["t1", "m03"], ["m04"], [("m06", 0), ("t2", 1), ("m05", 1)]),
    "v2": ("test", ["m07", "m08"], ["m09"], [("t1", 0), ("m10", 1)]),
}

RULES = [  # antecedent, consequent, confidence (mined from train users' histories)
    (["m03"], ["m08"], 0.6),
    (["m03", "m04"], ["m09"], 0.5),
    (["m05"], ["m15"], 0.4),
    (["m11"], ["m12"], 0.3),
    (["m07"], ["m10"], 0.7),
]

LONG_ABSTRACT = " ".join(f"Sentence number {n} tells a little more about this film." for n in range(1, 60))


def make_world(users: dict = USERS) -> dict[str, pd.DataFrame]:
    split_rows, candidate_rows = [], []
    row = 0
    for user, (user_set, liked, disliked, candidates) in users.items():
        for item, flag in [(i, 1) for i in liked] + [(i, 0) for i in disliked]:
            split_rows.append((user, user_set, item, flag, "history", row))
            row += 1
        for position, (item, flag) in enumerate(candidates):
            split_rows.append((user, user_set, item, flag, "held_out", row))
            candidate_rows.append((user, user_set, position, item, flag))
            row += 1
    split = pd.DataFrame(split_rows, columns=["user", "user_set", "item", "liked", "side", "row"]).astype(
        {"liked": "int8", "row": "int64"}
    )
    candidates = pd.DataFrame(candidate_rows, columns=["user", "user_set", "position", "item", "liked"]).astype(
        {"liked": "int8", "position": "int32"}
    )
    items = pd.DataFrame({"item": list(NAMES), "name": list(NAMES.values())})
    rules = pd.DataFrame(
        {
            "antecedent": [a for a, _, _ in RULES],
            "consequent": [c for _, c, _ in RULES],
            "support": 0.1,
            "confidence": [f for _, _, f in RULES],
            "lift": 1.5,
        }
    )
    triples = pd.DataFrame(
        {
            "item": ["m08", "m09", "m10", "m15", "t2", "m08", "m99"],
            "relation": ["director", "director", "director", "director", "director", "genre", "director"],
            "value": [
                "John Lasseter",
                "Martin Campbell",
                "Simon Wells",
                "Renny Harlin",
                "Jane Doe",
                "Animation",
                "Nobody Known",
            ],
            "source": "dbpedia",
        }
    )
    abstracts = pd.DataFrame({"item": ["m08", "m09"], "abstract": [LONG_ABSTRACT, "GoldenEye is a 1995 spy film."]})
    return {
        "split": split,
        "candidates": candidates,
        "items": items,
        "collab": rules,
        "graph": triples,
        "text": abstracts,
    }


def knowledge_for(world: dict[str, pd.DataFrame], sources: list[str]) -> dict[str, list[dict]]:
    return {source: lexicalize(source, world[source], world["items"], MOVIE)[0] for source in sources}


def build(world, tokenizer, sources, **settings) -> bs.BuiltSets:
    config = {
        "placement": settings.pop("placement", "documents"),
        "text_max_tokens": settings.pop("text_max_tokens", 40),
        **settings.pop("config", {}),
    }
    options = build_inputs.BuildSettings.from_config(config, settings.pop("seq_len", 2048))
    return bs.build_sets(
        world["split"],
        world["candidates"],
        world["items"],
        knowledge_for(world, sources),
        tokenizer,
        options,
        "movie",
        "+".join(sources),
    )


def sections(prompt: str) -> dict[str, list[str]]:
    """Lines of each user-message section of a rendered prompt."""
    headers = {
        prompts.LIKED_HEADER: "liked",
        prompts.DISLIKED_HEADER: "disliked",
        prompts.CANDIDATES_HEADER: "candidates",
        prompts.KNOWLEDGE_HEADER: "knowledge",
    }
    user = prompt.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
    found: dict[str, list[str]] = {name: [] for name in headers.values()}
    current = None
    for line in user.split("\n"):
        if line in headers:
            current = headers[line]
        elif line and current:
            found[current].append(line)
    return found


def ranked_names(completion: str) -> list[str]:
    lines = completion.split("\n")
    assert lines[0] == "Here a list:"
    return [line.split(". ", 1)[1] for line in lines[1:]]


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer_dir: Path):
    return bs.load_tokenizer(smollm2_tokenizer_dir)


@pytest.fixture(scope="module")
def world() -> dict[str, pd.DataFrame]:
    return make_world()


# ----------------------------------------------------------------- formats


def test_train_and_test_rows_follow_the_contract(world, tokenizer):
    built = build(world, tokenizer, ["collab"])
    assert all(set(row) == {"kind", "prompt", "completion"} for row in built.train)
    ranking = [row for row in built.train if row["kind"] == "ranking"]
    assert len(ranking) == 4  # one per train user (single source: ranking x1)
    for row in ranking:
        assert row["prompt"].startswith("<|im_start|>system\nYou're operating as a movie recommendation system.")
        assert row["prompt"].endswith("<|im_start|>assistant\n")
        assert row["completion"].startswith(prompts.ANSWER_PREFIX)
    for row in built.train:
        if row["kind"] == "collab":
            assert row["prompt"] == "" and row["completion"].startswith("People who like ")
    assert [row["user"] for row in built.test] == ["v1", "v2"]
    for row in built.test:
        assert set(row) == {"user", "prompt", "answer_prefix", "candidates"}
        assert row["answer_prefix"] == "Here a list:\n1. "
        assert row["prompt"].endswith("<|im_start|>assistant\n")
        assert sections(row["prompt"])["candidates"] == [c["name"] for c in row["candidates"]]
    assert built.test[0]["candidates"] == [
        {"item": "m06", "name": "Jumanji (1995)"},
        {"item": "t2", "name": "Hidden Gem (2001)"},
        {"item": "m05", "name": NAMES["m05"]},
    ]


def test_target_lists_held_out_liked_first_then_disliked_in_candidate_order(world, tokenizer):
    built = build(world, tokenizer, [])
    targets = {tuple(sections(r["prompt"])["candidates"]): ranked_names(r["completion"]) for r in built.train}
    u1_candidates = ("Balto (1995)", "Toy Story (1995)", "GoldenEye (1995)")  # "Up" dropped
    assert targets[u1_candidates] == ["Toy Story (1995)", "GoldenEye (1995)", "Balto (1995)"]
    u2_candidates = ("Ran (1985)", "Casino (1995)", "Dracula: Dead and Loving It (1995)", "Sabrina (1995)")
    assert targets[u2_candidates] == [
        "Casino (1995)",
        "Sabrina (1995)",
        "Ran (1985)",
        "Dracula: Dead and Loving It (1995)",
    ]


def test_display_names_are_kept_intact_and_short_names_are_dropped(world, tokenizer):
    built = build(world, tokenizer, [])
    lines = [line for row in built.train for part in sections(row["prompt"]).values() for line in part]
    assert "Matrix, The (1999)" in lines and NAMES["m05"] in lines
    assert "Matrix The" not in "".join(lines)
    assert "Up" not in lines
    assert all("Up" not in ranked_names(row["completion"]) for row in built.train)
    assert built.stats["counts"]["short_name_dropped_from_candidates"] == 1
    assert built.stats["counts"]["short_name_dropped_from_history"] == 1
    assert built.stats["items"]["short_names"] == 1


def test_plain_template_when_the_tokenizer_has_none(world, smollm2_tokenizer_dir):
    plain = bs.load_tokenizer(smollm2_tokenizer_dir)
    plain.chat_template = None
    built = build(world, plain, [])
    row = built.test[0]
    assert row["prompt"].startswith(
        "### System\nYou're operating as a movie recommendation system."
    )  # SmolLM2 adds no BOS itself
    assert row["prompt"].endswith("\n\n### Assistant\n")
    assert "### User\nI like the following items:\nSecret Test Film (2000)\nHeat (1995)\n" in row["prompt"]
    assert built.stats["chat_template"] == "plain"


class _BosTokenizer:
    """A stand-in for a Llama-style tokenizer that adds BOS itself and has no chat template."""

    bos_token, bos_token_id, chat_template = "<s>", 1, None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([1] if add_special_tokens else []) + [2] * len(text.split())}


def test_plain_template_starts_with_bos_when_the_tokenizer_adds_one():
    request = prompts.RankingRequest("book", ["A book"], [], ["Another book"])
    assert prompts.render_ranking_prompt(_BosTokenizer(), request) == (
        "<s>### System\n"
        + prompts.DEFAULT_SYSTEM_PROMPT.format(domain="book")
        + "\n\n### User\nI like the following items:\nA book\n\n"
        "Rank the following items:\nAnother book\n\n### Assistant\n"
    )


GEMMA_LIKE_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% "
    "endif %}"
    "<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def test_templates_without_a_system_role_get_the_system_text_in_the_user_turn(smollm2_tokenizer_dir):
    gemma_like = bs.load_tokenizer(smollm2_tokenizer_dir)
    gemma_like.chat_template = GEMMA_LIKE_TEMPLATE
    prompt = prompts.render_ranking_prompt(
        gemma_like, prompts.RankingRequest("book", [], ["Dune"], ["Emma", "Ulysses"])
    )
    system = prompts.DEFAULT_SYSTEM_PROMPT.format(domain="book")
    assert prompt == (
        f"<start_of_turn>user\n{system}\n\nI dislike the following items:\nDune\n\nRank the following "
        "items:\nEmma\nUlysses<end_of_turn>\n<start_of_turn>model\n"
    )


def test_every_item_is_one_line_and_the_answer_starts_with_the_prefix():
    request = prompts.RankingRequest("movie", ["Odd\nName"], [], ["A", "B"], ["Fact one.", "Fact\ntwo."])
    assert prompts.user_message(request) == (
        "I like the following items:\nOdd Name\n\nRank the following items:\nA\nB\n\nFacts that may help:\n- Fact "
        "one.\n- Fact two."
    )
    assert prompts.ranking_answer(["B", "A"]) == "Here a list:\n1. B\n2. A"
    assert prompts.ranking_answer(["B"]).startswith(prompts.ANSWER_PREFIX)


# ----------------------------------------------------------------- leakage


def test_no_test_user_and_no_held_out_item_leaks_into_train(world, tokenizer):
    for placement in ("documents", "in_prompt"):
        built = build(world, tokenizer, ["collab", "graph", "text"], placement=placement)
        test_only = {NAMES["t1"], NAMES["t2"]}
        for row in built.train:
            if row["kind"] in ("ranking", "collab"):  # interaction-derived rows
                assert not any(name in row["prompt"] or name in row["completion"] for name in test_only), row
        held_out_sets = []
        for row in (r for r in built.train if r["kind"] == "ranking"):
            shown = sections(row["prompt"])
            held_out = set(shown["candidates"])
            assert held_out == set(ranked_names(row["completion"]))
            assert not held_out & (set(shown["liked"]) | set(shown["disliked"])), "a held-out item sits in the history"
            held_out_sets.append(frozenset(held_out))
        train_users = {u for u, spec in USERS.items() if spec[0] == "train"}
        expected = {frozenset(NAMES[i] for i, _ in USERS[u][3] if i != "m02") for u in train_users}
        assert (
            set(held_out_sets) == expected and len(held_out_sets) == len(expected) * built.stats["weights"]["ranking"]
        )
        # catalog knowledge is item-side, not interaction data: a test-only item may have a graph document
        if placement == "documents":
            assert any(NAMES["t2"] in row["completion"] for row in built.train if row["kind"] == "graph")


def test_an_item_on_both_sides_of_a_user_is_removed_from_the_history(tokenizer):
    users = dict(USERS)
    users["u1"] = ("train", ["m01", "m08"], ["m06"], [("m08", 1), ("m10", 0)])  # duplicate rating of m08
    built = build(make_world(users), tokenizer, [])
    row = next(
        r for r in built.train if set(sections(r["prompt"])["candidates"]) == {"Toy Story (1995)", "Balto (1995)"}
    )
    assert sections(row["prompt"])["liked"] == ["Matrix, The (1999)"]
    assert built.stats["counts"]["history_items_also_held_out"] == 1


# ----------------------------------------------------------------- mixes and ablations


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


# ----------------------------------------------------------------- one renderer


def test_a_user_gets_the_same_prompt_as_train_or_test_user(world, tokenizer):
    flipped = {u: (("train" if u == "v1" else s), *rest) for u, (s, *rest) in USERS.items()}
    as_test = build(world, tokenizer, ["collab"], placement="in_prompt")
    as_train = build(make_world(flipped), tokenizer, ["collab"], placement="in_prompt")
    test_prompt = next(r["prompt"] for r in as_test.test if r["user"] == "v1")
    train_row = next(r for r in as_train.train if r["kind"] == "ranking" and r["prompt"] == test_prompt)
    assert train_row["completion"] == "Here a list:\n1. Hidden Gem (2001)\n2. " + NAMES["m05"] + "\n3. Jumanji (1995)"


# ----------------------------------------------------------------- length rule


def test_long_histories_are_cut_to_fit_seq_len_keeping_the_latest_items(world, tokenizer):
    full = build(world, tokenizer, [])
    counter = prompt_fit.TokenCounter(tokenizer)
    u1_full = next(r for r in full.train if "Balto (1995)" in sections(r["prompt"])["candidates"])
    needed = counter.count(u1_full["prompt"]) + counter.count(u1_full["completion"]) + 1
    cut = build(world, tokenizer, [], seq_len=needed - 20)
    u1 = next(r for r in cut.train if "Balto (1995)" in sections(r["prompt"])["candidates"])
    shown = sections(u1["prompt"])
    assert counter.count(u1["prompt"]) + counter.count(u1["completion"]) + 1 <= needed - 20
    full_liked = ["Matrix, The (1999)", "Heat (1995)", "Casino (1995)", NAMES["m05"]]
    full_disliked = ["Jumanji (1995)", "Se7en (1995)"]
    assert 0 < len(shown["liked"]) + len(shown["disliked"]) < 6
    assert shown["liked"] == full_liked[len(full_liked) - len(shown["liked"]) :]  # the last (most recent) ones
    assert shown["disliked"] == full_disliked[len(full_disliked) - len(shown["disliked"]) :]
    assert cut.stats["train"]["ranking_cuts"]["history_cut"] >= 1
    assert cut.stats["train"]["ranking_cuts"]["history_items_dropped"] >= 6 - len(shown["liked"]) - len(
        shown["disliked"]
    )


def test_history_cut_is_the_smallest_that_fits(world, tokenizer):
    """The estimate-guided search gives the same cut as trying every history length."""
    names = dict(zip(world["items"]["item"], world["items"]["name"]))
    counter = prompt_fit.TokenCounter(tokenizer)
    liked = [f"m{i:02d}" for i in range(3, 19) if i not in (4, 7, 8, 10)]
    user = build_inputs.UserLists("u", "train", liked, ["m01", "m04", "m07"], ["m10", "m08"], [False, True])
    history = len(user.liked_history) + len(user.disliked_history)
    for seq_len in range(120, 330, 7):
        builder = prompt_fit.PromptBuilder(
            tokenizer, counter, names, "movie", build_inputs.BuildSettings(seq_len=seq_len), None
        )
        fitted = builder.fit(user)
        limit = seq_len - fitted.answer_tokens - 1
        fitting = [
            k
            for k in range(history + 1)
            if counter.count(prompts.render_ranking_prompt(tokenizer, builder.request(user, k))) <= limit
        ]
        assert history - fitted.history_dropped == (max(fitting) if fitting else 0), seq_len
        assert fitted.exceeds_seq_len == (not fitting)


def test_knowledge_cut_is_the_smallest_that_fits(world, tokenizer):
    names = dict(zip(world["items"]["item"], world["items"]["name"]))
    counter = prompt_fit.TokenCounter(tokenizer)
    sources = [
        prompt_fit.SourceRows.from_rows(name, rows) for name, rows in knowledge_for(world, ["graph", "text"]).items()
    ]
    user = build_inputs.UserLists(
        "u", "train", ["m03", "m05"], ["m06"], ["m08", "m09", "m10", "m15"], [True, True, False, False]
    )
    for seq_len in range(150, 420, 9):
        settings = build_inputs.BuildSettings(placement="in_prompt", seq_len=seq_len)
        builder = prompt_fit.PromptBuilder(
            tokenizer, counter, names, "movie", settings, prompt_fit.KnowledgeSelector(sources, counter, settings)
        )
        fitted = builder.fit(user)
        lines = builder.knowledge.lines(user, set(user.liked_history))
        assert len(lines) == 6  # 4 graph texts + 2 abstracts (trimmed to item_tokens)
        kept_history = 3 - fitted.history_dropped
        limit = seq_len - fitted.answer_tokens - 1
        fitting = [
            k
            for k in range(len(lines) + 1)
            if counter.count(prompts.render_ranking_prompt(tokenizer, builder.request(user, kept_history, k, lines)))
            <= limit
        ]
        expected = max(fitting) if fitting else 0
        assert len(lines) - fitted.knowledge_dropped == expected, seq_len


def test_prompts_that_cannot_fit_are_kept_whole_and_counted(world, tokenizer):
    built = build(world, tokenizer, [], seq_len=90)  # the shortest train prompt (no history) has 83 tokens
    assert built.stats["train"]["ranking_cuts"]["exceeds_seq_len"] == 4
    assert built.stats["test"]["cuts"]["exceeds_seq_len"] == 2
    assert all(sections(r["prompt"])["liked"] == [] and sections(r["prompt"])["candidates"] for r in built.train)
    assert built.stats["test"]["answer_tokens"]["max"] > 0


@pytest.mark.parametrize("sources", [[], ["graph", "text"]])
def test_a_seq_len_too_small_for_any_ranking_prompt_is_an_error(world, tokenizer, sources):
    # With documents the adapter would still train, on knowledge alone, and be called "ranking".
    with pytest.raises(
        ValueError,
        match=(
            r"^seq_len 60 is too small for any ranking prompt \(the shortest train prompt, history cut, has "
            r"83 tokens\).*above 83$"
        ),
    ):
        build(world, tokenizer, sources, seq_len=60)


def test_an_empty_fact_source_is_an_error_but_no_rules_is_not(world, tokenizer):
    options = build_inputs.BuildSettings.from_config({"placement": "documents"}, 2048)
    with pytest.raises(
        ValueError,
        match=(
            r"lexicalize/graph\.jsonl is empty, so ablation 'collab_graph' would train without its 'graph' "
            r"knowledge"
        ),
    ):
        bs.build_sets(
            world["split"],
            world["candidates"],
            world["items"],
            {"collab": [], "graph": []},
            tokenizer,
            options,
            "movie",
            "collab_graph",
        )
    built = bs.build_sets(
        world["split"], world["candidates"], world["items"], {"collab": []}, tokenizer, options, "movie", "collab"
    )
    assert built.stats["train"]["unique_examples_per_kind"] == {"ranking": 4, "collab": 0}


def test_no_ranking_prompt_for_train_or_test_users_is_an_error(tokenizer):
    short = dict(
        NAMES, **{item: "X" for item in ("m06", "t2", "m05", "t1", "m10")}
    )  # every test candidate: too short a name
    world = make_world()
    world["items"] = pd.DataFrame({"item": list(short), "name": list(short.values())})
    with pytest.raises(
        ValueError,
        match=r"no test user has a ranking prompt \(2 test user\(s\) lost every candidate.*min_name_length=3",
    ):
        build(world, tokenizer, [])
    train_only = {user: spec for user, spec in USERS.items() if spec[0] == "train"}
    world = make_world({**train_only, "v1": ("test", ["m03"], [], [("m05", 1)])})
    world["items"] = pd.DataFrame(
        {
            "item": list(NAMES),
            "name": [
                ("X" if spec else name)
                for spec, name in zip(
                    [i in {c for s in train_only.values() for c, _ in s[3]} for i in NAMES], NAMES.values()
                )
            ],
        }
    )
    with pytest.raises(
        ValueError, match=r"no train user has a ranking prompt \(4 train user\(s\) lost every candidate"
    ):
        build(world, tokenizer, [])


def test_max_prompt_tokens_caps_prompts_too(world, tokenizer):
    full = build(world, tokenizer, [])
    longest = full.stats["test"]["prompt_tokens"]["max"]
    capped = build(world, tokenizer, [], config={"max_prompt_tokens": int(longest) - 5})
    assert capped.stats["test"]["prompt_tokens"]["max"] <= longest - 5
    assert capped.stats["test"]["cuts"]["history_cut"] >= 1


def test_text_documents_are_trimmed_to_the_token_budget_at_a_sentence_end(world, tokenizer):
    built = build(world, tokenizer, ["text"], text_max_tokens=40)
    counter = prompt_fit.TokenCounter(tokenizer)
    texts = [r["completion"] for r in built.train if r["kind"] == "text"]
    assert texts and all(counter.count(t) <= 40 for t in texts)
    toy = next(t for t in texts if t.startswith("Toy Story (1995) is a movie."))
    assert toy.endswith("about this film.") and len(toy) < len(LONG_ABSTRACT)
    assert built.stats["train"]["documents_trimmed"] == {"text": 1}
    assert "GoldenEye (1995) is a movie. GoldenEye is a 1995 spy film." in texts


def test_trim_falls_back_to_words_when_one_sentence_is_too_long(tokenizer):
    counter = prompt_fit.TokenCounter(tokenizer)
    text, trimmed = counter.trim("one two three four five six seven eight nine ten eleven twelve", 5)
    assert trimmed and counter.count(text) <= 5 and text.startswith("one two")
    assert counter.trim("Short.", 5) == ("Short.", False)


# ----------------------------------------------------------------- stats, settings, files


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


# ----------------------------------------------------------------- original study data


@pytest.mark.slow
def test_lastfm_sets_from_original_data(original_data: Path, tokenizer):
    """Last.FM users split the original way: no test user in train,
    names intact, every prompt + answer within 2,048 tokens (Last.FM lists are short)."""
    from rekalm.data.split import SplitSettings, split_interactions

    folder = original_data / "lastfm"
    frames = [
        pd.read_csv(folder / "user-item" / f"{part}.tsv", sep="\t", names=["user", "item", "liked"], dtype=str)
        for part in ("train", "test")
    ]
    interactions = pd.concat(frames, ignore_index=True).astype({"liked": "int8", "user": object, "item": object})
    # The first 600 users keep the test to seconds on 2 shared cores (object columns: split.py
    # converts the item column per user, which is slow for Arrow-backed strings).
    interactions = interactions[interactions["user"].isin(pd.unique(interactions["user"])[:600])]
    names = pd.read_csv(folder / "mapping_items.tsv", sep="\t", names=["item", "name"], dtype=str, quoting=3)
    split, candidates = split_interactions(interactions, SplitSettings(method="original"))
    settings = build_inputs.BuildSettings.from_config({}, 2048)
    built = bs.build_sets(split, candidates, names, {}, tokenizer, settings, "music", "no_kn")
    test_users = set(candidates.loc[candidates["user_set"] == "test", "user"])
    assert {r["user"] for r in built.test} <= test_users and len(built.test) > 100
    assert len(built.train) == candidates.loc[candidates["user_set"] == "train", "user"].nunique()
    assert built.stats["train"]["ranking_cuts"]["exceeds_seq_len"] == 0
    assert built.stats["test"]["answer_tokens"]["max"] < 2048
    name_set = set(names["name"])
    assert all(c["name"] in name_set for r in built.test for c in r["candidates"])


# ----------------------------------------------------------------- the two rules, end to end


@pytest.mark.slow
def test_lexicalize_and_build_sets_rules_run_end_to_end(world, smollm2_tokenizer_dir, tmp_path):
    import shutil

    import yaml

    repo = Path(__file__).resolve().parents[2]
    work = tmp_path / "work"
    results = work / "results" / "toy"
    write_parquet(world["items"], results / "prepare" / "items.parquet")
    write_parquet(world["split"], results / "split" / "split.parquet")
    write_parquet(world["candidates"], results / "split" / "candidates.parquet")
    write_parquet(world["collab"], results / "mine_rules" / "rules.parquet")
    write_parquet(world["graph"], results / "lookup_dbpedia" / "triples.parquet")
    shutil.copytree(smollm2_tokenizer_dir, work / "results" / "models" / "smol" / "base")
    config = {
        "datasets": {"toy": {"domain": "movie", "model": "smol", "training": "tiny"}},
        "domains": {"movie": {key: value for key, value in MOVIE.items() if key != "name"}},
        "ablations": {"no_kn": [], "collab_graph": ["collab", "graph"]},
        "training": {"tiny": {"seq_len": 1024}},
        "trust_remote_code": False,
        "lexicalize": {
            "placement": "documents",
            "seed": 22,
            "sources": {
                "collab": {"input": "mine_rules.rules"},
                "graph": {"input": "lookup_dbpedia.triples"},
            },
        },
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (work / "Snakefile").write_text(
        "".join(
            f'include: "{repo}/rules/{stage}.smk"\n'
            for stage in ("common", "mine_rules", "lookup_dbpedia", "lexicalize", "build_sets")
        ),  # real rules + input functions; the tables the producing rules make are given
        encoding="utf-8",
    )
    targets = [
        f"results/toy/build_sets/{ablation}/{name}"
        for ablation in ("no_kn", "collab_graph")
        for name in ("train.jsonl", "test.jsonl", "stats.json")
    ]
    # The producing rules name the sources' tables; the test gives those tables.
    allowed = ["--allowed-rules", "lexicalize", "build_sets"]
    done = run_snakemake(work, targets, [work / "config.yaml"], extra=allowed, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    stats = json.loads((work / "results/toy/build_sets/collab_graph/stats.json").read_text())
    assert stats["train"]["examples_per_kind"] == {"collab": 5, "graph": 5, "ranking": 12}
    assert stats["seq_len"] == 1024 and stats["sources"] == ["collab", "graph"]
    assert json.loads((work / "results/toy/build_sets/no_kn/stats.json").read_text())["train"][
        "examples_per_kind"
    ] == {"ranking": 4}
    assert (work / "results/toy/lexicalize/graph.stats.json").exists()
    assert (work / "logs/toy/lexicalize/collab.log").exists() and (
        work / "logs/toy/build_sets/collab_graph.log"
    ).exists()
    test_rows = read_jsonl(work / "results/toy/build_sets/no_kn/test.jsonl")
    assert [r["user"] for r in test_rows] == ["v1", "v2"]
