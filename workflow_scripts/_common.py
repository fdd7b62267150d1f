"""Shared start-up for the thin Snakemake scripts.

Snakemake puts this folder on ``sys.path`` when it runs a script, so every script can
``from _common import start`` before importing the library: it sends stderr and logging
to the rule's log file and makes the ``rekalm`` package importable from the repository
even where it is not pip-installed (e.g. inside a conda env built from envs/). It also
points matplotlib's config/cache folder at ``.snakemake/matplotlib`` in the working
directory (unless ``MPLCONFIGDIR`` is set), so no job writes into ``$HOME``, and imports
the config's extension modules (``rekalm.extensions``), whose units the job may look up.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


# Matplotlib's font cache would otherwise go to ~/.cache/matplotlib (or ~/.config).
MPLCONFIGDIR = Path(".snakemake") / "matplotlib"


def start(snakemake: Any) -> logging.Logger:
    os.environ.setdefault("MPLCONFIGDIR", str(MPLCONFIGDIR.resolve()))
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    if snakemake.log:
        sys.stderr = open(snakemake.log[0], "w", buffering=1)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    from rekalm.extensions import load_extensions

    # Units registered by extension modules (a dataset format, a baseline, ...) are known here too.
    load_extensions(snakemake.config.get("extensions") or [])
    return logging.getLogger(f"rekalm.{snakemake.rule}")


@contextmanager
def one_line_errors(log: logging.Logger, *errors: type[BaseException]) -> Iterator[None]:
    """Errors that are the user's to fix (no GPU where one was asked for, ...) end the job
    with their one-line message in the log instead of a traceback."""
    try:
        yield
    except errors as error:
        log.error("%s", error)
        sys.exit(1)
