"""Merge a LoRA adapter into its base model and prove the merge is faithful.

``merge_and_unload`` folds ``B @ A * alpha / r`` into every adapted weight, giving a plain
model folder (safetensors + the base tokenizer) that any HF-compatible server can load.
The merge is optional: inference can load base + adapter instead, and the merged folder
may be marked temporary in the workflow because it is as large as the base model.

Everything runs on the job's ``device`` in fp32 arithmetic: the base weights are upcast
(exactly) to fp32, the update is folded in fp32 and the merged weights are rounded ONCE to
the saved dtype (``merge.dtype``; auto = the base model's). The check compares logits of
base + adapter (unmerged, fp32) with the merged folder *as saved* (reloaded from disk and
upcast, so serialization and rounding are checked) on a few prompts. What is left between
the two is the rounding of each merged weight to the saved dtype, so the tolerance is set
by that dtype's precision, not by bf16 arithmetic noise:

- ``relative_error`` = ||merged - reference|| / ||reference|| (Frobenius norm over every
  position of every check prompt) must be at most ``tolerance`` (default per saved dtype:
  :data:`DEFAULT_TOLERANCE`, set from that dtype's rounding: fp32 2^-24, fp16 2^-11,
  bf16 2^-8);
- ``max_abs_error`` (largest |logit difference|) and ``top1_agreement`` (share of positions
  whose argmax token is the same) are reported beside it in ``rekalm_merge_check.json``;
  they are not gated, because a near-tie may flip an argmax under rounding alone.

Logits alone cannot tell a lost module from rounding once updates are small: with updates
of 1% of the weights, a bf16 merge missing one module of 32 moves the logits no more than
rounding does (benchmarks/merge_check.py). So every adapted module is checked too: its
update ``ΔW = W_merged - W_base`` as saved, applied to a direction ``v`` the update acts on
(``v ∝ ΔWᵀw``, ``w`` seeded random), is compared with the adapter's own ``ΔW v`` (peft's
``get_delta_weight``, in fp32 before the merge); ``update_error`` =
||saved ΔW v - ΔW v|| / ||ΔW v|| is 1 for a module the merge lost and small for one it
kept: a low-rank update is concentrated in such directions, rounding noise is not.
A module whose error exceeds :data:`UPDATE_TOLERANCE` fails the check: it was dropped, or
the saved dtype cannot hold its update (then merge to float32 or infer with base + adapter).
The models are held one at a time, so the check needs no more memory than one fp32 copy.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from rekalm.common.io import atomic_dir

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CHECK_FILE = "rekalm_merge_check.json"
DEFAULT_CHECK_PROMPTS = (
    "You're operating as a movie recommendation system. The user liked The Matrix (1999) and Heat (1995).",
    "People who like Toy Story (1995) also tend to like",
    "Here a list:\n1. ",
)
# Largest relative logit error accepted per saved dtype (see the module docstring): about
# ten times what correct merges of random Llama-shaped models measured (fp32 1e-6, fp16 6e-4,
# bf16 4e-3; benchmarks/merge_check.py), so depth does not fail a correct merge. It catches
# what breaks the whole model (serialization, tied weights); lost modules are caught per module.
DEFAULT_TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
CHECK_DTYPE = "float32"  # the arithmetic of the check and of the fold
UPDATE_TOLERANCE = 0.5  # largest share of one module's update (projected) that may be lost


@dataclass
class MergeCheck:
    prompts: int
    positions: int
    relative_error: float  # ||merged - reference|| / ||reference|| over all positions
    max_abs_error: float  # largest |logit difference|
    top1_agreement: float  # share of positions whose argmax token is the same
    tolerance: float  # on relative_error
    dtype: str  # the saved dtype of the merged weights
    arithmetic: str  # the dtype both sides were computed in
    device: str
    modules: int  # adapted modules whose saved update was checked
    worst_module: str | None
    worst_update_error: float  # the largest update_error of any module (1.0: update lost)
    update_tolerance: float
    passed: bool


def encode_prompts(tokenizer, prompts: Sequence[str]) -> list[torch.Tensor]:
    """Token ids per prompt, wrapped in the chat template when the tokenizer has one."""
    encoded = []
    for prompt in prompts:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
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


@dataclass(frozen=True)
class UpdateProbe:
    """One adapted module seen through a random vector: ``W_base v`` and ``ΔW v`` (fp32)."""

    vector: torch.Tensor
    base: torch.Tensor
    update: torch.Tensor


def update_probes(model, seed: int = 0) -> dict[str, UpdateProbe]:
    """``{weight name in the merged model: probe}`` for every LoRA linear layer of an
    unmerged PeftModel; ΔW comes from peft's own ``get_delta_weight``."""
    import torch
    from peft.tuners.lora import LoraLayer

    generator = torch.Generator().manual_seed(seed)
    probes = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if not (isinstance(module, LoraLayer) and hasattr(module, "get_delta_weight")):
                continue
            # A LoRA base layer's weight is a Parameter; torch types Module attributes as Tensor | Module.
            weight = cast("torch.Tensor", module.get_base_layer().weight)
            if weight.dim() != 2:
                continue
            delta = sum(module.get_delta_weight(adapter).float() for adapter in module.active_adapters)
            # A direction the update acts on (ΔWᵀw for a random w): its low-rank signal is
            # concentrated there, while rounding noise is spread over every direction.
            vector = delta.T @ torch.randn(weight.shape[0], generator=generator, dtype=torch.float32).to(weight.device)
            vector = vector / torch.linalg.vector_norm(vector).clamp_min(1e-30)
            update = delta @ vector
            del delta
            key = name.removeprefix("base_model.model.") + ".weight"
            probes[key] = UpdateProbe(vector, weight.float() @ vector, update)
    return probes


def update_errors(probes: dict[str, UpdateProbe], merged) -> dict[str, float]:
    """Per module, the share of its update that the merged model lacks (1.0 = all of it)."""
    import torch

    parameters = dict(merged.named_parameters())
    missing = sorted(set(probes) - set(parameters))
    if missing:
        raise ValueError(
            f"merge check: the merged model has no weight {missing[0]!r} (and {len(missing) - 1} more) that the "
            "adapter changes"
        )
    errors = {}
    with torch.no_grad():
        for key, probe in probes.items():
            saved = parameters[key].float() @ probe.vector.to(parameters[key].device) - probe.base.to(
                parameters[key].device
            )
            errors[key] = float(
                torch.linalg.vector_norm(saved - probe.update.to(saved.device))
                / torch.linalg.vector_norm(probe.update).clamp_min(1e-30)
            )
    return errors


def compare_logits(
    reference: Sequence[torch.Tensor],
    candidate: Sequence[torch.Tensor],
    tolerance: float,
    dtype: str,
    device: str = "cpu",
    module_errors: dict[str, float] | None = None,
) -> MergeCheck:
    import torch

    if not reference:
        raise ValueError("merge check: no check prompts")
    ref = torch.cat([logits.double() for logits in reference])
    got = torch.cat([logits.double() for logits in candidate])
    if ref.shape != got.shape:
        raise ValueError(
            f"merge check: merged logits have shape {tuple(got.shape)}, base + adapter {tuple(ref.shape)}"
        )
    relative = float(torch.linalg.vector_norm(got - ref) / torch.linalg.vector_norm(ref))
    worst = float((got - ref).abs().max())
    same = float((ref.argmax(-1) == got.argmax(-1)).double().mean())
    errors = module_errors or {}
    worst_module = max(errors, key=errors.__getitem__) if errors else None
    worst_update = errors[worst_module] if worst_module else 0.0
    passed = relative <= tolerance and worst_update <= UPDATE_TOLERANCE
    return MergeCheck(
        len(reference),
        ref.shape[0],
        relative,
        worst,
        same,
        tolerance,
        dtype,
        CHECK_DTYPE,
        str(device),
        len(errors),
        worst_module,
        worst_update,
        UPDATE_TOLERANCE,
        passed,
    )


def load_base_with_adapter(
    base_model_dir: str, adapter_dir: str, dtype: torch.dtype, device: torch.device, trust_remote_code: bool = False
):
    from peft import PeftModel

    from rekalm.llm.hf import load_causal_lm

    base = load_causal_lm(
        base_model_dir, dtype=dtype, device=device, trust_remote_code=trust_remote_code, where="merge"
    )
    return PeftModel.from_pretrained(base, adapter_dir)


def merge_device_and_dtype(
    base_model_dir: str | os.PathLike[str], dtype: str = "auto", device: str = "auto", gpus: int = 0
) -> tuple[torch.device, torch.dtype]:
    """Where the merge runs (the job's GPU when it has one; no GPU although the job asked
    for one stops here) and in which dtype (``auto``: the one the base model was saved in)."""
    from rekalm.llm.hf import resolve_device, resolve_dtype

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
    """Write the merged model to ``output_dir`` (atomically) after checking it.

    Merges and checks on the job's device (:func:`merge_device_and_dtype`) in fp32
    arithmetic; ``dtype`` is the dtype the merged weights are saved in. Raises ValueError
    (and leaves no output) when the check fails (see the module docstring).
    """
    import torch

    from rekalm.llm.hf import load_causal_lm, load_tokenizer

    if threads:
        torch.set_num_threads(threads)
    base_model_dir, adapter_dir = str(base_model_dir), str(adapter_dir)
    torch_device, saved_dtype = merge_device_and_dtype(base_model_dir, dtype, device, gpus)
    dtype_name = str(saved_dtype).replace("torch.", "")
    limit = DEFAULT_TOLERANCE[dtype_name] if tolerance is None else float(tolerance)
    tokenizer = load_tokenizer(base_model_dir, trust_remote_code=trust_remote_code)
    encoded = encode_prompts(tokenizer, check_prompts)
    arithmetic = getattr(torch, CHECK_DTYPE)
    with atomic_dir(output_dir) as staging:
        model = load_base_with_adapter(base_model_dir, adapter_dir, arithmetic, torch_device, trust_remote_code)
        reference = prompt_logits(model, encoded)
        probes = update_probes(model)
        merged = model.merge_and_unload().to(saved_dtype)  # folded in fp32, rounded once
        merged.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        del model, merged
        reloaded = load_causal_lm(
            staging, dtype=arithmetic, device=torch_device, trust_remote_code=trust_remote_code, where="merge"
        )
        check = compare_logits(
            reference,
            prompt_logits(reloaded, encoded),
            limit,
            dtype_name,
            str(torch_device),
            update_errors(probes, reloaded),
        )
        log.info("merge check: %s", check)
        if not check.passed:
            raise ValueError(f"{adapter_dir}: merge check failed: {check_summary(check)}")
        (Path(staging) / CHECK_FILE).write_text(
            json.dumps(asdict(check), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    return check


def check_summary(check: MergeCheck) -> str:
    return (
        f"relative logit error {check.relative_error:.3g} (tolerance {check.tolerance:g}), max |diff| "
        f"{check.max_abs_error:.3g}, "
        f"top-1 agreement {check.top1_agreement:.1%}; worst module {check.worst_module} lost "
        f"{check.worst_update_error:.1%} of its update "
        f"(tolerance {check.update_tolerance:.0%})"
    )


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
    """Re-run the check on an existing merged folder (for tests and audits); ``dtype`` is
    the dtype the folder was saved in (it picks the tolerance)."""
    import torch

    from rekalm.llm.hf import load_causal_lm, load_tokenizer

    torch_device, saved_dtype = merge_device_and_dtype(base_model_dir, dtype, device)
    dtype_name = str(saved_dtype).replace("torch.", "")
    limit = DEFAULT_TOLERANCE[dtype_name] if tolerance is None else float(tolerance)
    arithmetic = getattr(torch, CHECK_DTYPE)
    encoded = encode_prompts(load_tokenizer(base_model_dir, trust_remote_code=trust_remote_code), prompts)
    model = load_base_with_adapter(str(base_model_dir), str(adapter_dir), arithmetic, torch_device, trust_remote_code)
    reference, probes = prompt_logits(model, encoded), update_probes(model)
    del model
    merged = load_causal_lm(
        merged_dir, dtype=arithmetic, device=torch_device, trust_remote_code=trust_remote_code, where="merge"
    )
    return compare_logits(
        reference, prompt_logits(merged, encoded), limit, dtype_name, str(torch_device), update_errors(probes, merged)
    )
