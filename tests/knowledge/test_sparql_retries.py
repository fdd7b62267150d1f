"""SparqlClient against a scripted local server (scripted_sparql_server.py): what is retried
(429, 5xx, malformed answers, a hang) with which backoff, jitter and Retry-After, what fails
at once with one line, and the spacing of requests."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from scripted_sparql_server import ScriptedServer
from synthetic_dbpedia import closed_port

from rekalm.knowledge.dbpedia import DbpediaSettings
from rekalm.knowledge.sparql import (
    ClientSettings,
    EndpointUnreachable,
    QueryCache,
    QueryRejected,
    SparqlClient,
    SparqlError,
)


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
