"""A throw-away Virtuoso 7 server on 127.0.0.1, configured like the public DBpedia endpoint.

DBpedia runs Virtuoso, which differs from oxigraph (result caps per query, ASK answered as
rows, ``typed-literal`` terms, its own timeouts). Tests that talk SPARQL run against both
engines; this module starts Virtuoso for them.

Debian's ``virtuoso-opensource-7-bin`` provides ``virtuoso-t`` and ``isql-vt``. When they
are missing and the tests run as root with apt-get, :func:`ensure_installed` installs the
package (as tests/slurm/cluster.sh does for Slurm); otherwise the caller skips with the
reason it returns.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rekalm.knowledge.oxigraph_server import stop_process

PACKAGE = "virtuoso-opensource-7-bin"
# As the public endpoint: at most 10,000 rows per answer (DBpedia's ResultSetMaxRows).
RESULT_SET_MAX_ROWS = 10000
GRAPH = "http://dbpedia.org"

INI = """\
[Database]
DatabaseFile = {root}/virtuoso.db
ErrorLogFile = {root}/virtuoso.log
LockFile = {root}/virtuoso.lck
TransactionFile = {root}/virtuoso.trx
xa_persistent_file = {root}/virtuoso.pxa
FileExtend = 200
Striping = 0
TempStorage = TempDatabase

[TempDatabase]
DatabaseFile = {root}/virtuoso-temp.db
TransactionFile = {root}/virtuoso-temp.trx
Striping = 0

[Parameters]
ServerPort = 127.0.0.1:{sql_port}
NumberOfBuffers = 10000
MaxDirtyBuffers = 6000
DirsAllowed = {data}
ThreadsPerQuery = 1

[HTTPServer]
ServerPort = 127.0.0.1:{http_port}
ServerRoot = {root}
MaxClientConnections = 4
ServerThreads = 4

[SPARQL]
ResultSetMaxRows = {max_rows}
MaxQueryExecutionTime = 60
"""


def _installed() -> bool:
    return shutil.which("virtuoso-t") is not None and shutil.which("isql-vt") is not None


def ensure_installed() -> str | None:
    """None when Virtuoso is usable, else why not (a skip reason)."""
    if _installed():
        return None
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"Virtuoso is not installed ({PACKAGE}) and cannot be installed here (needs root and apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", PACKAGE]
    result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:  # the package lists may be stale: refresh once
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=600)
        result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0 or not _installed():
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"apt-get could not install {PACKAGE}: {last[0]}"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _isql(sql_port: int, statement: str) -> None:
    result = subprocess.run(
        ["isql-vt", f"127.0.0.1:{sql_port}", "dba", "dba", f"exec={statement}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0 or "*** Error" in result.stdout + result.stderr:
        raise RuntimeError(f"isql-vt failed on {statement[:80]!r}: {(result.stdout + result.stderr).strip()[-500:]}")


@contextmanager
def virtuoso_endpoint(turtle_files: Sequence[Path], root: Path, startup_timeout_s: float = 60.0) -> Iterator[str]:
    """Start Virtuoso in ``root``, load the Turtle files into one graph, yield the SPARQL
    URL; the server (started here, stopped by its PID) is gone after the block."""
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    data.mkdir(exist_ok=True)
    sql_port, http_port = _free_port(), _free_port()
    ini = root / "virtuoso.ini"
    ini.write_text(
        INI.format(root=root, data=data, sql_port=sql_port, http_port=http_port, max_rows=RESULT_SET_MAX_ROWS)
    )
    with open(root / "server.log", "wb") as server_log:
        process = subprocess.Popen(
            ["virtuoso-t", "+foreground", "+configfile", str(ini)],
            cwd=root,
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{http_port}/sparql"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"virtuoso-t exited with {process.returncode}: {(root / 'server.log').read_text()[-500:]}"
                )
            try:
                probe = url + "?" + urllib.parse.urlencode({"query": "ASK {}"})
                with urllib.request.urlopen(probe, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"virtuoso-t did not answer on {url} within {startup_timeout_s:.0f} s"
                    ) from None
                time.sleep(0.2)
        for number, path in enumerate(turtle_files):
            local = data / f"{number}.ttl"  # file_to_string_output reads only DirsAllowed
            shutil.copyfile(path, local)
            _isql(sql_port, f"DB.DBA.TTLP_MT(file_to_string_output('{local}'), '', '{GRAPH}');")
        _isql(sql_port, "checkpoint;")
        yield url
    finally:
        stop_process(process, timeout_s=30)
