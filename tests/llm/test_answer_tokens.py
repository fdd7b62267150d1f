"""The tokens training learns are the tokens inference ranks and continues, for a
SentencePiece-style tokenizer (Metaspace, as Llama-2, Mistral and Gemma convert) and a
byte-level one (Llama-3 style), both trained offline here with the `tokenizers` library."""

from __future__ import annotations

import pytest

from rekalm.llm.prompts import ANSWER_PREFIX, RankingRequest, ranking_answer, render_ranking_prompt
from rekalm.ranking.generation import plan_generation
from rekalm.ranking.inference_inputs import InferenceSettings, UserPrompt
from rekalm.ranking.scoring import candidate_token_ids
from rekalm.training.training_data import IGNORE_INDEX, tokenize_rows

NAMES = ["Matrix, The (1999)", "Toy Story (1995)", "Amélie (2001)", "Heat (1995)", "Star Wars: Episode IV (1977)"]
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def corpus() -> list[str]:
    lines = []
    for shift in range(len(NAMES)):
        order = NAMES[shift:] + NAMES[:shift]
        lines.append(
            "### System\nYou're operating as a movie recommendation system.\n\n### User\nI like the following items:\n"
            + "\n".join(order[:2])
        )
        lines.append("Rank the following items:\n" + "\n".join(order) + "\n\n### Assistant\n" + ranking_answer(order))
        lines.append("[INST] Rank the following items: " + " ".join(order) + " [/INST]")
    return lines * 3


def metaspace_tokenizer():
    """Llama-2-style: BPE over "▁"-marked words, no pre-split at encode time, "<s>" added."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    # Pieces never span a newline or a word start, as in SentencePiece vocabularies.
    newline = pre_tokenizers.Split("\n", behavior="isolated")
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [newline, pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)]
    )
    tokenizer.train_from_iterator(
        corpus(), trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def byte_level_tokenizer():
    """Llama-3-style: its split regex, byte-level BPE, "<|begin_of_text|>" added."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    special = ["<|begin_of_text|>", "<|end_of_text|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer)
    tokenizer.decoder = decoders.ByteLevel()
    bos = ("<|begin_of_text|>", tokenizer.token_to_id("<|begin_of_text|>"))
    tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[bos]),
        ]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=special[0], eos_token=special[1])


@pytest.fixture(scope="module", params=["metaspace", "byte_level"])
def tokenizer(request):
    return metaspace_tokenizer() if request.param == "metaspace" else byte_level_tokenizer()


def prompts(tokenizer) -> dict[str, str]:
    """A prompt of THE renderer (plain template) and a Llama-2-chat-style one ending in "]"."""
    rendered = render_ranking_prompt(tokenizer, RankingRequest("movie", NAMES[:2], NAMES[2:3], NAMES))
    inst = "[INST] Rank the following items:\n" + "\n".join(NAMES) + " [/INST]"
    return {"plain_template": rendered, "inst_style": tokenizer.bos_token + inst, "no_bos_text": inst}


@pytest.mark.parametrize("style", ["plain_template", "inst_style", "no_bos_text"])
def test_trained_answer_tokens_are_the_ranked_and_generated_ones(tokenizer, style: str) -> None:
    prompt = prompts(tokenizer)[style]
    for first in range(len(NAMES)):
        order = NAMES[first:] + NAMES[:first]
        example = tokenize_rows(
            [{"prompt": prompt, "completion": ranking_answer(order)}], tokenizer, 4096, "completion_only"
        ).examples[0]
        ids, labels = example["input_ids"], example["labels"]
        answer_start = next(index for index, label in enumerate(labels) if label != IGNORE_INDEX)
        assert (
            ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
        )  # added once where the text lacks it
        # the boundary: the last prompt token ends inside the prompt, the answer follows
        assert prompt.endswith(tokenizer.decode(ids[answer_start - 1 : answer_start]))
        assert (
            tokenizer.decode(ids[answer_start:-1]).endswith(ranking_answer(order))
            and labels[-1] == tokenizer.eos_token_id
        )

        # score mode: context + the first-ranked candidate's tokens are the trained tokens
        context, continuations = candidate_token_ids(tokenizer, prompt + ANSWER_PREFIX, NAMES)
        assert ids[: len(context) + len(continuations[first])] == context + continuations[first]
        assert len(context) >= answer_start  # every scored token was a learned (labelled) one

        # generate mode: the input is a prefix of the trained sequence, the answer starts where training's does
        user = UserPrompt("u", prompt, ANSWER_PREFIX, tuple(f"i{i}" for i in range(len(NAMES))), tuple(NAMES))
        for prefill in (True, False):
            plan = plan_generation(
                tokenizer, user, InferenceSettings(mode="generate", prefill_answer=prefill), limit=None
            )
            assert plan.input_ids == ids[: len(plan.input_ids)] and plan.answer_start == answer_start
            assert len(plan.input_ids) == (len(context) if prefill else answer_start)


def test_the_answer_alone_tokenizes_differently(tokenizer) -> None:
    """Why the joint encoding is needed: the answer encoded apart starts (metaspace) or
    continues (byte-level prefill "1. ") with tokens that never follow the prompt."""
    prompt = prompts(tokenizer)["inst_style"]
    answer = ranking_answer(NAMES)
    joint = tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]
    apart = (
        tokenizer(prompt, add_special_tokens=False)["input_ids"]
        + tokenizer(answer, add_special_tokens=False)["input_ids"]
    )
    prefilled = tokenizer(prompt + ANSWER_PREFIX, add_special_tokens=False)["input_ids"]
    assert joint != apart or joint[: len(prefilled)] != prefilled
