"""The shared Hugging Face glue: no silent CPU fallback, dtype and tf32 rules, attention
chosen per model class, tokenizer padding."""

from __future__ import annotations

import logging

import pytest
import torch

from rekalm.llm import hf
from rekalm.llm.hf import DeviceUnavailableError, choose_attention, resolve_device, resolve_dtype, tf32_supported


def test_a_gpu_job_without_cuda_stops_with_one_line_naming_what_was_expected():
    assert not torch.cuda.is_available()  # CI runs on CPU: exactly the broken-GPU-node case
    where = "rule train (ml1m/graph), preset training.full"
    with pytest.raises(DeviceUnavailableError) as raised:
        resolve_device("auto", gpus=1, where=where)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(where)
    for fact in (
        "resources.gpu = 1",
        f"torch {torch.__version__}",
        f"CUDA {torch.version.cuda}",
        "torch.cuda.is_available() = False",
    ):
        assert fact in message, fact
    with pytest.raises(DeviceUnavailableError, match="expected device cuda:1"):
        resolve_device("cuda:1", where="infer")


def test_explicit_cpu_and_gpu_free_jobs_keep_running_on_the_cpu(caplog):
    assert resolve_device("auto") == torch.device("cpu")
    with caplog.at_level(logging.WARNING):
        assert resolve_device("cpu", gpus=2, where="rule train") == torch.device("cpu")
    assert "device: cpu although the job asked for 2 GPU(s)" in caplog.text
    with pytest.raises(ValueError, match="device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu'"):
        resolve_device("gpu")


def test_fewer_visible_gpus_than_asked_for_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto", gpus=1) == torch.device("cuda")
    with pytest.raises(DeviceUnavailableError, match="2 needed"):
        resolve_device("auto", gpus=2, where="rule train")


def test_tf32_only_from_compute_capability_8(monkeypatch, caplog):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    with caplog.at_level(logging.WARNING):
        assert tf32_supported(cuda) is False
    assert "Tesla V100 has compute capability 7.0 (< 8.0): tf32 stays off" in caplog.text
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert tf32_supported(cuda) is True
    assert tf32_supported(cuda, requested=False) is False
    assert tf32_supported(torch.device("cpu")) is False


def test_dtype_auto_is_bf16_only_on_capable_cuda_or_the_saved_dtype(tiny_llama_dir, monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert resolve_dtype("auto", cpu, saved_in=tiny_llama_dir) == torch.float32
    with pytest.raises(
        ValueError, match=r"merge.dtype: expected one of \['auto', 'float32', 'bfloat16', 'float16'\], got 'float8'"
    ):
        resolve_dtype("float8", cpu, where="merge.dtype")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16


def test_attention_follows_what_each_model_class_supports(monkeypatch):
    from transformers import Gemma2ForCausalLM, LlamaForCausalLM, Qwen2ForCausalLM

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_attention(LlamaForCausalLM, "auto", cpu, torch.float32) == "sdpa"
    assert choose_attention(Qwen2ForCausalLM, "auto", cpu, torch.float32) == "sdpa"
    assert choose_attention(Gemma2ForCausalLM, "auto", cpu, torch.float32) == "eager"  # no SDPA: soft-capping
    with pytest.raises(ValueError, match=r"Gemma2ForCausalLM does not support 'sdpa'; use auto or one of \["):
        choose_attention(Gemma2ForCausalLM, "sdpa", cpu, torch.float32)
    assert choose_attention(None, "auto", cpu, torch.float32) is None  # remote code: transformers decides
    monkeypatch.setattr(
        hf, "flash_attention_2_usable", lambda device, dtype: device.type == "cuda" and dtype == torch.bfloat16
    )
    assert choose_attention(LlamaForCausalLM, "auto", cuda, torch.bfloat16) == "flash_attention_2"
    assert choose_attention(Gemma2ForCausalLM, "auto", cuda, torch.bfloat16) == "flash_attention_2"
    assert choose_attention(LlamaForCausalLM, "auto", cuda, torch.float32) == "sdpa"


def test_flash_attention_needs_cuda_half_precision_and_the_package():
    assert not hf.flash_attention_2_usable(torch.device("cpu"), torch.bfloat16)


def test_tokenizer_pads_with_eos_unless_told_not_to(tiny_llama_dir, tmp_path):
    from transformers import AutoTokenizer

    unpadded = AutoTokenizer.from_pretrained(tiny_llama_dir)
    unpadded.pad_token = None
    unpadded.save_pretrained(tmp_path)
    assert hf.load_tokenizer(tmp_path).pad_token == unpadded.eos_token
    assert hf.load_tokenizer(tmp_path, pad_with_eos=False).pad_token is None  # prepare_model saves it unchanged


def test_a_gpu_inference_job_without_cuda_stops_before_any_work(tmp_path, tiny_llama_dir):
    from rekalm.ranking.infer import run_inference
    from rekalm.ranking.inference_inputs import InferenceSettings

    test = tmp_path / "test.jsonl"
    test.write_text(
        '{"user": "u1", "prompt": "p", "answer_prefix": "a", "candidates": [{"item": "i1", "name": "n1"}]}\n'
    )
    with pytest.raises(
        DeviceUnavailableError,
        match=r"^rule infer \(x/no_kn\): expected a CUDA device \(the job asked for resources.gpu = 1\)",
    ):
        run_inference(
            test,
            tiny_llama_dir,
            InferenceSettings(device="auto"),
            tmp_path / "chunks",
            gpus=1,
            where="rule infer (x/no_kn)",
        )
    assert not (tmp_path / "chunks").exists()  # nothing started, nothing to resume
