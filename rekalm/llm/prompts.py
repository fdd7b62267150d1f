"""The one ranking-prompt renderer, shared by training and inference.

Training examples (``build_sets``) and test prompts (read by ``infer``) are both produced by
:func:`render_ranking_prompt`, so the two cannot drift apart: a user's prompt is the same
string whichever set the user lands in.

The user message follows the original study (section headers "I like the following
items:", "I dislike the following items:", "Rank the following items:"), with one item per
line instead of a comma-separated list, because display names themselves contain commas
("Matrix, The (1999)", "Friends, Lovers, Chocolate") and a comma list made them ambiguous.
Empty sections are left out, as in the original. With knowledge placed in the prompt, a
"Facts that may help:" section follows the candidates.

Rendering:

- When the tokenizer has a chat template, the system and user messages are rendered with it
  and ``add_generation_prompt=True``: the string ends exactly where the assistant's answer
  begins. Templates that reject a system role (Gemma-style) get the system text prepended to
  the user message instead.
- Without a chat template (base models), the documented plain template is used::

      {bos}### System
      {system}

      ### User
      {user}

      ### Assistant
      <answer starts here>

  where ``{bos}`` is the BOS token when the tokenizer adds one itself (Llama), else empty.

In both cases the rendered prompt already holds every special token it needs: tokenize it
with ``add_special_tokens=False`` (adding them again would double the BOS token).

The target (training completion, and what inference continues from ``ANSWER_PREFIX``) is
``"Here a list:\\n1. X\\n2. Y\\n..."``; the trainer appends EOS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rekalm.common.text import one_line

ANSWER_PREFIX = "Here a list:\n1. "

DEFAULT_SYSTEM_PROMPT = (
    "You're operating as a {domain} recommendation system. Your task involves receiving a "
    "user's list of liked and disliked items, along with a set of candidate items, and then "
    "reordering them based on preferences."
)

PLAIN_TEMPLATE = "{bos}### System\n{system}\n\n### User\n{user}\n\n### Assistant\n"

LIKED_HEADER = "I like the following items:"
DISLIKED_HEADER = "I dislike the following items:"
CANDIDATES_HEADER = "Rank the following items:"
KNOWLEDGE_HEADER = "Facts that may help:"


@dataclass(frozen=True)
class RankingRequest:
    """Everything a ranking prompt shows; names are display names, already filtered."""

    domain_label: str
    liked: Sequence[str]
    disliked: Sequence[str]
    candidates: Sequence[str]
    knowledge: Sequence[str] = field(default_factory=tuple)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT


def system_message(request: RankingRequest) -> str:
    return request.system_prompt.format(domain=request.domain_label)


def user_message(request: RankingRequest) -> str:
    sections = []
    history = []
    if request.liked:
        history.append(LIKED_HEADER + "\n" + "\n".join(one_line(n) for n in request.liked))
    if request.disliked:
        history.append(DISLIKED_HEADER + "\n" + "\n".join(one_line(n) for n in request.disliked))
    if history:
        sections.append("\n".join(history))
    sections.append(CANDIDATES_HEADER + "\n" + "\n".join(one_line(n) for n in request.candidates))
    if request.knowledge:
        sections.append(KNOWLEDGE_HEADER + "\n" + "\n".join("- " + one_line(k) for k in request.knowledge))
    return "\n\n".join(sections)


def ranking_answer(names: Sequence[str]) -> str:
    """The target list; it starts with ``ANSWER_PREFIX`` whenever ``names`` is not empty."""
    return "Here a list:\n" + "\n".join(f"{rank}. {one_line(name)}" for rank, name in enumerate(names, start=1))


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def bos_prefix(tokenizer: Any) -> str:
    """The BOS token when the tokenizer itself would add one (Llama), else "" (GPT-2, ChatML)."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos_id is None:
        return ""
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return tokenizer.bos_token if ids and ids[0] == bos_id else ""


def render_chat(tokenizer: Any, system: str, user: str) -> str:
    """System + user turn rendered up to the start of the assistant's answer."""
    if not has_chat_template(tokenizer):
        return PLAIN_TEMPLATE.format(bos=bos_prefix(tokenizer), system=system, user=user)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as error:  # jinja raises TemplateError from the template's own raise_exception()
        if "system" not in str(error).lower():
            raise
        merged = [{"role": "user", "content": system + "\n\n" + user}]
        return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)


def render_ranking_prompt(tokenizer: Any, request: RankingRequest) -> str:
    """THE prompt renderer: used for training examples and for test/inference prompts."""
    return render_chat(tokenizer, system_message(request), user_message(request))


def encode_prompt_and_answer(
    tokenizer: Any, prompts: Sequence[str], answers: Sequence[str]
) -> list[tuple[list[int], int]]:
    """Token ids of each ``prompt + answer`` encoded as ONE string, and the index of the
    first answer token: THE tokenization of training targets, matched by inference.

    Encoding the answer apart from its prompt teaches tokens that inference never meets:
    SentencePiece-style tokenizers (Llama-2, Mistral, Gemma) start a string with a word
    marker ("▁Here") that the same word lacks right after the prompt ("]Here"), and
    byte-level ones merge a space into the following word. The boundary is the first token
    that ends after the prompt's last character, so a token spanning both is learned.
    Special tokens written in the prompt text are parsed; the tokens the tokenizer puts in
    front of plain text (Llama's BOS) are added once, unless the prompt starts with BOS.
    """
    texts = [prompt + answer for prompt, answer in zip(prompts, answers, strict=True)]
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        bounded = [
            (list(ids), next((index for index, (_, end) in enumerate(offsets) if end > len(prompt)), len(ids)))
            for prompt, ids, offsets in zip(prompts, encoded["input_ids"], encoded["offset_mapping"])
        ]
    else:
        # Tokenizers without offsets: the answer starts where the joint encoding stops
        # repeating the prompt's own tokens (the same place whenever the two agree).
        joint = tokenizer(texts, add_special_tokens=False)["input_ids"]
        alone = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        bounded = [(list(ids), common_prefix_length(ids, own)) for ids, own in zip(joint, alone)]
    lead = list(tokenizer("", add_special_tokens=True)["input_ids"])  # Llama-3: BOS; SmolLM2: none
    bos_text = getattr(tokenizer, "bos_token", None)
    result = []
    for prompt, (ids, boundary) in zip(prompts, bounded):
        prefix = [] if bos_text and prompt.startswith(bos_text) else lead
        result.append((prefix + ids, len(prefix) + boundary))
    return result


def common_prefix_length(left: Sequence[int], right: Sequence[int]) -> int:
    length = 0
    for a, b in zip(left, right):
        if a != b:
            break
        length += 1
    return length
