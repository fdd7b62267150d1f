"""The download stage against a real HTTP server on 127.0.0.1."""

import email.utils
import hashlib
import io
import socket
import threading
import zipfile
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rekalm.data.download import DownloadError, DownloadSettings, fetch_dataset, resolve_file

FAST = DownloadSettings(attempts=3, backoff_s=0.01, timeout_s=5)
PAYLOAD = b"1\t2\t1\n1\t3\t0\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


class FixtureServer:
    """Serves ``routes`` (path -> bytes); ``failures`` (path -> list of status codes, or of
    (status code, Retry-After value)) are answered first, one per request. Counts requests
    per path."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}
        self.failures: dict[str, list[int | tuple[int, str]]] = {}
        self.truncate: dict[str, int] = {}  # path -> how many answers stop halfway
        self.requests: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                server.requests[self.path] = server.requests.get(self.path, 0) + 1
                pending = server.failures.get(self.path)
                if pending:
                    failure = pending.pop(0)
                    if isinstance(failure, int):
                        self.send_error(failure)
                        return
                    self.send_response(failure[0])
                    self.send_header("Retry-After", failure[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path not in server.routes:
                    self.send_error(404)
                    return
                body = server.routes[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.truncate.get(self.path, 0) > 0:
                    server.truncate[self.path] -= 1
                    body = body[: len(body) // 2]  # then the connection closes
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FixtureServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with FixtureServer() as running:
        yield running


def test_download_verifies_checksum_and_caches(server, tmp_path):
    server.routes["/data/train.tsv"] = PAYLOAD
    spec = {"url": f"{server.url}/data/train.tsv", "sha256": sha(PAYLOAD)}
    path = resolve_file(spec, tmp_path, "datasets.x.files.train", FAST)
    assert path.read_bytes() == PAYLOAD
    resolve_file(spec, tmp_path, "datasets.x.files.train", FAST)
    assert server.requests["/data/train.tsv"] == 1  # the verified file is not fetched again


def test_checksum_mismatch_fails_and_leaves_no_file(server, tmp_path):
    server.routes["/bad.tsv"] = PAYLOAD
    spec = {"url": f"{server.url}/bad.tsv", "sha256": "0" * 64}
    with pytest.raises(DownloadError, match=r"datasets\.x\.files\.train: sha256 mismatch"):
        resolve_file(spec, tmp_path, "datasets.x.files.train", FAST)
    assert list(tmp_path.iterdir()) == []


def test_server_errors_are_retried_with_backoff(server, tmp_path):
    server.routes["/flaky.tsv"] = PAYLOAD
    server.failures["/flaky.tsv"] = [500, 503]
    path = resolve_file({"url": f"{server.url}/flaky.tsv"}, tmp_path, "f", FAST)
    assert path.read_bytes() == PAYLOAD and server.requests["/flaky.tsv"] == 3


def test_retry_after_is_honoured_in_seconds_or_as_a_date(server, tmp_path, monkeypatch):
    """The downloader used to retry a 429 after its own backoff (0.01 s here), whatever the
    server asked for."""
    sleeps: list[float] = []
    monkeypatch.setattr("rekalm.data.download.time.sleep", sleeps.append)
    server.routes["/busy.tsv"] = PAYLOAD
    in_90_s = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    server.failures["/busy.tsv"] = [(429, "7"), (503, in_90_s)]
    path = resolve_file({"url": f"{server.url}/busy.tsv"}, tmp_path, "f", FAST)
    assert path.read_bytes() == PAYLOAD and server.requests["/busy.tsv"] == 3
    assert sleeps[0] == 7 and 60 < sleeps[1] <= 90  # the date is read against the clock


def test_a_retry_after_beyond_the_cap_fails_that_url_with_one_line(server, tmp_path, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr("rekalm.data.download.time.sleep", sleeps.append)
    server.failures["/later.tsv"] = [(429, "3600")]
    with pytest.raises(DownloadError) as error:
        resolve_file({"url": f"{server.url}/later.tsv"}, tmp_path, "datasets.x.files.ratings", FAST)
    assert str(error.value) == (
        f"datasets.x.files.ratings: {server.url}/later.tsv answered HTTP 429 Too Many Requests asking to wait "
        "3600 s (Retry-After), more than download.max_retry_after_s=300; try again later or raise it"
    )
    assert server.requests["/later.tsv"] == 1 and sleeps == []
    # A mirror is tried instead; a larger cap waits.
    server.routes["/mirror.tsv"] = PAYLOAD
    server.failures["/later.tsv"] = [(429, "3600")]
    spec = {"url": [f"{server.url}/later.tsv", f"{server.url}/mirror.tsv"], "filename": "ratings.tsv"}
    assert resolve_file(spec, tmp_path, "f", FAST).read_bytes() == PAYLOAD
    server.routes["/later.tsv"] = PAYLOAD
    server.failures["/later.tsv"] = [(429, "3600")]
    patient = DownloadSettings(attempts=2, backoff_s=0.01, timeout_s=5, max_retry_after_s=7200)
    assert resolve_file({"url": f"{server.url}/later.tsv"}, tmp_path / "patient", "f", patient).read_bytes() == PAYLOAD
    assert sleeps == [3600]


def test_not_found_fails_fast_and_mirrors_are_tried(server, tmp_path):
    server.routes["/mirror.tsv"] = PAYLOAD
    spec = {"url": [f"{server.url}/missing.tsv", f"{server.url}/mirror.tsv"], "filename": "train.tsv"}
    path = resolve_file(spec, tmp_path, "f", FAST)
    assert path.name == "train.tsv" and path.read_bytes() == PAYLOAD
    assert server.requests["/missing.tsv"] == 1  # a 404 is not retried


def test_persistent_failure_leaves_no_partial_file(server, tmp_path):
    server.failures["/down.tsv"] = [500, 500, 500]
    with pytest.raises(DownloadError, match=r"^label: could not download .*/down.tsv: HTTP 500") as error:
        resolve_file({"url": f"{server.url}/down.tsv"}, tmp_path, "label", FAST)
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_offline_gives_one_clear_line(tmp_path):
    with socket.socket() as probe:  # a port with nothing listening: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match=r"could not download .*offline\? set a local 'path'"):
        resolve_file({"url": f"http://127.0.0.1:{port}/x.tsv"}, tmp_path, "datasets.ml1m.files.ratings", FAST)


def test_zip_member_is_extracted(server, tmp_path):
    archive = zip_bytes({"ml-1m/ratings.dat": b"1::2::5::0\n", "ml-1m/movies.dat": b"2::X (1999)::Drama\n"})
    server.routes["/ml-1m.zip"] = archive
    files = {
        "ratings": {"url": f"{server.url}/ml-1m.zip", "sha256": sha(archive), "member": "ml-1m/ratings.dat"},
        "items": {"url": f"{server.url}/ml-1m.zip", "sha256": sha(archive), "member": "ml-1m/movies.dat"},
    }
    manifest = fetch_dataset("ml1m", files, tmp_path, FAST)
    assert Path(manifest["ratings"]["path"]).read_bytes() == b"1::2::5::0\n"
    assert Path(manifest["items"]["path"]).name == "movies.dat"
    assert server.requests["/ml-1m.zip"] == 1  # the archive is shared by both members
    with pytest.raises(DownloadError, match="has no member 'nope.dat'"):
        resolve_file({"url": f"{server.url}/ml-1m.zip", "member": "nope.dat"}, tmp_path, "f", FAST)


def test_local_path_and_package_resource(tmp_path):
    local = tmp_path / "local.tsv"
    local.write_bytes(PAYLOAD)
    assert resolve_file({"path": str(local), "sha256": sha(PAYLOAD)}, tmp_path, "f") == local.resolve()
    with pytest.raises(DownloadError, match="local file .* does not exist"):
        resolve_file({"path": str(tmp_path / "absent.tsv")}, tmp_path, "f")
    resource = resolve_file({"package": "rekalm", "resource": "py.typed"}, tmp_path, "f")
    assert resource.name == "py.typed"
    with pytest.raises(DownloadError, match="package 'no_such_pkg' is not installed"):
        resolve_file({"package": "no_such_pkg", "resource": "x"}, tmp_path, "f")


def test_spec_without_origin_names_the_key(tmp_path):
    with pytest.raises(
        DownloadError, match=r"datasets\.bgg\.files\.ratings: give exactly one of url, path, package.*BoardGameGeek"
    ):
        resolve_file({"path": None}, tmp_path, "datasets.bgg.files.ratings")


# --- the cache is keyed by content (URL + member + checksum) ----------------------------


def test_a_changed_archive_never_reuses_a_stale_member(server, tmp_path):
    old = zip_bytes({"ml-1m/movies.dat": b"1::Old (1999)::Drama\n"})
    new = zip_bytes({"ml-1m/movies.dat": b"1::New (2000)::Drama\n"})
    server.routes["/v1/ml-1m.zip"], server.routes["/v2/ml-1m.zip"] = old, new
    first = resolve_file(
        {"url": f"{server.url}/v1/ml-1m.zip", "sha256": sha(old), "member": "ml-1m/movies.dat"}, tmp_path, "f", FAST
    )
    assert first.read_bytes() == b"1::Old (1999)::Drama\n"
    second = resolve_file(
        {"url": f"{server.url}/v2/ml-1m.zip", "sha256": sha(new), "member": "ml-1m/movies.dat"}, tmp_path, "f", FAST
    )
    assert second.read_bytes() == b"1::New (2000)::Drama\n"
    assert first.read_bytes() == b"1::Old (1999)::Drama\n"  # each version keeps its own copy


def test_roles_whose_urls_end_in_the_same_name_do_not_overwrite_each_other(server, tmp_path):
    server.routes["/ratings/data.tsv"], server.routes["/items/data.tsv"] = b"ratings\n", b"items\n"
    files = {"ratings": {"url": f"{server.url}/ratings/data.tsv"}, "items": {"url": f"{server.url}/items/data.tsv"}}
    manifest = fetch_dataset("x", files, tmp_path, FAST)
    assert Path(manifest["ratings"]["path"]).read_bytes() == b"ratings\n"
    assert Path(manifest["items"]["path"]).read_bytes() == b"items\n"
    again = fetch_dataset("x", files, tmp_path, FAST)  # and a cached re-run keeps them apart
    assert again == manifest and sum(server.requests.values()) == 2


def test_members_of_the_same_name_from_two_archives_stay_apart(server, tmp_path):
    first, second = zip_bytes({"a/data.dat": b"first\n"}), zip_bytes({"b/data.dat": b"second\n"})
    server.routes["/one.zip"], server.routes["/two.zip"] = first, second
    files = {
        "ratings": {"url": f"{server.url}/one.zip", "member": "a/data.dat"},
        "items": {"url": f"{server.url}/two.zip", "member": "b/data.dat"},
    }
    manifest = fetch_dataset("x", files, tmp_path, FAST)
    assert [Path(manifest[r]["path"]).read_bytes() for r in ("ratings", "items")] == [b"first\n", b"second\n"]


def test_a_truncated_download_without_sha256_is_retried_not_cached(server, tmp_path):
    server.routes["/big.tsv"] = PAYLOAD * 100
    server.truncate["/big.tsv"] = 1
    path = resolve_file({"url": f"{server.url}/big.tsv"}, tmp_path, "f", FAST)
    assert path.read_bytes() == PAYLOAD * 100 and server.requests["/big.tsv"] == 2


def test_a_download_that_is_always_truncated_fails_and_leaves_nothing(server, tmp_path):
    server.routes["/big.tsv"] = PAYLOAD * 100
    server.truncate["/big.tsv"] = 99
    with pytest.raises(
        DownloadError,
        match=(
            r"^f: could not download .*/big.tsv: truncated download \(600 of 1200 bytes\) \(the server keeps "
            r"closing early: .*set a local 'path'\)$"
        ),
    ):
        resolve_file({"url": f"{server.url}/big.tsv"}, tmp_path, "f", FAST)
    assert list(tmp_path.iterdir()) == []


def test_a_cached_file_cut_or_edited_later_is_fetched_again(server, tmp_path):
    server.routes["/train.tsv"] = PAYLOAD
    path = resolve_file({"url": f"{server.url}/train.tsv"}, tmp_path, "f", FAST)
    path.write_bytes(PAYLOAD[:5])  # e.g. a disk-full copy, no sha256 in the config
    assert resolve_file({"url": f"{server.url}/train.tsv"}, tmp_path, "f", FAST).read_bytes() == PAYLOAD
    assert server.requests["/train.tsv"] == 2


def test_a_new_sha256_for_the_same_url_fetches_again(server, tmp_path):
    server.routes["/train.tsv"] = b"old\n"
    resolve_file({"url": f"{server.url}/train.tsv"}, tmp_path, "f", FAST)
    server.routes["/train.tsv"] = PAYLOAD
    path = resolve_file({"url": f"{server.url}/train.tsv", "sha256": sha(PAYLOAD)}, tmp_path, "f", FAST)
    assert path.read_bytes() == PAYLOAD and server.requests["/train.tsv"] == 2


def test_a_corrupt_cached_archive_is_fetched_again(server, tmp_path):
    archive = zip_bytes({"m.dat": b"member\n"})
    server.routes["/a.zip"] = archive
    spec = {"url": f"{server.url}/a.zip", "member": "m.dat"}
    resolve_file(spec, tmp_path, "f", FAST)
    zip_path = next(tmp_path.glob("*/a.zip"))
    zip_path.write_bytes(archive[:10])  # cut after the fact
    for extracted in tmp_path.glob("*/m.dat*"):
        extracted.unlink()
    assert resolve_file(spec, tmp_path, "f", FAST).read_bytes() == b"member\n"
    assert server.requests["/a.zip"] == 2


def test_an_archive_corrupt_at_its_source_names_the_command_that_clears_the_cache(server, tmp_path):
    server.routes["/bad.zip"] = b"PK\x03\x04 not really a zip"
    with pytest.raises(
        DownloadError, match=rf"^f: .*bad.zip is not a valid zip archive .*fetched twice.*rm -r {tmp_path}$"
    ) as error:
        resolve_file({"url": f"{server.url}/bad.zip", "member": "m.dat"}, tmp_path, "f", FAST)
    assert "\n" not in str(error.value) and server.requests["/bad.zip"] == 2


def test_old_versions_are_dropped_from_the_cache(server, tmp_path):
    server.routes["/v1.tsv"], server.routes["/v2.tsv"] = b"1\n", b"2\n"
    fetch_dataset("x", {"ratings": {"url": f"{server.url}/v1.tsv"}}, tmp_path, FAST)
    manifest = fetch_dataset("x", {"ratings": {"url": f"{server.url}/v2.tsv"}}, tmp_path, FAST)
    assert not list(tmp_path.rglob("v1.tsv*"))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == sorted(
        Path(manifest["ratings"]["path"]).parent.iterdir()
    )
