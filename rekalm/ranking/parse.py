"""Read a generated ranking back into candidate ids (``generate`` mode), robustly.

The original split the answer on newlines, kept lines that start with a number and looked
each name up *exactly*; anything else vanished without a trace. Here:

1. :func:`parse_ranked_names` reads the list robustly: numbering variants ("1.", "1)",
   "(1)", "#1", "1 -"), bullets, markdown emphasis, a list squeezed onto one line, stray
   commentary, an echo of the "Here a list:" header. Order of appearance is the rank: a
   model that renumbers ("1. 1. 2.") or skips numbers still means the order it wrote.
2. :class:`CandidateMatcher` maps each name to a candidate: exact match after
   normalisation (case, accents, punctuation, a moved article "Matrix, The" -> "The
   Matrix", an optional "(1999)"), else fuzzy match (rapidfuzz ratio) at or above a
   threshold. A name that matches an already ranked candidate is a duplicate; one that
   matches nothing is hallucinated.
3. :func:`rank_generation` completes the list: candidates the model never named are
   appended after the ranked ones, in their prompt order, and flagged ``appended``, so every
   user's list is complete and metrics stay comparable across ablations.

Nothing here raises on model output: garbage gives an all-appended list and the counts say so.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from rekalm.common.parse_counts import ParseCounts

DEFAULT_FUZZY_THRESHOLD = 85.0

# "1. X", "1) X", "1.X", "1 - X", "(1) X", "[1] X", "#1 X", "No. 1 X"; an optional bullet and
# markdown emphasis around the number ("**1.** X", "- 1. X"). No "1:" form: it would read
# a bare "2001: A Space Odyssey" as item 2001.
_NUMBERED = re.compile(
    r"""^(?:[-*+•·‣◦>]\s*)?[*_]{0,2}\s*
        (?:
            (?:\#|no\.?\s*)\d{1,4}[.)\]:]?\s
          | [(\[]\s*\d{1,4}\s*[)\]][.:]?
          | \d{1,4}\s*(?:[.)\]]+|\s[-–—](?=\s))
        )
        [*_]{0,2}\s*(?P<name>.*)$""",
    re.IGNORECASE | re.VERBOSE,
)
_BULLET = re.compile(r"^[-*+•·‣◦]\s+(?P<name>.+)$")
# "Here a list:" (the trained prefix) or a chattier variant, with or without items after it.
_HEADER = re.compile(
    r"^here(?:'s|\s+is)?\s+(?:a|the|your|my)?\s*(?:ranked\s+|reordered\s+)?list\b[^:\n]*(?::|$)\s*", re.IGNORECASE
)
# A list squeezed onto one line: " 2. " where 2 follows the line's own "1. ".
_INLINE_NUMBER = re.compile(r"(?:^|(?<=\s))(\d{1,3})[.)]\s+")
_TRAILING_COMMENT = re.compile(r"\s+[-–—]\s+(?!.*\s[-–—]\s).*$")  # " - because ..." after a name
_YEAR = re.compile(r"\s*\(\s*\d{4}\s*\)\s*$")
_MOVED_ARTICLE = re.compile(
    r"^(?P<body>.+?),\s*(?P<article>the|a|an|les|le|la|l'|il|el|los|las|der|die|das)(?P<tail>\s*\(\s*\d{4}\s*\))?$",
    re.IGNORECASE,
)
_NON_WORD = re.compile(r"[^\w]+")


def _strip_emphasis(text: str) -> str:
    text = text.strip()
    # Markdown bold/italics and quotes around a whole name carry no meaning for matching.
    for mark in ("**", "__", "*", "_", "`", '"', "'", "“", "”", "«", "»"):
        closing = {"“": "”", "«": "»"}.get(mark, mark)
        if len(text) > 2 * len(mark) and text.startswith(mark) and text.endswith(closing):
            text = text[len(mark) : -len(closing)].strip()
    return text.strip(" \t*_`")


def _split_inline_list(line: str) -> list[str]:
    """'1. A 2. B 3. C' -> ['1. A', '2. B', '3. C'] when the numbers count up from the first."""
    matches = list(_INLINE_NUMBER.finditer(line))
    if len(matches) < 2 or matches[0].start() != 0:
        return [line]
    expected = int(matches[0].group(1))
    starts = []
    for match in matches:
        if int(match.group(1)) == expected:
            starts.append(match.start())
            expected += 1
    if len(starts) < 2:
        return [line]
    return [line[a:b].strip() for a, b in zip(starts, starts[1:] + [len(line)])]


def _marked_name(line: str) -> str | None:
    """The item text of a list line, or None when the line carries no list marker."""
    numbered = _NUMBERED.match(line)
    if numbered:
        return numbered.group("name")
    bullet = _BULLET.match(line)
    return bullet.group("name") if bullet else None


def parse_ranked_names(text: str | None) -> list[str]:
    """The item names of a generated list, in the order written (may contain duplicates)."""
    if not text or not isinstance(text, str):
        return []
    lines: list[str] = []
    for raw in text.replace("\r", "\n").split("\n"):
        stripped = _HEADER.sub("", raw.strip(), count=1).strip()
        if stripped:
            lines.extend(_split_inline_list(stripped))
    marked = [(_marked_name(line), line) for line in lines]
    has_markers = any(name is not None for name, _ in marked)
    names = []
    for name, line in marked:
        if name is None and has_markers:
            continue  # commentary between or after list items
        cleaned = _strip_emphasis(line if name is None else name)
        if any(ch.isalnum() for ch in cleaned):  # "---", "!!!": separators, not items
            names.append(cleaned)
    return names


def normalise_name(name: str) -> str:
    """Case-, accent- and punctuation-insensitive key; 'Matrix, The (1999)' == 'The Matrix (1999)'."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold().strip()
    moved = _MOVED_ARTICLE.match(text)
    if moved:
        text = f"{moved.group('article')} {moved.group('body')}{moved.group('tail') or ''}"
    text = text.replace("&", " and ")
    return " ".join(_NON_WORD.sub(" ", text).split())


def name_keys(name: str, generated: bool = False) -> list[str]:
    """Lookup keys of a name, most specific first: as is, then without a trailing '(year)'.

    A generated name also gets keys without a trailing comment ("X - a classic"); candidate
    names do not, since real titles contain " - " ("Star Wars: Episode IV - A New Hope").
    """
    variants = [name, _YEAR.sub("", name)]
    uncommented = _TRAILING_COMMENT.sub("", name) if generated else name
    if uncommented != name:
        variants += [uncommented, _YEAR.sub("", uncommented)]
    keys: list[str] = []
    for variant in variants:
        key = normalise_name(variant)
        if key and key not in keys:
            keys.append(key)
    return keys


class CandidateMatcher:
    """Maps generated names to a user's candidates (indices into ``names``)."""

    def __init__(self, names: Sequence[str], threshold: float = DEFAULT_FUZZY_THRESHOLD) -> None:
        if not 0 <= threshold <= 100:
            raise ValueError(f"fuzzy_threshold: expected a similarity between 0 and 100, got {threshold}")
        # Imported here: building a matcher is the only use of rapidfuzz.
        from rapidfuzz import fuzz, process

        self._ratio, self._extract_one = fuzz.ratio, process.extractOne
        self.threshold = threshold
        self._index: dict[str, list[int]] = {}
        for position, name in enumerate(names):
            for key in name_keys(name):
                self._index.setdefault(key, []).append(position)
        self._keys = list(self._index)

    def _pick(self, positions: list[int], used: set[int]) -> tuple[int, bool]:
        """First unused candidate among equally good matches; else report a duplicate."""
        for position in positions:
            if position not in used:
                return position, False
        return positions[0], True

    def match(self, generated: str, used: set[int]) -> tuple[int | None, str]:
        """(candidate index or None, 'exact' | 'fuzzy' | 'duplicate' | 'hallucinated')."""
        keys = name_keys(generated, generated=True)
        for key in keys:
            if key in self._index:
                position, duplicate = self._pick(self._index[key], used)
                return position, "duplicate" if duplicate else "exact"
        best: tuple[float, str] | None = None
        for key in keys:
            found = self._extract_one(key, self._keys, scorer=self._ratio, score_cutoff=self.threshold)
            if found and (best is None or found[1] > best[0]):
                best = (found[1], found[0])
        if best is None:
            return None, "hallucinated"
        position, duplicate = self._pick(self._index[best[1]], used)
        return position, "duplicate" if duplicate else "fuzzy"


def match_names(
    generated: Sequence[str], candidate_names: Sequence[str], threshold: float = DEFAULT_FUZZY_THRESHOLD
) -> tuple[list[int], ParseCounts]:
    """Candidate indices in the model's order (duplicates and inventions dropped) and the counts."""
    matcher = CandidateMatcher(candidate_names, threshold)
    ranked: list[int] = []
    used: set[int] = set()
    tally = {"exact": 0, "fuzzy": 0, "duplicate": 0, "hallucinated": 0}
    for name in generated:
        position, outcome = matcher.match(name, used)
        tally[outcome] += 1
        if outcome in ("exact", "fuzzy") and position is not None:
            ranked.append(position)
            used.add(position)
    counts = ParseCounts(
        n_generated=len(generated),
        n_exact=tally["exact"],
        n_fuzzy=tally["fuzzy"],
        n_duplicates=tally["duplicate"],
        n_hallucinated=tally["hallucinated"],
        n_appended=len(candidate_names) - len(ranked),
    )
    return ranked, counts


def rank_generation(
    text: str | None, candidate_names: Sequence[str], threshold: float = DEFAULT_FUZZY_THRESHOLD
) -> tuple[list[int], list[bool], ParseCounts]:
    """The complete ranking of one user: (candidate indices, appended flags, counts)."""
    ranked, counts = match_names(parse_ranked_names(text), candidate_names, threshold)
    seen = set(ranked)
    appended = [position for position in range(len(candidate_names)) if position not in seen]
    return ranked + appended, [False] * len(ranked) + [True] * len(appended), counts
