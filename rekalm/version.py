"""The package version, written once (``pyproject.toml``'s ``version``).

``importlib.metadata`` answers for an installed package (``make`` reinstalls it whenever
``pyproject.toml`` changes); a checkout imported without installing it (the data and
metrics conda envs import ``rekalm`` from the repository) reads ``pyproject.toml``.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def package_version() -> str:
    try:
        return version("rekalm")
    except PackageNotFoundError:
        return str(tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["version"])


__version__ = package_version()
