"""Parsing generated rankings (generate mode): a corpus of messy outputs, matching, counts."""

from __future__ import annotations

import pytest

from rekalm.common.parse_counts import PARSE_COUNT_COLUMNS, ParseCounts
from rekalm.ranking.parse import (
    CandidateMatcher,
    match_names,
    normalise_name,
    parse_ranked_names,
    rank_generation,
)

CANDIDATES = [
    "Matrix, The (1999)",
    "Toy Story (1995)",
    "Toy Story 2 (1999)",
    "Star Wars: Episode IV - A New Hope (1977)",
    "2001: A Space Odyssey (1968)",
    "Amélie (2001)",
    "Psycho (1960)",
    "Psycho (1998)",
]


def ranked_names(text: str | None, threshold: float = 85.0) -> tuple[list[str], list[str], ParseCounts]:
    order, appended, counts = rank_generation(text, CANDIDATES, threshold)
    model = [CANDIDATES[i] for i, flag in zip(order, appended) if not flag]
    tail = [CANDIDATES[i] for i, flag in zip(order, appended) if flag]
    return model, tail, counts


# --- reading the list ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Here a list:\n1. A\n2. B\n3. C", ["A", "B", "C"]),
        ("1) A\n2) B", ["A", "B"]),
        ("(1) A\n(2) B", ["A", "B"]),
        ("[1] A\n[2] B", ["A", "B"]),
        ("#1 A\n#2 B", ["A", "B"]),
        ("1 - A\n2 - B", ["A", "B"]),
        ("1.A\n2.B", ["A", "B"]),
        ("**1.** A\n**2.** B", ["A", "B"]),
        ('1. **A**\n2. *B*\n3. "C"', ["A", "B", "C"]),
        ("- A\n* B\n• C", ["A", "B", "C"]),
        ("No. 1 A\nNo. 2 B", ["A", "B"]),
        # the whole list on one line, the header included
        ("Here a list: 1. A 2. B 3. C", ["A", "B", "C"]),
        # stray commentary around a marked list is not an item
        ("Sure! Based on your taste:\n1. A\nThis one is great.\n2. B\nEnjoy!", ["A", "B"]),
        # no markers at all: every non-header line is an item
        ("Here a list:\nA\nB\n", ["A", "B"]),
        # renumbered / repeated numbers: order of appearance is the rank
        ("1. A\n1. B\n5. C\n2. D", ["A", "B", "C", "D"]),
        # separators and punctuation-only lines are not items
        ("1. A\n---\n!!!\n2. B", ["A", "B"]),
        ("Here is a ranked list of movies for you:\n1. A", ["A"]),
        ("  1.   A  \r\n\r\n 2. B\t", ["A", "B"]),
    ],
)
def test_numbering_variants_are_read(text: str, expected: list[str]) -> None:
    assert parse_ranked_names(text) == expected


def test_titles_with_numbers_keep_their_numbers() -> None:
    text = "1. 2001: A Space Odyssey (1968)\n2. 12 Angry Men (1957)\n3. Apollo 13 (1995)"
    assert parse_ranked_names(text) == ["2001: A Space Odyssey (1968)", "12 Angry Men (1957)", "Apollo 13 (1995)"]


@pytest.mark.parametrize(
    "garbage", ["", None, "   \n\n  ", "!!!!", "\x00\x01\x02", "1.\n2.\n3.", "<|im_end|>", 12345, ["1. A"]]
)
def test_garbage_never_raises_and_reads_no_name(garbage: object) -> None:
    names = parse_ranked_names(garbage)  # type: ignore[arg-type]
    assert all(any(ch.isalnum() for ch in name) for name in names)


# --- normalisation and matching ------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("Matrix, The (1999)", "The Matrix (1999)"),
        ("Amélie", "AMELIE"),
        ("Star Wars: Episode IV - A New Hope", "star wars episode iv a new hope"),
        ("Tom & Jerry", "Tom and Jerry"),
        ("Misérables, Les (1995)", "Les Miserables (1995)"),
    ],
)
def test_normalisation_equates_spelling_variants(left: str, right: str) -> None:
    assert normalise_name(left) == normalise_name(right)


def test_exact_fuzzy_duplicate_and_hallucinated_are_told_apart() -> None:
    matcher = CandidateMatcher(CANDIDATES, threshold=85)
    assert matcher.match("The Matrix", set()) == (0, "exact")  # article moved, year left out
    assert matcher.match("The Matrx (1999)", set()) == (0, "fuzzy")
    assert matcher.match("The Matrix", {0}) == (0, "duplicate")
    assert matcher.match("The Matrix Reloaded (2003)", set()) == (None, "hallucinated")
    assert matcher.match("Jurassic Park (1993)", set()) == (None, "hallucinated")


def test_same_title_different_years_pick_the_year_then_the_first_unused() -> None:
    matcher = CandidateMatcher(CANDIDATES)
    assert matcher.match("Psycho (1998)", set()) == (7, "exact")
    assert matcher.match("Psycho", set()) == (6, "exact")
    assert matcher.match("Psycho", {6}) == (7, "exact")
    assert matcher.match("Psycho", {6, 7}) == (6, "duplicate")


def test_threshold_controls_fuzzy_acceptance() -> None:
    assert CandidateMatcher(CANDIDATES, threshold=85).match("Toy Stroy", set())[1] == "fuzzy"
    assert CandidateMatcher(CANDIDATES, threshold=99).match("Toy Stroy", set())[1] == "hallucinated"
    with pytest.raises(ValueError, match="fuzzy_threshold"):
        CandidateMatcher(CANDIDATES, threshold=150)


def test_trailing_comment_is_ignored_but_real_dashes_are_kept() -> None:
    matcher = CandidateMatcher(CANDIDATES)
    assert matcher.match("Toy Story - a family classic", set()) == (1, "exact")
    assert matcher.match("Star Wars: Episode IV - A New Hope (1977)", set()) == (3, "exact")


# --- whole generations: the messy corpus ---------------------------------------------------


def test_clean_generation_ranks_everything() -> None:
    text = "Here a list:\n" + "\n".join(f"{i}. {name}" for i, name in enumerate(reversed(CANDIDATES), start=1))
    model, tail, counts = ranked_names(text)
    assert model == list(reversed(CANDIDATES)) and tail == []
    assert counts == ParseCounts(n_generated=8, n_exact=8, n_appended=0)


def test_renumbered_partial_repeated_invented_generation() -> None:
    text = (
        "Here a list:\n"
        "1. The Matrix (1999)\n"
        "1. Toy Story 2\n"  # renumbered
        "2. the matrix\n"  # repeated (different spelling)
        "3. Jurassic Park (1993)\n"  # invented
        "4. Amelie\n"  # accents dropped
        "5. Star Wars: Episode IV - A New Hop"  # cut off by the token budget
    )
    model, tail, counts = ranked_names(text)
    assert model == [
        "Matrix, The (1999)",
        "Toy Story 2 (1999)",
        "Amélie (2001)",
        "Star Wars: Episode IV - A New Hope (1977)",
    ]
    assert tail == [
        "Toy Story (1995)",
        "2001: A Space Odyssey (1968)",
        "Psycho (1960)",
        "Psycho (1998)",
    ]  # prompt order
    assert counts == ParseCounts(n_generated=6, n_exact=3, n_fuzzy=1, n_duplicates=1, n_hallucinated=1, n_appended=4)


@pytest.mark.parametrize("text", ["", None, "I cannot help with that.", "1.\n2.\n3.", "🙂🙂🙂", "x" * 10_000])
def test_empty_or_garbage_generation_appends_every_candidate(text: str | None) -> None:
    model, tail, counts = ranked_names(text)
    assert model == [] and tail == CANDIDATES
    assert counts.n_appended == len(CANDIDATES)
    assert counts.n_exact == counts.n_fuzzy == counts.n_duplicates == 0


def test_every_list_is_a_complete_permutation() -> None:
    corpus = [
        "1. Psycho\n2. Psycho\n3. Psycho\n4. Psycho",
        "- Toy Story\n- Toy Story 2\n- Toy Story 3",
        "Here a list: 1. Amélie 2. Amelie 3. AMÉLIE (2001)",
        "1. The Matrix (1999)\n2. Matrix, The (1999)\n3. MATRIX THE 1999",
    ]
    for text in corpus:
        order, appended, counts = rank_generation(text, CANDIDATES)
        assert sorted(order) == list(range(len(CANDIDATES)))
        assert appended == sorted(appended)  # model-ranked first, appended after
        assert counts.n_exact + counts.n_fuzzy + counts.n_duplicates + counts.n_hallucinated == counts.n_generated
        assert counts.n_appended == sum(appended)


def test_match_names_counts_and_columns() -> None:
    ranked, counts = match_names(["Toy Story", "Toy Story", "Nope Nope Nope"], CANDIDATES)
    assert ranked == [1]
    assert counts.as_dict() == {
        "n_generated": 3,
        "n_exact": 1,
        "n_fuzzy": 0,
        "n_duplicates": 1,
        "n_hallucinated": 1,
        "n_appended": 7,
    }
    assert tuple(counts.as_dict()) == PARSE_COUNT_COLUMNS


def test_no_candidates() -> None:
    assert rank_generation("1. A\n2. B", []) == ([], [], ParseCounts(n_generated=2, n_hallucinated=2))
