"""LoRA instruction tuning of a base model on one ablation's training set.

Built on transformers' ``Trainer`` + peft + accelerate rather than TRL's ``SFTTrainer``:
our rows arrive already rendered (``prompt`` + ``completion``), so all TRL would add is
its packing and completion masking, which are a few lines here and stay stable across
versions, while TRL's argument names have changed in most releases.

What happens, in order:

1. ``train.jsonl`` rows are encoded, masked (prompt tokens get label -100, completion
   tokens and EOS are learned) and, with ``packing: true``, packed best-fit into rows of
   at most ``seq_len`` tokens whose examples never see each other
   (:mod:`rekalm.training.training_data`).
2. ``Trainer`` runs with every value of the training preset; checkpoints go to a folder
   outside the rule's outputs every ``save_steps`` and a re-run resumes from the newest
   complete one (after a kill, a Slurm time-out or a crash); a fingerprint of data,
   settings and base model guards against resuming someone else's run
   (:mod:`rekalm.training.checkpoints`).
3. The adapter, a TSV log (loss, tokens/s, peak memory per step) and a loss curve are
   written atomically (:mod:`rekalm.training.training_log`).

Devices, dtypes and attention come from :mod:`rekalm.llm.hf`: a job that asked for GPUs and
finds none stops before anything starts. With N > 1 workers (one per GPU of the job, or
``processes: N`` on the CPU) :func:`run_training_job` starts them with ``accelerate launch``
on this module's command line (``python -m rekalm.training.train --job job.json``, see
:mod:`rekalm.training.data_parallel`); with one worker it trains in-process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rekalm.common.io import atomic_dir, write_json
from rekalm.llm.hf import load_tokenizer
from rekalm.training.checkpoints import prepare_checkpoint_dir
from rekalm.training.data_parallel import data_parallel_command, run_workers, worker_environment
from rekalm.training.training_data import (
    IGNORE_INDEX,
    FlattenedRowCollator,
    LossMode,
    PackedRowCollator,
    PackedRows,
    SingleExamples,
    TokenizedSet,
    load_training_rows,
    pack_best_fit,
    tokenize_rows,
)
from rekalm.training.training_log import make_callback_class, make_shard_callback, plot_loss, write_training_log

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback

log = logging.getLogger(__name__)

JOB_FILE = "rekalm_job.json"
RESULT_FILE = "rekalm_result.json"
TRAINING_RECORD = "rekalm_training.json"


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
        "auto"  # auto | cpu | cuda | cuda:N (rekalm.llm.hf.resolve_device); cpu runs on the CPU even in a GPU job
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
    """The preset's device, precision and attention for the hardware at hand (rekalm.llm.hf):
    no CUDA although the job asked for GPUs stops here; bf16 only where CUDA supports it
    (bf16 on CPU is much slower than fp32), tf32 only on compute capability >= 8.0, and the
    attention the model class supports."""
    import torch

    from rekalm.llm.hf import bf16_supported, causal_lm_class, choose_attention, resolve_device, tf32_supported

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


# --------------------------------------------------------------------------- trainer


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

    from rekalm.llm.hf import load_causal_lm

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
        packed_rows=len(cast(Sized, trainer.train_dataset)),  # build_trainer's PackedRows or SingleExamples
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
    # Trainer types its model as any torch Module; load_lora_model gave it a PeftModel.
    model = cast("PeftModel", trainer.model)
    with atomic_dir(job.adapter_dir) as staging:
        model.save_pretrained(str(staging), safe_serialization=True)  # peft types the folder as a str
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
    """Worker entry point: ``python -m rekalm.training.train --job job.json`` (used by the launcher)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, help="JSON written by run_training_job")
    arguments = parser.parse_args(argv)
    payload = json.loads(Path(arguments.job).read_text(encoding="utf-8"))
    resume = payload.pop("resume_from", None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Which code this worker runs: it must be the parent's (worker_environment). The package's
    # folder, two levels up from this module (rekalm/training/train.py).
    log.info(
        "worker rank %s of %s: rekalm from %s",
        os.environ.get("RANK", "0"),
        os.environ.get("WORLD_SIZE", "1"),
        Path(__file__).resolve().parents[1],
    )
    train_adapter(TrainingJob.from_dict(payload), resume)


if __name__ == "__main__":
    main()
