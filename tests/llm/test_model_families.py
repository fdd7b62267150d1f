"""Every common model family trains and ranks: tiny random Llama, Qwen2, Mistral and Gemma-2
(hidden 64, 2 layers) with SmolLM2's tokenizer. Each gets the attention its class supports
(Gemma-2 has no SDPA: eager), packed rows give the same logits as single examples under
that attention, a few LoRA steps run, and score mode ranks with the trained adapter."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from rekalm.common.io import write_jsonl
from rekalm.llm.hf import load_tokenizer
from rekalm.training.train import TrainingJob, TrainingSettings, plan_device, run_training_job
from rekalm.training.training_data import IGNORE_INDEX, PackedRowCollator

SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)
# Sliding windows shorter than the packed rows, so packing is checked against them too.
# Training and ranking use a window longer than every prompt here (see the last test).
FAMILIES = {
    "llama": ("LlamaConfig", {}, "sdpa"),
    "qwen2": ("Qwen2Config", {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1}, "sdpa"),
    "mistral": ("MistralConfig", {"sliding_window": 8}, "sdpa"),
    "gemma2": ("Gemma2Config", {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 8}, "eager"),
}
MOVIES = ["The Matrix (1999)", "Toy Story (1995)", "Heat (1995)", "Alien (1979)", "Fargo (1996)"]


def build_family(name: str, tokenizer_dir: Path, folder: Path, sliding_window: int | None = None) -> Path:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    config_class, extra, _ = FAMILIES[name]
    if sliding_window and "sliding_window" in extra:
        extra = {**extra, "sliding_window": sliding_window}
    tokenizer = load_tokenizer(tokenizer_dir)
    ids = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    config = getattr(transformers, config_class)(vocab_size=len(tokenizer), **SHAPE, **ids, **extra)
    torch.manual_seed(22)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def brute_force_scores(model, tokenizer, context: str, names: list[str]) -> list[float]:
    """Mean log-probability of each candidate by re-encoding prompt + candidate in full."""
    import torch

    from rekalm.ranking.scoring import candidate_token_ids

    prefix, continuations = candidate_token_ids(tokenizer, context, names)
    reference = []
    with torch.no_grad():
        for continuation in continuations:
            ids = torch.tensor([prefix + continuation])
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            targets = ids[0, len(prefix) :]
            reference.append(float(logprobs[len(prefix) - 1 : -1].gather(-1, targets[:, None]).mean()))
    return reference


def ranking_rows(tokenizer, count: int) -> list[dict[str, str]]:
    from rekalm.llm.prompts import render_chat

    rows = []
    for index in range(count):
        prompt = render_chat(
            tokenizer,
            "You're operating as a movie recommendation system.",
            f"Liked: {MOVIES[index % 2]}. Rank: {', '.join(MOVIES[2:])}.",
        )
        rows.append(
            {
                "kind": "ranking",
                "prompt": prompt,
                "completion": "Here a list:\n" + "\n".join(f"{r}. {m}" for r, m in enumerate(MOVIES[2:], 1)),
            }
        )
    return rows


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_trains_packs_and_ranks(family, smollm2_tokenizer_dir, tmp_path, caplog):
    import torch

    from rekalm.llm.hf import load_causal_lm
    from rekalm.ranking.infer import load_model
    from rekalm.ranking.scoring import score_candidates

    windowed = build_family(family, smollm2_tokenizer_dir, tmp_path / "windowed")
    base = build_family(family, smollm2_tokenizer_dir, tmp_path / "base", sliding_window=512)
    expected_attention = FAMILIES[family][2]
    settings = TrainingSettings(
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        seq_len=256,
        learning_rate=1e-2,
        epochs=1,
        max_steps=2,
        per_device_batch_size=2,
        save_steps=100,
        gradient_checkpointing=False,
    )
    plan = plan_device(settings, base)
    assert plan.attn_implementation == expected_attention

    # Packed rows = single examples, under the attention this family gets.
    cpu = torch.device("cpu")
    with caplog.at_level(logging.INFO, logger="rekalm.llm.hf"):
        model = load_causal_lm(
            windowed, dtype=torch.float32, device=cpu, attn_implementation=plan.attn_implementation
        ).eval()
    assert f"with {expected_attention} attention" in caplog.text
    first = {"input_ids": list(range(100, 113)), "labels": list(range(100, 113))}
    second = {"input_ids": list(range(200, 210)), "labels": [IGNORE_INDEX] + list(range(201, 210))}
    batch = PackedRowCollator(pad_token_id=0)([{"segments": [first, second]}, {"segments": [second]}])
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        alone_first = model(input_ids=torch.tensor([first["input_ids"]]), use_cache=False).logits
        alone_second = model(input_ids=torch.tensor([second["input_ids"]]), use_cache=False).logits
    torch.testing.assert_close(packed[0, :13], alone_first[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed[0, 13:23], alone_second[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed[1, :10], alone_second[0], atol=1e-5, rtol=1e-4)

    # A few LoRA steps through the real training entry point.
    tokenizer = load_tokenizer(base)
    rows = ranking_rows(tokenizer, 6)
    write_jsonl(rows, tmp_path / "train.jsonl")
    out = tmp_path / "out"
    job = TrainingJob(
        str(tmp_path / "train.jsonl"),
        str(base),
        str(out / "adapter"),
        str(out / "log.tsv"),
        str(out / "loss.png"),
        str(tmp_path / "ckpt"),
        settings,
        threads=1,
    )
    result = run_training_job(job)
    assert result.global_step == 2 and (out / "adapter" / "adapter_model.safetensors").is_file()

    # Score mode with the trained adapter: every candidate scored, as brute force re-encoding does.
    ranked, ranked_tokenizer, device = load_model(base, out / "adapter", dtype="float32", device="cpu")
    context = rows[0]["prompt"] + "Here a list:\n1. "
    names = MOVIES
    scores = score_candidates(ranked, ranked_tokenizer, context, names, batch_size=4, device=device)
    assert np.isfinite(scores).all() and len(scores) == len(names)
    np.testing.assert_allclose(scores, brute_force_scores(ranked, ranked_tokenizer, context, names), atol=1e-4)


@pytest.mark.parametrize("family", ["gemma2", "mistral", "qwen2"])
def test_score_mode_with_a_sliding_window_shorter_than_the_prompt(family, smollm2_tokenizer_dir, tmp_path):
    from rekalm.ranking.infer import load_model
    from rekalm.ranking.scoring import score_candidates

    base = build_family(family, smollm2_tokenizer_dir, tmp_path / "base")  # window 8 < ~40-token prompt
    model, tokenizer, device = load_model(base, dtype="float32", device="cpu")
    context = ranking_rows(tokenizer, 1)[0]["prompt"] + "Here a list:\n1. "
    scores = score_candidates(model, tokenizer, context, MOVIES, batch_size=4, device=device)
    np.testing.assert_allclose(scores, brute_force_scores(model, tokenizer, context, MOVIES), atol=1e-4)
