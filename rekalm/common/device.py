"""Which torch device a job runs on, decided the same way everywhere: the LLM stages
(:mod:`rekalm.llm.hf` re-exports these) and the torch recommenders (LightGCN). A job that asks
for a GPU it does not get stops at once with one line (:class:`DeviceUnavailableError`, which
the workflow scripts turn into a one-line error) instead of running for hours on the CPU.
torch is imported on use: importing this module costs nothing.
"""

from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_DEVICE_SETTING = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class DeviceUnavailableError(RuntimeError):
    """The job asked for an accelerator that torch cannot use."""


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
