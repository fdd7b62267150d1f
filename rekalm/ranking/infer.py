"""Rank every test user's candidates with a causal LM, in ``score`` or ``generate`` mode.

The job: read the test prompts (:mod:`rekalm.ranking.inference_inputs`), load the model, rank the
users chunk by chunk, and turn the raw results into predictions and a ranx run.

- ``score`` (the default) ranks candidates by the model's length-normalised log-likelihood
  of ``<name>\\n`` right after the prompt and the trained answer prefix
  (:mod:`rekalm.ranking.scoring`); it cannot hallucinate, skip or repeat an item.
- ``generate`` is the original procedure: greedy decoding with a budget sized from each
  user's candidates (:mod:`rekalm.ranking.generation`), then :mod:`rekalm.ranking.parse` maps the list back
  to candidate ids.

Context rule (the model's ``max_position_embeddings``; checked per user before its forward
passes, so a job never fails on it). build_sets already keeps prompt + full answer within
the training ``seq_len`` where cutting history allows; what still does not fit the model is
cut and counted per user in the predictions:

- score: a candidate is scored when prompt + its own tokens fit; the others are ranked after
  the scored ones in the prompt's order (``source`` 'appended', score NaN), counted in
  ``n_context_cut``;
- generate: the budget is cut to the room left after the prompt (``n_budget_cut`` tokens);
  the parser appends what the model could not list (``n_appended``). A prompt that leaves
  no room generates nothing and every candidate is appended (``n_context_cut``).

The model is a plain HF folder (a merged model, or the base model for zero-shot runs) with
an optional PEFT adapter folder; nothing here knows which ablation it serves.

Outputs: ``predictions`` (user, item, rank from 1, score, source 'model'|'appended', the
per-user parse counts of :mod:`rekalm.ranking.parse`, zero in score mode, and the context cuts);
``score`` is the mean log-probability in score mode and the original's ``1 - i/len`` in
generate mode. The ranx
run ``{user: {item: 1 - (rank-1)/len}}`` is derived from the ranks, so it has no ties.

``generate_max_users: N`` ranks only the first N users of ``test.jsonl`` in generate mode
(a smoke test of that path on a CPU, where a full generate run takes minutes per hundred
users); the job logs how many it left out and evaluate counts them as ``not_ranked``.

Resumable: users are processed in chunks of ``chunk_size``; each finished chunk is written
atomically to ``chunk_dir`` beside a fingerprint of the inputs and settings, so a killed job
loses at most one chunk, and chunks of another model or settings are never reused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rekalm.common.fingerprinted_folder import FingerprintedFolder
from rekalm.common.io import json_sha256, read_parquet, sha256_of, write_parquet
from rekalm.common.parse_counts import PARSE_COUNT_COLUMNS
from rekalm.common.tables import CONTEXT_COUNT_COLUMNS, LLM_PREDICTIONS, rank_scores, run_from_predictions
from rekalm.llm import prompts as prompts_module
from rekalm.ranking import generation, inference_inputs, scoring
from rekalm.ranking.generation import generate_answers
from rekalm.ranking.inference_inputs import InferenceSettings, UserPrompt, read_test_prompts
from rekalm.ranking.parse import rank_generation
from rekalm.ranking.scoring import score_candidates

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = list(LLM_PREDICTIONS.columns)
MANIFEST_NAME = "manifest.json"


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
    stops here (rekalm.llm.hf.resolve_device) instead of ranking on the CPU for hours.
    """
    from rekalm.llm.hf import load_causal_lm, load_tokenizer, resolve_device, resolve_dtype

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


# --- one chunk of users, per mode --------------------------------------------------------


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
        "test": sha256_of(test_path),
        "model": _folder_signature(model_dir),
        "adapter": _folder_signature(adapter_dir),
        "settings": chunk_settings,
        # These modules and the tokenization they share with training decide every chunk's content.
        "code": [
            sha256_of(path)
            for path in (
                __file__,
                inference_inputs.__file__,
                scoring.__file__,
                generation.__file__,
                prompts_module.__file__,
            )
        ],
    }
    return json_sha256(payload)


def chunk_path(chunk_dir: str | Path, index: int) -> Path:
    return Path(chunk_dir) / f"chunk-{index:05d}.parquet"


def prepare_chunk_dir(chunk_dir: str | Path, fingerprint: str) -> int:
    """Keep finished chunks of the same fingerprint, else empty the folder; return how many were kept."""
    folder = Path(chunk_dir)
    removed = FingerprintedFolder(folder, MANIFEST_NAME).claim(fingerprint)
    stale = [path for path in removed if path.match("chunk-*.parquet")]
    if stale:
        log.info("removed %d chunk(s) of other inputs or settings from %s", len(stale), folder)
    return len(list(folder.glob("chunk-*.parquet")))


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


def _user_frame(
    user: str,
    items: Sequence[str],
    order: Sequence[int],
    scores: np.ndarray,
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
        # A row, not a frame: run_in_chunks writes one generation per prompt, one prompt per user.
        generated = cast(pd.Series, by_user.loc[prompt.user])
        order, appended, counts = rank_generation(generated["text"], prompt.names, threshold)
        ranks = np.arange(1, len(order) + 1)
        # Generations from elsewhere (the HF pipeline of benchmarks/inference.py) had no cuts.
        cuts = {column: int(generated[column]) if column in generated.index else 0 for column in CONTEXT_COUNT_COLUMNS}
        parts.append(
            _user_frame(
                prompt.user,
                prompt.items,
                order,
                rank_scores(ranks, len(order)),
                appended,
                {**counts.as_dict(), **cuts},
            )
        )
    return _finish(parts)


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
    cap = settings.generate_max_users
    if settings.mode == "generate" and cap is not None and cap < len(prompts):
        log.warning(
            "generate_max_users %d: ranking the first %d of %d test users; the other %d are not ranked",
            cap,
            cap,
            len(prompts),
            len(prompts) - cap,
        )
        prompts = prompts[:cap]
    from rekalm.llm.hf import resolve_device

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
