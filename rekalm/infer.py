"""Rank every test user's candidates with a causal LM, in ``score`` or ``generate`` mode.

``score`` (the default) ranks candidates by the model's length-normalised log-likelihood of
``<name>\\n`` right after the prompt and the answer prefix the model was trained to emit
("Here a list:\\n1. "): the probability that the model would list the candidate first. The
prompt is encoded once and its KV cache shared: candidates are packed ``batch_size`` at a
time into one row after the cached prompt, each seeing only the prompt and itself (a
block-causal mask; a padded batch over copies of the cache where the attention kernel
takes no custom mask). A user costs one prompt pass plus one pass over the candidates'
own tokens, not one full pass per candidate. It cannot hallucinate, skip or repeat an item.
A model whose sliding window (Mistral, Gemma-2) is shorter than prompt + candidate cannot
share the prompt's cache: its users are scored by full passes, slower and exact.

``generate`` is the original procedure: batched greedy decoding with left padding, then
:mod:`rekalm.parse` maps the list back to candidate ids. The token budget is sized from each
user's own candidates (the tokens of the complete list plus a margin), so large candidate
sets can be listed in full (the original's fixed 512 cut 30% of ML-1M lists).
``max_new_tokens: 512`` reproduces the original. Greedy means greedy: the model's own
generation config (an instruct model's ``repetition_penalty``, ``top_k``, ...) is not let
into decoding; only its stop tokens are kept.

Both modes see the tokens training learned: prompt, answer prefix and candidate are encoded
as one string with the function training uses (:func:`rekalm.prompts.encode_prompt_and_answer`),
and generation starts from the tokens that every trained answer shares.

Context rule (the model's ``max_position_embeddings``; checked per user before its forward
passes, so a job never fails on it). build_sets already keeps prompt + full answer within
the training ``seq_len`` where cutting history allows; what still does not fit the model is
cut here and counted per user in the predictions:

- score: a candidate is scored when prompt + its own tokens fit; the others are ranked after
  the scored ones in the prompt's order (``source`` 'appended', score NaN), counted in
  ``n_context_cut``;
- generate: the budget is cut to the room left after the prompt (``n_budget_cut`` tokens);
  the parser appends what the model could not list (``n_appended``). A prompt that leaves
  no room generates nothing and every candidate is appended (``n_context_cut``).

The model is a plain HF folder (a merged model, or the base model for zero-shot runs) with
an optional PEFT adapter folder; nothing here knows which ablation it serves.

Outputs: ``predictions`` (user, item, rank from 1, score, source 'model'|'appended', the
per-user parse counts of :mod:`rekalm.parse`, zero in score mode, and the context cuts);
``score`` is the mean log-probability in score mode and the original's ``1 - i/len`` in
generate mode. The ranx
run ``{user: {item: 1 - (rank-1)/len}}`` is derived from the ranks, so it has no ties.

Resumable: users are processed in chunks of ``chunk_size``; each finished chunk is written
atomically to ``chunk_dir`` beside a fingerprint of the inputs and settings, so a killed job
loses at most one chunk, and chunks of another model or settings are never reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rekalm import prompts as prompts_module
from rekalm.io import read_jsonl, read_parquet, write_json, write_parquet
from rekalm.parse import PARSE_COUNT_COLUMNS, rank_generation
from rekalm.prompts import common_prefix_length, encode_prompt_and_answer, ranking_answer

log = logging.getLogger(__name__)

ITEM_TERMINATOR = "\n"  # what follows a name in the trained answer ("1. X\n2. Y")
# The preset's `resources` block sizes the Snakemake job (rules/infer.smk), not the computation.
RESOURCE_KEYS = frozenset({"resources"})
# Per-user cuts of the context rule (see the module docstring); zero when everything fit.
CONTEXT_COUNT_COLUMNS = ("n_context_cut", "n_budget_cut")
PREDICTION_COLUMNS = ["user", "item", "rank", "score", "source", *PARSE_COUNT_COLUMNS, *CONTEXT_COUNT_COLUMNS]
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class InferenceSettings:
    mode: Literal["score", "generate"] = "score"
    load: Literal["merged", "adapter"] = "merged"  # read by the rule: which folders to load
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    batch_size: int = 16  # candidates per forward pass (score) or prompts per batch (generate)
    chunk_size: int = 64  # users per resumable chunk
    tokens_per_candidate: int = 4  # generate: margin per candidate on top of the list's own tokens
    token_slack: int = 32  # generate: fixed margin per user
    max_new_tokens: int | None = None  # generate: a fixed budget instead (512 = the original)
    prefill_answer: bool = True  # generate: start the answer with the trained prefix
    fuzzy_threshold: float = 85  # generate: rapidfuzz ratio (0-100) to accept a name

    def __post_init__(self) -> None:
        if self.mode not in ("score", "generate"):
            raise ValueError(f"inference.mode: expected 'score' or 'generate', got {self.mode!r}")
        if self.load not in ("merged", "adapter"):
            raise ValueError(f"inference.load: expected 'merged' or 'adapter', got {self.load!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"inference.dtype: expected auto, float32, bfloat16 or float16, got {self.dtype!r}")
        for name in ("batch_size", "chunk_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"inference.{name}: expected a positive integer, got {getattr(self, name)!r}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(
                f"inference.max_new_tokens: expected a positive integer or null, got {self.max_new_tokens!r}"
            )
        if not 0 <= self.fuzzy_threshold <= 100:
            raise ValueError(f"inference.fuzzy_threshold: expected 0-100, got {self.fuzzy_threshold!r}")

    @classmethod
    def from_config(cls, preset: dict[str, Any]) -> InferenceSettings:
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(preset) - known - RESOURCE_KEYS)
        if unknown:
            raise ValueError(
                f"inference preset: unknown key(s) {unknown}; expected some of {sorted(known | RESOURCE_KEYS)}"
            )
        return cls(**{key: value for key, value in preset.items() if key in known})


@dataclass(frozen=True)
class UserPrompt:
    user: str
    prompt: str
    answer_prefix: str
    items: tuple[str, ...]
    names: tuple[str, ...]


def read_test_prompts(path: str | Path) -> list[UserPrompt]:
    """test.jsonl rows -> prompts; one-line ValueError naming the file, row and field."""
    prompts, seen_users = [], set()
    for number, row in enumerate(read_jsonl(path), start=1):
        where = f"{path}: row {number}"
        for key, kind in (("user", str), ("prompt", str), ("answer_prefix", str), ("candidates", list)):
            if not isinstance(row.get(key), kind):
                raise ValueError(
                    f"{where}: field {key!r} must be a {kind.__name__}, got {type(row.get(key)).__name__}"
                )
        if row["user"] in seen_users:
            raise ValueError(f"{where}: user {row['user']!r} appears twice")
        seen_users.add(row["user"])
        items, names = [], []
        for candidate in row["candidates"]:
            if not (
                isinstance(candidate, dict)
                and isinstance(candidate.get("item"), str)
                and isinstance(candidate.get("name"), str)
            ):
                raise ValueError(f"{where}: each candidate must be {{'item': str, 'name': str}}, got {candidate!r}")
            items.append(candidate["item"])
            names.append(candidate["name"])
        if len(set(items)) != len(items):
            raise ValueError(f"{where}: user {row['user']!r} lists a candidate item twice")
        prompts.append(UserPrompt(row["user"], row["prompt"], row["answer_prefix"], tuple(items), tuple(names)))
    return prompts


# --- model loading ---------------------------------------------------------------------


def load_model(
    model_dir: str | Path,
    adapter_dir: str | Path | None = None,
    *,
    dtype: str = "auto",
    device: str = "auto",
    gpus: int = 0,
    where: str = "infer",
    trust_remote_code: bool = False,
) -> tuple[Any, Any, Any]:
    """(model, tokenizer, device): a HF folder, plus a PEFT adapter merged in memory if given.

    ``gpus`` is what the job asked for: with ``gpus > 0`` and no usable CUDA device the job
    stops here (rekalm.hf.resolve_device) instead of ranking on the CPU for hours.
    """
    from rekalm.hf import load_causal_lm, load_tokenizer, resolve_device, resolve_dtype

    torch_device = resolve_device(device, gpus=gpus, where=where)
    torch_dtype = resolve_dtype(dtype, torch_device, where=f"{where}: dtype")
    tokenizer_dir = (
        adapter_dir if adapter_dir and (Path(adapter_dir) / "tokenizer_config.json").exists() else model_dir
    )
    tokenizer = load_tokenizer(
        tokenizer_dir, trust_remote_code=trust_remote_code
    )  # pads with EOS if needed: padded positions are never scored
    model = load_causal_lm(
        model_dir, dtype=torch_dtype, device=torch_device, trust_remote_code=trust_remote_code, where=where
    )
    if adapter_dir:
        from peft import PeftModel

        # Merging in memory costs seconds and makes every later forward pass a plain one.
        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    model.eval()
    log.info(
        "loaded %s%s on %s as %s",
        model_dir,
        f" + adapter {adapter_dir}" if adapter_dir else "",
        torch_device,
        torch_dtype,
    )
    return model, tokenizer, torch_device


# --- score mode --------------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerTokens:
    """One user's prompt + answer prefix in the tokens training learned after that prompt."""

    context: list[int]  # the tokens every trained answer of these candidates starts with
    answer_start: int  # index in ``context`` of the first answer token (training's label boundary)
    continuations: list[list[int]]  # each candidate's own tokens after ``context``, its terminator included


def answer_tokens(tokenizer: Any, prompt: str, answer_prefix: str, names: Sequence[str]) -> AnswerTokens:
    """Tokens of ``prompt + answer_prefix + name + '\\n'`` per candidate, split where they part.

    Each candidate is encoded *together* with the prompt and the prefix by
    :func:`rekalm.prompts.encode_prompt_and_answer`, the function training encodes its rows
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


def score_chunk(
    model: Any,
    tokenizer: Any,
    device: Any,
    prompts: Sequence[UserPrompt],
    settings: InferenceSettings,
    advance: Callable[[int], Any],
) -> pd.DataFrame:
    """Raw score-mode results of some users: user, item, score (candidate order kept; NaN:
    the candidate did not fit in the model's context)."""
    parts = []
    for prompt in prompts:
        scores = score_candidates(
            model, tokenizer, prompt.prompt + prompt.answer_prefix, prompt.names, settings.batch_size, device
        )
        parts.append(pd.DataFrame({"user": prompt.user, "item": list(prompt.items), "score": scores}))
        advance(1)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"user": [], "item": [], "score": []})


# --- generate mode -----------------------------------------------------------------------


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
        fits = (
            current is not None
            and len(current) < batch_size
            and all(plans[i].room is None or plans[index].budget <= plans[i].room for i in current)
        )
        if fits:
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


def generate_chunk(
    model: Any,
    tokenizer: Any,
    device: Any,
    prompts: Sequence[UserPrompt],
    settings: InferenceSettings,
    advance: Callable[[int], Any],
) -> pd.DataFrame:
    """Raw generate-mode results of some users: user, text and the context cuts."""
    answers, plans = generate_answers(model, tokenizer, device, prompts, settings, advance)
    return pd.DataFrame(
        {
            "user": [p.user for p in prompts],
            "text": answers,
            "n_budget_cut": np.array([plan.budget_cut for plan in plans], dtype=np.int32),
            "n_context_cut": np.array([plan.context_cut for plan in plans], dtype=np.int32),
        }
    )


# --- chunks and resumption ---------------------------------------------------------------


def _file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _folder_signature(folder: str | Path | None) -> list[list[Any]] | None:
    # Sizes and mtimes, not hashes: hashing 16 GB of weights per run would cost minutes,
    # and a rebuilt model always gets new mtimes.
    if folder is None:
        return None
    root = Path(folder)
    return [
        [str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns]
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]


def inference_fingerprint(
    test_path: str | Path, model_dir: str | Path, adapter_dir: str | Path | None, settings: InferenceSettings
) -> str:
    """What a chunk depends on: prompts, model files, settings (parsing aside) and this code."""
    chunk_settings = {key: value for key, value in asdict(settings).items() if key != "fuzzy_threshold"}
    payload = {
        "test": _file_sha256(test_path),
        "model": _folder_signature(model_dir),
        "adapter": _folder_signature(adapter_dir),
        "settings": chunk_settings,
        # This module and the tokenization it shares with training decide every chunk's content.
        "code": [_file_sha256(__file__), _file_sha256(prompts_module.__file__)],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def chunk_path(chunk_dir: str | Path, index: int) -> Path:
    return Path(chunk_dir) / f"chunk-{index:05d}.parquet"


def prepare_chunk_dir(chunk_dir: str | Path, fingerprint: str) -> int:
    """Keep finished chunks of the same fingerprint, delete others; return how many were kept."""
    folder = Path(chunk_dir)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / MANIFEST_NAME
    previous = json.loads(manifest.read_text()).get("fingerprint") if manifest.exists() else None
    existing = sorted(folder.glob("chunk-*.parquet"))
    if previous != fingerprint:
        for stale in existing:
            stale.unlink()
        if existing:
            log.info("removed %d chunk(s) of other inputs or settings from %s", len(existing), folder)
        write_json({"fingerprint": fingerprint}, manifest)
        return 0
    return len(existing)


def run_in_chunks(
    prompts: Sequence[UserPrompt],
    chunk_dir: str | Path,
    chunk_size: int,
    compute: Callable[[Sequence[UserPrompt], Callable[[int], Any]], pd.DataFrame],
) -> pd.DataFrame:
    """Compute missing chunks (each written atomically) and return all chunks concatenated."""
    chunks = [prompts[start : start + chunk_size] for start in range(0, len(prompts), chunk_size)]
    done = sum(len(chunk) for index, chunk in enumerate(chunks) if chunk_path(chunk_dir, index).exists())
    if done:
        log.info("resuming: %d of %d users already ranked in %s", done, len(prompts), chunk_dir)
    with tqdm(total=len(prompts), initial=done, unit="user", desc="infer") as progress:
        for index, chunk in enumerate(chunks):
            path = chunk_path(chunk_dir, index)
            if not path.exists():
                write_parquet(compute(chunk, progress.update), path)
    frames = [read_parquet(chunk_path(chunk_dir, index)) for index in range(len(chunks))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --- assembling predictions --------------------------------------------------------------


def _rank_score(rank: np.ndarray, count: int) -> np.ndarray:
    # The original's score: 1 - i/len for the i-th (0-based) item; distinct, so no ties in ranx.
    return 1.0 - (rank - 1) / max(count, 1)


def _user_frame(
    user: str,
    items: Sequence[str],
    order: Sequence[int],
    scores: Sequence[float],
    appended: Sequence[bool],
    counts: dict[str, int],
) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "user": user,
            "item": [items[i] for i in order],
            "rank": np.arange(1, len(order) + 1, dtype=np.int32),
            "score": np.asarray(scores, dtype=np.float64),
            "source": ["appended" if flag else "model" for flag in appended],
        }
    )
    for column in (*PARSE_COUNT_COLUMNS, *CONTEXT_COUNT_COLUMNS):
        frame[column] = np.int32(counts.get(column, 0))
    return frame


def _finish(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame(
            {
                column: pd.Series(dtype="int32" if column.startswith("n_") or column == "rank" else "object")
                for column in PREDICTION_COLUMNS
            }
        )
    table = pd.concat(parts, ignore_index=True)[PREDICTION_COLUMNS]
    for column in ("user", "item", "source"):
        table[column] = table[column].astype(str)
    return table


def predictions_from_scores(prompts: Sequence[UserPrompt], raw: pd.DataFrame) -> pd.DataFrame:
    """Rank by score (ties keep the prompt's candidate order). Candidates left unscored by
    the context limit (NaN) follow in the prompt's order, as 'appended', counted per user."""
    by_user = {user: group for user, group in raw.groupby("user", sort=False)} if len(raw) else {}
    parts = []
    for prompt in prompts:
        scored = (
            dict(zip(by_user[prompt.user]["item"], by_user[prompt.user]["score"])) if prompt.user in by_user else {}
        )
        missing = [item for item in prompt.items if item not in scored]
        if missing:
            raise ValueError(f"inference chunks: user {prompt.user!r} lacks scores for {len(missing)} candidate(s)")
        scores = np.array([scored[item] for item in prompt.items], dtype=np.float64)
        order = np.argsort(-scores, kind="stable")  # NaN sorts last, in candidate order
        unscored = np.isnan(scores[order])
        parts.append(
            _user_frame(
                prompt.user,
                prompt.items,
                order.tolist(),
                scores[order],
                unscored.tolist(),
                {"n_context_cut": int(unscored.sum())},
            )
        )
    return _finish(parts)


def predictions_from_generations(prompts: Sequence[UserPrompt], raw: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Parse each answer; appended candidates follow the ranked ones; counts on every row."""
    by_user = raw.set_index("user") if len(raw) else pd.DataFrame()
    parts = []
    for prompt in prompts:
        if prompt.user not in by_user.index:
            raise ValueError(f"inference chunks: no generation for user {prompt.user!r}")
        generated = by_user.loc[prompt.user]
        order, appended, counts = rank_generation(generated["text"], prompt.names, threshold)
        ranks = np.arange(1, len(order) + 1)
        # Generations from elsewhere (the HF pipeline of benchmarks/inference.py) had no cuts.
        cuts = {column: int(generated[column]) if column in generated.index else 0 for column in CONTEXT_COUNT_COLUMNS}
        parts.append(
            _user_frame(
                prompt.user,
                prompt.items,
                order,
                _rank_score(ranks, len(order)),
                appended,
                {**counts.as_dict(), **cuts},
            )
        )
    return _finish(parts)


def run_from_predictions(predictions: pd.DataFrame) -> dict[str, dict[str, float]]:
    """ranx Run as a dict {user: {item: score}}; scores from ranks, so ranx cannot reorder ties."""
    run: dict[str, dict[str, float]] = {}
    for user, group in predictions.groupby("user", sort=True):
        ranks = group["rank"].to_numpy()
        run[str(user)] = {
            str(item): float(score) for item, score in zip(group["item"], _rank_score(ranks, len(ranks)))
        }
    return run


# --- the stage ---------------------------------------------------------------------------


def run_inference(
    test_path: str | Path,
    model_dir: str | Path,
    settings: InferenceSettings,
    chunk_dir: str | Path,
    adapter_dir: str | Path | None = None,
    threads: int | None = None,
    trust_remote_code: bool = False,
    gpus: int = 0,
    where: str = "infer",
) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """Rank every user of ``test_path``: (predictions table, ranx run dict)."""
    import torch

    if threads:
        torch.set_num_threads(threads)  # the cores Snakemake granted, not every core of the node
    prompts = read_test_prompts(test_path)
    from rekalm.hf import resolve_device

    resolve_device(settings.device, gpus=gpus, where=where)  # a GPU job without a GPU stops before any work
    prepare_chunk_dir(chunk_dir, inference_fingerprint(test_path, model_dir, adapter_dir, settings))
    loaded: list[Any] = []  # loaded lazily: a resumed run with every chunk done needs no model

    def compute(chunk: Sequence[UserPrompt], advance: Callable[[int], Any]) -> pd.DataFrame:
        if not loaded:
            loaded.extend(
                load_model(
                    model_dir,
                    adapter_dir,
                    dtype=settings.dtype,
                    device=settings.device,
                    gpus=gpus,
                    where=where,
                    trust_remote_code=trust_remote_code,
                )
            )
        model, tokenizer, device = loaded
        worker = score_chunk if settings.mode == "score" else generate_chunk
        return worker(model, tokenizer, device, chunk, settings, advance)

    started = time.perf_counter()
    raw = run_in_chunks(prompts, chunk_dir, settings.chunk_size, compute)
    elapsed = time.perf_counter() - started
    n_candidates = sum(len(p.items) for p in prompts)
    log.info(
        "%s mode: %d users, %d candidates in %.1f s (%.2f candidates/s, resumed chunks included)",
        settings.mode,
        len(prompts),
        n_candidates,
        elapsed,
        n_candidates / max(elapsed, 1e-9),
    )
    if settings.mode == "score":
        predictions = predictions_from_scores(prompts, raw)
    else:
        predictions = predictions_from_generations(prompts, raw, settings.fuzzy_threshold)
    cuts = predictions.groupby("user", sort=False)[list(CONTEXT_COUNT_COLUMNS)].first()
    if cuts.to_numpy().any():
        log.warning(
            "context limit: %d user(s) with candidates not ranked by the model (%d candidates), %d with a cut "
            "generation budget (%d tokens)",
            int((cuts["n_context_cut"] > 0).sum()),
            int(cuts["n_context_cut"].sum()),
            int((cuts["n_budget_cut"] > 0).sum()),
            int(cuts["n_budget_cut"].sum()),
        )
    return predictions, run_from_predictions(predictions)
