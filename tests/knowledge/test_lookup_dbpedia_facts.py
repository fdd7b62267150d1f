"""lookup_dbpedia: facts named by their own predicate with English labels, abstracts, and
the MovieLens facts of the original study's files coming back relation by relation, against
oxigraph and Virtuoso."""

from __future__ import annotations

import pytest
from synthetic_dbpedia import (
    BOTH,
    DBR,
    ENGINES,
    MOVIE,
    benchmark_module,
    client_for,
    fast_settings,
    film_items,
    sparql_engine,
)

from rekalm.common.tables import TRIPLES
from rekalm.knowledge.lookup_dbpedia import lookup_knowledge


def test_facts_are_named_by_their_own_predicate_and_resolved_to_english_labels(synthetic_endpoint, tmp_path):
    items = film_items(12)
    items.loc[0, "dbpedia_uri"] = str(DBR.Old_Film_000)  # a redirect to Film_000
    settings = fast_settings(tmp_path)
    result = lookup_knowledge(items, BOTH, MOVIE, settings, client_for(synthetic_endpoint, settings))
    triples = result.triples
    assert list(triples.columns) == list(TRIPLES.columns)
    assert set(triples["source"]) == {"dbpedia"}
    for number in range(12):
        facts = triples[triples["item"] == f"m{number}"].groupby("relation")["value"].apply(sorted).to_dict()
        assert facts == {
            "starring": sorted(f"Actor {(number + a) % 11}" for a in range(3)),
            "language": ["English"],
            "editing": [f"Editor {number % 3}"],
            "basedOn": [f"Novel {number}"],
            "cinematography": [f"Cinematographer {number % 5}"],
            "director": [f"Director {number % 7}"],
        }, number
    # Order: items as in items.parquet, relations as in config, values sorted.
    relation_rank = {relation.name: i for i, relation in enumerate(MOVIE.relations)}
    keys = list(
        zip(triples["item"].map(lambda i: int(i[1:])), triples["relation"].map(relation_rank), triples["value"])
    )
    assert keys == sorted(keys)
    abstracts = dict(zip(result.abstracts["item"], result.abstracts["abstract"]))
    assert abstracts == {f"m{n}": f"Film {n:03d} is a film." for n in range(12)}


@pytest.mark.parametrize("engine", ENGINES)
def test_movielens_facts_match_the_source_rows_relation_by_relation(original_data, tmp_path, engine):
    """The original study wrote cinematographers under "based on" and editors
    under "set in". Every fact here must come back under the relation it is stored with."""
    benchmark = benchmark_module()
    spot_checks = [
        "http://dbpedia.org/resource/Another_Man's_Poison",  # cinematography: Robert Krasker
        "http://dbpedia.org/resource/Air_America_(film)",  # editing: John Bloom
        "http://dbpedia.org/resource/Shallow_Grave",  # musicComposer: Simon Boswell
    ]
    rdf = benchmark.build_movielens_rdf(original_data, tmp_path / "movielens.nt", limit=150, extra_items=spot_checks)
    settings = fast_settings(tmp_path)
    with sparql_engine(engine, [rdf.rdf_path], tmp_path) as url:
        result = lookup_knowledge(rdf.items, BOTH, MOVIE, settings, client_for(url, settings))
    uri_of_item = dict(zip(rdf.items["item"], rdf.items["dbpedia_uri"]))
    name_of_relation = {uri: relation.name for relation in MOVIE.relations for uri in relation.uris}
    got = {
        (uri_of_item[item], relation, value)
        for item, relation, value in zip(result.triples["item"], result.triples["relation"], result.triples["value"])
    }
    expected = {
        (uri, name_of_relation[relation_uri], value)
        for uri, relation_uri, value in rdf.expected.itertuples(index=False)
    }
    assert len(expected) > 3000
    for relation in sorted({r for _, r, _ in expected}):
        assert {f for f in got if f[1] == relation} == {f for f in expected if f[1] == relation}, relation
    assert got == expected

    def values(uri: str, relation: str) -> set[str]:
        return {v for u, r, v in got if u == uri and r == relation}

    assert "Robert Krasker" in values(spot_checks[0], "cinematography")
    assert "Robert Krasker" not in values(spot_checks[0], "basedOn")
    assert "John Bloom" in values(spot_checks[1], "editing")
    assert "John Bloom" not in values(spot_checks[1], "country")
    assert "Simon Boswell" in values(spot_checks[2], "musicComposer")
    assert len(result.abstracts) == len(rdf.items)
    assert all(text.endswith(" is a film.") for text in result.abstracts["abstract"])
