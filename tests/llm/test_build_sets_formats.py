"""build_sets: what a train and a test row look like (chat or plain template, display names,
the ranked target), and the one renderer that gives a user the same prompt as a train or a
test user."""

from __future__ import annotations

from build_sets_world import NAMES, USERS, build, make_world, ranked_names, sections

from rekalm.llm import build_sets as bs
from rekalm.llm import prompts

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


# ----------------------------------------------------------------- one renderer


def test_a_user_gets_the_same_prompt_as_train_or_test_user(world, tokenizer):
    flipped = {u: (("train" if u == "v1" else s), *rest) for u, (s, *rest) in USERS.items()}
    as_test = build(world, tokenizer, ["collab"], placement="in_prompt")
    as_train = build(make_world(flipped), tokenizer, ["collab"], placement="in_prompt")
    test_prompt = next(r["prompt"] for r in as_test.test if r["user"] == "v1")
    train_row = next(r for r in as_train.train if r["kind"] == "ranking" and r["prompt"] == test_prompt)
    assert train_row["completion"] == "Here a list:\n1. Hidden Gem (2001)\n2. " + NAMES["m05"] + "\n3. Jumanji (1995)"
