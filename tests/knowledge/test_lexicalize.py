"""Lexicalization: sentence templates, relation/value alignment (the original misaligned them), names (kept intact),
the source registry, and determinism."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from rekalm.common.io import read_jsonl, write_parquet
from rekalm.knowledge import lexicalize as lx

MOVIE = {
    "name": "movie",
    "item_noun": "movie",
    "item_intro": "{name} is a {item_noun}.",
    "relations": {
        "director": {
            "uri": "http://dbpedia.org/ontology/director",
            "template": "Guiding the vision of this movie is the director, {values}.",
        },
        "cinematography": {
            "uri": "http://dbpedia.org/ontology/cinematography",
            "template": "The cinematography of this movie is by {values}.",
        },
        "basedOn": {"uri": "http://dbpedia.org/ontology/basedOn", "template": "This movie is based on {values}."},
        "editing": {"uri": "http://dbpedia.org/ontology/editing", "template": "This movie was edited by {values}."},
        "starring": {
            "uri": "http://dbpedia.org/ontology/starring",
            "template": "The cast of this movie includes {values}.",
        },
        "musicComposer": {
            "uri": "http://dbpedia.org/ontology/musicComposer",
            "template": "The music of this movie was composed by {values}.",
        },
    },
    "attribute_relations": {
        "genre": {"column": "genres", "template": "This movie belongs to the {values} genre."},
        "release_year": {"column": "year", "template": "This movie was released in {values}."},
    },
}

# Jumanji (1995) as DBpedia describes it: the original wrote its cinematographer under
# "based on", its editor under "set in" and its director under "music composed by".
JUMANJI = [
    ("director", "Joe Johnston"),
    ("cinematography", "Thomas E. Ackerman"),
    ("editing", "Robert Dalva"),
    ("starring", "Robin Williams"),
    ("starring", "Kirsten Dunst"),
    ("starring", "Bonnie Hunt"),
    ("musicComposer", "James Horner"),
    ("genre", "Adventure"),
    ("genre", "Children's"),
    ("release_year", "1995"),
]


def items_table(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame({"item": [i for i, _ in rows], "name": [n for _, n in rows]})


def triples_table(item: str, facts: list[tuple[str, str]], source: str = "dbpedia") -> pd.DataFrame:
    return pd.DataFrame(
        {"item": item, "relation": [r for r, _ in facts], "value": [v for _, v in facts], "source": source}
    )


def test_graph_sentences_align_relations_and_values_for_a_known_item():
    sentences = lx.graph_sentences("Jumanji (1995)", _facts(JUMANJI), MOVIE)
    assert sentences[0] == (None, "Jumanji (1995) is a movie.")
    by_relation = {relation: sentence for relation, sentence in sentences[1:]}
    assert set(by_relation) == {r for r, _ in JUMANJI}
    all_values = {v for _, v in JUMANJI}
    for relation, sentence in by_relation.items():
        own = {v for r, v in JUMANJI if r == relation}
        assert all(v in sentence for v in own), (relation, sentence)
        assert not any(v in sentence for v in all_values - own), (
            f"{relation!r} sentence carries another relation's value: {sentence}"
        )
        template = lx.relation_templates(MOVIE)[relation]
        assert sentence == template.format(values=lx.join_values([v for r, v in JUMANJI if r == relation]))
    assert by_relation["director"] == "Guiding the vision of this movie is the director, Joe Johnston."
    assert by_relation["cinematography"] == "The cinematography of this movie is by Thomas E. Ackerman."
    assert "basedOn" not in by_relation  # no basedOn fact: no "based on" sentence at all


def test_graph_text_of_known_item_contains_each_sentence_once():
    rows, stats = lx.lexicalize("graph", triples_table("2", JUMANJI), items_table([("2", "Jumanji (1995)")]), MOVIE)
    assert [r["item"] for r in rows] == ["2"]
    text = rows[0]["text"]
    assert text.startswith(
        "Jumanji (1995) is a movie. Guiding the vision of this movie is the director, Joe Johnston."
    )
    for _relation, sentence in lx.graph_sentences("Jumanji (1995)", _facts(JUMANJI), MOVIE)[1:]:
        assert text.count(sentence) == 1
    assert "based on Thomas" not in text and "edited by Robert Dalva" in text
    assert "The cast of this movie includes Robin Williams, Kirsten Dunst and Bonnie Hunt." in text
    assert stats["items"] == 1 and stats["items_per_relation"]["starring"] == 1


def test_graph_accepts_attribute_triples_and_skips_untemplated_relations_with_a_count():
    triples = pd.concat(
        [
            triples_table(
                "1", [("genre", "Action"), ("genre", "Sci-Fi"), ("release_year", "1999")], source="attributes"
            ),
            triples_table(
                "1", [("director", "Lana Wachowski"), ("director", "Lana Wachowski"), ("budget", "63000000")]
            ),
        ]
    )
    rows, stats = lx.lexicalize("graph", triples, items_table([("1", "Matrix, The (1999)")]), MOVIE)
    text = rows[0]["text"]
    assert text.startswith("Matrix, The (1999) is a movie.")
    assert "Guiding the vision of this movie is the director, Lana Wachowski." in text  # duplicate value once
    assert "This movie belongs to the Action and Sci-Fi genre." in text
    assert "This movie was released in 1999." in text
    assert "63000000" not in text
    assert stats["skipped_untemplated_values"] == {"budget": 1}


def test_templates_come_from_relations_then_attribute_relations():
    domain = {
        "item_noun": "book",
        "relations": {
            "author": {"uri": "x", "template": "This book was written by {values}."},
            "genre": {"uri": "y", "template": "Its genre is {values}."},
            "series": {"uri": "z"},
        },
        "attribute_relations": {
            "genre": {"column": "genres", "template": "Ignored {values}."},
            "publication_year": {"column": "year", "template": "It was published in {values}."},
        },
    }
    assert lx.relation_templates(domain) == {
        "author": "This book was written by {values}.",
        "genre": "Its genre is {values}.",
        "publication_year": "It was published in {values}.",
    }


def test_display_names_are_kept_intact_in_every_source():
    names = [
        ("1", "Matrix, The (1999)"),
        ("2", "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)"),
        ("3", "Se7en (1995)"),
    ]
    items = items_table(names)
    graph, _ = lx.lexicalize("graph", triples_table("2", [("director", "Jean-Pierre Jeunet")]), items, MOVIE)
    assert graph[0]["text"].startswith("Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001) is a movie.")
    rules = pd.DataFrame(
        {"antecedent": [["1", "3"]], "consequent": [["2"]], "support": [0.1], "confidence": [0.5], "lift": [1.2]}
    )
    collab, _ = lx.lexicalize("collab", rules, items, MOVIE)
    assert collab[0]["text"] == (
        "People who like Matrix, The (1999) and Se7en (1995) also tend to like Amélie (Fabuleux destin "
        "d'Amélie Poulain, Le) (2001)."
    )
    text, _ = lx.lexicalize(
        "text", pd.DataFrame({"item": ["1"], "abstract": ["The Matrix is a 1999 film."]}), items, MOVIE
    )
    assert text[0]["text"].startswith("Matrix, The (1999) is a movie. ")


def test_collab_one_sentence_per_rule_with_rule_fields_for_in_prompt_use():
    items = items_table([("a", "Heat (1995)"), ("b", "Casino (1995)"), ("c", "Goodfellas (1990)")])
    rules = pd.DataFrame(
        {
            "antecedent": [["a", "b"], ["c"]],
            "consequent": [["c"], ["a", "b"]],
            "support": [0.2, 0.2],
            "confidence": [0.75, 0.4],
            "lift": [2.0, 1.5],
        }
    )
    rows, stats = lx.lexicalize("collab", rules, items, MOVIE)
    assert rows == [
        {
            "rule": "r000000",
            "antecedent": ["a", "b"],
            "consequent": ["c"],
            "confidence": 0.75,
            "text": "People who like Heat (1995) and Casino (1995) also tend to like Goodfellas (1990).",
        },
        {
            "rule": "r000001",
            "antecedent": ["c"],
            "consequent": ["a", "b"],
            "confidence": 0.4,
            "text": "People who like Goodfellas (1990) also tend to like Heat (1995) and Casino (1995).",
        },
    ]
    assert stats["rules"] == 2 and stats["key"] == "rule"


def test_text_source_collapses_whitespace_and_skips_empty_abstracts():
    items = items_table([("1", "Heat (1995)"), ("2", "Casino (1995)")])
    abstracts = pd.DataFrame({"item": ["2", "1"], "abstract": ["Casino is a 1995\n\ncrime film.  ", None]})
    rows, stats = lx.lexicalize("text", abstracts, items, MOVIE)
    assert rows == [{"item": "2", "text": "Casino (1995) is a movie. Casino is a 1995 crime film."}]
    assert stats["empty_abstracts"] == 1


@pytest.fixture
def restored_lexicalizers():
    saved = dict(lx.LEXICALIZERS)
    yield
    lx.LEXICALIZERS.clear()
    lx.LEXICALIZERS.update(saved)


def test_a_new_source_is_one_registered_function(restored_lexicalizers):
    @lx.register_lexicalizer("captions", key="item", required_columns=("item", "caption"))
    def lexicalize_captions(table, names, domain):
        return [
            {"item": i, "text": f"The poster of {names[i]} shows {c}."}
            for i, c in zip(table["item"], table["caption"])
        ], {}

    rows, stats = lx.lexicalize(
        "captions",
        pd.DataFrame({"item": ["1"], "caption": ["a man in a coat"]}),
        items_table([("1", "Heat (1995)")]),
        MOVIE,
    )
    assert rows == [{"item": "1", "text": "The poster of Heat (1995) shows a man in a coat."}]
    assert stats == {"source": "captions", "key": "item", "rows": 1}


@pytest.mark.parametrize(
    ("returned", "got"),
    [(None, "NoneType"), ([], "list"), (([{"item": "1", "text": "x"}],), "tuple"), (("rows", {}), "(str, dict)")],
)
def test_a_lexicalizer_returning_something_else_than_rows_and_stats_is_named(restored_lexicalizers, returned, got):
    """An extension's lexicalizer that forgets its return gave a bare "cannot unpack
    non-iterable NoneType object"."""

    @lx.register_lexicalizer("forgetful", key="item", required_columns=("item",))
    def lexicalize_forgetfully(table, names, domain):
        return returned

    with pytest.raises(TypeError) as error:
        lx.lexicalize("forgetful", pd.DataFrame({"item": ["1"]}), items_table([("1", "Heat (1995)")]), MOVIE)
    assert str(error.value) == (
        f"lexicalize: lexicalizer 'forgetful' ({__name__}.{lexicalize_forgetfully.__qualname__} ({__file__})) "
        f"returned {got}; expected (rows, stats): a list of row dicts and a dict of statistics"
    )


@pytest.mark.parametrize(
    ("source", "table", "domain", "message"),
    [
        ("pictures", pd.DataFrame({"item": ["1"]}), MOVIE, "unknown source 'pictures'"),
        (
            "graph",
            pd.DataFrame({"item": ["1"], "relation": ["director"]}),
            MOVIE,
            r"graph input: missing column\(s\) \['value'\]",
        ),
        ("graph", triples_table("9", [("director", "X")]), MOVIE, "triples.parquet: item '9' is not in items.parquet"),
        (
            "graph",
            triples_table("1", [("director", "X")]),
            {**MOVIE, "relations": {"director": {"template": "By {director}."}}},
            r"unknown placeholder\(s\) \['director'\]",
        ),
        (
            "graph",
            triples_table("1", [("director", "X")]),
            {**MOVIE, "relations": {"director": {"template": "  "}}},
            "non-empty template",
        ),
    ],
)
def test_bad_input_raises_one_line_value_error(source, table, domain, message):
    with pytest.raises(ValueError, match=message) as error:
        lx.lexicalize(source, table, items_table([("1", "Heat (1995)")]), domain)
    assert "\n" not in str(error.value)


def test_files_are_byte_identical_across_runs(tmp_path: Path):
    items_path = tmp_path / "items.parquet"
    write_parquet(
        pd.DataFrame(
            {
                "item": ["1", "2"],
                "name": ["Heat (1995)", "Jumanji (1995)"],
                "year": pd.array([1995, 1995], dtype="Int64"),
            }
        ),
        items_path,
    )
    triples_path = tmp_path / "triples.parquet"
    write_parquet(
        pd.concat([triples_table("2", JUMANJI), triples_table("1", [("director", "Michael Mann")])]), triples_path
    )
    outputs = []
    for run in ("a", "b"):
        texts, stats = tmp_path / run / "graph.jsonl", tmp_path / run / "graph.stats.json"
        lx.lexicalize_files("graph", triples_path, items_path, MOVIE, texts, stats)
        outputs.append((texts.read_bytes(), stats.read_bytes()))
    assert outputs[0] == outputs[1]
    rows = read_jsonl(tmp_path / "a" / "graph.jsonl")
    assert [r["item"] for r in rows] == ["1", "2"]  # items.parquet order
    assert json.loads(outputs[0][1])["rows"] == 2


# ----------------------------------------------------------------- original study data


@pytest.mark.slow
def test_lastfm_graph_alignment_on_original_data(original_data: Path):
    """Every sentence of every Last.FM artist carries only its own relation's values."""
    folder = original_data / "lastfm"
    relation_of = {}
    for line in (folder / "mapping_relations.tsv").read_text(encoding="utf-8").splitlines():
        uri, number = line.rsplit("\t", 1)
        relation_of[number.strip()] = uri.rsplit("/", 1)[-1]
    values = json.loads((folder / "entities_names.json").read_text(encoding="utf-8"))
    artists = pd.read_csv(folder / "mapping_items.tsv", sep="\t", names=["item", "name"], dtype=str, quoting=3)
    props = pd.read_csv(folder / "item-prop" / "train.tsv", sep="\t", names=["item", "relation", "value"], dtype=str)
    triples = pd.DataFrame(
        {
            "item": props["item"],
            "relation": props["relation"].map(relation_of),
            "value": props["value"].map(values),
        }
    ).dropna()
    triples = triples[triples["item"].isin(set(artists["item"])) & (triples["value"].str.strip() != "")]
    wanted = ["genre", "origin", "recordLabels", "pastMembers", "currentMembers", "subject"]
    domain = {
        "name": "music",
        "item_noun": "artist",
        "relations": {r: {"template": f"[{r}] {{values}}."} for r in wanted},
    }
    items = artists.drop_duplicates("item")
    rows, _ = lx.lexicalize("graph", triples, items, domain)
    assert len(rows) > 100
    facts = triples[triples["relation"].isin(wanted)].groupby(["item", "relation"])["value"].apply(set)
    for row in rows:
        for relation in wanted:
            match = re.search(rf"\[{relation}\] (.*?)\.(?= \[|$)", row["text"])
            expected = facts.get((row["item"], relation))
            if expected is None:
                assert match is None
            else:
                assert match is not None, row["text"]
                shown = match.group(1)
                assert all(" ".join(value.split()) in shown for value in expected), (row["item"], relation)


def _facts(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    facts: dict[str, list[str]] = {}
    for relation, value in pairs:
        facts.setdefault(relation, []).append(value)
    return facts
