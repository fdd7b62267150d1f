"""lookup_dbpedia's requests: batched per 50 items, paged, cached (a re-run asks nothing, an
unreadable entry is fetched again), held to a request budget and to the endpoint's row cap,
and a killed run resumes without losing what it fetched."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from scripted_sparql_server import ScriptedServer
from synthetic_dbpedia import (
    BIG_FILM_SUBJECTS,
    BIG_FILMS,
    BOTH,
    DBR,
    DCT_SUBJECT,
    MOVIE,
    N_FILMS,
    REPO,
    client_for,
    fast_settings,
    film_items,
)

from rekalm.knowledge.lookup_dbpedia import KnowledgeRoute, lookup_knowledge
from rekalm.knowledge.sparql import RequestBudgetExhausted, ResultCapExceeded


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
