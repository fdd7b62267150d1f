"""The one normalisation of display names, shared by the data and the LLM stages."""

from __future__ import annotations


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines, tabs, U+2028 ...) as one space.

    One item per line: a line break inside a name would split it into two "items". This is
    THE normalisation of display names: ``prepare`` applies it to every name, so the name a
    prompt shows, the target lists and the name inference scores are the same string.

    >>> one_line("The  Matrix\\n(1999)")
    'The Matrix (1999)'
    """
    return " ".join(text.split())
