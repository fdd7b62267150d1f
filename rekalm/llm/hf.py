"""The one home of the Hugging Face glue: tokenizer and causal-LM loading, and the device,
dtype, attention and tf32 choices every model-touching stage (prepare_model, build_sets,
train, merge, infer, the benchmarks) makes the same way.

Choices, in one place:

- **Device** (:func:`resolve_device`): ``auto`` is CUDA when torch sees it, else the CPU,
  *unless* the job asked for GPUs (``resources.gpu > 0``) or the preset names ``cuda``:
  then a missing or unusable CUDA device (driver too old for the wheel's CUDA, a container
  started without ``--nv``, an empty ``CUDA_VISIBLE_DEVICES``) stops the job at once with
  one line saying what was expected and what torch reports, instead of spending the whole
  wall time on the CPU. An explicit ``cpu`` always runs on the CPU.
- **dtype** (:func:`resolve_dtype`): ``auto`` is bf16 on a CUDA device that supports it,
  else fp32 (bf16 on CPUs is slow); with ``saved_in`` it is the dtype the model was saved in.
- **Attention** (:func:`choose_attention`): ``auto`` is flash-attention 2 when the package
  is installed, the GPU and dtype allow it and the model class supports it; else SDPA when
  the class supports it (Gemma-2 does not: SDPA has no logit soft-capping); else eager.
- **tf32** (:func:`tf32_supported`): only on compute capability >= 8.0 (Ampere and newer);
  elsewhere a warning and off, because transformers refuses ``tf32=True`` there.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
ATTENTION_NAMES = ("auto", "flash_attention_2", "flash_attention_3", "sdpa", "eager")
_DEVICE_SETTING = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
TF32_MIN_CAPABILITY = (8, 0)  # Ampere: the first GPUs with tf32 tensor cores


class DeviceUnavailableError(RuntimeError):
    """The job asked for an accelerator that torch cannot use."""


# --------------------------------------------------------------------------- device


def torch_report() -> str:
    """What torch says about CUDA, for error messages and the GPU check."""
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (
        f"torch {torch.__version__} (built for CUDA {torch.version.cuda}), "
        f"torch.cuda.is_available() = {torch.cuda.is_available()}, "
        f"device_count = {torch.cuda.device_count() if torch.cuda.is_available() else 0}, "
        f"CUDA_VISIBLE_DEVICES = {'unset' if visible is None else repr(visible)}"
    )


def resolve_device(setting: str = "auto", *, gpus: int = 0, where: str = "device") -> torch.device:
    """The torch device for ``setting`` (auto | cpu | cuda | cuda:N | mps).

    ``gpus`` is the number of GPUs the job asked for (the rule's ``resources.gpu``); with
    ``gpus > 0`` or a ``cuda`` setting, a missing CUDA device (or fewer devices than asked
    for) raises :class:`DeviceUnavailableError`. ``where`` names the rule and preset.
    """
    import torch

    if not _DEVICE_SETTING.match(str(setting)):
        raise ValueError(f"{where}: device: expected auto, cpu, cuda, cuda:N or mps, got {setting!r}")
    if setting == "cpu":
        if gpus > 0:
            log.warning(
                "%s: device: cpu although the job asked for %d GPU(s); running on the CPU as configured", where, gpus
            )
        return torch.device("cpu")
    if setting == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceUnavailableError(
                f"{where}: expected device mps, but torch {torch.__version__} reports "
                "torch.backends.mps.is_available() = False"
            )
        return torch.device("mps")
    wants_cuda = setting.startswith("cuda") or gpus > 0
    available = torch.cuda.is_available()
    if setting == "auto" and not wants_cuda:
        return torch.device("cuda" if available else "cpu")
    index = int(setting.split(":")[1]) if ":" in setting else 0
    needed = max(gpus, index + 1, 1)
    count = torch.cuda.device_count() if available else 0
    if count < needed:
        expected = f"device {setting}" if setting != "auto" else "a CUDA device"
        asked = f" (the job asked for resources.gpu = {gpus})" if gpus > 0 else ""
        raise DeviceUnavailableError(
            f"{where}: expected {expected}{asked}, {needed} needed, but {torch_report()}; "
            "check the driver against torch's CUDA, --nv for containers, the job's GPU allocation, "
            "or set device: cpu in the preset to run on the CPU on purpose"
        )
    return torch.device(setting if setting.startswith("cuda") else "cuda")


def bf16_supported(device: torch.device) -> bool:
    import torch

    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def tf32_supported(device: torch.device, requested: bool = True) -> bool:
    """Whether tf32 matmuls can be switched on for ``device``: CUDA with compute capability
    >= 8.0. A request that cannot be honoured on a GPU logs a warning and gives False."""
    import torch

    if not requested or device.type != "cuda":
        return False
    capability = tuple(torch.cuda.get_device_capability(device))
    if capability < TF32_MIN_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        log.warning("tf32 requested but %s has compute capability %d.%d (< 8.0): tf32 stays off", name, *capability)
        return False
    return True


# --------------------------------------------------------------------------- dtype


def saved_dtype_name(model_dir: str | os.PathLike[str], trust_remote_code: bool = False) -> str:
    """The dtype a model folder was saved in (config ``dtype``, older ``torch_dtype``), fp32 if unset."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    saved = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32"
    return str(saved).replace("torch.", "")


def resolve_dtype(
    setting: str, device: torch.device, *, saved_in: str | os.PathLike[str] | None = None, where: str = "dtype"
) -> torch.dtype:
    """``auto``: the dtype of ``saved_in`` when given, else bf16 on a bf16-capable CUDA
    device and fp32 everywhere else (bf16 halves memory on GPUs; CPUs run it slowly)."""
    import torch

    if setting not in DTYPE_NAMES:
        raise ValueError(f"{where}: expected one of {list(DTYPE_NAMES)}, got {setting!r}")
    if setting == "auto":
        if saved_in is not None:
            setting = saved_dtype_name(saved_in)
            if setting not in DTYPE_NAMES:
                raise ValueError(
                    f"{saved_in}: saved dtype {setting!r} is none of {list(DTYPE_NAMES[1:])}; set {where} explicitly"
                )
        else:
            setting = "bfloat16" if bf16_supported(device) else "float32"
    return getattr(torch, setting)


# --------------------------------------------------------------------------- attention


def causal_lm_class(model_dir: str | os.PathLike[str], trust_remote_code: bool = False) -> type | None:
    """The transformers class ``AutoModelForCausalLM`` would build, without loading weights;
    None for remote-code models (their class is only known once their code is imported)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    try:
        # transformers annotates every auto mapping's value as the tokenizers' (slow, fast)
        # pair; a model mapping's value is the model class itself.
        return AutoModelForCausalLM._model_mapping[type(config)]  # type: ignore[return-value]
    except KeyError:
        return None


def flash_attention_2_usable(device: torch.device, dtype: torch.dtype) -> bool:
    """flash-attn installed (>= 2.3.3, as transformers requires), a CUDA device of compute
    capability >= 8.0 and a half-precision dtype: the kernels support nothing else."""
    import torch
    from transformers.utils import is_flash_attn_2_available

    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16) or not is_flash_attn_2_available():
        return False
    return tuple(torch.cuda.get_device_capability(device)) >= (8, 0)


def choose_attention(
    model_class: type | None,
    setting: str,
    device: torch.device,
    dtype: torch.dtype,
    where: str = "attn_implementation",
) -> str | None:
    """The attention implementation to load ``model_class`` with (see the module docstring).

    None means "let transformers decide" (its own SDPA-else-eager), used for remote-code
    classes we cannot inspect. An explicit setting the class does not support fails here
    with one line instead of deep inside ``from_pretrained``.
    """
    if setting not in ATTENTION_NAMES:
        raise ValueError(f"{where}: expected one of {list(ATTENTION_NAMES)}, got {setting!r}")
    if model_class is None:
        return None if setting == "auto" else setting
    supports = {
        "flash_attention_2": bool(getattr(model_class, "_supports_flash_attn", False)),
        "flash_attention_3": bool(getattr(model_class, "_supports_flash_attn", False)),
        "sdpa": bool(getattr(model_class, "_supports_sdpa", False)),
        "eager": True,
    }
    if setting != "auto":
        if not supports[setting]:
            allowed = [name for name, ok in supports.items() if ok]
            raise ValueError(
                f"{where}: {model_class.__name__} does not support {setting!r}; use auto or one of {allowed}"
            )
        return setting
    if supports["flash_attention_2"] and flash_attention_2_usable(device, dtype):
        return "flash_attention_2"
    return "sdpa" if supports["sdpa"] else "eager"


# --------------------------------------------------------------------------- loading


def load_tokenizer(
    folder: str | os.PathLike[str],
    *,
    trust_remote_code: bool = False,
    gguf_file: str | None = None,
    pad_with_eos: bool = True,
) -> PreTrainedTokenizerBase:
    """The tokenizer of a model folder (or of a GGUF file in it). Without a pad token it pads
    with EOS (``pad_with_eos``): padded positions are never a training target nor a scored
    token. prepare_model passes False so the saved tokenizer is the source's, unchanged."""
    from transformers import AutoTokenizer

    extra = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code, **extra)
    if pad_with_eos and tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    model_dir: str | os.PathLike[str],
    *,
    dtype: torch.dtype,
    device: torch.device,
    attn_implementation: str = "auto",
    trust_remote_code: bool = False,
    where: str = "model",
) -> PreTrainedModel:
    """A causal LM from a plain HF folder, in ``dtype`` on ``device``, with the attention
    :func:`choose_attention` picks (logged). Weights are placed on a GPU as they are read,
    so an 8B model never needs 16 GB of host memory first."""
    from transformers import AutoModelForCausalLM

    attention = choose_attention(
        causal_lm_class(model_dir, trust_remote_code),
        attn_implementation,
        device,
        dtype,
        where=f"{where}: attn_implementation",
    )
    # Trainer compares this placement with its own device: name the GPU exactly ("cuda:0").
    extra: dict[str, Any] = {"device_map": {"": str(device)}} if device.type == "cuda" else {}
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=dtype, attn_implementation=attention, trust_remote_code=trust_remote_code, **extra
    )
    if device.type != "cuda":
        # PreTrainedModel.to is functools.wraps(Module.to), which typeshed types as taking the
        # model itself as its first argument.
        model.to(device)  # type: ignore[arg-type]
    log.info(
        "%s: loaded %s (%s) as %s on %s with %s attention",
        where,
        Path(model_dir).name,
        type(model).__name__,
        str(dtype).replace("torch.", ""),
        device,
        model.config._attn_implementation,
    )
    return model
