"""Adapter merge: a plain safetensors folder with the base tokenizer whose logits match
base + adapter, and a check that catches a merge that does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rekalm.hf import DeviceUnavailableError
from rekalm.merge import CHECK_FILE, DEFAULT_TOLERANCE, check_merged_model, merge_adapter, merge_device_and_dtype


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


@pytest.fixture(scope="module")
def adapters(tiny_llama_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return random_adapter(tiny_llama_dir, root / "a", seed=1), random_adapter(tiny_llama_dir, root / "b", seed=2)


def test_merged_model_matches_base_plus_adapter(tmp_path, tiny_llama_dir, adapters):
    adapter, _ = adapters
    output = tmp_path / "merge/no_kn/model"
    check = merge_adapter(tiny_llama_dir, adapter, output, threads=1)
    assert check.passed and check.dtype == "float32" and check.prompts == 3
    assert check.max_abs_logit_diff <= DEFAULT_TOLERANCE["float32"] and check.top1_agreement == 1.0
    files = {p.name for p in output.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", CHECK_FILE} <= files
    assert not any(name.startswith("adapter_") for name in files)  # a plain model, no PEFT left
    assert json.loads((output / CHECK_FILE).read_text())["passed"]
    assert (output / "chat_template.jinja").read_text() == (Path(tiny_llama_dir) / "chat_template.jinja").read_text()
    # The merge changed the model (the adapter is not a no-op), and the check can tell.
    assert not check_merged_model(tiny_llama_dir, tiny_llama_dir, adapter).passed
    assert check_merged_model(output, tiny_llama_dir, adapter).passed


def test_a_wrong_merge_is_caught_and_nothing_is_written(tmp_path, tiny_llama_dir, adapters):
    adapter, other = adapters
    merged = tmp_path / "merged"
    merge_adapter(tiny_llama_dir, adapter, merged)
    check = check_merged_model(merged, tiny_llama_dir, other)
    assert not check.passed and check.max_abs_logit_diff > check.tolerance
    with pytest.raises(ValueError, match=r"merged logits differ from base \+ adapter by .* > tolerance 1e-12"):
        merge_adapter(tiny_llama_dir, adapter, tmp_path / "strict", tolerance=1e-12)
    assert not (tmp_path / "strict").exists()


def test_dtype_follows_the_base_model_and_a_gpu_job_needs_its_gpu(tmp_path, tiny_llama_dir, adapters):
    import torch

    cpu = torch.device("cpu")
    assert merge_device_and_dtype(tiny_llama_dir) == (cpu, torch.float32)
    assert merge_device_and_dtype(tiny_llama_dir, "bfloat16") == (cpu, torch.bfloat16)
    with pytest.raises(ValueError, match="merge.dtype: expected one of"):
        merge_device_and_dtype(tiny_llama_dir, "float8")
    with pytest.raises(DeviceUnavailableError, match=r"^rule merge: expected a CUDA device \(the job asked for resources.gpu = 1\)"):
        merge_adapter(tiny_llama_dir, adapters[0], tmp_path / "merged", gpus=1)
    assert not (tmp_path / "merged").exists()
