"""Candidate scoring: each candidate's log-likelihood right after a user's prompt.

The score of candidate ``c`` after ``context`` (the prompt + the answer prefix the model was
trained to emit, "Here a list:\\n1. ") is the mean log-probability of its tokens
``t_1 .. t_n`` (the tokens of ``<name>\\n``, as training encoded them after that context)::

    score(c) = (1 / n) * sum_i log p(t_i | context, t_1 .. t_(i-1))

that is, how likely the model is to list ``c`` first. Scoring cannot hallucinate, skip or
repeat an item. The prompt is encoded once and its KV cache shared: candidates are packed
``batch_size`` at a time into one row after the cached prompt, each seeing only the prompt
and itself (a block-causal mask, :func:`_score_packed`), or, where the attention kernel
takes no custom mask, go as a right-padded batch over copies of the cache
(:func:`_score_batch`). A user costs one prompt pass plus one pass over the candidates' own
tokens, not one full pass per candidate. A model whose sliding window (Mistral, Gemma-2) is
shorter than prompt + candidate cannot share the prompt's cache: its users are scored by
full passes (:func:`_score_full`), slower and exact.

Context rule: a candidate is scored when prompt + its own tokens fit the model's positions
(:func:`context_limit`); the others get NaN, and the job ranks them after the scored ones.

The tokens are those training learned: :func:`answer_tokens` encodes prompt, answer prefix
and each candidate as one string with :func:`rekalm.llm.prompts.encode_prompt_and_answer` (the
function training encodes its rows with), and generation starts from the tokens every
trained answer shares.

Example (SmolLM2's tokenizer; tokens shown as text)::

    answer_tokens(tokenizer, "Liked: Alien (1979)\\n", "Here a list:\\n1. ", ["Heat (1995)", "Jaws (1975)"])
    context        L iked : ␣Alien ␣( 1 9 7 9 ) \\n Here ␣a ␣list : \\n 1 .   (answer_start = 11, at "Here")
    continuations  [␣Heat ␣( 1 9 9 5 ) \\n]  and  [␣J aws ␣( 1 9 7 5 ) \\n]

The prefix's trailing " " is not in the context: BPE merges it into each name's first
token, as in every trained answer. :func:`score_candidates` then returns one mean
log-probability per candidate (NaN where the candidate does not fit the context).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rekalm.llm.prompts import common_prefix_length, encode_prompt_and_answer

ITEM_TERMINATOR = "\n"  # what follows a name in the trained answer ("1. X\n2. Y")


@dataclass(frozen=True)
class AnswerTokens:
    """One user's prompt + answer prefix in the tokens training learned after that prompt."""

    context: list[int]  # the tokens every trained answer of these candidates starts with
    answer_start: int  # index in ``context`` of the first answer token (training's label boundary)
    continuations: list[list[int]]  # each candidate's own tokens after ``context``, its terminator included


def answer_tokens(tokenizer: Any, prompt: str, answer_prefix: str, names: Sequence[str]) -> AnswerTokens:
    """Tokens of ``prompt + answer_prefix + name + '\\n'`` per candidate, split where they part.

    Each candidate is encoded *together* with the prompt and the prefix by
    :func:`rekalm.llm.prompts.encode_prompt_and_answer`, the function training encodes its rows
    with: BPE merges the prefix's trailing space into the name's first token ("1." + " The")
    and SentencePiece drops the word marker of an answer that follows a prompt, so encoding
    them apart would rank and continue tokens the model never learned. The shared context
    is the longest run of tokens common to the prefixed prompt and every joint encoding
    (without the trailing " " token of "1. ", which no trained answer has).
    """
    answers = [answer_prefix] + [answer_prefix + name + ITEM_TERMINATOR for name in names]
    encoded = encode_prompt_and_answer(tokenizer, [prompt] * len(answers), answers)
    context_ids = encoded[0][0]
    shared = min((common_prefix_length(context_ids, ids) for ids, _ in encoded[1:]), default=len(context_ids))
    answer_start = min(min(boundary for _, boundary in encoded), shared)
    return AnswerTokens(context_ids[:shared], answer_start, [ids[shared:] for ids, _ in encoded[1:]])


def candidate_token_ids(tokenizer: Any, context: str, names: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """(shared context tokens, each candidate's continuation tokens) after ``context`` (the
    prompt + answer prefix); see :func:`answer_tokens`."""
    tokens = answer_tokens(tokenizer, context, "", names)
    if not tokens.context:
        raise ValueError("prompt: no token is shared by the prompt and its candidates; cannot score (empty prompt?)")
    return tokens.context, tokens.continuations


def context_limit(model: Any) -> int | None:
    """The most positions the model was built for (prompt + answer must fit), or None."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _forward_accepts_logits_to_keep(model: Any) -> bool:
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _score_batch(
    model: Any, prefix_layers: list[tuple[Any, Any]], first_logprobs: Any, continuations: list[list[int]], device: Any
) -> np.ndarray:
    import torch
    from transformers import DynamicCache

    size, longest = len(continuations), max(len(ids) for ids in continuations)
    tokens = torch.zeros((size, longest), dtype=torch.long)
    valid = torch.zeros((size, longest), dtype=torch.bool)
    for row, ids in enumerate(continuations):
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        valid[row, : len(ids)] = True
    tokens, valid = tokens.to(device), valid.to(device)
    # expand() is a view: the cache copies the prompt's keys/values once per batch row only
    # when it concatenates the new tokens, and the shared prefix tensors stay untouched.
    cache = DynamicCache(
        ddp_cache_data=[(k.expand(size, -1, -1, -1), v.expand(size, -1, -1, -1)) for k, v in prefix_layers],
        config=model.config,
    )
    prefix_length = prefix_layers[0][0].shape[-2]
    # Right padding needs no mask: causal attention never lets a real token see a later pad.
    attention = torch.ones((size, prefix_length + longest), dtype=torch.long, device=device)
    logits = model(input_ids=tokens, attention_mask=attention, past_key_values=cache, use_cache=True).logits.float()
    token_logprobs = torch.zeros((size, longest), dtype=torch.float32, device=device)
    token_logprobs[:, 0] = first_logprobs[tokens[:, 0]]
    if longest > 1:
        previous = logits[:, :-1]
        chosen = previous.gather(-1, tokens[:, 1:, None]).squeeze(-1)
        token_logprobs[:, 1:] = chosen - torch.logsumexp(previous, dim=-1)
    token_logprobs = token_logprobs.masked_fill(~valid, 0.0)
    return (token_logprobs.sum(dim=1) / valid.sum(dim=1)).cpu().numpy().astype(np.float64)


# Attention implementations that take a custom 4D mask (bool for sdpa, additive for eager).
PACKABLE_ATTENTION = ("sdpa", "eager")


def _packing_supported(model: Any) -> bool:
    return getattr(model.config, "_attn_implementation", None) in PACKABLE_ATTENTION


def _score_packed(
    model: Any, prefix_layers: list[tuple[Any, Any]], first_logprobs: Any, continuations: list[list[int]], device: Any
) -> np.ndarray:
    """Score several candidates in ONE row: their tokens packed back to back after the cached
    prompt, each attending to the prompt and to its own earlier tokens only (a block-causal
    4D mask), positions restarting after the prompt. Compared with a padded batch there is
    no padding, the prompt's keys/values are not copied per candidate, and logits are
    computed only where a next token is scored."""
    import torch
    from transformers import DynamicCache

    lengths = torch.tensor([len(ids) for ids in continuations])
    owner = torch.repeat_interleave(torch.arange(len(continuations)), lengths)
    offset = torch.cat([torch.arange(int(length)) for length in lengths])
    prefix_length = prefix_layers[0][0].shape[-2]
    own_earlier = (owner[:, None] == owner[None, :]) & (offset[None, :] <= offset[:, None])
    allowed = torch.cat([torch.ones(len(owner), prefix_length, dtype=torch.bool), own_earlier], dim=1)
    if model.config._attn_implementation == "eager":
        dtype = prefix_layers[0][0].dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    else:
        mask = allowed
    tokens = torch.tensor([token for ids in continuations for token in ids], device=device)
    # Logits at packed position i score token i+1 of the same candidate: every position but
    # each candidate's last. The first token of each candidate is scored from the prompt.
    scored_from = torch.nonzero(offset[1:] > 0).flatten()  # i such that token i+1 continues i's candidate
    cache = DynamicCache(ddp_cache_data=prefix_layers, config=model.config)
    token_logprobs = first_logprobs[tokens].clone()  # right for each candidate's first token
    keep = scored_from.to(device)
    if len(keep):
        logits = (
            model(
                input_ids=tokens[None],
                attention_mask=mask[None, None].to(device),
                position_ids=(prefix_length + offset)[None].to(device),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=keep,
            )
            .logits[0]
            .float()
        )
        targets = tokens[keep + 1]
        token_logprobs[keep + 1] = logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    sums = torch.zeros(len(continuations), dtype=torch.float32, device=device).index_add_(
        0, owner.to(device), token_logprobs.float()
    )
    return (sums / lengths.to(device)).cpu().numpy().astype(np.float64)


def sliding_window(model: Any) -> int | None:
    """The attention window of the model's sliding-window layers, if it has any."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if (
        not window
        or getattr(config, "use_sliding_window", True) is False
        or (layer_types is not None and "sliding_attention" not in layer_types)
    ):
        return None
    return int(window)


def _score_full(model: Any, prefix_ids: list[int], continuations: list[list[int]], device: Any) -> np.ndarray:
    """Score candidates by encoding prompt + candidate in full (a right-padded batch, no
    shared cache): the model's own masks then apply, sliding windows included."""
    import torch

    prefix_length, longest = len(prefix_ids), max(len(ids) for ids in continuations)
    tokens = torch.zeros((len(continuations), prefix_length + longest), dtype=torch.long)
    valid = torch.zeros((len(continuations), longest), dtype=torch.bool)
    for row, ids in enumerate(continuations):
        tokens[row, : prefix_length + len(ids)] = torch.tensor(prefix_ids + ids, dtype=torch.long)
        valid[row, : len(ids)] = True
    attention = torch.cat([torch.ones((len(continuations), prefix_length), dtype=torch.bool), valid], dim=1)
    tokens, valid = tokens.to(device), valid.to(device)
    # Logits only where a candidate token is predicted: positions prefix-1 .. prefix+longest-2.
    keep = torch.arange(prefix_length - 1, prefix_length - 1 + longest, device=device)
    extra = {"logits_to_keep": keep} if _forward_accepts_logits_to_keep(model) else {}
    logits = model(
        input_ids=tokens, attention_mask=attention.long().to(device), use_cache=False, **extra
    ).logits.float()
    if not extra:
        logits = logits[:, keep]
    targets = tokens[:, prefix_length:]
    token_logprobs = (logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)).masked_fill(
        ~valid, 0.0
    )
    return (token_logprobs.sum(dim=1) / valid.sum(dim=1)).cpu().numpy().astype(np.float64)


def score_candidates(
    model: Any,
    tokenizer: Any,
    context: str,
    names: Sequence[str],
    batch_size: int,
    device: Any,
    packed: bool | None = None,
) -> np.ndarray:
    """Mean log-probability of each ``name + '\\n'`` after ``context`` (the prompt + answer
    prefix); one prompt pass per call. NaN for a candidate whose tokens would not fit in the
    model's context (:func:`context_limit`): it is not scored.

    Candidates go ``batch_size`` at a time through :func:`_score_packed` (one row, no
    padding) when the attention implementation takes a custom mask, else through
    :func:`_score_batch` (a right-padded batch over copies of the prompt cache). Both
    share the prompt's cache, which a sliding window shorter than prompt + candidate
    (Mistral, Gemma-2) does not allow: such users go through :func:`_score_full`, one
    full pass per candidate, slower and exact.
    """
    import torch

    scores = np.full(len(names), np.nan, dtype=np.float64)
    if not names:
        return scores
    prefix_ids, all_continuations = candidate_token_ids(tokenizer, context, names)
    limit = context_limit(model)
    fitting = [i for i, ids in enumerate(all_continuations) if limit is None or len(prefix_ids) + len(ids) <= limit]
    if not fitting:
        return scores
    continuations = {i: all_continuations[i] for i in fitting}
    # Similar lengths in one batch waste fewer padded positions.
    order = sorted(fitting, key=lambda index: len(continuations[index]))
    window = sliding_window(model)
    if window is not None and len(prefix_ids) + len(continuations[order[-1]]) > window:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                scores[batch] = _score_full(model, prefix_ids, [continuations[i] for i in batch], device)
        return scores
    use_packing = _packing_supported(model) if packed is None else packed
    extra = {"logits_to_keep": 1} if _forward_accepts_logits_to_keep(model) else {}
    with torch.inference_mode():
        prefix = model(input_ids=torch.tensor([prefix_ids], device=device), use_cache=True, **extra)
        first_logprobs = torch.log_softmax(prefix.logits[0, -1].float(), dim=-1)
        prefix_layers = [(layer.keys, layer.values) for layer in prefix.past_key_values.layers]
        del prefix
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            scorer = _score_packed if use_packing else _score_batch
            scores[batch] = scorer(model, prefix_layers, first_logprobs, [continuations[i] for i in batch], device)
    return scores
