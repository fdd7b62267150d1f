"""Reading and checking a dataset's raw files, for the format parsers of :mod:`rekalm.data.prepare`
(built-in or registered by an extension).

A file may be plain, gzip/bz2/xz-compressed or a one-file zip (:func:`open_binary`). Text is
read as UTF-8 when the whole file decodes as such, else as Latin-1 (:func:`text_encoding`;
GroupLens' files), and the choice is logged. :func:`read_table` reads a delimited file where
only an empty field is missing ("NA" and "null" are real names). Every failure is a
``ValueError`` with one line naming the file, and the row and column where there is one::

    >>> import pandas as pd
    >>> binarize(pd.Series([3.0, 4.0, 5.0]), ">= 4", "ratings.tsv").tolist()
    [0, 1, 1]
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import logging
import lzma
import re
import zipfile
import zlib
from collections.abc import Callable, Hashable, Sequence
from io import BufferedIOBase
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

_LIKE_RULE = re.compile(r"^\s*(>=|>)\s*(-?\d+(?:\.\d+)?)\s*$")


def binarize(ratings: pd.Series, like_if: str | None, label: str) -> pd.Series:
    """Turn ratings into liked (1) / disliked (0) with a rule such as ``">= 4"``."""
    if like_if is None:
        raise ValueError(f"{label}: ratings need a like rule (config like_if, e.g. '>= 4')")
    match = _LIKE_RULE.match(like_if)
    if not match:
        raise ValueError(f"{label}: like_if {like_if!r} is not of the form '>= N' or '> N'")
    operator, threshold = match.group(1), float(match.group(2))
    liked = ratings >= threshold if operator == ">=" else ratings > threshold
    return liked.astype("int8")


def check_scale(ratings: pd.Series, low: float, high: float, path: Path, column: str) -> None:
    """Ratings outside the dataset's scale are an error, not a like or a dislike."""
    outside = ratings.notna() & ((ratings < low) | (ratings > high))
    if outside.any():
        row = int(np.flatnonzero(outside.to_numpy())[0])
        raise ValueError(
            f"{path}: column {column!r} row {row + 1}: rating {ratings.iloc[row]:g} is outside the scale "
            f"{low:g}..{high:g} "
            f"({int(outside.sum())} such row(s)); is this the right file?"
        )


# Typeshed calls a zip member IO[bytes] and a gzip file a BufferedIOBase (not an IO[bytes]);
# both read bytes and close as context managers, which is all the readers here use.
BinaryFile = IO[bytes] | BufferedIOBase
_OPENERS: dict[str, Callable[..., BinaryFile]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# What a truncated or corrupt compressed file raises while it is read.
READ_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError, zipfile.BadZipFile, UnicodeDecodeError, ValueError)


def open_binary(path: Path) -> BinaryFile:
    suffix = path.suffix.lower()
    if suffix == ".zip":
        bundle = zipfile.ZipFile(path)
        names = [name for name in bundle.namelist() if not name.endswith("/")]
        if len(names) != 1:
            raise ValueError(f"expected one file in the zip archive, found {len(names)}")
        return bundle.open(names[0])
    return _OPENERS.get(suffix, open)(path, "rb")


def read_failure(path: Path, error: BaseException) -> ValueError:
    first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
    return ValueError(
        f"{path}: cannot be read ({type(error).__name__}: {first_line}); truncated or corrupt? download it again"
    )


def text_encoding(path: Path) -> str:
    """'utf-8' when the whole file decodes as UTF-8, else 'latin-1' (which decodes anything).

    Decoding the whole file (not a sample) is what makes the choice safe: a Latin-1 byte
    late in the file would otherwise turn into an error or mojibake halfway through.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open_binary(path) as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                decoder.decode(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        log.info("%s is not UTF-8; reading it as Latin-1", path)
        return "latin-1"
    except READ_ERRORS as error:
        raise read_failure(path, error) from None
    return "utf-8"


def read_table(path: Path, **kwargs: object) -> pd.DataFrame:
    # Only an empty field is missing: "NA", "None" or "null" are real names.
    options: dict[str, object] = {
        "keep_default_na": False,
        "na_values": [""],
        "encoding": text_encoding(path),
        **kwargs,
    }
    try:
        return pd.read_csv(path, **options)  # type: ignore[call-overload]
    except pd.errors.ParserError as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{path}: cannot be parsed ({first_line})") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the file is empty") from None
    except READ_ERRORS as error:
        raise read_failure(path, error) from None


def no_nulls(frame: pd.DataFrame, columns: Sequence[Hashable], path: Path) -> None:
    for column in columns:
        missing = frame[column].isna().to_numpy()
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise ValueError(
                f"{path}: column {column!r} row {row + 1}: empty value ({int(missing.sum())} such row(s))"
            )


def numeric_column(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(
            f"{path}: column {column!r} row {row + 1}: expected a number, got {frame[column].iloc[row]!r}"
        )
    return values
