"""Folders of resumable work that are reused only for the inputs that made them.

A long job leaves its partial results in a folder (training checkpoints, inference
chunks) so that a killed run can pick up where it stopped. Reusing them is only right when
they were made from the same data, settings and code, so the folder carries a JSON marker
file holding a fingerprint of those. :meth:`FingerprintedFolder.claim` is the one rule:

    recorded fingerprint == new fingerprint  ->  keep the contents
    anything else (other, none, no folder)   ->  empty the folder, then record the new one

The folder is emptied *before* the marker is written (atomically, by :func:`write_json`),
so a crash in between leaves an empty folder without a marker, never old contents under a
new fingerprint. Example::

    >>> import tempfile
    >>> from pathlib import Path
    >>> chunks = FingerprintedFolder(Path(tempfile.mkdtemp()) / "chunks", "manifest.json")
    >>> chunks.claim("abc")  # first run: nothing to remove
    []
    >>> _ = (chunks.path / "chunk-00000.parquet").write_bytes(b"...")
    >>> chunks.claim("abc")  # same inputs: the chunk is kept
    []
    >>> [path.name for path in chunks.claim("def")]  # other inputs: it goes
    ['chunk-00000.parquet']
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rekalm.common.io import write_json


@dataclass(frozen=True)
class FingerprintedFolder:
    """``path``: the folder; ``marker_name``: the JSON file in it that records the fingerprint."""

    path: Path
    marker_name: str

    @property
    def marker(self) -> Path:
        return self.path / self.marker_name

    def recorded(self) -> dict[str, Any] | None:
        """The marker's content, or None when there is none."""
        return json.loads(self.marker.read_text(encoding="utf-8")) if self.marker.is_file() else None

    def claim(self, fingerprint: str, details: Mapping[str, Any] | None = None) -> list[Path]:
        """Make the folder hold only work of ``fingerprint``; return what was removed.

        ``details`` are recorded beside the fingerprint (for a reader), not compared.
        """
        recorded = self.recorded() if self.path.is_dir() else None
        record = {"fingerprint": fingerprint, **(details or {})}
        removed: list[Path] = []
        if recorded is None or recorded.get("fingerprint") != fingerprint:
            removed = (
                sorted(entry for entry in self.path.iterdir() if entry != self.marker) if self.path.is_dir() else []
            )
            for entry in removed:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        if recorded != record:
            write_json(record, self.marker)
        return removed
