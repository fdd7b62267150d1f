"""The checkpoint folder of a training: what may be resumed, and from where.

Trainer saves ``checkpoint-<step>`` folders every ``save_steps`` into the job's checkpoint
folder (outside the rule's outputs). Before a training starts, :func:`prepare_checkpoint_dir`
makes that folder safe to resume from:

1. a fingerprint of the data, the settings that shape the optimisation, and the base model
   (:func:`training_fingerprint`) is compared with the one recorded in the folder
   (``rekalm_fingerprint.json``); on a mismatch the whole folder is deleted, since resuming
   another training's checkpoints would silently mix two runs;
2. checkpoints without a readable ``trainer_state.json`` (the last file Trainer writes, so a
   kill while saving leaves a folder without it) are deleted;
3. the newest complete checkpoint, if any, is returned: the run resumes from it.

Example: a run killed after step 5 with ``save_steps: 2`` left ``checkpoint-2`` and
``checkpoint-4`` (complete) and ``checkpoint-6`` (half written); the re-run deletes
``checkpoint-6`` and resumes from ``checkpoint-4``. With a changed ``learning_rate`` it
starts over; with a changed ``save_steps`` it still resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Protocol

from rekalm.common.fingerprinted_folder import FingerprintedFolder
from rekalm.common.io import update_with_file

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "rekalm_fingerprint.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class _Settings(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


class CheckpointedJob(Protocol):
    """What the checkpoint folder depends on; a :class:`rekalm.training.train.TrainingJob` is one."""

    @property
    def train_jsonl(self) -> str: ...

    @property
    def base_model_dir(self) -> str: ...

    @property
    def checkpoint_dir(self) -> str: ...

    @property
    def settings(self) -> _Settings: ...


def checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def is_complete_checkpoint(path: Path) -> bool:
    """trainer_state.json is the last file Trainer writes into a checkpoint: a kill before
    (or during) that write leaves a folder that must not be resumed from."""
    state = path / "trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def newest_complete_checkpoint(checkpoint_dir: str | os.PathLike[str]) -> Path | None:
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    candidates = sorted((step, path) for path in folder.iterdir() if (step := checkpoint_step(path)) is not None)
    for _, path in reversed(candidates):
        if is_complete_checkpoint(path):
            return path
    return None


def training_fingerprint(job: CheckpointedJob) -> str:
    """What a checkpoint must have been trained on to be resumed: data, settings, base model."""
    digest = update_with_file(hashlib.sha256(), job.train_jsonl)
    base = Path(job.base_model_dir)
    weights = sorted((p.name, p.stat().st_size) for p in base.glob("*.safetensors"))
    config_text = (base / "config.json").read_text(encoding="utf-8") if (base / "config.json").is_file() else ""
    # Settings that do not change the optimisation trajectory may differ on a resume.
    settings = {
        k: v
        for k, v in job.settings.to_dict().items()
        if k not in {"save_steps", "save_total_limit", "keep_checkpoints", "logging_steps"}
    }
    digest.update(
        json.dumps({"settings": settings, "weights": weights, "config": config_text}, sort_keys=True).encode()
    )
    return digest.hexdigest()


def prepare_checkpoint_dir(job: CheckpointedJob) -> Path | None:
    """Make the checkpoint folder ready and return the checkpoint to resume from, if any.

    Checkpoints from a different fingerprint (new data, settings or base model) are deleted:
    resuming them would silently mix two trainings. Incomplete checkpoints are deleted too.
    """
    folder = Path(job.checkpoint_dir)
    removed = FingerprintedFolder(folder, FINGERPRINT_FILE).claim(
        training_fingerprint(job), {"train_jsonl": job.train_jsonl, "base_model_dir": job.base_model_dir}
    )
    if any(checkpoint_step(p) is not None for p in removed):
        log.warning("checkpoints in %s come from other data/settings: starting over", folder)
    for path in folder.iterdir():
        if checkpoint_step(path) is not None and not is_complete_checkpoint(path):
            log.warning("removing incomplete checkpoint %s (killed while saving)", path)
            shutil.rmtree(path)
    resume = newest_complete_checkpoint(folder)
    if resume is not None:
        log.info("resuming from %s", resume)
    return resume
