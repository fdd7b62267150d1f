"""Merge a LoRA adapter into its base model and prove the merge is faithful.

``merge_and_unload`` folds ``B @ A * alpha / r`` into every adapted weight, giving a plain
model folder (safetensors + the base tokenizer) that any HF-compatible server can load.
The merge is optional: inference can load base + adapter instead, and the merged folder
may be marked temporary in the workflow because it is as large as the base model.

The check compares logits of base + adapter (unmerged) with the merged folder *as saved*
(reloaded from disk, so serialization is checked too) on a few prompts. The models are
held one at a time, so the check needs no more memory than the merge itself.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from rekalm.io import atomic_dir

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CHECK_FILE = "rekalm_merge_check.json"
DEFAULT_CHECK_PROMPTS = (
    "You're operating as a movie recommendation system. The user liked The Matrix (1999) and Heat (1995).",
    "People who like Toy Story (1995) also tend to like",
    "Here a list:\n1. ",
)
# Largest |logit difference| accepted per dtype. bf16 keeps 8 bits of mantissa, so folding
# B@A into W rounds differently from adding the LoRA branch at run time; fp32 barely does.
DEFAULT_TOLERANCE = {"float32": 1e-3, "float16": 0.1, "bfloat16": 0.5}


@dataclass
class MergeCheck:
    prompts: int
    max_abs_logit_diff: float
    top1_agreement: float  # share of positions whose argmax token is the same
    tolerance: float
    dtype: str
    passed: bool


def encode_prompts(tokenizer, prompts: Sequence[str]) -> list[torch.Tensor]:
    """Token ids per prompt, wrapped in the chat template when the tokenizer has one."""
    encoded = []
    for prompt in prompts:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        else:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        encoded.append(ids)
    return encoded


def prompt_logits(model, encoded: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    import torch

    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        return [model(input_ids=ids.to(device)).logits[0].float().cpu() for ids in encoded]


def compare_logits(reference: Sequence[torch.Tensor], candidate: Sequence[torch.Tensor], tolerance: float, dtype: str) -> MergeCheck:
    import torch

    diffs = [float((a - b).abs().max()) for a, b in zip(reference, candidate, strict=True)]
    same = torch.cat([(a.argmax(-1) == b.argmax(-1)).float() for a, b in zip(reference, candidate, strict=True)])
    worst = max(diffs) if diffs else 0.0
    return MergeCheck(len(diffs), worst, float(same.mean()) if len(same) else 1.0, tolerance, dtype, worst <= tolerance)


def load_base_with_adapter(base_model_dir: str, adapter_dir: str, dtype: torch.dtype, device: torch.device, trust_remote_code: bool = False):
    from peft import PeftModel

    from rekalm.hf import load_causal_lm

    base = load_causal_lm(base_model_dir, dtype=dtype, device=device, trust_remote_code=trust_remote_code, where="merge")
    return PeftModel.from_pretrained(base, adapter_dir)


def merge_device_and_dtype(base_model_dir: str | os.PathLike[str], dtype: str = "auto", device: str = "auto", gpus: int = 0) -> tuple[torch.device, torch.dtype]:
    """Where the merge runs (the job's GPU when it has one; no GPU although the job asked
    for one stops here) and in which dtype (``auto``: the one the base model was saved in)."""
    from rekalm.hf import resolve_device, resolve_dtype

    torch_device = resolve_device(device, gpus=gpus, where="rule merge")
    return torch_device, resolve_dtype(dtype, torch_device, saved_in=base_model_dir, where="merge.dtype")


def merge_adapter(
    base_model_dir: str | os.PathLike[str],
    adapter_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    dtype: str = "auto",
    tolerance: float | None = None,
    check_prompts: Sequence[str] = DEFAULT_CHECK_PROMPTS,
    trust_remote_code: bool = False,
    threads: int | None = None,
    device: str = "auto",
    gpus: int = 0,
) -> MergeCheck:
    """Write the merged model to ``output_dir`` (atomically) after checking its logits.

    Raises ValueError (and leaves no output) when the merged logits differ from
    base + adapter by more than ``tolerance``.
    """
    import torch

    from rekalm.hf import load_causal_lm, load_tokenizer

    if threads:
        torch.set_num_threads(threads)
    base_model_dir, adapter_dir = str(base_model_dir), str(adapter_dir)
    torch_device, torch_dtype = merge_device_and_dtype(base_model_dir, dtype, device, gpus)
    dtype_name = str(torch_dtype).replace("torch.", "")
    limit = DEFAULT_TOLERANCE[dtype_name] if tolerance is None else float(tolerance)
    tokenizer = load_tokenizer(base_model_dir, trust_remote_code=trust_remote_code)
    encoded = encode_prompts(tokenizer, check_prompts)
    with atomic_dir(output_dir) as staging:
        model = load_base_with_adapter(base_model_dir, adapter_dir, torch_dtype, torch_device, trust_remote_code)
        reference = prompt_logits(model, encoded)
        merged = model.merge_and_unload()
        merged.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        del model, merged
        reloaded = load_causal_lm(staging, dtype=torch_dtype, device=torch_device, trust_remote_code=trust_remote_code, where="merge")
        check = compare_logits(reference, prompt_logits(reloaded, encoded), limit, dtype_name)
        log.info("merge check: %s", check)
        if not check.passed:
            raise ValueError(f"{adapter_dir}: merged logits differ from base + adapter by {check.max_abs_logit_diff:.4g} > tolerance {limit:g}")
        (Path(staging) / CHECK_FILE).write_text(json.dumps(asdict(check), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return check


def check_merged_model(
    merged_dir: str | os.PathLike[str],
    base_model_dir: str | os.PathLike[str],
    adapter_dir: str | os.PathLike[str],
    prompts: Sequence[str] = DEFAULT_CHECK_PROMPTS,
    tolerance: float | None = None,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    device: str = "auto",
) -> MergeCheck:
    """Re-run the equivalence check on an existing merged folder (for tests and audits)."""
    from rekalm.hf import load_causal_lm, load_tokenizer

    torch_device, torch_dtype = merge_device_and_dtype(base_model_dir, dtype, device)
    dtype_name = str(torch_dtype).replace("torch.", "")
    limit = DEFAULT_TOLERANCE[dtype_name] if tolerance is None else float(tolerance)
    encoded = encode_prompts(load_tokenizer(base_model_dir, trust_remote_code=trust_remote_code), prompts)
    reference = prompt_logits(load_base_with_adapter(str(base_model_dir), str(adapter_dir), torch_dtype, torch_device, trust_remote_code), encoded)
    merged = load_causal_lm(merged_dir, dtype=torch_dtype, device=torch_device, trust_remote_code=trust_remote_code, where="merge")
    return compare_logits(reference, prompt_logits(merged, encoded), limit, dtype_name)
