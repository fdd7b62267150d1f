"""lookup_dbpedia: the SPARQL terms it writes (quoted literals, language tags, IRIs) and the
Wikipedia-style titles it tries, then items mapped to DBpedia by label (type and year
respected) or by the mapping file, against oxigraph and Virtuoso (conftest.py)."""

from __future__ import annotations

import pandas as pd
import pytest
from synthetic_dbpedia import BOTH, DBR, MOVIE, TRICKY_TITLES, client_for, fast_settings, film_items, film_uri

from rekalm.knowledge.label_match import label_candidates, title_variants
from rekalm.knowledge.lookup_dbpedia import KnowledgeRoute, lookup_knowledge
from rekalm.knowledge.sparql import ClientSettings, SparqlClient, sparql_iri, sparql_string

# --------------------------------------------------------------------------------------
# Query terms
# --------------------------------------------------------------------------------------


def test_literals_with_quotes_backslashes_newlines_round_trip_through_a_real_parser(synthetic_endpoint):
    nasty = [*TRICKY_TITLES, "", "'single' \"double\"", "\\", "\\\\u0022", "\r\n\f\b", "\\u", "a\\Ub"]
    literals = " ".join(sparql_string(text) for text in nasty)
    client = SparqlClient(synthetic_endpoint, None, ClientSettings(request_delay_s=0, retries=0))
    rows = client.select(f"SELECT ?v WHERE {{ VALUES ?v {{ {literals} }} }}")
    assert [row["v"]["value"] for row in rows] == nasty


def test_language_tags_and_iris_are_validated_and_encoded():
    assert sparql_string("Heat", "en") == '"Heat"@en'
    with pytest.raises(ValueError, match="language tag"):
        sparql_string("Heat", 'en" } DROP')
    assert (
        sparql_iri("http://dbpedia.org/resource/Heat_(1995_film)") == "<http://dbpedia.org/resource/Heat_(1995_film)>"
    )
    assert sparql_iri('http://x.org/a b>"{}') == "<http://x.org/a%20b%3E%22%7B%7D>"
    with pytest.raises(ValueError, match="absolute IRI"):
        sparql_iri("Heat_(film)")


def test_label_candidates_follow_wikipedia_titles():
    assert label_candidates("Heat (1995)", None, ["film"]) == ["Heat (1995 film)", "Heat (film)", "Heat"]
    assert title_variants("City of Lost Children, The (Cité des enfants perdus, La)")[0] == "The City of Lost Children"
    assert title_variants("Matrix, The") == ["The Matrix", "Matrix, The"]


# --------------------------------------------------------------------------------------
# Mapping by label
# --------------------------------------------------------------------------------------


def test_label_lookup_maps_tricky_titles_and_respects_type_and_year(synthetic_endpoint, tmp_path):
    names = {f"t{n}": title for n, title in enumerate(TRICKY_TITLES)}
    names |= {
        "heat": "Heat (1995)",  # the 1995 film, not the band or the 1972 film
        "sabrina": "Sabrina (1995)",
        "lonely": "Lonely (2001)",  # only a 1950 film has that label: a different item
        "matrix": "Matrix, The (1999)",
        "city": "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
        "absent": "No Such Film (1990)",
    }
    items = pd.DataFrame(
        {"item": list(names), "name": list(names.values()), "year": pd.array([None] * len(names), dtype="Int64")}
    )
    items["dbpedia_uri"] = None
    settings = fast_settings(tmp_path)
    result = lookup_knowledge(
        items, KnowledgeRoute("dbpedia", "none"), MOVIE, settings, client_for(synthetic_endpoint, settings)
    )
    mapped = dict(zip(result.mapping["item"], result.mapping["dbpedia_uri"]))
    for number in range(len(TRICKY_TITLES)):
        assert mapped[f"t{number}"] == str(DBR[f"Tricky_{number}"]), TRICKY_TITLES[number]
    assert mapped["heat"] == str(DBR["Heat_(1995_film)"])
    assert mapped["sabrina"] == str(DBR["Sabrina_(1995_film)"])
    assert mapped["matrix"] == str(DBR["The_Matrix"])
    assert mapped["city"] == str(DBR["The_City_of_Lost_Children"])
    assert pd.isna(mapped["lonely"]) and pd.isna(mapped["absent"])
    how = dict(zip(result.mapping["item"], result.mapping["how"]))
    assert how["heat"] == "label" and how["lonely"] == "unmapped"
    assert result.stats["mapped_by"] == {"mapping": 0, "label": len(names) - 2, "unmapped": 2}
    assert result.stats["share_mapped"] == round((len(names) - 2) / len(names), 4)
    assert result.stats["requests_made"] == 2  # one label batch, one facts batch


def test_mapping_file_wins_over_label_lookup_and_bad_uris_are_rejected(synthetic_endpoint, tmp_path):
    items = film_items(3)
    items.loc[1, "dbpedia_uri"] = None
    items.loc[1, "name"] = "Heat (1995)"
    items.loc[1, "year"] = 1995  # the year column wins over the name: 1991 would reject the film
    settings = fast_settings(tmp_path)
    result = lookup_knowledge(items, BOTH, MOVIE, settings, client_for(synthetic_endpoint, settings))
    assert result.mapping["how"].tolist() == ["mapping", "label", "mapping"]
    assert result.mapping["dbpedia_uri"].tolist() == [str(film_uri(0)), str(DBR["Heat_(1995_film)"]), str(film_uri(2))]
    items.loc[2, "dbpedia_uri"] = "Film_002"
    with pytest.raises(ValueError, match=r"items.parquet: dbpedia_uri of item 'm2' is 'Film_002'"):
        lookup_knowledge(items, BOTH, MOVIE, settings, client_for(synthetic_endpoint, settings))
