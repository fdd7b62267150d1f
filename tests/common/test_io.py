"""Atomic writes: outputs get the umask's mode, and a killed folder write is cleaned up."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rekalm.common.io import (
    atomic_dir,
    atomic_path,
    json_safe,
    json_sha256,
    remove_stale_staging,
    sha256_of,
    update_with_file,
    write_json,
    write_jsonl,
    write_parquet,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def umask():
    previous = os.umask(0o022)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(previous)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.parametrize(
    "mask,file_mode,dir_mode",
    [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750), (0o002, 0o664, 0o775), (0o077, 0o600, 0o700)],
)
def test_outputs_get_the_umask_mode(tmp_path, umask, mask, file_mode, dir_mode):
    import pandas as pd
    import torch
    from safetensors.torch import save_file

    umask(mask)
    write_json({"a": 1}, tmp_path / "x.json")
    write_jsonl([{"a": 1}], tmp_path / "x.jsonl")
    write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "x.parquet")
    with atomic_path(tmp_path / "raw.bin") as temp:
        temp.write_bytes(b"1")
    with atomic_dir(tmp_path / "model") as staging:
        (staging / "weights").write_bytes(b"1")
        save_file({"w": torch.zeros(2)}, str(staging / "model.safetensors"))  # safetensors writes 0600 itself
        (staging / "sub").mkdir(mode=0o700)
        (staging / "sub" / "run.sh").write_text("#!/bin/sh\n")
        (staging / "sub" / "run.sh").chmod(0o700)
    for name in ("x.json", "x.jsonl", "x.parquet", "raw.bin", "model/weights", "model/model.safetensors"):
        assert mode(tmp_path / name) == file_mode, name
    assert mode(tmp_path / "model") == mode(tmp_path / "model" / "sub") == dir_mode
    assert mode(tmp_path / "model" / "sub" / "run.sh") == dir_mode  # executables stay executable
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model",
        "raw.bin",
        "x.json",
        "x.jsonl",
        "x.parquet",
    ]  # no lock or temp left


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from rekalm.common.io import atomic_dir
    with atomic_dir(Path(sys.argv[1])) as staging:
        (staging / "shard-1.safetensors").write_bytes(b"x" * 1000)
        print("writing", flush=True)
        time.sleep(60)
    """
)


def start_writer(target: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout is not None and child.stdout.readline().strip() == "writing"
    return child


def staging_of(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.*"))


def test_hard_linked_files_keep_the_mode_of_their_original(tmp_path, umask):
    original = tmp_path / "my-model" / "weights.bin"  # a user's own folder, linked, not copied
    original.parent.mkdir()
    original.write_bytes(b"1")
    original.chmod(0o600)
    with atomic_dir(tmp_path / "base") as staging:
        os.link(original, staging / "weights.bin")
    assert mode(original) == 0o600 and mode(tmp_path / "base") == 0o755


def test_a_killed_folder_write_is_cleaned_by_the_next_write(tmp_path):
    target = tmp_path / "merge" / "model"
    child = start_writer(target)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert len(staging_of(target)) == 2  # the staging folder and its lock file survive a kill
    with atomic_dir(target) as staging:
        assert staging_of(target) == sorted([staging, staging.parent / f"{staging.name}.lock"])  # only ours
        (staging / "config.json").write_text("{}")
    assert staging_of(target) == []
    assert [p.name for p in target.iterdir()] == ["config.json"]


def test_a_live_writer_keeps_its_staging_folder(tmp_path):
    target = tmp_path / "store"
    child = start_writer(target)
    try:
        assert remove_stale_staging(target) == []
        assert len(staging_of(target)) == 2
    finally:
        child.terminate()
        child.wait()
    # Once the writer is gone (SIGTERM runs no Python cleanup), its folder is stale.
    assert len(remove_stale_staging(target)) == 1
    assert staging_of(target) == []


def test_only_the_targets_own_staging_is_touched(tmp_path):
    target = tmp_path / "base"
    other = tmp_path / ".base_v2.host.123.0123abcd.tmp"  # another output's staging
    unrelated = tmp_path / ".base.notes.tmp"  # not our naming scheme
    for folder in (other, unrelated):
        folder.mkdir()
    orphan = tmp_path / ".base.host.99999999.deadbeef.tmp"  # a killed writer's folder, lock gone
    orphan.mkdir()
    orphan_lock = tmp_path / ".base.host.99999998.feedf00d.tmp.lock"  # killed between lock and mkdir
    orphan_lock.touch()
    assert remove_stale_staging(target) == [orphan]
    assert other.exists() and unrelated.exists() and not orphan_lock.exists()


def test_a_failed_folder_write_leaves_nothing(tmp_path):
    target = tmp_path / "adapter"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as staging:
            (staging / "half").write_bytes(b"1")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_json_safe_turns_numpy_scalars_into_numbers_and_nan_into_null(tmp_path):
    value = {"a": np.float64("nan"), 1: [np.int32(3), np.bool_(True), float("inf"), 0.5], "b": (np.float32(2.0),)}
    assert json_safe(value) == {"a": None, "1": [3, True, None, 0.5], "b": [2.0]}
    write_json(json_safe(value), tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text())["a"] is None


def test_sha256_of_hashes_the_contents_in_blocks(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"x" * (3 << 20) + b"tail")  # more than one 1 MiB block
    assert sha256_of(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    digest = update_with_file(hashlib.sha256(b"prefix"), path)
    assert digest.hexdigest() == hashlib.sha256(b"prefix" + path.read_bytes()).hexdigest()
    assert json_sha256({"b": 1, "a": [2]}) == hashlib.sha256(b'{"a": [2], "b": 1}').hexdigest()  # keys sorted
