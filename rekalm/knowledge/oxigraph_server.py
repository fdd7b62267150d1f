"""A local SPARQL endpoint over RDF dump files: an ``oxigraph`` store loaded once, served
read-only on 127.0.0.1 for the duration of a ``with`` block.

- :func:`load_rdf_store` builds the store under ``store_root/<fingerprint>`` (the
  fingerprint of the files' names, sizes and mtimes, :func:`dump_fingerprint`), in a
  temporary folder renamed into place only when every file loaded without a parse error;
  a later run with the same files reuses it.
- The format comes from the file name (:func:`rdf_format`): ``x.ttl``, ``x.nt.bz2``, ...;
  compressed files are decompressed here and streamed to ``oxigraph load``.
- :func:`serve_rdf_store` starts ``oxigraph serve-read-only`` on a free port and stops it
  (:func:`stop_process`) when the block ends; :func:`local_sparql_endpoint` does both.

The query side (escaping, cache, retries) is :mod:`rekalm.knowledge.sparql`; it talks to this server
exactly as to a remote endpoint.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import logging
import lzma
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rekalm.common.io import atomic_dir, write_json
from rekalm.knowledge.sparql import SparqlError, one_line

log = logging.getLogger(__name__)

RDF_FORMATS = {
    ".ttl": "ttl",
    ".nt": "nt",
    ".nq": "nq",
    ".trig": "trig",
    ".n3": "n3",
    ".rdf": "rdf",
    ".owl": "rdf",
    ".xml": "rdf",
}
# oxigraph 0.5 reads .gz itself but panics on .bz2 (the DBpedia Databus default), so
# compressed files are decompressed here and streamed to `oxigraph load` on stdin.
DECOMPRESSORS: dict[str, Callable[..., Any]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def oxigraph_executable() -> str:
    """The ``oxigraph`` CLI from the PyPI package, found beside this Python or on PATH."""
    beside_python = Path(sys.executable).parent / "oxigraph"
    found = str(beside_python) if beside_python.exists() else shutil.which("oxigraph")
    if not found:
        raise SparqlError(
            "the oxigraph CLI was not found: pip install oxigraph==0.5.13 (needed for dbpedia.local_dump)"
        )
    return found


def rdf_format(path: Path) -> tuple[str, Callable[..., Any] | None]:
    """(oxigraph format name, decompressor or None) from a file name like x.ttl.bz2."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    decompress = DECOMPRESSORS.get(suffixes[-1]) if suffixes else None
    inner = suffixes[-2] if decompress and len(suffixes) >= 2 else (suffixes[-1] if suffixes else "")
    if inner not in RDF_FORMATS:
        raise ValueError(
            f"dbpedia.local_dump: {path}: expected an RDF file ({', '.join(sorted(RDF_FORMATS))}, optionally "
            ".gz/.bz2/.xz)"
        )
    return RDF_FORMATS[inner], decompress


def dump_fingerprint(files: Sequence[str | os.PathLike[str]]) -> str:
    """A short id of a set of dump files (name, size, mtime): names the store and the cache."""
    for path in map(Path, files):
        if not path.is_file():
            raise ValueError(f"dbpedia.local_dump: file {path} not found")
    digest = hashlib.sha256()
    for name in sorted(str(Path(f).resolve()) for f in files):
        stat = Path(name).stat()
        digest.update(f"{Path(name).name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


# Bumped whenever a store's contents could differ for the same files: stores marked by an
# older version (which let parse errors through) are loaded again.
STORE_VERSION = 2
_PARSE_ERROR = re.compile(r"^Parsing error(?: on file .*?)?: (?P<detail>.*)$", re.MULTILINE)


def load_rdf_store(files: Sequence[str | os.PathLike[str]], store_root: str | os.PathLike[str]) -> Path:
    """An oxigraph store holding ``files``, loaded once and reused by later runs.

    The store is built in a temporary folder and renamed into place when every file is in
    without a single parse error, so a killed, truncated or corrupt load never leaves a
    store that looks complete.
    """
    paths = [Path(f) for f in files]
    target = Path(store_root) / dump_fingerprint(paths)
    formats = [rdf_format(path) for path in paths]
    if _store_is_complete(target):
        return target
    executable = oxigraph_executable()
    with atomic_dir(target) as building:
        for path, (fmt, decompress) in zip(paths, formats):
            log.info("loading %s into a local oxigraph store", path)
            _oxigraph_load(executable, building, path, fmt, decompress)
        write_json({"files": [str(p) for p in paths], "version": STORE_VERSION}, building / "loaded.json")
    return target


def _store_is_complete(store: Path) -> bool:
    try:
        marker = json.loads((store / "loaded.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("version") == STORE_VERSION


def _oxigraph_load(executable: str, store: Path, path: Path, fmt: str, decompress: Callable[..., Any] | None) -> None:
    # --lenient: DBpedia dumps hold a few IRIs that strict validation rejects. It also lets
    # oxigraph skip *syntax* errors (a truncated or corrupt file) with only a message and
    # exit status 0, so those messages are read back and fail the load.
    command = [executable, "load", "--lenient", "--location", str(store), "--format", fmt]
    failure = ""
    process: subprocess.CompletedProcess[bytes] | subprocess.Popen[bytes]  # both give the returncode below
    with tempfile.TemporaryFile() as errors:
        if decompress is None:
            process = subprocess.run([*command, "--file", str(path)], stdout=subprocess.DEVNULL, stderr=errors)
        else:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
            assert process.stdin is not None
            try:
                with decompress(path, "rb") as source:
                    shutil.copyfileobj(source, process.stdin, 1 << 20)
            except BrokenPipeError:
                pass  # oxigraph stopped reading: its exit status below says why
            except (EOFError, OSError, lzma.LZMAError, zlib.error) as error:
                failure = f"cannot be decompressed ({type(error).__name__}: {error})"
            finally:
                process.stdin.close()
                process.wait()
        errors.seek(0)
        messages = errors.read().decode(errors="replace")
    parse_errors = [match.group("detail") for match in _PARSE_ERROR.finditer(messages)]
    if failure or process.returncode != 0 or parse_errors:
        detail = failure or (
            f"{len(parse_errors)} parse error(s), first: {parse_errors[0]}" if parse_errors else messages[-400:]
        )
        raise SparqlError(
            one_line(f"oxigraph could not load {path} (truncated or corrupt? download it again): {detail}", limit=500)
        )


def free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve_rdf_store(
    store: str | os.PathLike[str], query_timeout_s: float | None = None, startup_timeout_s: float = 60.0
) -> Iterator[str]:
    """Run ``oxigraph serve-read-only`` on 127.0.0.1 for the duration of the block.

    Yields the query URL. The port is picked free just before the start; if another
    process grabs it first, the start is retried on a new port. ``query_timeout_s`` makes
    the server drop a query the client has given up on instead of computing it on.
    """
    executable = oxigraph_executable()
    timeout = ["--timeout-s", str(max(1, math.ceil(query_timeout_s)))] if query_timeout_s else []
    for _ in range(3):
        port = free_local_port()
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(
                [executable, "serve-read-only", "--location", str(store), "--bind", f"127.0.0.1:{port}", *timeout],
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
            try:
                if _wait_for_port(process, port, startup_timeout_s):
                    log.info("oxigraph serving %s at 127.0.0.1:%d", store, port)
                    yield f"http://127.0.0.1:{port}/query"
                    return
                errors.seek(0)
                reason = one_line(errors.read().decode(errors="replace")[-400:]) or f"exit status {process.returncode}"
            finally:
                stop_process(process)
        if "in use" not in reason.lower():
            break
    raise SparqlError(f"oxigraph server did not start on 127.0.0.1: {reason}")


def _wait_for_port(process: subprocess.Popen[bytes], port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    """Terminate a server process, and kill it if it has not exited after ``timeout_s``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def local_sparql_endpoint(
    files: Sequence[str | os.PathLike[str]], store_root: str | os.PathLike[str], query_timeout_s: float | None = None
) -> Iterator[str]:
    """Load ``files`` (once) and serve them on 127.0.0.1; yields the query URL."""
    store = load_rdf_store(files, store_root)
    with serve_rdf_store(store, query_timeout_s) as url:
        yield url


__all__ = [
    "dump_fingerprint",
    "load_rdf_store",
    "local_sparql_endpoint",
    "oxigraph_executable",
    "rdf_format",
    "serve_rdf_store",
    "stop_process",
]
