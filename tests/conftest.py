"""Shared fixtures: paths to optional shared data and small LLM assets built offline (the
paths themselves: asset_paths.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from asset_paths import SHARED_DATA, smollm2_gguf_path


@pytest.fixture(scope="session")
def original_data() -> Path:
    """The original study's files (../shared/data/rekalm-original); skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"original study data not found at {SHARED_DATA} (put shared/ beside the checkout or set "
            "REKALM_ORIGINAL_DATA)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2's real tokenizer (ChatML template) saved as a plain HF folder (~10 s once)."""
    from transformers import AutoTokenizer

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    folder = tmp_path_factory.mktemp("smollm2_tokenizer")
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_dir(smollm2_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (hidden 64, 2 layers, 4 heads, 2 kv heads; ~3.2M params) with
    SmolLM2's tokenizer, saved as a plain HF folder: fast enough for unit tests of training,
    merge and inference."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    torch.manual_seed(22)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
