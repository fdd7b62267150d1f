"""The synthetic DBpedia the lookup tests query, and how they serve and ask it.

Real SPARQL is served on 127.0.0.1 by `oxigraph serve-read-only` and by Virtuoso (DBpedia's
own engine, configured like the public endpoint; tests/virtuoso.py), both loaded with the
Turtle built here: 120 films with their people, tricky titles, look-alikes for the label
lookup, a redirect, and films with more facts than public DBpedia's row cap. The fixtures
that serve it are in conftest.py.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import virtuoso
import yaml
from rdflib import Graph, Literal, Namespace, URIRef
from rdflib.namespace import RDF, RDFS, XSD

from rekalm.knowledge.dbpedia import DbpediaSettings
from rekalm.knowledge.domains import DomainSettings
from rekalm.knowledge.lookup_dbpedia import KnowledgeRoute
from rekalm.knowledge.oxigraph_server import load_rdf_store, oxigraph_executable, serve_rdf_store
from rekalm.knowledge.sparql import QueryCache, SparqlClient, SparqlError

REPO = Path(__file__).resolve().parents[2]
DOMAINS = yaml.safe_load((REPO / "config" / "domains.yaml").read_text())["domains"]
MOVIE = DomainSettings.from_config("movie", DOMAINS["movie"])
DBR = Namespace("http://dbpedia.org/resource/")
DBO = Namespace("http://dbpedia.org/ontology/")


def require_oxigraph() -> None:
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


ENGINES = ["oxigraph", "virtuoso"]


@contextmanager
def sparql_engine(engine: str, rdf_files: list[Path], workdir: Path) -> Iterator[str]:
    """The RDF files served read-only on 127.0.0.1 by ``engine``; yields the query URL.
    Virtuoso is what the public DBpedia endpoint runs (tests/virtuoso.py)."""
    if engine == "oxigraph":
        require_oxigraph()
        with serve_rdf_store(load_rdf_store(rdf_files, workdir / "store"), query_timeout_s=30) as url:
            yield url
        return
    reason = virtuoso.ensure_installed()
    if reason:
        pytest.skip(reason)
    with virtuoso.virtuoso_endpoint(rdf_files, workdir / "virtuoso") as url:
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
