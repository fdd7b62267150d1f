"""Shared start-up for the thin Snakemake scripts.

Snakemake puts this folder on ``sys.path`` when it runs a script, so every script can
``from _common import start`` before importing the library: it sends stderr and logging
to the rule's log file and makes the ``rekalm`` package importable from the repository
even where it is not pip-installed (e.g. inside a conda env built from envs/). It also
points matplotlib's config/cache folder at ``.snakemake/matplotlib`` in the working
directory (unless ``MPLCONFIGDIR`` is set), so no job writes into ``$HOME``, and imports
the config's extension modules (``rekalm.extensions``), whose units the job may look up.

A failing job's reason reaches the console as well as its log: Snakemake shows a job's own
stderr there but only ``message: None`` and the log's path for the error, so every ERROR
record, and the last line of an uncaught exception, is also written to the stderr the job
was started with (once: not when that stderr is the log file itself).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parents[1]


# Matplotlib's font cache would otherwise go to ~/.cache/matplotlib (or ~/.config).
MPLCONFIGDIR = Path(".snakemake") / "matplotlib"


def start(snakemake: Any) -> logging.Logger:
    os.environ.setdefault("MPLCONFIGDIR", str(MPLCONFIGDIR.resolve()))
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    console = sys.stderr
    if snakemake.log:
        sys.stderr = open(snakemake.log[0], "w", buffering=1)
    # force=True: the root logger gets exactly these handlers, however often this runs.
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    wildcards = ", ".join(f"{name}={value}" for name, value in snakemake.wildcards.items())
    job = f"rule {snakemake.rule}" + (f" ({wildcards})" if wildcards else "")
    if not _same_file(console, sys.stderr):
        to_console = logging.StreamHandler(console)
        to_console.setLevel(logging.ERROR)
        to_console.setFormatter(logging.Formatter(f"{job}: %(message)s"))
        handlers.append(to_console)
        sys.excepthook = _excepthook(console, job, snakemake.log[0] if snakemake.log else None)
    logging.basicConfig(
        handlers=handlers, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    from rekalm.extensions import load_extensions

    # Units registered by extension modules (a dataset format, a baseline, ...) are known here too.
    load_extensions(snakemake.config.get("extensions") or [])
    return logging.getLogger(f"rekalm.{snakemake.rule}")


def _same_file(one: IO[str], other: IO[str]) -> bool:
    if one is other:
        return True
    try:
        first, second = os.fstat(one.fileno()), os.fstat(other.fileno())
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture)
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def _excepthook(console: IO[str], job: str, log_file: str | None) -> Any:
    """The traceback goes to the log (sys.stderr) as always; its last line to the console."""

    def hook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
        sys.__excepthook__(kind, error, traceback)
        message = " ".join(str(error).split())
        where = f" (traceback in {log_file})" if log_file else ""
        print(f"{job}: {kind.__name__}: {message}{where}", file=console, flush=True)

    return hook


@contextmanager
def one_line_errors(log: logging.Logger, *errors: type[BaseException]) -> Iterator[None]:
    """Errors that are the user's to fix (no GPU where one was asked for, ...) end the job
    with their one-line message in the log instead of a traceback."""
    try:
        yield
    except errors as error:
        log.error("%s", error)
        sys.exit(1)
