"""Atomic file writing, small readers, JSON-safe values and file hashes shared by every stage.

Every output is written to a temporary file (or folder) in the destination folder and
renamed into place, so a crash or kill never leaves a half-written file that Snakemake (or
a resumed run) would mistake for a finished one.

Temporaries are created with ``os.open(..., 0o666)`` / ``os.mkdir(..., 0o777)`` rather than
``mkstemp``/``mkdtemp`` (which force 0600/0700), and everything is given the mode the
user's umask allows just before the rename (libraries such as safetensors write 0600
files of their own), so colleagues on a shared file system can read the outputs.

A folder output can be large (a merged 8B model is ~16 GB) and a kill leaves its hidden
staging folder behind. While a staging folder is written its writer holds a POSIX lock
(``lockf``, which NFS supports) on a lock file beside it; the next :func:`atomic_dir` for
the same target removes every sibling staging folder whose lock it can take, i.e. those of
dead writers.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rekalm.common.tables import Table, require_columns

log = logging.getLogger(__name__)


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (threads share it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: Path, umask: int | None = None) -> None:
    """Give ``path`` (and, for a folder, everything in it) the mode a fresh file would get.

    Executable files keep their execute bits (as far as the umask allows). Hard-linked
    files are left alone: their inode is shared with the original (a local model folder, the
    Hugging Face cache), whose mode is not ours to change.
    """
    mask = current_umask() if umask is None else umask
    entries = [path, *path.rglob("*")] if path.is_dir() else [path]
    for entry in entries:
        if entry.is_symlink():
            continue
        status = entry.stat()
        if not entry.is_dir() and status.st_nlink > 1:
            continue
        executable = entry.is_dir() or status.st_mode & 0o100
        os.chmod(entry, (0o777 if executable else 0o666) & ~mask)


def _temp_name(target: Path) -> Path:
    tag = f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}"
    return target.parent / f".{target.name}.{tag}.tmp"


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_name(target)
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # umask applies
    try:
        yield temp
        if temp.exists():
            apply_umask(temp)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _lock_file(staging: Path) -> Path:
    return staging.parent / f"{staging.name}.lock"


def _lock_is_free(lock_file: Path) -> bool | None:
    """True when nobody holds the staging lock, False when a writer does, None if unknown."""
    try:
        descriptor = os.open(lock_file, os.O_RDWR)
    except FileNotFoundError:
        return True
    except OSError:
        return None
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as error:
        return False if error.errno in (errno.EACCES, errno.EAGAIN) else None
    finally:
        os.close(descriptor)  # closing releases a lock we took


def remove_stale_staging(target: str | os.PathLike[str]) -> list[Path]:
    """Delete the staging folders of ``target`` left by killed writers; return them."""
    target = Path(target)
    own_tag = f".{socket.gethostname()}.{os.getpid()}."
    removed = []
    pattern = re.compile(rf"\.{re.escape(target.name)}\..+\.\d+\.[0-9a-f]{{8}}\.tmp")
    for staging in sorted(target.parent.glob(f".{target.name}.*.tmp")):
        # lockf locks never conflict within one process: our own stagings are never probed.
        if (
            not pattern.fullmatch(staging.name)
            or not staging.is_dir()
            or staging.is_symlink()
            or own_tag in staging.name
        ):
            continue
        lock_file = _lock_file(staging)
        free = _lock_is_free(lock_file)
        if free:
            shutil.rmtree(staging, ignore_errors=True)
            lock_file.unlink(missing_ok=True)
            removed.append(staging)
        elif free is None:
            log.warning("cannot tell whether staging folder %s is in use (no file locks here?); leaving it", staging)
    for lock_file in target.parent.glob(f".{target.name}.*.tmp.lock"):  # killed before its mkdir
        if (
            pattern.fullmatch(lock_file.stem)
            and not lock_file.with_suffix("").exists()
            and own_tag not in lock_file.name
            and _lock_is_free(lock_file)
        ):
            lock_file.unlink(missing_ok=True)
    if removed:
        log.info(
            "removed %d stale staging folder(s) of %s: %s", len(removed), target, ", ".join(p.name for p in removed)
        )
    return removed


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Like :func:`atomic_path` for a folder output (model folders, adapters, stores).

    Stale staging folders of the same target are removed first.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    temp = _temp_name(target)
    lock_file = _lock_file(temp)
    # The lock exists before the folder does, so no live staging folder is ever unlocked.
    lock_descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        try:
            fcntl.lockf(lock_descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log.warning(
                "file locks unavailable in %s; stale staging folders cannot be told from live ones", target.parent
            )
        os.mkdir(temp, 0o777)  # umask applies
        yield temp
        apply_umask(temp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(temp, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
        lock_file.unlink(missing_ok=True)  # before closing: nobody may lock an orphan
        os.close(lock_descriptor)


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as temp:
        frame.to_parquet(temp, index=False, engine="pyarrow")


def json_safe(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None (JSON has no NaN), keys to str."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    return value


def write_json(payload: Any, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> int:
    """Write one JSON object per line; return the number of rows."""
    count = 0
    with atomic_path(path) as temp, open(temp, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
    return count


def update_with_file(digest: Any, path: str | os.PathLike[str]) -> Any:
    """Feed the bytes of ``path`` to a hashlib ``digest`` in 1 MiB blocks; return the digest."""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of a file's contents, read in blocks (files may be gigabytes)."""
    return update_with_file(hashlib.sha256(), path).hexdigest()


def json_sha256(payload: Any) -> str:
    """The hex SHA-256 of ``payload`` as key-sorted JSON: a fingerprint of settings and inputs."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
    return rows


def read_parquet(path: str | os.PathLike[str], required: Table | Iterable[str] = ()) -> pd.DataFrame:
    """Read a table and fail with one line naming the file if expected columns are missing."""
    frame = pd.read_parquet(path)
    require_columns(frame, required, path)
    return frame
