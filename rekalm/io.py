"""Atomic file writing and small readers shared by every stage.

Every output is written to a temporary file in the destination folder and renamed into
place, so a crash or kill never leaves a half-written file that Snakemake (or a resumed
run) would mistake for a finished one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temp = Path(temp_name)
    try:
        yield temp
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Like :func:`atomic_path` for a folder output (model folders, adapters)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield temp
        if target.exists():
            shutil.rmtree(target)
        os.replace(temp, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as temp:
        frame.to_parquet(temp, index=False, engine="pyarrow")


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


def read_parquet(path: str | os.PathLike[str], required: Iterable[str] = ()) -> pd.DataFrame:
    """Read a table and fail with one line naming the file if expected columns are missing."""
    frame = pd.read_parquet(path)
    missing = sorted(set(required) - set(frame.columns))
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    return frame
