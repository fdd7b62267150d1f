"""LoRA instruction tuning of a base model on one ablation's training set.

Built on transformers' ``Trainer`` + peft + accelerate rather than TRL's ``SFTTrainer``:
our rows arrive already rendered (``prompt`` + ``completion``), so all TRL would add is
its packing and completion masking, which are a few lines here and stay stable across
versions, while TRL's argument names have changed in most releases.

What happens, in order:

1. ``train.jsonl`` rows ``{kind, prompt, completion}`` are tokenized as one string
   (:func:`rekalm.prompts.encode_prompt_and_answer`, the tokens inference ranks and
   continues); the completion gets EOS. With ``loss: completion_only`` (default) prompt tokens
   get label -100, so only the answer (or a whole knowledge document, whose prompt is "") is learned; with
   ``full_sequence`` (the original study) every token is.
2. With ``packing: true`` examples are packed best-fit-decreasing into rows of at most
   ``seq_len`` tokens. Examples in a row do not see each other: position ids restart at 0
   for every example and no attention mask is passed, so transformers builds a
   block-diagonal causal mask (SDPA/eager), or, for flash-attention, the batch is flattened
   into one row and the varlen kernels use the same position ids
   (``DataCollatorWithFlattening``). The first token of each example is never a target,
   so no example learns to predict across a boundary.
3. ``Trainer`` runs with every value of the training preset; checkpoints go to a folder
   outside the rule's outputs every ``save_steps`` and a re-run resumes from the newest
   complete one (after a kill, a Slurm time-out or a crash). A fingerprint of data,
   settings and base model guards against resuming someone else's run.
4. The adapter, a TSV log (loss, tokens/s, peak memory per step) and a loss curve are
   written atomically.

Devices, dtypes and attention come from :mod:`rekalm.hf`: a job that asked for GPUs and
finds none stops before anything starts. With N > 1 workers (one per GPU of the job, or
``processes: N`` on the CPU) :func:`run_training_job` starts them with ``accelerate launch``
on this module's command line (``python -m rekalm.train --job job.json``), hands them its
own import path and copies their output into its stderr (the rule's log); with one worker
it trains in-process.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tqdm import tqdm

from rekalm.hf import load_tokenizer
from rekalm.io import atomic_dir, atomic_path, read_jsonl, write_json
from rekalm.prompts import encode_prompt_and_answer

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # the label value torch's cross-entropy (and transformers) skip
LossMode = Literal["completion_only", "full_sequence"]
FINGERPRINT_FILE = "rekalm_fingerprint.json"
JOB_FILE = "rekalm_job.json"
RESULT_FILE = "rekalm_result.json"
TRAINING_RECORD = "rekalm_training.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class TrainingSettings:
    """One training preset (``config["training"][name]``). Defaults are the paper's values."""

    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.1
    target_modules: str | list[str] = "all-linear"
    seq_len: int = 2048
    learning_rate: float = 1e-4
    epochs: float = 10  # an int, as config files give it: settings are fingerprinted
    max_steps: int | None = None  # a cap on optimizer steps; None trains all epochs
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    weight_decay: float = 1e-4
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    lr_scheduler: str = "linear"
    warmup_steps: int = 0
    seed: int = 22
    bf16: bool = True  # applied only where CUDA supports it
    tf32: bool = True  # applied only on CUDA devices of compute capability >= 8.0
    gradient_checkpointing: bool = True
    packing: bool = True
    loss: LossMode = "completion_only"
    save_steps: int = 200
    save_total_limit: int = 2
    keep_checkpoints: bool = False  # delete the checkpoint folder once the adapter is saved
    logging_steps: int = 1
    attn_implementation: str = (
        "auto"  # auto: flash-attention 2 where usable, else SDPA where the model supports it, else eager
    )
    device: str = (
        "auto"  # auto | cpu | cuda | cuda:N (rekalm.hf.resolve_device); cpu runs on the CPU even in a GPU job
    )
    processes: int | None = None  # data-parallel workers; None = one per GPU of the job (CPU workers use gloo)

    @classmethod
    def from_config(cls, preset: dict[str, Any], where: str = "training") -> TrainingSettings:
        """Build from a config preset; ``resources`` (read by rules/common.smk) is ignored."""
        values = {key: value for key, value in preset.items() if key != "resources"}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{where}: unknown setting(s) {unknown}; expected some of {sorted(known)}")
        settings = cls(**values)
        settings.validate(where)
        return settings

    def validate(self, where: str = "training") -> None:
        if self.loss not in ("completion_only", "full_sequence"):
            raise ValueError(f"{where}.loss: expected 'completion_only' or 'full_sequence', got {self.loss!r}")
        for name in (
            "lora_r",
            "seq_len",
            "per_device_batch_size",
            "gradient_accumulation_steps",
            "save_steps",
            "logging_steps",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{where}.{name}: expected a positive integer, got {getattr(self, name)!r}")
        if self.processes is not None and self.processes < 1:
            raise ValueError(f"{where}.processes: expected null or a positive integer, got {self.processes!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"{where}.max_steps: expected null or a positive integer, got {self.max_steps!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"{where}.lora_dropout: expected 0 <= value < 1, got {self.lora_dropout!r}")
        # Checked here so a typo fails with one line naming the key, not a Trainer traceback.
        from transformers.trainer_utils import SchedulerType
        from transformers.training_args import OptimizerNames

        for name, allowed in (("optim", OptimizerNames), ("lr_scheduler", SchedulerType)):
            values = sorted(member.value for member in allowed)
            if getattr(self, name) not in values:
                raise ValueError(f"{where}.{name}: expected one of {values}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainingJob:
    """Everything one (dataset, ablation) training needs; serializable for worker processes."""

    train_jsonl: str
    base_model_dir: str
    adapter_dir: str
    log_tsv: str
    loss_png: str
    checkpoint_dir: str
    settings: TrainingSettings = field(default_factory=TrainingSettings)
    threads: int = 1
    trust_remote_code: bool = False
    gpus: int = 0  # GPUs the job asked for (resources.gpu): none visible then is an error
    where: str = "train"  # rule and preset, for error messages

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "settings": self.settings.to_dict()}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> TrainingJob:
        return cls(**{**payload, "settings": TrainingSettings(**payload["settings"])})


@dataclass
class TrainingResult:
    global_step: int
    resumed_from: str | None
    examples: int
    dropped_examples: int
    truncated_examples: int
    packed_rows: int
    train_runtime_s: float
    device: str


# --------------------------------------------------------------------------- data


@dataclass
class TokenizedSet:
    examples: list[dict[str, list[int]]]
    dropped: int  # completion-only examples whose prompt alone fills seq_len
    truncated: int


def load_training_rows(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Read train.jsonl and check every row has string ``prompt`` and ``completion``."""
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path}: no training rows")
    for number, row in enumerate(rows, start=1):
        for key in ("prompt", "completion"):
            if not isinstance(row.get(key), str):
                raise ValueError(
                    f"{path}:{number}: field {key!r} must be a string (rows are {{kind, prompt, completion}})"
                )
        if not row["completion"]:
            raise ValueError(f"{path}:{number}: empty completion")
    return rows


def tokenize_rows(
    rows: Sequence[dict[str, str]], tokenizer: PreTrainedTokenizerBase, seq_len: int, loss: LossMode
) -> TokenizedSet:
    """Token ids and labels per row: ``prompt`` then ``completion`` + EOS, cut to ``seq_len``."""
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer: no eos_token_id; the completion needs an end-of-sequence token")
    # Prompt and completion are encoded as one string, as inference meets them (the
    # completion's tokens depend on what precedes them); offsets place the label boundary.
    encoded = encode_prompt_and_answer(tokenizer, [r["prompt"] for r in rows], [r["completion"] for r in rows])
    examples, dropped, truncated = [], 0, 0
    for ids, boundary in tqdm(encoded, total=len(rows), desc="tokenizing", mininterval=5):
        prompt_ids = ids[:boundary]
        completion_ids = ids[boundary:] + [tokenizer.eos_token_id]
        if loss == "completion_only" and len(prompt_ids) >= seq_len:
            dropped += 1
            continue
        input_ids = (prompt_ids + completion_ids)[:seq_len]
        truncated += len(prompt_ids) + len(completion_ids) > seq_len
        if loss == "completion_only":
            labels = [IGNORE_INDEX] * len(prompt_ids) + input_ids[len(prompt_ids) :]
        else:
            labels = list(input_ids)
        examples.append({"input_ids": input_ids, "labels": labels})
    return TokenizedSet(examples, dropped, truncated)


def pack_best_fit(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group example indices into rows of at most ``capacity`` tokens (best-fit decreasing).

    A sorted list of free space + bisect finds the tightest row in O(log rows) search
    (plus a C-level memmove), so 10^5 examples pack in well under a second.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free tokens, row index), sorted
    for index in order:
        length = lengths[index]
        if length > capacity:
            raise ValueError(f"packing: example {index} has {length} tokens > seq_len {capacity}")
        slot = bisect.bisect_left(free, (length, -1))
        if slot < len(free):
            space, row = free.pop(slot)
        else:
            space, row = capacity, len(rows)
            rows.append([])
        rows[row].append(index)
        if space - length > 0:
            bisect.insort(free, (space - length, row))
    return rows


class PackedRows:
    """A map-style dataset whose items are packed rows: ``{"segments": [example, ...]}``."""

    def __init__(self, examples: list[dict[str, list[int]]], rows: list[list[int]]):
        self.examples = examples
        self.rows = rows
        self.served: list[int] = []  # items this process trained on since the last epoch end

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, list[dict[str, list[int]]]]:
        self.served.append(index)
        return {"segments": [self.examples[i] for i in self.rows[index]]}


class SingleExamples:
    """One example per item (no packing): the plain layout, padded per batch."""

    def __init__(self, examples: list[dict[str, list[int]]]):
        self.examples = examples
        self.served: list[int] = []  # items this process trained on since the last epoch end

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        self.served.append(index)
        return self.examples[index]


@dataclass
class PackedRowCollator:
    """Batch packed rows as [batch, longest row] with position ids restarting per example.

    Hand-written because transformers' ``DataCollatorWithFlattening`` puts the whole batch
    into ONE row: fine for flash-attention's varlen kernels, but under SDPA that is a
    (batch*seq_len)^2 mask, 4x the attention work of [batch, seq_len] at batch 4. Row tails
    are padded as a segment of their own (positions from 0, labels -100), so real tokens
    never attend to padding and no attention mask is needed (a 2-D mask would switch
    transformers' packed-sequence detection off).
    """

    pad_token_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        rows = [self._row(feature["segments"]) for feature in features]
        width = max(len(ids) for ids, _, _ in rows)
        batch_ids, batch_labels, batch_positions = [], [], []
        for ids, labels, positions in rows:
            pad = width - len(ids)
            batch_ids.append(ids + [self.pad_token_id] * pad)
            batch_labels.append(labels + [IGNORE_INDEX] * pad)
            batch_positions.append(positions + list(range(pad)))
        return {
            "input_ids": torch.tensor(batch_ids, dtype=torch.long),
            "labels": torch.tensor(batch_labels, dtype=torch.long),
            "position_ids": torch.tensor(batch_positions, dtype=torch.long),
        }

    @staticmethod
    def _row(segments: list[dict[str, list[int]]]) -> tuple[list[int], list[int], list[int]]:
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for segment in segments:
            ids += segment["input_ids"]
            labels += [IGNORE_INDEX] + segment["labels"][1:]  # never predict across a boundary
            positions += range(len(segment["input_ids"]))
        return ids, labels, positions


class FlattenedRowCollator:
    """For flash-attention: the batch's examples in one row, via transformers' own collator
    (the varlen kernels then attend within each example only, at no extra cost)."""

    def __init__(self) -> None:
        from transformers import DataCollatorWithFlattening

        self.flatten = DataCollatorWithFlattening(return_tensors="pt")

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.flatten([segment for feature in features for segment in feature["segments"]])


# --------------------------------------------------------------------------- checkpoints


def checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def is_complete_checkpoint(path: Path) -> bool:
    """trainer_state.json is the last file Trainer writes into a checkpoint: a kill before
    (or during) that write leaves a folder that must not be resumed from."""
    state = path / "trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def newest_complete_checkpoint(checkpoint_dir: str | os.PathLike[str]) -> Path | None:
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    candidates = sorted((step, path) for path in folder.iterdir() if (step := checkpoint_step(path)) is not None)
    for _, path in reversed(candidates):
        if is_complete_checkpoint(path):
            return path
    return None


def training_fingerprint(job: TrainingJob) -> str:
    """What a checkpoint must have been trained on to be resumed: data, settings, base model."""
    digest = hashlib.sha256()
    with open(job.train_jsonl, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    base = Path(job.base_model_dir)
    weights = sorted((p.name, p.stat().st_size) for p in base.glob("*.safetensors"))
    config_text = (base / "config.json").read_text(encoding="utf-8") if (base / "config.json").is_file() else ""
    # Settings that do not change the optimisation trajectory may differ on a resume.
    settings = {
        k: v
        for k, v in job.settings.to_dict().items()
        if k not in {"save_steps", "save_total_limit", "keep_checkpoints", "logging_steps"}
    }
    digest.update(
        json.dumps({"settings": settings, "weights": weights, "config": config_text}, sort_keys=True).encode()
    )
    return digest.hexdigest()


def prepare_checkpoint_dir(job: TrainingJob) -> Path | None:
    """Make the checkpoint folder ready and return the checkpoint to resume from, if any.

    Checkpoints from a different fingerprint (new data, settings or base model) are deleted:
    resuming them would silently mix two trainings. Incomplete checkpoints are deleted too.
    """
    folder = Path(job.checkpoint_dir)
    fingerprint = training_fingerprint(job)
    marker = folder / FINGERPRINT_FILE
    if folder.is_dir():
        recorded = json.loads(marker.read_text(encoding="utf-8")).get("fingerprint") if marker.is_file() else None
        if recorded != fingerprint:
            if any(checkpoint_step(p) is not None for p in folder.iterdir()):
                log.warning("checkpoints in %s come from other data/settings: starting over", folder)
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(
        {"fingerprint": fingerprint, "train_jsonl": job.train_jsonl, "base_model_dir": job.base_model_dir}, marker
    )
    for path in folder.iterdir():
        if checkpoint_step(path) is not None and not is_complete_checkpoint(path):
            log.warning("removing incomplete checkpoint %s (killed while saving)", path)
            shutil.rmtree(path)
    resume = newest_complete_checkpoint(folder)
    if resume is not None:
        log.info("resuming from %s", resume)
    return resume


# --------------------------------------------------------------------------- device


@dataclass(frozen=True)
class DevicePlan:
    device: str  # "cuda" or "cpu"
    bf16: bool
    tf32: bool
    attn_implementation: str | None  # None: transformers' own choice (remote-code models)


def plan_device(
    settings: TrainingSettings,
    base_model_dir: str | os.PathLike[str],
    gpus: int = 0,
    where: str = "train",
    trust_remote_code: bool = False,
) -> DevicePlan:
    """The preset's device, precision and attention for the hardware at hand (rekalm.hf):
    no CUDA although the job asked for GPUs stops here; bf16 only where CUDA supports it
    (bf16 on CPU is much slower than fp32), tf32 only on compute capability >= 8.0, and the
    attention the model class supports."""
    import torch

    from rekalm.hf import bf16_supported, causal_lm_class, choose_attention, resolve_device, tf32_supported

    device = resolve_device(settings.device, gpus=gpus, where=where)
    bf16 = bool(settings.bf16 and bf16_supported(device))
    tf32 = tf32_supported(device, settings.tf32)
    dtype = torch.bfloat16 if bf16 else torch.float32
    attention = choose_attention(
        causal_lm_class(base_model_dir, trust_remote_code),
        settings.attn_implementation,
        device,
        dtype,
        where=f"{where}: attn_implementation",
    )
    return DevicePlan(device.type, bf16, tf32, attention)


def worker_count(settings: TrainingSettings, plan: DevicePlan, gpus: int) -> int:
    """Data-parallel workers: ``processes`` when set (CPU workers use gloo), else one per
    GPU the job asked for, else one per visible GPU (local runs), else one."""
    import torch

    if settings.processes is not None:
        count = settings.processes
    elif plan.device == "cuda":
        count = gpus if gpus > 0 else torch.cuda.device_count()
    else:
        count = 1
    if plan.device == "cuda" and count > torch.cuda.device_count():
        raise ValueError(
            f"training.processes: {count} workers but only {torch.cuda.device_count()} CUDA device(s) are visible "
            "(one worker per GPU)"
        )
    return max(1, count)


def peak_memory_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# --------------------------------------------------------------------------- trainer


def make_callback_class() -> type:
    from transformers import TrainerCallback

    class ThroughputLog(TrainerCallback):
        """Adds tokens/s, peak memory and a session number to every loss entry of the log
        history. The history lives in trainer_state.json, so a resumed run keeps the rows
        logged before the interruption; ``session`` shows where it resumed."""

        def __init__(self, device: str):
            self.device = device
            self.session = 1
            self.last_time = 0.0
            self.last_tokens = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.session = 1 + max((entry.get("session", 0) for entry in state.log_history), default=0)
            self.last_time = time.perf_counter()
            self.last_tokens = state.num_input_tokens_seen
            if self.device == "cuda":
                import torch

                torch.cuda.reset_peak_memory_stats()

        def on_log(self, args, state, control, logs=None, **kwargs):
            entry = state.log_history[-1] if state.log_history else {}
            if "loss" not in entry or entry.get("step") != state.global_step:
                return
            now = time.perf_counter()
            tokens = state.num_input_tokens_seen
            entry["tokens_per_second"] = (tokens - self.last_tokens) / max(now - self.last_time, 1e-9)
            entry["peak_memory_mb"] = peak_memory_mb(self.device)
            entry["session"] = self.session
            self.last_time, self.last_tokens = now, tokens

    return ThroughputLog


SHARD_FOLDER = "shards"


def make_shard_callback(dataset: PackedRows | SingleExamples, checkpoint_dir: str) -> TrainerCallback:
    """Record which dataset items each worker trained on, per epoch, in
    ``<checkpoint_dir>/shards/rank-<r>.jsonl`` and the log: the audit that data-parallel
    workers see disjoint shards and a resumed run does not repeat items."""
    from transformers import TrainerCallback

    class ShardLog(TrainerCallback):
        def _record(self, args, state, complete: bool) -> None:
            rows, dataset.served[:] = sorted(dataset.served), []
            if not rows:
                return
            epoch = max(0, math.ceil(state.epoch or 0) - 1) if complete else math.floor(state.epoch or 0)
            entry = {
                "rank": args.process_index,
                "world_size": args.world_size,
                "epoch": epoch,
                "complete": complete,
                "step": state.global_step,
                "items": rows,
            }
            log.info(
                "rank %d of %d, epoch %d%s: trained on %d items",
                args.process_index,
                args.world_size,
                epoch,
                "" if complete else " (partial)",
                len(rows),
            )
            path = Path(checkpoint_dir) / SHARD_FOLDER / f"rank-{args.process_index}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")

        def on_epoch_end(self, args, state, control, **kwargs):
            self._record(args, state, complete=True)

        def on_train_end(self, args, state, control, **kwargs):
            self._record(args, state, complete=False)

    return ShardLog()


def total_steps(rows: int, settings: TrainingSettings, world_size: int) -> int:
    """Optimizer steps for all epochs, as Trainer counts them (last partial batch kept)."""
    batches = math.ceil(rows / (settings.per_device_batch_size * world_size))
    return max(1, math.ceil(settings.epochs * batches / settings.gradient_accumulation_steps))


def build_training_arguments(
    settings: TrainingSettings, plan: DevicePlan, output_dir: str, rows: int, world_size: int = 1
):
    """The preset, one to one, as ``TrainingArguments`` (the tests assert on this object)."""
    from transformers import TrainingArguments

    steps = total_steps(rows, settings, world_size)
    cap = settings.max_steps if settings.max_steps is not None and settings.max_steps < steps else -1
    return TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=settings.per_device_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=cap,  # HF's max_steps overrides epochs; we only pass it when it is the tighter cap
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        optim=settings.optim,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup_steps,
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=plan.bf16,
        tf32=plan.tf32 if plan.device == "cuda" else None,
        # Activation (a.k.a. gradient) checkpointing; non-reentrant works with frozen base weights.
        activation_checkpointing=settings.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if settings.gradient_checkpointing else None,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        logging_strategy="steps",
        logging_steps=settings.logging_steps,
        # Packed rows have (almost) no padding and no attention mask: count every token.
        include_num_input_tokens_seen="all" if settings.packing else "non_padding",
        remove_unused_columns=False,  # our items are {"segments": ...}, not model kwargs
        ddp_find_unused_parameters=False,
        use_cpu=plan.device == "cpu",
        report_to="none",
        disable_tqdm=False,
    )


def load_lora_model(
    base_model_dir: str, settings: TrainingSettings, plan: DevicePlan, trust_remote_code: bool = False
):
    import torch
    from peft import LoraConfig, get_peft_model

    from rekalm.hf import load_causal_lm

    # A data-parallel worker loads straight onto its own GPU; Trainer places CPU models itself.
    device = (
        torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if plan.device == "cuda" else torch.device("cpu")
    )
    attention = plan.attn_implementation or "auto"
    model = load_causal_lm(
        base_model_dir,
        dtype=torch.bfloat16 if plan.bf16 else torch.float32,
        device=device,
        attn_implementation=attention,
        trust_remote_code=trust_remote_code,
        where="train",
    )
    model.config.use_cache = False  # no KV cache while training (and it clashes with checkpointing)
    lora = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=settings.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def build_trainer(
    job: TrainingJob,
    tokenized: TokenizedSet,
    tokenizer: PreTrainedTokenizerBase,
    plan: DevicePlan,
    world_size: int = 1,
    callbacks: Sequence[TrainerCallback] = (),
) -> Trainer:
    """Model, data layout and ``Trainer`` for ``job``; nothing is trained yet."""
    from transformers import DataCollatorForSeq2Seq, Trainer

    settings = job.settings
    model = load_lora_model(job.base_model_dir, settings, plan, job.trust_remote_code)
    if settings.packing:
        rows = pack_best_fit([len(e["input_ids"]) for e in tokenized.examples], settings.seq_len)
        dataset: Any = PackedRows(tokenized.examples, rows)
        collator: Any = (
            FlattenedRowCollator()
            if (plan.attn_implementation or "").startswith("flash")
            else PackedRowCollator(tokenizer.pad_token_id)
        )
    else:
        dataset = SingleExamples(tokenized.examples)
        collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, return_tensors="pt")
    args = build_training_arguments(settings, plan, job.checkpoint_dir, len(dataset), world_size)
    callback = make_callback_class()(plan.device)
    return Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[callback, make_shard_callback(dataset, job.checkpoint_dir), *callbacks],
    )


# --------------------------------------------------------------------------- outputs

LOG_COLUMNS = [
    "step",
    "epoch",
    "loss",
    "learning_rate",
    "grad_norm",
    "num_input_tokens_seen",
    "tokens_per_second",
    "peak_memory_mb",
    "session",
]


def training_log_table(log_history: list[dict[str, Any]]):
    import pandas as pd

    entries = [entry for entry in log_history if "loss" in entry]
    table = pd.DataFrame(entries)
    for column in LOG_COLUMNS:
        if column not in table:
            table[column] = pd.NA
    return table[LOG_COLUMNS].sort_values("step", kind="stable").reset_index(drop=True)


def write_training_log(log_history: list[dict[str, Any]], tsv_path: str | os.PathLike[str]) -> None:
    with atomic_path(tsv_path) as temp:
        training_log_table(log_history).to_csv(temp, sep="\t", index=False)


def plot_loss(log_history: list[dict[str, Any]], png_path: str | os.PathLike[str], title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    table = training_log_table(log_history)
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(table["step"], table["loss"].astype(float), linewidth=1.2, label="training loss")
    resumed = table.loc[table["session"].ne(table["session"].shift()) & (table.index > 0), "step"]
    for step in resumed:
        axis.axvline(step, color="grey", linestyle="--", linewidth=0.8)
    axis.set_xlabel("optimizer step" + (" (dashed: resumed)" if len(resumed) else ""))
    axis.set_ylabel("loss")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(png_path) as temp:
        figure.savefig(temp, format="png", dpi=120)
    plt.close(figure)


# --------------------------------------------------------------------------- entry points


def train_adapter(
    job: TrainingJob, resume_from: str | os.PathLike[str] | None = None, callbacks: Sequence[TrainerCallback] = ()
) -> TrainingResult:
    """Train (or resume) in this process; the main process writes the outputs."""
    import torch
    from transformers import set_seed

    torch.set_num_threads(max(1, job.threads))
    settings = job.settings
    set_seed(settings.seed)
    plan = plan_device(settings, job.base_model_dir, job.gpus, job.where, job.trust_remote_code)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    log.info("device plan: %s, world size %d, threads %d", plan, world_size, job.threads)
    tokenizer = load_tokenizer(job.base_model_dir, trust_remote_code=job.trust_remote_code)
    rows = load_training_rows(job.train_jsonl)
    tokenized = tokenize_rows(rows, tokenizer, settings.seq_len, settings.loss)
    if not tokenized.examples:
        raise ValueError(
            f"{job.train_jsonl}: every prompt is longer than seq_len {settings.seq_len}; raise seq_len or cap the "
            "split"
        )
    if tokenized.dropped or tokenized.truncated:
        log.warning(
            "%d of %d examples dropped (prompt >= seq_len %d), %d truncated",
            tokenized.dropped,
            len(rows),
            settings.seq_len,
            tokenized.truncated,
        )
    trainer = build_trainer(job, tokenized, tokenizer, plan, world_size, callbacks)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    runtime = time.perf_counter() - started
    result = TrainingResult(
        global_step=trainer.state.global_step,
        resumed_from=str(resume_from) if resume_from else None,
        examples=len(tokenized.examples),
        dropped_examples=tokenized.dropped,
        truncated_examples=tokenized.truncated,
        packed_rows=len(trainer.train_dataset),
        train_runtime_s=runtime,
        device=plan.device,
    )
    if trainer.is_world_process_zero():  # one writer: the other workers hold the same weights
        log.info(
            "process %d of %d writes the adapter, log and loss curve",
            trainer.args.process_index,
            trainer.args.world_size,
        )
        save_outputs(trainer, job, result)
    return result


def save_outputs(trainer: Trainer, job: TrainingJob, result: TrainingResult) -> None:
    history = trainer.state.log_history
    with atomic_dir(job.adapter_dir) as staging:
        trainer.model.save_pretrained(staging, safe_serialization=True)
        record = {
            "settings": job.settings.to_dict(),
            "result": dataclasses.asdict(result),
            "base_model_dir": job.base_model_dir,
        }
        (staging / TRAINING_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    write_training_log(history, job.log_tsv)
    plot_loss(
        history,
        job.loss_png,
        title=f"{Path(job.adapter_dir).parent.name}: LoRA r{job.settings.lora_r}, lr {job.settings.learning_rate:g}",
    )
    write_json(dataclasses.asdict(result), Path(job.checkpoint_dir) / RESULT_FILE)


def data_parallel_command(processes: int, job_path: str | os.PathLike[str]) -> list[str]:
    """``accelerate launch`` line that starts ``processes`` workers on this module: torchrun
    underneath, NCCL on GPUs, gloo when the preset trains on the CPU (``processes: N``)."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_machines",
        "1",
        "--num_processes",
        str(processes),
        "--main_process_port",
        "0",  # a free port: two jobs on one node must not collide
        "--mixed_precision",
        "no",  # the Trainer sets bf16 itself from the preset
        "--dynamo_backend",
        "no",
        "-m",
        "rekalm.train",
        "--job",
        str(job_path),
    ]


def worker_environment(threads: int) -> dict[str, str]:
    """The parent's environment, with this process's own ``rekalm`` first on the import path
    (workers must run exactly the parent's code, installed or not, wherever the workflow's
    working directory is) and each worker's share of the job's CPU threads."""
    package_root = str(Path(__file__).resolve().parents[1])
    path = [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(path)), "OMP_NUM_THREADS": str(threads)}


def run_workers(command: list[str], env: dict[str, str]) -> None:
    """Run the launcher with every worker's stdout and stderr copied into this process's
    ``sys.stderr`` (the rule's log), so a worker's traceback lands in the log."""
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stderr.write(line)
        code = process.wait()
    sys.stderr.flush()
    if code != 0:
        raise RuntimeError(
            f"data-parallel training failed: the launcher exited with status {code}; the workers' output, "
            "tracebacks included, is above in this log"
        )


def run_training_job(job: TrainingJob, callbacks: Sequence[TrainerCallback] = ()) -> TrainingResult:
    """Resume-aware training of one ablation, data-parallel over the job's GPUs (or CPU
    workers with ``processes``). The device is checked before anything starts."""
    plan = plan_device(
        job.settings, job.base_model_dir, job.gpus, job.where, job.trust_remote_code
    )  # no GPU: stop before anything
    workers = worker_count(job.settings, plan, job.gpus)
    resume = prepare_checkpoint_dir(job)
    if workers > 1 and "LOCAL_RANK" not in os.environ:
        job_path = Path(job.checkpoint_dir) / JOB_FILE
        worker = dataclasses.replace(job, threads=max(1, job.threads // workers))  # the job's cores, shared
        write_json({**worker.to_dict(), "resume_from": str(resume) if resume else None}, job_path)
        command = data_parallel_command(workers, job_path)
        log.info("starting %d data-parallel workers on %s: %s", workers, plan.device, " ".join(command))
        sys.stderr.flush()
        run_workers(command, worker_environment(worker.threads))
        result = TrainingResult(**json.loads((Path(job.checkpoint_dir) / RESULT_FILE).read_text(encoding="utf-8")))
    else:
        result = train_adapter(job, resume, callbacks)
    if not job.settings.keep_checkpoints:
        shutil.rmtree(job.checkpoint_dir, ignore_errors=True)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """Worker entry point: ``python -m rekalm.train --job job.json`` (used by the launcher)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, help="JSON written by run_training_job")
    arguments = parser.parse_args(argv)
    payload = json.loads(Path(arguments.job).read_text(encoding="utf-8"))
    resume = payload.pop("resume_from", None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Which code this worker runs: it must be the parent's (worker_environment).
    log.info(
        "worker rank %s of %s: rekalm from %s",
        os.environ.get("RANK", "0"),
        os.environ.get("WORLD_SIZE", "1"),
        Path(__file__).resolve().parent,
    )
    train_adapter(TrainingJob.from_dict(payload), resume)


if __name__ == "__main__":
    main()
