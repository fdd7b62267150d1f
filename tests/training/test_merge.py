"""Adapter merge: a plain safetensors folder with the base tokenizer whose logits match
base + adapter in fp32 arithmetic, and a check that catches a merge that lost one module."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rekalm.llm.hf import DeviceUnavailableError
from rekalm.training.merge import (
    CHECK_FILE,
    DEFAULT_TOLERANCE,
    UPDATE_TOLERANCE,
    check_merged_model,
    merge_adapter,
    merge_device_and_dtype,
)

DROPPED = "model.layers.1.self_attn.o_proj.weight"


def random_adapter(base_dir: Path, folder: Path, seed: int) -> Path:
    """A LoRA adapter with non-zero B (peft initialises B to 0, which would merge to a no-op)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, lora).save_pretrained(folder)
    return folder


def small_update_adapter(base_dir: Path, folder: Path, relative: float = 0.01) -> Path:
    """Every module's update scaled to ||ΔW|| = relative * ||W||, the size of trained updates."""
    import torch
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), lora)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoraLayer):
                module.lora_B["default"].weight.mul_(
                    relative * module.get_base_layer().weight.norm() / module.get_delta_weight("default").norm()
                )
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapters(tiny_llama_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return random_adapter(tiny_llama_dir, root / "a", seed=1), random_adapter(tiny_llama_dir, root / "b", seed=2)


@pytest.fixture(scope="module")
def small_adapter(tiny_llama_dir, tmp_path_factory):
    return small_update_adapter(tiny_llama_dir, tmp_path_factory.mktemp("small_adapter") / "a")


def test_merged_model_matches_base_plus_adapter(tmp_path, tiny_llama_dir, adapters):
    adapter, _ = adapters
    output = tmp_path / "merge/no_kn/model"
    check = merge_adapter(tiny_llama_dir, adapter, output, threads=1, device="cpu")
    assert check.passed and check.dtype == "float32" and check.arithmetic == "float32" and check.prompts == 3
    assert check.relative_error <= DEFAULT_TOLERANCE["float32"] and check.top1_agreement == 1.0
    assert check.modules == 14 and check.worst_update_error < 1e-4  # 2 layers x 7 projections, all kept
    files = {p.name for p in output.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", CHECK_FILE} <= files
    assert not any(name.startswith("adapter_") for name in files)  # a plain model, no PEFT left
    written = json.loads((output / CHECK_FILE).read_text())
    assert written["passed"] and {
        "relative_error",
        "max_abs_error",
        "top1_agreement",
        "worst_update_error",
        "device",
    } <= set(written)
    assert (output / "chat_template.jinja").read_text() == (Path(tiny_llama_dir) / "chat_template.jinja").read_text()
    # The merge changed the model (the adapter is not a no-op), and the check can tell.
    unmerged = check_merged_model(tiny_llama_dir, tiny_llama_dir, adapter)
    assert not unmerged.passed and unmerged.worst_update_error == pytest.approx(1.0)
    assert check_merged_model(output, tiny_llama_dir, adapter).passed


def test_a_wrong_merge_is_caught_and_nothing_is_written(tmp_path, tiny_llama_dir, adapters):
    adapter, other = adapters
    merged = tmp_path / "merged"
    merge_adapter(tiny_llama_dir, adapter, merged)
    check = check_merged_model(merged, tiny_llama_dir, other)
    assert not check.passed and check.relative_error > check.tolerance
    with pytest.raises(ValueError, match=r"merge check failed: relative logit error .* \(tolerance 1e-12\)"):
        merge_adapter(tiny_llama_dir, adapter, tmp_path / "strict", tolerance=1e-12)
    assert not (tmp_path / "strict").exists()


def drop_one_module(merged_dir: Path, base_dir: Path, target: Path) -> Path:
    """A copy of the merged folder whose DROPPED weight is the base model's."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(merged_dir, target)
    tensors = load_file(merged_dir / "model.safetensors")
    tensors[DROPPED] = load_file(Path(base_dir) / "model.safetensors")[DROPPED].to(tensors[DROPPED].dtype)
    save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
    return target


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_merge_that_drops_one_module_fails_and_a_correct_one_passes(
    tmp_path, tiny_llama_dir, adapters, dtype, monkeypatch
):
    import torch
    from peft.tuners.lora import LoraModel

    adapter, _ = adapters
    good = merge_adapter(tiny_llama_dir, adapter, tmp_path / "merged", dtype=dtype)
    assert good.passed and good.dtype == dtype and good.worst_update_error < 0.1
    from safetensors import safe_open

    with safe_open(tmp_path / "merged" / "model.safetensors", "pt") as saved:
        assert saved.get_tensor(DROPPED).dtype == getattr(torch, dtype)  # rounded once, saved in the dtype asked for

    dropped = check_merged_model(
        drop_one_module(tmp_path / "merged", tiny_llama_dir, tmp_path / "dropped"),
        tiny_llama_dir,
        adapter,
        dtype=dtype,
    )
    assert not dropped.passed and dropped.worst_module == DROPPED and dropped.worst_update_error > UPDATE_TOLERANCE

    # The same fault inside the merge job: the job fails and writes nothing.
    real_merge = LoraModel.merge_and_unload

    def merge_all_but_one(self, *args, **kwargs):
        layer = dict(self.named_modules())["model." + DROPPED.removesuffix(".weight")]
        torch.nn.init.zeros_(layer.lora_B["default"].weight)
        return real_merge(self, *args, **kwargs)

    monkeypatch.setattr(LoraModel, "merge_and_unload", merge_all_but_one)
    with pytest.raises(
        ValueError, match=r"worst module model\.layers\.1\.self_attn\.o_proj\.weight lost 100\.0% of its update"
    ):
        merge_adapter(tiny_llama_dir, adapter, tmp_path / "faulty", dtype=dtype)
    assert not (tmp_path / "faulty").exists()


def test_a_lost_small_update_escapes_the_logits_but_not_the_module_check(tmp_path, tiny_llama_dir, small_adapter):
    """Updates of 1% of the weights, merged to bf16: one module's loss moves the logits less
    than their tolerance, so only the per-module check can see it."""
    good = merge_adapter(tiny_llama_dir, small_adapter, tmp_path / "merged", dtype="bfloat16")
    assert good.passed and good.worst_update_error < 0.2
    dropped = check_merged_model(
        drop_one_module(tmp_path / "merged", tiny_llama_dir, tmp_path / "dropped"),
        tiny_llama_dir,
        small_adapter,
        dtype="bfloat16",
    )
    assert dropped.relative_error <= dropped.tolerance  # the logits alone would pass it
    assert not dropped.passed and dropped.worst_module == DROPPED and dropped.worst_update_error > UPDATE_TOLERANCE


def test_dtype_follows_the_base_model_and_a_gpu_job_needs_its_gpu(tmp_path, tiny_llama_dir, adapters):
    import torch

    cpu = torch.device("cpu")
    assert merge_device_and_dtype(tiny_llama_dir) == (cpu, torch.float32)
    assert merge_device_and_dtype(tiny_llama_dir, "bfloat16") == (cpu, torch.bfloat16)
    with pytest.raises(ValueError, match="merge.dtype: expected one of"):
        merge_device_and_dtype(tiny_llama_dir, "float8")
    with pytest.raises(
        DeviceUnavailableError, match=r"^rule merge: expected a CUDA device \(the job asked for resources.gpu = 1\)"
    ):
        merge_adapter(tiny_llama_dir, adapters[0], tmp_path / "merged", gpus=1)
    assert not (tmp_path / "merged").exists()
