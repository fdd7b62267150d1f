"""build_sets: the length rule (histories and knowledge cut, smallest cut that fits
seq_len, what cannot fit is kept whole and counted or is an error) and document trimming."""

from __future__ import annotations

import pandas as pd
import pytest
from build_sets_world import LONG_ABSTRACT, NAMES, USERS, build, knowledge_for, make_world, sections

from rekalm.llm import build_inputs, prompt_fit, prompts
from rekalm.llm import build_sets as bs


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
