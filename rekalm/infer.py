"""Rank every test user's candidates with a causal LM, in ``score`` or ``generate`` mode.

``score`` (the default) ranks candidates by the model's length-normalised log-likelihood of
``<name>\\n`` right after the prompt and the answer prefix the model was trained to emit
("Here a list:\\n1. "): the probability that the model would list the candidate first. The
prompt is encoded once and its KV cache shared: candidates are packed ``batch_size`` at a
time into one row after the cached prompt, each seeing only the prompt and itself (a
block-causal mask; a padded batch over copies of the cache where the attention kernel
takes no custom mask). A user costs one prompt pass plus one pass over the candidates'
own tokens, not one full pass per candidate. It cannot hallucinate, skip or repeat an item.

``generate`` is the original procedure: batched greedy decoding with left padding, then
:mod:`rekalm.parse` maps the list back to candidate ids. The token budget is sized from each
user's own candidates (the tokens of the complete list plus a margin), so large candidate
sets can be listed in full (defect 3: the original's fixed 512 cut 30% of ML-1M lists).
``max_new_tokens: 512`` reproduces the original.

The model is a plain HF folder (a merged model, or the base model for zero-shot runs) with
an optional PEFT adapter folder; nothing here knows which ablation it serves.

Outputs: ``predictions`` (user, item, rank from 1, score, source 'model'|'appended', and the
per-user parse counts of :mod:`rekalm.parse`, zero in score mode); ``score`` is the mean
log-probability in score mode and the original's ``1 - i/len`` in generate mode. The ranx
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

from rekalm.io import read_jsonl, read_parquet, write_json, write_parquet
from rekalm.parse import PARSE_COUNT_COLUMNS, rank_generation

log = logging.getLogger(__name__)

ITEM_TERMINATOR = "\n"  # what follows a name in the trained answer ("1. X\n2. Y")
# The preset's `resources` block sizes the Snakemake job (rules/infer.smk), not the computation.
RESOURCE_KEYS = frozenset({"resources"})
PREDICTION_COLUMNS = ["user", "item", "rank", "score", "source", *PARSE_COUNT_COLUMNS]
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
    fuzzy_threshold: float = 85.0  # generate: rapidfuzz ratio (0-100) to accept a name

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
            raise ValueError(f"inference.max_new_tokens: expected a positive integer or null, got {self.max_new_tokens!r}")
        if not 0 <= self.fuzzy_threshold <= 100:
            raise ValueError(f"inference.fuzzy_threshold: expected 0-100, got {self.fuzzy_threshold!r}")

    @classmethod
    def from_config(cls, preset: dict[str, Any]) -> "InferenceSettings":
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(preset) - known - RESOURCE_KEYS)
        if unknown:
            raise ValueError(f"inference preset: unknown key(s) {unknown}; expected some of {sorted(known | RESOURCE_KEYS)}")
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
                raise ValueError(f"{where}: field {key!r} must be a {kind.__name__}, got {type(row.get(key)).__name__}")
        if row["user"] in seen_users:
            raise ValueError(f"{where}: user {row['user']!r} appears twice")
        seen_users.add(row["user"])
        items, names = [], []
        for candidate in row["candidates"]:
            if not (isinstance(candidate, dict) and isinstance(candidate.get("item"), str) and isinstance(candidate.get("name"), str)):
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
    tokenizer_dir = adapter_dir if adapter_dir and (Path(adapter_dir) / "tokenizer_config.json").exists() else model_dir
    tokenizer = load_tokenizer(tokenizer_dir, trust_remote_code=trust_remote_code)  # pads with EOS if needed: padded positions are never scored
    model = load_causal_lm(model_dir, dtype=torch_dtype, device=torch_device, trust_remote_code=trust_remote_code, where=where)
    if adapter_dir:
        from peft import PeftModel

        # Merging in memory costs seconds and makes every later forward pass a plain one.
        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    model.eval()
    log.info("loaded %s%s on %s as %s", model_dir, f" + adapter {adapter_dir}" if adapter_dir else "", torch_device, torch_dtype)
    return model, tokenizer, torch_device


# --- score mode --------------------------------------------------------------------------


def _common_prefix_length(left: Sequence[int], right: Sequence[int]) -> int:
    length = 0
    for a, b in zip(left, right):
        if a != b:
            break
        length += 1
    return length


def candidate_token_ids(tokenizer: Any, context: str, names: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """(shared prefix tokens, each candidate's continuation tokens).

    Each candidate is tokenized *together* with the context, as in training: BPE merges the
    prefix's trailing space into the name's first token ("1." + " The"), so encoding
    "context" and "name" apart would score tokens the model never saw. The shared prefix is
    the longest run of tokens common to the context and every joint encoding.
    """
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    joint = tokenizer([context + name + ITEM_TERMINATOR for name in names], add_special_tokens=False)["input_ids"]
    shared = len(context_ids)
    for ids in joint:
        shared = min(shared, _common_prefix_length(context_ids, ids))
    if shared == 0:
        raise ValueError("prompt: no token is shared by the prompt and its candidates; cannot score (empty prompt?)")
    return context_ids[:shared], [ids[shared:] for ids in joint]


def _forward_accepts_logits_to_keep(model: Any) -> bool:
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _score_batch(model: Any, prefix_layers: list[tuple[Any, Any]], first_logprobs: Any, continuations: list[list[int]], device: Any) -> np.ndarray:
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
    cache = DynamicCache(ddp_cache_data=[(k.expand(size, -1, -1, -1), v.expand(size, -1, -1, -1)) for k, v in prefix_layers], config=model.config)
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


def _score_packed(model: Any, prefix_layers: list[tuple[Any, Any]], first_logprobs: Any, continuations: list[list[int]], device: Any) -> np.ndarray:
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
        logits = model(
            input_ids=tokens[None],
            attention_mask=mask[None, None].to(device),
            position_ids=(prefix_length + offset)[None].to(device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=keep,
        ).logits[0].float()
        targets = tokens[keep + 1]
        token_logprobs[keep + 1] = logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    sums = torch.zeros(len(continuations), dtype=torch.float32, device=device).index_add_(0, owner.to(device), token_logprobs.float())
    return (sums / lengths.to(device)).cpu().numpy().astype(np.float64)


def score_candidates(
    model: Any, tokenizer: Any, context: str, names: Sequence[str], batch_size: int, device: Any, packed: bool | None = None
) -> np.ndarray:
    """Mean log-probability of each ``name + '\\n'`` after ``context``; one prompt pass per call.

    Candidates go ``batch_size`` at a time through :func:`_score_packed` (one row, no
    padding) when the attention implementation takes a custom mask, else through
    :func:`_score_batch` (a right-padded batch over copies of the prompt cache).
    """
    import torch

    if not names:
        return np.empty(0, dtype=np.float64)
    prefix_ids, continuations = candidate_token_ids(tokenizer, context, names)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and len(prefix_ids) + max(map(len, continuations)) > limit:
        log.warning("prompt of %d tokens exceeds the model's %d positions: scores may be unreliable", len(prefix_ids), limit)
    use_packing = _packing_supported(model) if packed is None else packed
    extra = {"logits_to_keep": 1} if _forward_accepts_logits_to_keep(model) else {}
    with torch.inference_mode():
        prefix = model(input_ids=torch.tensor([prefix_ids], device=device), use_cache=True, **extra)
        first_logprobs = torch.log_softmax(prefix.logits[0, -1].float(), dim=-1)
        prefix_layers = [(layer.keys, layer.values) for layer in prefix.past_key_values.layers]
        del prefix
        scores = np.empty(len(names), dtype=np.float64)
        # Similar lengths in one batch waste fewer padded positions.
        order = sorted(range(len(names)), key=lambda index: len(continuations[index]))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            scorer = _score_packed if use_packing else _score_batch
            scores[batch] = scorer(model, prefix_layers, first_logprobs, [continuations[i] for i in batch], device)
    return scores


def score_chunk(model: Any, tokenizer: Any, device: Any, prompts: Sequence[UserPrompt], settings: InferenceSettings, advance: Callable[[int], Any]) -> pd.DataFrame:
    """Raw score-mode results of some users: user, item, score (candidate order kept)."""
    parts = []
    for prompt in prompts:
        scores = score_candidates(model, tokenizer, prompt.prompt + prompt.answer_prefix, prompt.names, settings.batch_size, device)
        parts.append(pd.DataFrame({"user": prompt.user, "item": list(prompt.items), "score": scores}))
        advance(1)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"user": [], "item": [], "score": []})


# --- generate mode -----------------------------------------------------------------------


def generation_budget(tokenizer: Any, names: Sequence[str], settings: InferenceSettings) -> int:
    """New tokens allowed for one user: the complete list's tokens plus margins (or a fixed cap)."""
    if settings.max_new_tokens is not None:
        return settings.max_new_tokens
    listing = "\n".join(f"{rank}. {name}" for rank, name in enumerate(names, start=1))
    listed = len(tokenizer(listing, add_special_tokens=False)["input_ids"])
    return listed + settings.tokens_per_candidate * len(names) + settings.token_slack


def generate_answers(model: Any, tokenizer: Any, device: Any, prompts: Sequence[UserPrompt], settings: InferenceSettings, advance: Callable[[int], Any]) -> list[str]:
    """Greedy answers (starting with the answer prefix when it is prefilled), in prompt order."""
    import torch
    from transformers import GenerationConfig

    tokenizer.padding_side = "left"  # decoder-only batches must end where generation starts
    prefix = [p.answer_prefix if settings.prefill_answer else "" for p in prompts]
    texts = [p.prompt + pre for p, pre in zip(prompts, prefix)]
    budgets = [generation_budget(tokenizer, p.names, settings) for p in prompts]
    eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None else tokenizer.eos_token_id
    answers = [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda index: budgets[index])  # similar budgets batch together
    for start in range(0, len(order), settings.batch_size):
        batch = order[start : start + settings.batch_size]
        encoded = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        config = GenerationConfig(
            max_new_tokens=max(budgets[i] for i in batch), do_sample=False, num_beams=1, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos
        )
        with torch.inference_mode():
            output = model.generate(**encoded, generation_config=config)
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        for row, index in enumerate(batch):
            answers[index] = prefix[index] + tokenizer.decode(new_tokens[row], skip_special_tokens=True)
        advance(len(batch))
    return answers


def generate_chunk(model: Any, tokenizer: Any, device: Any, prompts: Sequence[UserPrompt], settings: InferenceSettings, advance: Callable[[int], Any]) -> pd.DataFrame:
    """Raw generate-mode results of some users: user, text."""
    answers = generate_answers(model, tokenizer, device, prompts, settings, advance)
    return pd.DataFrame({"user": [p.user for p in prompts], "text": answers})


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
    return [[str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(root.rglob("*")) if p.is_file()]


def inference_fingerprint(test_path: str | Path, model_dir: str | Path, adapter_dir: str | Path | None, settings: InferenceSettings) -> str:
    """What a chunk depends on: prompts, model files, settings (parsing aside) and this code."""
    chunk_settings = {key: value for key, value in asdict(settings).items() if key != "fuzzy_threshold"}
    payload = {
        "test": _file_sha256(test_path),
        "model": _folder_signature(model_dir),
        "adapter": _folder_signature(adapter_dir),
        "settings": chunk_settings,
        "code": _file_sha256(__file__),
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


def _user_frame(user: str, items: Sequence[str], order: Sequence[int], scores: Sequence[float], appended: Sequence[bool], counts: dict[str, int]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "user": user,
            "item": [items[i] for i in order],
            "rank": np.arange(1, len(order) + 1, dtype=np.int32),
            "score": np.asarray(scores, dtype=np.float64),
            "source": ["appended" if flag else "model" for flag in appended],
        }
    )
    for column in PARSE_COUNT_COLUMNS:
        frame[column] = np.int32(counts.get(column, 0))
    return frame


def _finish(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame({column: pd.Series(dtype="int32" if column.startswith("n_") or column == "rank" else "object") for column in PREDICTION_COLUMNS})
    table = pd.concat(parts, ignore_index=True)[PREDICTION_COLUMNS]
    for column in ("user", "item", "source"):
        table[column] = table[column].astype(str)
    return table


def predictions_from_scores(prompts: Sequence[UserPrompt], raw: pd.DataFrame) -> pd.DataFrame:
    """Rank by score (ties keep the prompt's candidate order); every row comes from the model."""
    by_user = {user: group for user, group in raw.groupby("user", sort=False)} if len(raw) else {}
    parts = []
    for prompt in prompts:
        scored = dict(zip(by_user[prompt.user]["item"], by_user[prompt.user]["score"])) if prompt.user in by_user else {}
        missing = [item for item in prompt.items if item not in scored]
        if missing:
            raise ValueError(f"inference chunks: user {prompt.user!r} lacks scores for {len(missing)} candidate(s)")
        scores = np.array([scored[item] for item in prompt.items], dtype=np.float64)
        order = np.argsort(-scores, kind="stable")
        parts.append(_user_frame(prompt.user, prompt.items, order.tolist(), scores[order], [False] * len(order), {}))
    return _finish(parts)


def predictions_from_generations(prompts: Sequence[UserPrompt], raw: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Parse each answer; appended candidates follow the ranked ones; counts on every row."""
    texts = dict(zip(raw["user"], raw["text"])) if len(raw) else {}
    parts = []
    for prompt in prompts:
        if prompt.user not in texts:
            raise ValueError(f"inference chunks: no generation for user {prompt.user!r}")
        order, appended, counts = rank_generation(texts[prompt.user], prompt.names, threshold)
        ranks = np.arange(1, len(order) + 1)
        parts.append(_user_frame(prompt.user, prompt.items, order, _rank_score(ranks, len(order)), appended, counts.as_dict()))
    return _finish(parts)


def run_from_predictions(predictions: pd.DataFrame) -> dict[str, dict[str, float]]:
    """ranx Run as a dict {user: {item: score}}; scores from ranks, so ranx cannot reorder ties."""
    run: dict[str, dict[str, float]] = {}
    for user, group in predictions.groupby("user", sort=True):
        ranks = group["rank"].to_numpy()
        run[str(user)] = {str(item): float(score) for item, score in zip(group["item"], _rank_score(ranks, len(ranks)))}
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
                load_model(model_dir, adapter_dir, dtype=settings.dtype, device=settings.device, gpus=gpus, where=where, trust_remote_code=trust_remote_code)
            )
        model, tokenizer, device = loaded
        worker = score_chunk if settings.mode == "score" else generate_chunk
        return worker(model, tokenizer, device, chunk, settings, advance)

    started = time.perf_counter()
    raw = run_in_chunks(prompts, chunk_dir, settings.chunk_size, compute)
    elapsed = time.perf_counter() - started
    n_candidates = sum(len(p.items) for p in prompts)
    log.info("%s mode: %d users, %d candidates in %.1f s (%.2f candidates/s, resumed chunks included)", settings.mode, len(prompts), n_candidates, elapsed, n_candidates / max(elapsed, 1e-9))
    if settings.mode == "score":
        predictions = predictions_from_scores(prompts, raw)
    else:
        predictions = predictions_from_generations(prompts, raw, settings.fuzzy_threshold)
    return predictions, run_from_predictions(predictions)
