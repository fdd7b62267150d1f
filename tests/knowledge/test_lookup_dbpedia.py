"""lookup_dbpedia: DBpedia facts over SPARQL (batched, cached, resilient) and the offline
attributes route.

Real SPARQL is served on 127.0.0.1 by `oxigraph serve-read-only` and by Virtuoso (DBpedia's
own engine, configured like the public endpoint; tests/virtuoso.py), both loaded with the
Turtle built here (synthetic films, and MovieLens facts from ../shared/data/rekalm-original). Faults
come from a scripted local HTTP server (429, 5xx, garbage, hangs).
"""

from __future__ import annotations

import bz2
import email.utils
import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
import virtuoso
import yaml
from rdflib import Graph, Literal, Namespace, URIRef
from rdflib.namespace import RDF, RDFS, XSD

from rekalm.common.tables import ABSTRACTS, TRIPLES
from rekalm.knowledge.dbpedia import DbpediaSettings
from rekalm.knowledge.domains import DomainSettings
from rekalm.knowledge.label_match import label_candidates, title_variants
from rekalm.knowledge.lookup_dbpedia import (
    KnowledgeRoute,
    attribute_triples,
    lookup_dbpedia_files,
    lookup_knowledge,
)
from rekalm.knowledge.oxigraph_server import load_rdf_store, oxigraph_executable, serve_rdf_store
from rekalm.knowledge.sparql import (
    ClientSettings,
    EndpointUnreachable,
    QueryCache,
    QueryRejected,
    RequestBudgetExhausted,
    ResultCapExceeded,
    SparqlClient,
    SparqlError,
    sparql_iri,
    sparql_string,
)

REPO = Path(__file__).resolve().parents[2]
DOMAINS = yaml.safe_load((REPO / "config" / "domains.yaml").read_text())["domains"]
MOVIE = DomainSettings.from_config("movie", DOMAINS["movie"])
DBR = Namespace("http://dbpedia.org/resource/")
DBO = Namespace("http://dbpedia.org/ontology/")


def _require_oxigraph() -> None:
    try:
        oxigraph_executable()
    except SparqlError as error:
        pytest.skip(str(error))


def benchmark_module():
    spec = importlib.util.spec_from_file_location(
        "dbpedia_lookup_benchmark", REPO / "benchmarks" / "dbpedia_lookup.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --------------------------------------------------------------------------------------
# Synthetic store: 120 films, tricky titles, look-alikes, a redirect
# --------------------------------------------------------------------------------------

N_FILMS = 120
TRICKY_TITLES = [
    'Say "Hello"',
    "Back\\slash\\",
    "Line\nbreak",
    "It's",
    'x" } ; DROP ALL ; SELECT * { "',
    "Codepoint \\u0022 and \\U0001F600 text",
    "Tab\tand ☃",
]


BIG_FILMS, BIG_FILM_SUBJECTS = 4, 3000
DCT_SUBJECT = URIRef("http://purl.org/dc/terms/subject")


def film_uri(number: int) -> URIRef:
    return DBR[f"Film_{number:03d}"]


def synthetic_graph() -> Graph:
    graph = Graph()
    for number in range(N_FILMS):
        film = film_uri(number)
        graph.add((film, RDF.type, DBO.Film))
        graph.add((film, RDFS.label, Literal(f"Film {number:03d} (film)", lang="en")))
        graph.add((film, DBO.releaseDate, Literal(f"{1990 + number % 20}-05-01", datatype=XSD.date)))
        graph.add((film, DBO.director, DBR[f"Director_{number % 7}"]))
        graph.add((film, DBO.cinematography, DBR[f"Cinematographer_{number % 5}"]))
        graph.add((film, DBO.editing, DBR[f"Editor_{number % 3}"]))
        graph.add((film, DBO.basedOn, DBR[f"Novel_{number}"]))
        for actor in range(3):
            graph.add((film, DBO.starring, DBR[f"Actor_{(number + actor) % 11}"]))
        graph.add((film, DBO.language, Literal("English", lang="en")))
        graph.add((film, DBO.language, Literal("Englisch", lang="de")))  # not English: dropped
        graph.add((film, DBO.gross, Literal("1000000")))  # not a configured relation: ignored
        graph.add((film, DBO.abstract, Literal(f"Film {number:03d} is a film.", lang="en")))
        graph.add((film, DBO.abstract, Literal(f"Film {number:03d} ist ein Film.", lang="de")))
    for kind, count in (("Director", 7), ("Cinematographer", 5), ("Editor", 3), ("Actor", 11)):
        for number in range(count):
            graph.add((DBR[f"{kind}_{number}"], RDFS.label, Literal(f"{kind} {number}", lang="en")))
            graph.add((DBR[f"{kind}_{number}"], RDFS.label, Literal(f"{kind} {number} (de)", lang="de")))
    # Novels have no label: their value is read from the IRI.
    graph.add((DBR.Old_Film_000, DBO.wikiPageRedirects, film_uri(0)))
    graph.add((DBR.Old_Film_000, RDFS.label, Literal("Old Film 000", lang="en")))
    for number, title in enumerate(TRICKY_TITLES):
        tricky = DBR[f"Tricky_{number}"]
        graph.add((tricky, RDF.type, DBO.Film))
        graph.add((tricky, RDFS.label, Literal(title, lang="en")))
    # Look-alikes for the label lookup.
    for uri, label, kind, year in (
        ("Heat_(1995_film)", "Heat (1995 film)", DBO.Film, 1995),
        ("Heat_(band)", "Heat", DBO.Band, None),
        ("Heat_(1972_film)", "Heat", DBO.Film, 1972),
        ("Sabrina_(1954_film)", "Sabrina (1954 film)", DBO.Film, 1954),
        ("Sabrina_(1995_film)", "Sabrina (1995 film)", DBO.Film, 1995),
        ("Lonely", "Lonely", DBO.Film, 1950),
        ("The_Matrix", "The Matrix", DBO.Film, 1999),
        ("The_City_of_Lost_Children", "The City of Lost Children", DBO.Film, 1995),
    ):
        graph.add((DBR[uri], RDF.type, kind))
        graph.add((DBR[uri], RDFS.label, Literal(label, lang="en")))
        if year:
            graph.add((DBR[uri], DBO.releaseDate, Literal(f"{year}-01-01", datatype=XSD.date)))
    # Films with more facts between them than public DBpedia's row cap (ResultSetMaxRows).
    for film in range(BIG_FILMS):
        for category in range(BIG_FILM_SUBJECTS):
            graph.add((DBR[f"Big_Film_{film}"], DCT_SUBJECT, DBR[f"Category:Big_{film}_{category}"]))
    return graph


@pytest.fixture(scope="module")
def synthetic_dump(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synthetic_rdf") / "films.ttl"
    synthetic_graph().serialize(path, format="turtle", encoding="utf-8")
    return path


ENGINES = ["oxigraph", "virtuoso"]


@contextmanager
def sparql_engine(engine: str, rdf_files: list[Path], workdir: Path) -> Iterator[str]:
    """The RDF files served read-only on 127.0.0.1 by ``engine``; yields the query URL.
    Virtuoso is what the public DBpedia endpoint runs (tests/virtuoso.py)."""
    if engine == "oxigraph":
        _require_oxigraph()
        with serve_rdf_store(load_rdf_store(rdf_files, workdir / "store"), query_timeout_s=30) as url:
            yield url
        return
    reason = virtuoso.ensure_installed()
    if reason:
        pytest.skip(reason)
    with virtuoso.virtuoso_endpoint(rdf_files, workdir / "virtuoso") as url:
        yield url


@pytest.fixture(scope="module", params=ENGINES)
def synthetic_endpoint(request, synthetic_dump, tmp_path_factory):
    with sparql_engine(request.param, [synthetic_dump], tmp_path_factory.mktemp(f"synthetic_{request.param}")) as url:
        yield url


def film_items(count: int = N_FILMS) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item": [f"m{number}" for number in range(count)],
            "name": [f"Film {number:03d} ({1990 + number % 20})" for number in range(count)],
            "year": pd.array([1990 + number % 20 for number in range(count)], dtype="Int64"),
            "genres": [["Drama"] for _ in range(count)],
            "dbpedia_uri": [str(film_uri(number)) for number in range(count)],
        }
    )


def fast_settings(tmp_path: Path, **overrides) -> DbpediaSettings:
    values = {"cache_dir": str(tmp_path / "cache"), "request_delay_s": 0, "retries": 0, "timeout_s": 30}
    values.update(overrides)
    return DbpediaSettings.from_config(values)


def client_for(url: str, settings: DbpediaSettings, namespace: str = "test") -> SparqlClient:
    cache = QueryCache(settings.cache_dir, namespace) if settings.cache_dir else None
    return SparqlClient(url, cache, settings.client_settings())


BOTH = KnowledgeRoute("dbpedia", "dbpedia")


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


# --------------------------------------------------------------------------------------
# Facts and abstracts
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Batching, paging, cache, budget, kill and resume
# --------------------------------------------------------------------------------------


def test_one_request_per_50_items_per_group_then_none_on_a_rerun(synthetic_endpoint, tmp_path):
    items = film_items()
    settings = fast_settings(tmp_path)
    first = lookup_knowledge(items, BOTH, MOVIE, settings, client_for(synthetic_endpoint, settings))
    batches = math.ceil(N_FILMS / 50)
    assert first.stats["requests_made"] == 2 * batches  # facts + abstracts, no label lookups
    assert first.stats["cache_hits"] == 0
    again = lookup_knowledge(items, BOTH, MOVIE, settings, client_for(synthetic_endpoint, settings))
    assert again.stats["requests_made"] == 0
    assert again.stats["cache_hits"] == 2 * batches and again.stats["cache_hit_rate"] == 1.0
    pd.testing.assert_frame_equal(first.triples, again.triples)
    pd.testing.assert_frame_equal(first.abstracts, again.abstracts)


def test_an_endpoint_that_answers_every_query_with_no_rows_warns_at_lookup(synthetic_endpoint, tmp_path, caplog):
    """A wrong endpoint answers every query correctly with nothing: the lookup exits 0 with
    no facts, which used to surface only stages later."""
    items = film_items(60)
    with ScriptedServer() as server, caplog.at_level("WARNING", logger="rekalm.knowledge.lookup_dbpedia"):
        server.default = "empty"
        settings = fast_settings(tmp_path)
        result = lookup_knowledge(items, BOTH, MOVIE, settings, client_for(server.url, settings))
    queries = server.requests
    assert queries >= 4 and result.stats["triples"] == 0 and result.stats["empty_answers"] == queries
    assert f"SPARQL endpoint {server.url} answered all {queries} queries with no rows" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="rekalm.knowledge.lookup_dbpedia"):  # an endpoint that knows the films
        real = lookup_knowledge(items, BOTH, MOVIE, settings, client_for(synthetic_endpoint, settings, "real"))
    assert real.stats["triples"] and real.stats["empty_answers"] < real.stats["queries"]
    assert "no rows" not in caplog.text


def test_large_results_are_paged_without_losing_rows(synthetic_endpoint, tmp_path):
    items = film_items(20)
    whole = lookup_knowledge(
        items,
        BOTH,
        MOVIE,
        fast_settings(tmp_path / "a"),
        client_for(synthetic_endpoint, fast_settings(tmp_path / "a")),
    )
    paged_settings = fast_settings(tmp_path / "b", page_size=7)
    paged = lookup_knowledge(items, BOTH, MOVIE, paged_settings, client_for(synthetic_endpoint, paged_settings))
    pd.testing.assert_frame_equal(whole.triples, paged.triples)
    pd.testing.assert_frame_equal(whole.abstracts, paged.abstracts)
    facts_rows = 20 * 8  # 3 actors + language + editing + basedOn + cinematography + director
    assert paged.stats["requests_made"] == math.ceil((facts_rows + 1) / 7) + math.ceil((20 + 1) / 7)


def test_request_budget_stops_with_one_line_and_a_rerun_resumes(synthetic_endpoint, tmp_path):
    items = film_items()
    limited = fast_settings(tmp_path, max_requests=2, batch_size=20)
    with pytest.raises(RequestBudgetExhausted, match="max_requests=2") as error:
        lookup_knowledge(items, BOTH, MOVIE, limited, client_for(synthetic_endpoint, limited))
    assert "\n" not in str(error.value)
    resumed_settings = fast_settings(tmp_path, batch_size=20)
    resumed = lookup_knowledge(items, BOTH, MOVIE, resumed_settings, client_for(synthetic_endpoint, resumed_settings))
    assert resumed.stats["cache_hits"] == 2
    assert resumed.stats["requests_made"] == 2 * math.ceil(N_FILMS / 20) - 2


def test_an_answer_over_the_row_cap_is_asked_for_in_smaller_batches(synthetic_endpoint, tmp_path):
    """Virtuoso caps answers at ResultSetMaxRows (10,000) and refuses to sort or page past
    it; a batch whose facts exceed the cap is split, and nothing is cut silently."""
    uris = [str(DBR[f"Big_Film_{film}"]) for film in range(BIG_FILMS)]
    items = pd.DataFrame(
        {
            "item": [f"big{n}" for n in range(BIG_FILMS)],
            "name": [f"Big {n}" for n in range(BIG_FILMS)],
            "dbpedia_uri": uris,
        }
    )
    settings = fast_settings(tmp_path)  # page_size 10,000: public DBpedia's cap
    result = lookup_knowledge(
        items, KnowledgeRoute("dbpedia", "none"), MOVIE, settings, client_for(synthetic_endpoint, settings)
    )
    assert len(result.triples) == BIG_FILMS * BIG_FILM_SUBJECTS
    for film in range(BIG_FILMS):
        values = set(result.triples.loc[result.triples["item"] == f"big{film}", "value"])
        assert values == {f"Big {film} {category}" for category in range(BIG_FILM_SUBJECTS)}
    client = client_for(synthetic_endpoint, fast_settings(tmp_path / "plain", cache_dir=None))
    try:
        rows = client.select(f"SELECT ?s ?o WHERE {{ ?s <{DCT_SUBJECT}> ?o }}")
    except ResultCapExceeded:
        return  # Virtuoso: flagged, not cut
    assert len(rows) == BIG_FILMS * BIG_FILM_SUBJECTS


KILLED_RUN = """
import sys, pandas as pd
from rekalm.knowledge.dbpedia import DbpediaSettings
from rekalm.knowledge.domains import DomainSettings
from rekalm.knowledge.lookup_dbpedia import KnowledgeRoute, lookup_knowledge
from rekalm.knowledge.sparql import QueryCache, SparqlClient
import yaml
url, cache, items_path, domains = sys.argv[1:5]
settings = DbpediaSettings.from_config({"cache_dir": cache, "request_delay_s": 0.25, "batch_size": 10, "retries": 0})
domain = DomainSettings.from_config("movie", yaml.safe_load(open(domains))["domains"]["movie"])
client = SparqlClient(url, QueryCache(cache, "test"), settings.client_settings())
lookup_knowledge(pd.read_parquet(items_path), KnowledgeRoute("dbpedia", "dbpedia"), domain, settings, client)
"""


@pytest.mark.slow
def test_a_killed_run_loses_nothing_fetched_and_resumes(synthetic_endpoint, tmp_path):
    items = film_items()
    items.to_parquet(tmp_path / "items.parquet", index=False)
    cache = tmp_path / "cache"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLED_RUN,
            synthetic_endpoint,
            str(cache),
            str(tmp_path / "items.parquet"),
            str(REPO / "config" / "domains.yaml"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while len(list(cache.glob("*/*.json"))) < 4 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.poll() is None, child.stderr.read().decode()[-500:]
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stderr.close()
    cached = len(list(cache.glob("*/*.json")))
    total = 2 * math.ceil(N_FILMS / 10)
    assert 4 <= cached < total

    settings = fast_settings(tmp_path, batch_size=10)
    resumed = lookup_knowledge(items, BOTH, MOVIE, settings, client_for(synthetic_endpoint, settings))
    assert resumed.stats["cache_hits"] == cached
    assert resumed.stats["requests_made"] == total - cached
    clean_settings = fast_settings(tmp_path / "clean", batch_size=10)
    clean = lookup_knowledge(items, BOTH, MOVIE, clean_settings, client_for(synthetic_endpoint, clean_settings))
    pd.testing.assert_frame_equal(resumed.triples, clean.triples)
    pd.testing.assert_frame_equal(resumed.abstracts, clean.abstracts)


def test_unreadable_cache_entries_are_fetched_again(synthetic_endpoint, tmp_path):
    settings = fast_settings(tmp_path)
    client = client_for(synthetic_endpoint, settings)
    query = "SELECT ?v WHERE { VALUES ?v { 1 2 } }"
    assert len(client.select(query)) == 2
    client.cache.path(query).write_text("{not json")
    again = client_for(synthetic_endpoint, settings)
    assert len(again.select(query)) == 2
    assert again.counters.requests == 1 and again.counters.cache_hits == 0


# --------------------------------------------------------------------------------------
# Faults: a scripted local server
# --------------------------------------------------------------------------------------

OK_BODY = json.dumps(
    {"head": {"vars": ["x"]}, "results": {"bindings": [{"x": {"type": "literal", "value": "ok"}}]}}
).encode()
EMPTY_BODY = json.dumps({"head": {"vars": ["x"]}, "results": {"bindings": []}}).encode()


class ScriptedServer:
    """Answers each request with the next scripted behaviour (then 'ok')."""

    def __init__(self) -> None:
        self.behaviours: deque[str] = deque()
        self.default = "ok"  # once the scripted behaviours are used up
        self.requests = 0
        self.stop_hanging = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.requests += 1
                behaviour = server.behaviours.popleft() if server.behaviours else server.default
                if behaviour == "hang":
                    server.stop_hanging.wait(5)
                    behaviour = "ok"
                status, headers, body = {
                    "ok": (200, {"Content-Type": "application/sparql-results+json"}, OK_BODY),
                    "empty": (200, {"Content-Type": "application/sparql-results+json"}, EMPTY_BODY),
                    "garbage": (200, {"Content-Type": "application/sparql-results+json"}, b'{"head": {"vars": ["x"'),
                    "partial": (
                        200,
                        {"Content-Type": "application/sparql-results+json", "X-SQL-State": "S1TAT"},
                        OK_BODY,
                    ),
                    "html": (200, {"Content-Type": "text/html"}, b"<html>Service busy</html>"),
                    "shape": (
                        200,
                        {"Content-Type": "application/sparql-results+json"},
                        b'{"head": {}, "boolean": true}',
                    ),
                    "429": (429, {}, b"Too Many Requests"),
                    "429-retry-after": (429, {"Retry-After": "7"}, b"slow down"),
                    "429-retry-in-an-hour": (429, {"Retry-After": "3600"}, b"slow down"),
                    "503-retry-at-a-date": (503, {"Retry-After": server.date_in_90_s()}, b"maintenance"),
                    "500": (500, {}, b"Virtuoso 42000 Error"),
                    "502": (502, {}, b"Bad Gateway"),
                    "503": (503, {}, b"Service Unavailable"),
                    "400": (400, {}, b"Virtuoso 37000 Error SP030: SPARQL compiler"),
                }[behaviour]
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/sparql"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @staticmethod
    def date_in_90_s() -> str:
        return email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_hanging.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def recording_client(url: str, tmp_path: Path, **settings) -> tuple[SparqlClient, list[float]]:
    sleeps: list[float] = []
    values = {"request_delay_s": 0, "retries": 8, "backoff_initial_s": 0.5, "backoff_max_s": 4.0, "timeout_s": 5.0}
    values.update(settings)
    client = SparqlClient(
        url, QueryCache(tmp_path / "cache", url), ClientSettings(**values), sleep=sleeps.append, jitter=lambda: 1.0
    )
    return client, sleeps


def test_429_5xx_and_malformed_responses_are_retried_with_exponential_backoff(tmp_path):
    with ScriptedServer() as server:
        server.behaviours.extend(["429", "500", "502", "503", "garbage", "html", "shape", "partial"])
        client, sleeps = recording_client(server.url, tmp_path)
        rows = client.select("SELECT ?x WHERE {}")
    assert rows == [{"x": {"type": "literal", "value": "ok"}}]
    assert server.requests == 9 and client.counters.requests == 9 and client.counters.retries == 8
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]  # doubling, capped at backoff_max_s
    # Only the good answer was cached: a re-run makes no request.
    rerun, _ = recording_client(server.url, tmp_path)
    assert rerun.select("SELECT ?x WHERE {}") == rows and rerun.counters.requests == 0


def test_backoff_has_jitter_and_honours_retry_after(tmp_path):
    with ScriptedServer() as server:
        server.behaviours.extend(["503", "503", "429-retry-after"])
        client, sleeps = recording_client(server.url, tmp_path, backoff_max_s=60.0)
        client.jitter = iter([0.0, 0.5, 0.0]).__next__
        client.select("SELECT ?x WHERE {}")
    assert sleeps == [0.25, 0.75, 7.0]  # half a step + jitter; Retry-After: 7 wins over 1.0


def test_retry_after_is_honoured_beyond_the_backoff_cap_and_as_a_date(tmp_path):
    with ScriptedServer() as server:
        server.behaviours.extend(["429-retry-after", "503-retry-at-a-date"])
        client, sleeps = recording_client(server.url, tmp_path)  # backoff_max_s=4
        client.select("SELECT ?x WHERE {}")
    assert sleeps[0] == 7.0 and 60 < sleeps[1] <= 90  # was capped at backoff_max_s (4 s)


def test_a_retry_after_beyond_max_retry_after_s_fails_with_one_line(tmp_path):
    with ScriptedServer() as server:
        server.behaviours.extend(["429-retry-in-an-hour"])
        client, sleeps = recording_client(server.url, tmp_path, max_retry_after_s=600)
        with pytest.raises(SparqlError) as error:
            client.select("SELECT ?x WHERE {}")
    assert str(error.value) == (
        f"SPARQL endpoint {server.url} answered HTTP 429 asking to wait 3600 s (Retry-After), more than "
        "dbpedia.max_retry_after_s=600; re-run later (answers so far are cached) or raise it"
    )
    assert server.requests == 1 and sleeps == []
    settings = DbpediaSettings.from_config({"max_retry_after_s": 5000})  # a config key, handed to the client
    assert settings.client_settings().max_retry_after_s == 5000


def test_a_hanging_server_times_out_and_the_retry_succeeds(tmp_path):
    with ScriptedServer() as server:
        server.behaviours.extend(["hang"])
        client, sleeps = recording_client(server.url, tmp_path, timeout_s=0.3)
        started = time.monotonic()
        assert client.select("SELECT ?x WHERE {}")[0]["x"]["value"] == "ok"
    assert client.counters.requests == 2 and len(sleeps) == 1
    assert time.monotonic() - started < 4.5  # the hang (5 s) was cut by the timeout


def test_a_persistent_failure_gives_one_line_after_all_retries(tmp_path):
    with ScriptedServer() as server:
        server.behaviours.extend(["500"] * 10)
        client, sleeps = recording_client(server.url, tmp_path, retries=3)
        with pytest.raises(SparqlError) as error:
            client.select("SELECT ?x WHERE {}")
    message = str(error.value)
    assert "\n" not in message and server.url in message and "HTTP 500" in message and "4 attempt(s)" in message
    assert server.requests == 4 and len(sleeps) == 3
    assert not list((tmp_path / "cache").glob("*/*.json"))


def test_a_rejected_query_is_not_retried(tmp_path):
    with ScriptedServer() as server:
        server.behaviours.extend(["400"])
        client, sleeps = recording_client(server.url, tmp_path)
        with pytest.raises(QueryRejected, match="HTTP 400"):
            client.select("SELECT ?x WHERE {")
    assert server.requests == 1 and sleeps == []


def test_an_unreachable_endpoint_fails_with_one_clear_line(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/sparql"
    client, sleeps = recording_client(url, tmp_path, retries=2)
    with pytest.raises(EndpointUnreachable) as error:
        client.select("SELECT ?x WHERE {}")
    message = str(error.value)
    assert "\n" not in message and url in message and "unreachable" in message
    assert client.counters.requests == 3 and len(sleeps) == 2


def test_requests_are_spaced_by_the_configured_delay(tmp_path):
    now = [100.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    with ScriptedServer() as server:
        client = SparqlClient(server.url, None, ClientSettings(request_delay_s=1.5), sleep=sleep, clock=lambda: now[0])
        client.select("SELECT ?x WHERE { 1 }")
        now[0] += 0.5
        client.select("SELECT ?x WHERE { 2 }")
    assert sleeps == [1.0]


# --------------------------------------------------------------------------------------
# Offline route
# --------------------------------------------------------------------------------------


def test_attributes_route_builds_triples_from_item_columns_without_network(tmp_path, monkeypatch):
    import SPARQLWrapper

    def no_network(*args, **kwargs):
        raise AssertionError("the attributes route must not query anything")

    monkeypatch.setattr(SPARQLWrapper.SPARQLWrapper, "query", no_network)
    items = pd.DataFrame(
        {
            "item": ["1", "2", "3"],
            "name": ["Toy Story (1995)", "Heat (1995)", "Untitled"],
            "year": pd.array([1995, 1995, None], dtype="Int64"),
            "genres": [["Animation", "Comedy"], [], ["Drama"]],
            "dbpedia_uri": ["http://dbpedia.org/resource/Toy_Story", None, None],
        }
    )
    items.to_parquet(tmp_path / "items.parquet", index=False)
    outputs = {name: tmp_path / "out" / f"{name}.parquet" for name in ("triples", "abstracts", "mapping")}
    unreachable = {
        "endpoint": f"http://127.0.0.1:{closed_port()}/sparql",
        "retries": 0,
        "cache_dir": str(tmp_path / "cache"),
    }
    lookup_dbpedia_files(
        tmp_path / "items.parquet",
        outputs["triples"],
        outputs["abstracts"],
        outputs["mapping"],
        tmp_path / "out" / "stats.json",
        knowledge={"collab": {"min_support": 0.1, "min_confidence": 0.1}, "graph": {"source": "attributes"}},
        domain_name="movie",
        domain=DOMAINS["movie"],
        dbpedia=unreachable,
    )
    triples = pd.read_parquet(outputs["triples"])
    assert triples.values.tolist() == [
        ["1", "genre", "Animation", "attributes"],
        ["1", "genre", "Comedy", "attributes"],
        ["1", "release_year", "1995", "attributes"],
        ["2", "release_year", "1995", "attributes"],
        ["3", "genre", "Drama", "attributes"],
    ]
    abstracts = pd.read_parquet(outputs["abstracts"])
    assert abstracts.empty and list(abstracts.columns) == list(ABSTRACTS.columns)
    assert all(str(dtype) == "str" for dtype in abstracts.dtypes)
    mapping = pd.read_parquet(outputs["mapping"])
    assert mapping["how"].tolist() == ["mapping", "unmapped", "unmapped"]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["requests_made"] == 0 and stats["graph_source"] == "attributes" and stats["triples"] == 5
    assert not (tmp_path / "cache").exists()


def test_attribute_relations_take_any_column_and_name_a_missing_one():
    boardgame = DomainSettings.from_config("boardgame", DOMAINS["boardgame"])
    games = pd.DataFrame(
        {
            "item": ["g1"],
            "name": ["Catan"],
            "year": pd.array([1995], dtype="Int64"),
            "genres": [["Negotiation"]],
            "mechanics": [["Dice Rolling", "Trading"]],
            "min_players": pd.array([3], dtype="Int64"),
            "playing_time": pd.array([None], dtype="Int64"),
        }
    )
    triples = attribute_triples(games, boardgame.attribute_relations)
    assert list(zip(triples["relation"], triples["value"])) == [
        ("category", "Negotiation"),
        ("mechanic", "Dice Rolling"),
        ("mechanic", "Trading"),
        ("min_players", "3"),
        ("release_year", "1995"),
    ]
    with pytest.raises(
        ValueError, match=r"items.parquet: column 'mechanics' \(attribute relation 'mechanic'\) is missing"
    ):
        attribute_triples(games.drop(columns="mechanics"), boardgame.attribute_relations)


def test_settings_reject_unknown_keys_and_duplicate_relation_iris():
    with pytest.raises(ValueError, match=r"dbpedia: unknown key\(s\) \['endpont'\]"):
        DbpediaSettings.from_config({"endpont": "https://dbpedia.org/sparql"})
    settings = DbpediaSettings.from_config({"backoff": {"initial_s": 1, "max_s": 9}, "local_dump": "x.ttl"})
    assert (settings.backoff_initial_s, settings.backoff_max_s, settings.local_dump) == (1.0, 9.0, ("x.ttl",))
    with pytest.raises(ValueError, match="listed under both 'a' and 'b'"):
        DomainSettings.from_config(
            "d", {"relations": {"a": {"uri": "http://x/p"}, "b": {"uri": ["http://x/q", "http://x/p"]}}}
        )


def test_domain_relations_are_the_original_relation_lists(original_data):
    def original_uris(dataset: str) -> set[str]:
        rows = [
            line.split("\t")
            for line in (original_data / dataset / "mapping_relations.tsv").read_text().splitlines()
            if line.strip()
        ]
        return {field for row in rows for field in row if field.startswith("http")}

    def configured(domain: str) -> set[str]:
        return {
            uri for relation in DomainSettings.from_config(domain, DOMAINS[domain]).relations for uri in relation.uris
        }

    assert configured("movie") == original_uris("movielens")
    assert configured("book") == original_uris("dbbook")
    assert configured("music") == original_uris("lastfm")
    for name, block in DOMAINS.items():
        assert {"item_noun", "dbpedia_types", "relations", "attribute_relations"} <= set(block), name
        assert all(isinstance(spec, dict) for spec in block["relations"].values()), name


# --------------------------------------------------------------------------------------
# Local dumps and the Snakemake rule
# --------------------------------------------------------------------------------------


def test_a_bz2_dump_is_loaded_once_and_served_locally(synthetic_dump, tmp_path):
    _require_oxigraph()
    compressed = tmp_path / "films.ttl.bz2"
    compressed.write_bytes(bz2.compress(synthetic_dump.read_bytes()))
    settings = DbpediaSettings.from_config(
        {
            "local_dump": [str(compressed)],
            "local_store_dir": str(tmp_path / "stores"),
            "cache_dir": str(tmp_path / "cache"),
            "request_delay_s": 0,
        }
    )
    first = lookup_knowledge(film_items(3), BOTH, MOVIE, settings)
    assert first.stats["requests_made"] == 2 and first.stats["endpoint"].startswith("local dump")
    marker = next((tmp_path / "stores").glob("*/loaded.json"))
    loaded_at = marker.stat().st_mtime_ns
    again = lookup_knowledge(film_items(3), BOTH, MOVIE, settings)
    assert again.stats["requests_made"] == 0 and marker.stat().st_mtime_ns == loaded_at
    pd.testing.assert_frame_equal(first.triples, again.triples)
    with pytest.raises(ValueError, match="dbpedia.local_dump: file .*missing.ttl not found"):
        lookup_knowledge(
            film_items(1), BOTH, MOVIE, DbpediaSettings.from_config({"local_dump": [str(tmp_path / "missing.ttl")]})
        )


@pytest.mark.slow
def test_the_rule_runs_the_offline_and_the_local_dump_routes(synthetic_dump, tmp_path):
    _require_oxigraph()
    from snakemake_helpers import api_run

    (tmp_path / "Snakefile").write_text(
        "".join(
            f"include: {str(REPO / 'rules' / name)!r}\n" for name in ("common.smk", "lookup_dbpedia.smk")
        )  # real rule + input functions
    )
    config = {
        "domains": DOMAINS,
        "dbpedia": {
            "local_dump": [str(synthetic_dump)],
            "local_store_dir": "results/cache/oxigraph",
            "request_delay_s": 0,
        },
        "datasets": {
            "offline": {"domain": "movie", "knowledge": {"graph": {"source": "attributes"}}},
            "local": {"domain": "movie", "knowledge": {"graph": {"source": "dbpedia"}, "text": {"source": "dbpedia"}}},
        },
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    for dataset in ("offline", "local"):
        (tmp_path / "results" / dataset / "prepare").mkdir(parents=True)
        film_items(5).to_parquet(tmp_path / "results" / dataset / "prepare" / "items.parquet", index=False)
    targets = [
        f"results/{d}/lookup_dbpedia/{f}"
        for d in ("offline", "local")
        for f in ("triples.parquet", "abstracts.parquet", "mapping.parquet", "stats.json")
    ]
    api_run(tmp_path, targets, "local", [tmp_path / "config.yaml"], snakefile=tmp_path / "Snakefile", quiet=True)
    offline = json.loads((tmp_path / "results" / "offline" / "lookup_dbpedia" / "stats.json").read_text())
    local = json.loads((tmp_path / "results" / "local" / "lookup_dbpedia" / "stats.json").read_text())
    assert offline["requests_made"] == 0 and offline["triples_by_relation"] == {"genre": 5, "release_year": 5}
    assert local["requests_made"] == 2 and local["abstracts"] == 5 and local["share_mapped"] == 1.0
    assert (tmp_path / "results" / "cache" / "sparql").is_dir()
    assert (tmp_path / "logs" / "local" / "lookup_dbpedia.log").read_text().count("lookup_dbpedia local") == 1
