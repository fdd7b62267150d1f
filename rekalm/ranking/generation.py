"""Generate mode: greedy answers, sized budgets, and the hand-off to parsing.

The original procedure: batched greedy decoding with left padding; :mod:`rekalm.ranking.parse`
(called by the job) maps each answer back to candidate ids. The token budget is sized from
each user's own candidates (:func:`generation_budget`)::

    budget = tokens("Here a list:\\n1. A\\n2. B ...") + tokens_per_candidate * candidates + token_slack

so large candidate sets can be listed in full (the original's fixed 512 cut 30% of ML-1M
lists); ``max_new_tokens: 512`` reproduces the original. Greedy means greedy: the model's
own generation config (an instruct model's ``repetition_penalty``, ``top_k``, ...) is not
let into decoding; only its stop tokens are kept. With ``prefill_answer`` generation starts
after the answer prefix every trained answer shares (:func:`rekalm.ranking.scoring.answer_tokens`).

Context rule (:func:`plan_generation`): prompt + new tokens <= the model's positions. A
budget that does not fit is cut to the room left (``n_budget_cut`` tokens; the parser
appends what the model could not list); a prompt that leaves no room generates nothing and
every candidate is appended (``n_context_cut``). Users with similar budgets decode together,
and a batch decodes its largest budget only if every member has room for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rekalm.llm.prompts import ranking_answer
from rekalm.ranking.inference_inputs import InferenceSettings, UserPrompt
from rekalm.ranking.scoring import answer_tokens, context_limit


def generation_budget(tokenizer: Any, names: Sequence[str], settings: InferenceSettings) -> int:
    """New tokens allowed for one user: the complete list's tokens plus margins (or a fixed cap)."""
    if settings.max_new_tokens is not None:
        return settings.max_new_tokens
    listed = len(tokenizer(ranking_answer(names), add_special_tokens=False)["input_ids"])
    return listed + settings.tokens_per_candidate * len(names) + settings.token_slack


@dataclass(frozen=True)
class GenerationPlan:
    """One user's generation input and budget, fitted to the model's context."""

    input_ids: list[int]  # the prompt (and the prefilled answer prefix) as training tokenized it
    answer_start: int  # index of the first answer token in ``input_ids``
    budget: int  # new tokens allowed: the sized budget, cut to what the context has room for
    room: int | None  # new tokens the context has room for (None: the model states no limit)
    budget_cut: int  # tokens the context limit removed from the sized budget
    context_cut: int  # candidates left to the appended tail because not one new token fits


def plan_generation(
    tokenizer: Any, prompt: UserPrompt, settings: InferenceSettings, limit: int | None
) -> GenerationPlan:
    """The context rule of generate mode: prompt + new tokens <= ``limit``. A budget that
    does not fit is cut to the room left (the parser appends what the model could not
    list); a prompt that fills the context generates nothing (every candidate appended)."""
    tokens = answer_tokens(tokenizer, prompt.prompt, prompt.answer_prefix, prompt.names)
    input_ids = tokens.context if settings.prefill_answer else tokens.context[: tokens.answer_start]
    wanted = generation_budget(tokenizer, prompt.names, settings)
    room = None if limit is None else max(limit - len(input_ids), 0)
    budget = wanted if room is None else min(wanted, room)
    return GenerationPlan(
        input_ids, tokens.answer_start, budget, room, wanted - budget, len(prompt.names) if budget == 0 else 0
    )


class _GreedyDefaults:
    """Lends the model a generation config with nothing but its stop tokens while decoding.

    ``generate`` fills every field its config leaves unset from ``model.generation_config``
    (an instruct model's ``repetition_penalty``, ``top_k``, ``no_repeat_ngram_size``, ...),
    so "greedy" would otherwise decode with the checkpoint's sampling settings.
    """

    def __init__(self, model: Any, tokenizer: Any) -> None:
        from transformers import GenerationConfig

        own = model.generation_config
        eos = own.eos_token_id if own.eos_token_id is not None else tokenizer.eos_token_id
        self.model = model
        self.neutral = GenerationConfig(
            eos_token_id=eos, bos_token_id=own.bos_token_id, pad_token_id=tokenizer.pad_token_id
        )

    def __enter__(self) -> Any:
        self.saved = self.model.generation_config
        self.model.generation_config = self.neutral
        return self.neutral

    def __exit__(self, *exc: Any) -> None:
        self.model.generation_config = self.saved


def _batches_within_context(order: Sequence[int], plans: Sequence[GenerationPlan], batch_size: int) -> list[list[int]]:
    """Consecutive users (sorted by budget) in batches of at most ``batch_size`` whose largest
    budget fits every member's room, so no row decodes past the model's positions."""
    batches: list[list[int]] = []
    for index in order:
        if plans[index].budget == 0:
            continue
        current = batches[-1] if batches else None
        # The batch decodes its largest budget (this user's) for every row.
        if (
            current is not None
            and len(current) < batch_size
            and all(room is None or plans[index].budget <= room for room in (plans[i].room for i in current))
        ):
            current.append(index)
        else:
            batches.append([index])
    return batches


def generate_answers(
    model: Any,
    tokenizer: Any,
    device: Any,
    prompts: Sequence[UserPrompt],
    settings: InferenceSettings,
    advance: Callable[[int], Any],
) -> tuple[list[str], list[GenerationPlan]]:
    """Greedy answers (from the answer start: the prefilled prefix included), in prompt
    order, and each user's :class:`GenerationPlan`."""
    import torch
    from transformers import GenerationConfig

    limit = context_limit(model)
    plans = [plan_generation(tokenizer, p, settings, limit) for p in prompts]
    answers = [tokenizer.decode(plan.input_ids[plan.answer_start :], skip_special_tokens=True) for plan in plans]
    order = sorted(range(len(prompts)), key=lambda index: plans[index].budget)  # similar budgets batch together
    advance(sum(plan.budget == 0 for plan in plans))
    with _GreedyDefaults(model, tokenizer) as defaults:
        for batch in _batches_within_context(order, plans, settings.batch_size):
            # Left padding: decoder-only batches must end where generation starts.
            encoded = tokenizer.pad(
                {"input_ids": [plans[i].input_ids for i in batch]},
                padding=True,
                padding_side="left",
                return_tensors="pt",
            ).to(device)
            config = GenerationConfig(
                max_new_tokens=max(plans[i].budget for i in batch),
                do_sample=False,
                num_beams=1,
                pad_token_id=defaults.pad_token_id,
                eos_token_id=defaults.eos_token_id,
            )
            with torch.inference_mode():
                output = model.generate(**encoded, generation_config=config)
            new_tokens = output[:, encoded["input_ids"].shape[1] :].tolist()
            for row, index in enumerate(batch):
                plan = plans[index]
                # Decoded with the answer tokens before it: a lone word piece would lose its space.
                answers[index] = tokenizer.decode(
                    plan.input_ids[plan.answer_start :] + new_tokens[row], skip_special_tokens=True
                )
            advance(len(batch))
    return answers, plans
