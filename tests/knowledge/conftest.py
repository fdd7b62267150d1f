"""Fixtures of the knowledge tests: the synthetic DBpedia dump (synthetic_dbpedia.py) and a
read-only SPARQL endpoint serving it, once per engine (oxigraph, Virtuoso).

Session-scoped: the lookup tests in several files share one server per engine, as they did
when they were one file (Virtuoso takes seconds to start); the tests only read from it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic_dbpedia import ENGINES, sparql_engine, synthetic_graph


@pytest.fixture(scope="session")
def synthetic_dump(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synthetic_rdf") / "films.ttl"
    synthetic_graph().serialize(path, format="turtle", encoding="utf-8")
    return path


@pytest.fixture(scope="session", params=ENGINES)
def synthetic_endpoint(request, synthetic_dump, tmp_path_factory):
    with sparql_engine(request.param, [synthetic_dump], tmp_path_factory.mktemp(f"synthetic_{request.param}")) as url:
        yield url
