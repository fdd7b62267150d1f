"""Knowledge sources that fail halfway: corrupt dumps and servers that trickle bytes."""

from __future__ import annotations

import bz2
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rekalm.knowledge.oxigraph_server import load_rdf_store, oxigraph_executable
from rekalm.knowledge.sparql import ClientSettings, SparqlClient, SparqlError

TRIPLES = "".join(
    f'<http://dbpedia.org/resource/Film_{n}> <http://www.w3.org/2000/01/rdf-schema#label> "Film {n}"@en .\n'
    for n in range(200)
)


@pytest.fixture
def oxigraph() -> None:
    try:
        oxigraph_executable()
    except SparqlError as error:
        pytest.skip(str(error))


def assert_nothing_marked_complete(stores: Path) -> None:
    assert not list(stores.rglob("loaded.json"))
    assert not [p for p in stores.glob("*") if p.name.startswith(".")]  # no staging left either


@pytest.mark.parametrize(
    "name,content,message",
    [
        (
            "cut.nt",
            TRIPLES[: len(TRIPLES) // 2],
            r"cut\.nt \(truncated or corrupt\? download it again\): \d parse error\(s\), first: Parser error at "
            r"line \d+ .*end of file",
        ),
        (
            "garbage.nt",
            TRIPLES.replace("Film_7>", "Film_7", 1),
            r"garbage\.nt \(.*\): 1 parse error\(s\), first: Parser error at line 8 ",
        ),
        (
            "cut.ttl.bz2",
            bz2.compress(TRIPLES.encode())[:400],
            r"cut\.ttl\.bz2 \(.*\): cannot be decompressed \(EOFError",
        ),
        ("noise.nt.bz2", b"BZh9" + b"\x00" * 64, r"noise\.nt\.bz2 \(.*\): cannot be decompressed"),
    ],
    ids=["truncated", "corrupt-line", "truncated-bz2", "not-bz2"],
)
def test_a_corrupt_dump_fails_the_load_and_is_never_marked_loaded(oxigraph, tmp_path, name, content, message):
    dump = tmp_path / name
    dump.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SparqlError, match=message) as error:
        load_rdf_store([dump], tmp_path / "stores")
    assert "\n" not in str(error.value)
    assert_nothing_marked_complete(tmp_path / "stores")
    with pytest.raises(SparqlError):  # and a re-run does not reuse anything
        load_rdf_store([dump], tmp_path / "stores")


def test_a_repaired_dump_loads_and_a_store_from_the_lenient_loader_is_rebuilt(oxigraph, tmp_path):
    dump = tmp_path / "films.nt"
    dump.write_text(TRIPLES)
    store = load_rdf_store([dump], tmp_path / "stores")
    marker = store / "loaded.json"
    assert json.loads(marker.read_text())["version"] == 2
    marker.write_text(json.dumps({"files": [str(dump)]}))  # what the older, lenient loader wrote
    rebuilt = load_rdf_store([dump], tmp_path / "stores")
    assert rebuilt == store and json.loads(marker.read_text())["version"] == 2


class TricklingServer:
    """A SPARQL endpoint on 127.0.0.1 whose first ``slow`` answers arrive a few bytes at a time."""

    BODY = json.dumps(
        {"head": {"vars": ["x"]}, "results": {"bindings": [{"x": {"type": "literal", "value": "ok"}}]}}
    ).encode()

    def __init__(self, slow: int, where: str = "body", pause_s: float = 0.1) -> None:
        self.slow, self.requests, self.stop = slow, 0, threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.requests += 1
                trickle = server.requests <= server.slow
                head = (
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/sparql-results+json\r\n"
                    + f"Content-Length: {len(server.BODY)}\r\nConnection: close\r\n\r\n".encode()
                )
                data = head + server.BODY
                start = 0 if where == "headers" else len(head)
                try:
                    self.wfile.write(data[:start])
                    self.wfile.flush()
                    for index in range(start, len(data)):
                        if trickle:  # every byte well inside the client's per-read timeout
                            if server.stop.wait(pause_s):
                                return
                        self.wfile.write(data[index : index + 1])
                        self.wfile.flush()
                except OSError:
                    pass  # the client hung up

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/sparql"

    def __enter__(self) -> TricklingServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def client_for(url: str, retries: int) -> tuple[SparqlClient, list[float]]:
    sleeps: list[float] = []
    settings = ClientSettings(
        timeout_s=0.5, retries=retries, backoff_initial_s=0.01, backoff_max_s=0.01, request_delay_s=0
    )
    return SparqlClient(url, None, settings, sleep=sleeps.append, jitter=lambda: 0.0), sleeps


@pytest.mark.parametrize("where", ["body", "headers"])
def test_timeout_s_is_a_deadline_per_request_and_retried(where):
    # ~100+ bytes at 0.1 s each would hold the request ~10 s under a per-read timeout.
    with TricklingServer(slow=1, where=where) as server:
        client, sleeps = client_for(server.url, retries=2)
        rows = client.select("SELECT ?x WHERE {}")
    assert rows == [{"x": {"type": "literal", "value": "ok"}}]
    assert server.requests == 2 and client.counters.retries == 1 and len(sleeps) == 1


def test_a_server_that_always_trickles_fails_with_one_line(caplog):
    with TricklingServer(slow=99) as server:
        client, _ = client_for(server.url, retries=1)
        with pytest.raises(
            SparqlError, match=r"failed after 2 attempt\(s\): timed out: no complete answer within 0\.5 s$"
        ) as error:
            client.select("SELECT ?x WHERE {}")
    assert "\n" not in str(error.value) and server.requests == 2
    assert "timed out: no complete answer within 0.5 s; retry 1/1" in caplog.text


def test_a_fast_answer_is_not_cut_by_the_deadline():
    with TricklingServer(slow=0) as server:
        client, sleeps = client_for(server.url, retries=0)
        assert client.select("SELECT ?x WHERE {}")[0]["x"]["value"] == "ok"
        time.sleep(0.6)  # the deadline timer of the finished request must not fire late
        assert client.select("SELECT ?y WHERE {}")[0]["x"]["value"] == "ok"
    assert sleeps == [] and server.requests == 2
