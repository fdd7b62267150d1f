"""The SPARQL client of the knowledge lookup: safe query terms, an on-disk query cache, and
a resilient SELECT client over SPARQLWrapper.

- Terms: every value entering a query goes through :func:`sparql_string` (a literal with
  quotes and backslashes escaped, optional language tag: ``sparql_string("Heat", "en")``
  gives ``"Heat"@en``) or :func:`sparql_iri` (``<...>``, forbidden characters
  percent-encoded).
- Cache: :class:`QueryCache`, one JSON file per query, named by the SHA-256 of the
  namespace and the query text, so a re-run makes no request.
- Client: :class:`SparqlClient` adds a request budget, a politeness delay, a per-request
  deadline and retries with "equal jitter" backoff: with
  ``step = min(max_s, initial_s * 2**attempt)`` the wait is ``step/2 + U(0, 1) * step/2``,
  and at least the server's ``Retry-After`` (seconds or an HTTP date); a ``Retry-After``
  beyond ``max_retry_after_s`` fails at once with one line. An answer that is
  partial or cut at the server's row cap is never cached. Failures are
  :class:`SparqlError` subclasses with one-line messages.

Nothing here knows about items or DBpedia relations; :mod:`rekalm.knowledge.lookup_dbpedia` builds
the queries. The same client talks to the public DBpedia endpoint and to a local oxigraph
server over dump files (:mod:`rekalm.knowledge.oxigraph_server`), so the query code is identical for
both sources.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import random
import re
import socket
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard
from urllib.parse import quote

from SPARQLWrapper import JSON, POST, SPARQLWrapper
from SPARQLWrapper.Wrapper import QueryResult

from rekalm.common.io import write_json
from rekalm.common.request_deadline import RequestDeadline, deadline_opener, retry_after_s
from rekalm.version import __version__

log = logging.getLogger(__name__)

Binding = dict[str, dict[str, str]]
"""One row of a SPARQL JSON result: variable -> {"type", "value", optional "xml:lang"/"datatype"}."""

DEFAULT_USER_AGENT = f"rekalm/{__version__} (knowledge lookup for LLM recommenders; SPARQLWrapper)"


class SparqlError(RuntimeError):
    """A query could not be answered; the message is one line meant for the rule's log."""


class EndpointUnreachable(SparqlError):
    """No connection could be made to the endpoint (DNS, refused, reset) after all retries."""


class RequestBudgetExhausted(SparqlError):
    """``max_requests`` was reached; what was fetched so far stays in the cache."""


class QueryRejected(SparqlError):
    """The endpoint answered HTTP 400: retrying the same text cannot help."""


class ResultCapExceeded(SparqlError):
    """The answer is larger than the endpoint's row cap (Virtuoso's ResultSetMaxRows, 10,000
    on public DBpedia): Virtuoso refuses to sort past it (error SR353) and cuts unsorted
    answers at it, flagged only by ``X-SPARQL-MaxRows``. Asking for fewer rows (a smaller
    batch) helps; retrying the same text cannot."""


def one_line(text: object, limit: int = 300) -> str:
    """Collapse whitespace so an error stays on one log line, and keep it short."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# --------------------------------------------------------------------------------------
# Query terms. Titles come from datasets and may contain quotes, backslashes or newlines;
# every value that enters a query goes through these two functions.
# --------------------------------------------------------------------------------------

_STRING_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "'": "\\'",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]+(-[A-Za-z0-9]+)*$")
_IRI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
# Characters that SPARQL's IRIREF production forbids (plus controls and space).
_IRI_FORBIDDEN = set('<>"{}|^`\\') | {chr(code) for code in range(0x21)}


def sparql_string(text: str, language: str | None = None) -> str:
    """``text`` as a SPARQL string literal (``"..."`` or ``"..."@lang``) that cannot end early.

    Every backslash is doubled. SPARQL 1.1 (section 19.2) lets engines expand ``\\uXXXX``
    codepoint escapes *before* parsing, so a title holding the six characters ``\\u0022``
    could turn into a quote there; writing the ``u`` after a backslash as ``\\u0075``
    makes both kinds of engine read back exactly the original characters.
    """
    if not isinstance(text, str):
        raise ValueError(f"SPARQL literal: expected a string, got {type(text).__name__}")
    pieces: list[str] = []
    previous = ""
    for char in text:
        if previous == "\\" and char in "uU":
            pieces.append(f"\\u{ord(char):04X}")
        else:
            pieces.append(_STRING_ESCAPES.get(char, char))
        previous = char
    quoted = '"' + "".join(pieces) + '"'
    if language is None:
        return quoted
    if not _LANGUAGE_TAG.match(language):
        raise ValueError(f"SPARQL literal: language tag {language!r} is not a valid BCP 47 tag")
    return f"{quoted}@{language}"


def sparql_iri(uri: str) -> str:
    """``<uri>`` for a query; characters an IRIREF cannot hold are percent-encoded.

    DBpedia writes such characters percent-encoded itself, so encoding them keeps the IRI
    equal to the stored one while making it impossible to close the ``<...>`` early.
    """
    if not isinstance(uri, str) or not _IRI_SCHEME.match(uri):
        raise ValueError(f"SPARQL IRI: expected an absolute IRI such as http://dbpedia.org/resource/X, got {uri!r}")
    encoded = "".join(quote(char, safe="") if char in _IRI_FORBIDDEN else char for char in uri)
    return f"<{encoded}>"


def values_block(variable: str, terms: Sequence[str]) -> str:
    """``VALUES ?variable { t1 t2 ... }`` from already-escaped terms."""
    return f"VALUES ?{variable} {{ {' '.join(terms)} }}"


def term_year(term: dict[str, str] | None) -> int | None:
    """The year at the start of a date-like literal (xsd:date, gYear, "1995-05-01"), else None."""
    if not term:
        return None
    match = re.match(r"^\s*(-?\d{4})", term.get("value", ""))
    return int(match.group(1)) if match else None


# --------------------------------------------------------------------------------------
# On-disk cache: one JSON file per query, named by the hash of (namespace, query).
# --------------------------------------------------------------------------------------


class QueryCache:
    """Results keyed by ``sha256(namespace + query)``, one file each, written atomically.

    One file per query (rather than one database) means a killed run loses at most the
    query in flight, parallel rules never contend for a lock, and a re-run reads results
    back without any request. The namespace separates endpoints: the public DBpedia and a
    local dump can answer the same query differently.
    """

    def __init__(self, root: str | os.PathLike[str], namespace: str) -> None:
        self.root = Path(root)
        self.namespace = namespace

    def key(self, query: str) -> str:
        return hashlib.sha256(f"{self.namespace}\n{query}".encode()).hexdigest()

    def path(self, query: str) -> Path:
        key = self.key(query)
        return self.root / key[:2] / f"{key}.json"

    def get(self, query: str) -> dict[str, Any] | None:
        path = self.path(query)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            log.warning("cache file %s is unreadable; fetching the query again", path)
            return None
        if not isinstance(entry, dict) or entry.get("namespace") != self.namespace or entry.get("query") != query:
            return None
        result = entry.get("result")
        return result if _is_select_result(result) else None

    def put(self, query: str, result: dict[str, Any]) -> None:
        write_json({"namespace": self.namespace, "query": query, "result": result}, self.path(query))


# --------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSettings:
    timeout_s: float = 60.0
    """Deadline of one request (connect, headers and body together), retried like any timeout."""
    retries: int = 5
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 120.0
    max_retry_after_s: float = 300.0
    """The longest ``Retry-After`` waited for; a server asking for more fails the query."""
    request_delay_s: float = 0.5
    max_requests: int | None = None
    user_agent: str = DEFAULT_USER_AGENT


@dataclass
class RequestCounters:
    requests: int = 0
    """HTTP requests sent, retries included (what ``max_requests`` limits)."""
    cache_hits: int = 0
    retries: int = 0
    fetched: int = 0
    """Queries answered by the endpoint (and then cached)."""
    empty_answers: int = 0
    """Queries (fetched or cached) answered with no rows: all of them means a wrong endpoint."""


class _Retryable(Exception):
    def __init__(self, reason: str, *, unreachable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unreachable = unreachable
        self.retry_after = retry_after


@dataclass
class SparqlClient:
    """SELECT queries with a cache, a request budget, politeness delay and retries.

    ``sleep``, ``clock`` and ``jitter`` are injectable so tests can check the backoff
    schedule without waiting for it.
    """

    endpoint: str
    cache: QueryCache | None = None
    settings: ClientSettings = field(default_factory=ClientSettings)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    jitter: Callable[[], float] = random.random
    counters: RequestCounters = field(default_factory=RequestCounters)
    _last_request_at: float | None = field(default=None, init=False, repr=False)

    def select(self, query: str) -> list[Binding]:
        """The bindings of one SELECT query, from the cache when it was asked before."""
        result = self.cache.get(query) if self.cache is not None else None
        if result is not None:
            self.counters.cache_hits += 1
        else:
            result = self._fetch_with_retries(query)
            self.counters.fetched += 1
            if self.cache is not None:
                self.cache.put(query, result)
        bindings: list[Binding] = result["results"]["bindings"]
        self.counters.empty_answers += not bindings
        return bindings

    def select_pages(self, query: str, page_size: int) -> list[Binding]:
        """All bindings of an ORDER BY query, fetched ``page_size`` rows at a time.

        Each page is its own cached query, so a run killed between pages resumes at the
        first page it does not have. ``page_size`` must not exceed the server's own row
        cap (public DBpedia: 10,000), or a truncated page would look like the last one.
        """
        if page_size < 1:
            raise ValueError(f"dbpedia.page_size: expected a positive integer, got {page_size}")
        rows: list[Binding] = []
        offset = 0
        while True:
            page = self.select(f"{query}\nLIMIT {page_size}\nOFFSET {offset}")
            rows.extend(page)
            if len(page) < page_size:
                return rows
            offset += page_size

    # -- one query over the network ----------------------------------------------------

    def _fetch_with_retries(self, query: str) -> dict[str, Any]:
        attempts = self.settings.retries + 1
        failure: _Retryable | None = None
        for attempt in range(attempts):
            self._check_budget()
            self._wait_politely()
            try:
                return self._fetch_once(query)
            except _Retryable as error:
                failure = error
                self._check_retry_after(error)
            if attempt + 1 < attempts:
                delay = self._backoff_delay(attempt, failure.retry_after)
                self.counters.retries += 1
                log.warning(
                    "SPARQL %s: %s; retry %d/%d in %.1f s",
                    self.endpoint,
                    failure.reason,
                    attempt + 1,
                    self.settings.retries,
                    delay,
                )
                self.sleep(delay)
        assert failure is not None
        message = f"SPARQL endpoint {self.endpoint} failed after {attempts} attempt(s): {failure.reason}"
        if failure.unreachable:
            raise EndpointUnreachable(
                one_line(
                    f"SPARQL endpoint {self.endpoint} is unreachable ({failure.reason}) after {attempts} attempt(s)"
                )
            )
        raise SparqlError(one_line(message))

    def _check_retry_after(self, failure: _Retryable) -> None:
        # Retrying before the server's Retry-After only earns another 429 (and risks a ban).
        cap = self.settings.max_retry_after_s
        if failure.retry_after is not None and failure.retry_after > cap:
            raise SparqlError(
                f"SPARQL endpoint {self.endpoint} answered {failure.reason} asking to wait "
                f"{failure.retry_after:.0f} s (Retry-After), more than dbpedia.max_retry_after_s={cap:g}; "
                "re-run later (answers so far are cached) or raise it"
            )

    def _check_budget(self) -> None:
        budget = self.settings.max_requests
        if budget is not None and self.counters.requests >= budget:
            where = f"cached in {self.cache.root}" if self.cache is not None else "not cached (no cache_dir)"
            raise RequestBudgetExhausted(
                f"request budget dbpedia.max_requests={budget} used up; everything fetched so far is {where}: "
                "re-run to continue, or raise the budget"
            )

    def _wait_politely(self) -> None:
        if self._last_request_at is None or self.settings.request_delay_s <= 0:
            return
        remaining = self._last_request_at + self.settings.request_delay_s - self.clock()
        if remaining > 0:
            self.sleep(remaining)

    def _backoff_delay(self, attempt: int, retry_after: float | None) -> float:
        # "Equal jitter": at least half the exponential step, so retries from parallel
        # rules spread out without ever retrying immediately.
        step = min(self.settings.backoff_max_s, self.settings.backoff_initial_s * 2**attempt)
        delay = step / 2 + self.jitter() * step / 2
        if retry_after is not None:
            delay = max(delay, retry_after)  # at most max_retry_after_s (_check_retry_after)
        return delay

    def _fetch_once(self, query: str) -> dict[str, Any]:
        wrapper = SPARQLWrapper(self.endpoint, agent=self.settings.user_agent)
        wrapper.setMethod(POST)  # VALUES blocks of 50 IRIs overflow GET URL limits
        wrapper.setReturnFormat(JSON)
        wrapper.setOnlyConneg(True)  # Accept header only; no ?format= that some servers reject
        wrapper.setQuery(query)
        timed_out = f"timed out: no complete answer within {self.settings.timeout_s:g} s"
        self.counters.requests += 1
        self._last_request_at = self.clock()
        with RequestDeadline(self.settings.timeout_s) as deadline:
            try:
                # SPARQLWrapper builds the request; our opener sends it, so the deadline
                # can reach its socket (SPARQLWrapper's own urlopen cannot be given one).
                response = QueryResult(
                    (deadline_opener(deadline).open(wrapper._createRequest(), timeout=self.settings.timeout_s), JSON)
                )
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # content-type mismatch: checked below
                    try:
                        # Virtuoso (public DBpedia) answers 200 with a *truncated* result when
                        # its "anytime" timeout fires and flags it only in this header; caching
                        # it would silently lose facts for good.
                        partial = response.response.headers.get("X-SQL-State")
                        row_cap = response.response.headers.get("X-SPARQL-MaxRows")
                        payload = response.convert()
                    finally:
                        response.response.close()
            except urllib.error.HTTPError as error:
                body = _body(error)
                if error.code == 400:
                    raise QueryRejected(
                        one_line(f"SPARQL endpoint {self.endpoint} rejected the query (HTTP 400): {body}")
                    ) from None
                if error.code == 500 and "SR353" in body:  # Virtuoso: "Sorted TOP clause specifies more then N rows"
                    raise ResultCapExceeded(
                        one_line(f"SPARQL endpoint {self.endpoint} will not sort more rows than its cap: {body}")
                    ) from None
                if error.code in (401, 403, 404, 414):
                    raise SparqlError(
                        one_line(
                            f"SPARQL endpoint {self.endpoint} refused the request: HTTP {error.code} {error.reason}"
                        )
                    ) from None
                if error.code in (408, 429) or error.code >= 500:
                    raise _Retryable(f"HTTP {error.code}", retry_after=retry_after_s(error.headers)) from None
                raise SparqlError(
                    one_line(f"SPARQL endpoint {self.endpoint} answered HTTP {error.code} {error.reason}")
                ) from None
            except urllib.error.URLError as error:
                if deadline.expired or isinstance(error.reason, (TimeoutError, socket.timeout)):
                    raise _Retryable(timed_out) from None
                raise _Retryable(one_line(error.reason), unreachable=True) from None
            except TimeoutError:
                raise _Retryable(timed_out) from None
            except (ConnectionError, http.client.HTTPException, OSError) as error:
                if deadline.expired:
                    raise _Retryable(timed_out) from None
                raise _Retryable(
                    f"connection failed ({type(error).__name__})",
                    unreachable=isinstance(error, ConnectionRefusedError),
                ) from None
            except (ValueError, TypeError, UnicodeDecodeError) as error:
                raise _Retryable(
                    timed_out if deadline.expired else f"malformed response ({type(error).__name__})"
                ) from None
        if deadline.expired:  # whatever arrived was cut short
            raise _Retryable(timed_out)
        if partial:
            raise _Retryable(f"incomplete result (X-SQL-State {one_line(partial, 40)})")
        if not _is_select_result(payload):
            raise _Retryable("malformed response (not SPARQL JSON results)")
        if row_cap and _cut_at_cap(query, len(payload["results"]["bindings"]), row_cap):
            raise ResultCapExceeded(f"SPARQL endpoint {self.endpoint} cut the answer at its cap of {row_cap} rows")
        return {"head": payload.get("head", {}), "results": {"bindings": payload["results"]["bindings"]}}


def _body(error: urllib.error.HTTPError) -> str:
    try:
        return error.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


_LIMIT = re.compile(r"\bLIMIT\s+(\d+)\s*(?:OFFSET\s+\d+\s*)?$", re.IGNORECASE)


def _cut_at_cap(query: str, rows: int, row_cap: str) -> bool:
    """Whether an answer of ``rows`` rows was cut at the server's cap: it reached the cap and
    the query did not itself ask for at most that many rows."""
    try:
        cap = int(row_cap)
    except ValueError:
        return False
    limit = _LIMIT.search(query.strip())
    return rows >= cap and (limit is None or int(limit.group(1)) > cap)


def _is_select_result(payload: object) -> TypeGuard[dict[str, Any]]:
    if not isinstance(payload, dict):
        return False
    results = payload.get("results")
    if not isinstance(results, dict) or not isinstance(results.get("bindings"), list):
        return False
    return all(
        isinstance(row, dict) and all(isinstance(term, dict) and "value" in term for term in row.values())
        for row in results["bindings"]
    )


__all__ = [
    "Binding",
    "ClientSettings",
    "EndpointUnreachable",
    "QueryCache",
    "QueryRejected",
    "RequestBudgetExhausted",
    "RequestCounters",
    "SparqlClient",
    "SparqlError",
    "one_line",
    "sparql_iri",
    "sparql_string",
    "term_year",
    "values_block",
]
