import doctest
import json

import pytest

import rekalm.common.fingerprinted_folder
import rekalm.common.io
from rekalm.common.fingerprinted_folder import FingerprintedFolder
from rekalm.ranking.infer import MANIFEST_NAME, prepare_chunk_dir


def fill(folder):
    (folder / "chunk-00000.parquet").write_bytes(b"rows")
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2" / "trainer_state.json").write_text("{}")


def test_the_same_fingerprint_keeps_the_contents(tmp_path):
    folder = FingerprintedFolder(tmp_path / "work", "marker.json")
    assert folder.claim("abc", {"train_jsonl": "a.jsonl"}) == []
    fill(folder.path)
    assert folder.claim("abc", {"train_jsonl": "a.jsonl"}) == []
    assert sorted(p.name for p in folder.path.iterdir()) == ["checkpoint-2", "chunk-00000.parquet", "marker.json"]
    assert folder.recorded() == {"fingerprint": "abc", "train_jsonl": "a.jsonl"}
    folder.claim("abc", {"train_jsonl": "moved/a.jsonl"})  # details are recorded, not compared
    assert (folder.path / "chunk-00000.parquet").exists()
    assert folder.recorded() == {"fingerprint": "abc", "train_jsonl": "moved/a.jsonl"}


@pytest.mark.parametrize("marker", ["other", None])
def test_another_or_no_fingerprint_empties_the_folder(tmp_path, marker):
    folder = FingerprintedFolder(tmp_path / "work", "marker.json")
    folder.path.mkdir()
    fill(folder.path)
    if marker is not None:
        (folder.marker).write_text(json.dumps({"fingerprint": marker}))
    removed = folder.claim("abc")
    assert [p.name for p in removed] == ["checkpoint-2", "chunk-00000.parquet"]
    assert [p.name for p in folder.path.iterdir()] == ["marker.json"]
    assert json.loads(folder.marker.read_text()) == {"fingerprint": "abc"}


def test_a_crash_while_recording_leaves_no_half_written_marker(tmp_path, monkeypatch):
    folder = FingerprintedFolder(tmp_path / "work", "marker.json")
    folder.claim("old")
    fill(folder.path)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(rekalm.common.io.json, "dumps", crash)
    with pytest.raises(OSError, match="disk full"):
        folder.claim("new")
    monkeypatch.undo()
    # Emptied before recording: the old marker never vouches for contents it did not make.
    assert [p.name for p in folder.path.iterdir()] == ["marker.json"]
    assert folder.recorded() == {"fingerprint": "old"}


def test_inference_chunks_written_before_the_change_still_resume(tmp_path):
    folder = tmp_path / "chunks"
    folder.mkdir()
    (folder / MANIFEST_NAME).write_text(json.dumps({"fingerprint": "abc"}, indent=2, sort_keys=True) + "\n")
    (folder / "chunk-00000.parquet").write_bytes(b"rows")
    (folder / "chunk-00001.parquet").write_bytes(b"rows")
    assert prepare_chunk_dir(folder, "abc") == 2
    assert prepare_chunk_dir(folder, "def") == 0
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST_NAME]
    assert json.loads((folder / MANIFEST_NAME).read_text()) == {"fingerprint": "def"}


def test_the_docstring_example_holds():
    assert doctest.testmod(rekalm.common.fingerprinted_folder).failed == 0
