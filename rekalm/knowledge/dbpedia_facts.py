"""The fact and abstract queries of the DBpedia lookup, and the tables their answers make.

For a batch of URIs, :func:`facts_query` asks every predicate of the domain's relations
at once and :func:`fetch_facts` names each answer row by the predicate the endpoint
returned with it (never by its position in a list), so a value cannot drift to a
neighbouring relation::

    ?uri = dbr:Heat_(1995_film)  ?p = dbo:director  ?o = dbr:Michael_Mann
    -> ("http://dbpedia.org/resource/Heat_(1995_film)", "director", "Michael Mann")

The value is the object's English label, else the literal itself, else the readable end
of its IRI (:func:`fact_value`, :func:`readable_iri`). A mapped URI that has become a
redirect is followed one ``dbo:wikiPageRedirects`` hop. :func:`fetch_abstracts` gives
each URI its first English ``dbo:abstract``. A batch whose answer exceeds the endpoint's
row cap is asked again in halves (:func:`select_batch`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from urllib.parse import unquote

import pandas as pd
from tqdm import tqdm

from rekalm.knowledge.dbpedia import DBO_ABSTRACT, DBO_REDIRECTS, RDFS_LABEL, DbpediaSettings
from rekalm.knowledge.domains import Relation
from rekalm.knowledge.sparql import Binding, ResultCapExceeded, SparqlClient, sparql_iri, sparql_string, values_block

log = logging.getLogger(__name__)


def _subject_pattern(predicate: str, obj: str, condition: str = "") -> str:
    # A mapped URI may since have become a redirect (films get renamed): follow one
    # dbo:wikiPageRedirects hop so the facts of the target are found.
    return (
        f"{{ ?uri {predicate} {obj} {condition} }} UNION "
        f"{{ ?uri <{DBO_REDIRECTS}> ?target . ?target {predicate} {obj} {condition} }}"
    )


def facts_query(uris: Sequence[str], relations: Sequence[Relation], language: str) -> str:
    # FILTER(?p IN (...)) rather than VALUES ?p: oxigraph joins a VALUES ?p block as a
    # cross product (0.5 s vs 0.06 s per 50 films), and Virtuoso handles both alike.
    predicates = ", ".join(sparql_iri(uri) for relation in relations for uri in relation.uris)
    lang = sparql_string(language)
    return (
        "SELECT DISTINCT ?uri ?p ?o ?label WHERE {\n"
        f"  {values_block('uri', [sparql_iri(uri) for uri in uris])}\n"
        f"  {_subject_pattern('?p', '?o', f'FILTER(?p IN ({predicates}))')}\n"
        f'  FILTER(!isLiteral(?o) || lang(?o) = "" || langMatches(lang(?o), {lang}))\n'
        f"  OPTIONAL {{ ?o <{RDFS_LABEL}> ?label . FILTER(langMatches(lang(?label), {lang})) }}\n"
        "}\n"
        "ORDER BY ?uri ?p ?o ?label"
    )


def abstracts_query(uris: Sequence[str], language: str) -> str:
    return (
        "SELECT DISTINCT ?uri ?abstract WHERE {\n"
        f"  {values_block('uri', [sparql_iri(uri) for uri in uris])}\n"
        f"  {_subject_pattern(f'<{DBO_ABSTRACT}>', '?abstract')}\n"
        f"  FILTER(langMatches(lang(?abstract), {sparql_string(language)}))\n"
        "}\n"
        "ORDER BY ?uri ?abstract"
    )


def readable_iri(iri: str) -> str:
    """A label for an IRI without one: "Category:Films_directed_by_X" -> "Films directed by X"."""
    local = re.split(r"[/#]", iri.rstrip("/"))[-1]
    local = unquote(local).replace("_", " ")
    return re.sub(r"^Category:", "", local).strip()


def fact_value(binding: Binding) -> str | None:
    """The English text of a fact's object: its label, the literal itself, or the IRI's name."""
    label = binding.get("label")
    if label and label.get("value", "").strip():
        return label["value"].strip()
    obj = binding.get("o", {})
    kind = obj.get("type")
    if kind in ("literal", "typed-literal"):
        return obj.get("value", "").strip() or None
    if kind == "uri":
        return readable_iri(obj["value"]) or None
    return None  # blank nodes carry no readable value


def _batches(values: Sequence[str], size: int) -> list[list[str]]:
    return [list(values[start : start + size]) for start in range(0, len(values), size)]


def select_batch(
    client: SparqlClient, batch: Sequence[str], make_query: Callable[[Sequence[str]], str], page_size: int
) -> list[Binding]:
    """All rows of ``make_query(batch)``; a batch whose answer exceeds the endpoint's row cap
    (public DBpedia: 10,000, no paging past it) is split in halves until each fits."""
    try:
        return client.select_pages(make_query(batch), page_size)
    except ResultCapExceeded:
        if len(batch) == 1:
            raise
        middle = len(batch) // 2
        log.info("a batch of %d URIs exceeds the endpoint's row cap; asking in halves", len(batch))
        return select_batch(client, batch[:middle], make_query, page_size) + select_batch(
            client, batch[middle:], make_query, page_size
        )


def _bindings_in_batches(
    uris: Sequence[str],
    make_query: Callable[[Sequence[str]], str],
    client: SparqlClient,
    settings: DbpediaSettings,
    what: str,
) -> Iterator[Binding]:
    """Every answer row of ``make_query`` over ``uris``, ``batch_size`` URIs a query, in order."""
    for batch in tqdm(
        _batches(uris, settings.batch_size),
        desc=f"lookup_dbpedia {what}",
        unit="batch",
        mininterval=10,
        disable=not uris,
    ):
        yield from select_batch(client, batch, make_query, settings.page_size)


def fetch_facts(
    uris: Sequence[str], relations: Sequence[Relation], client: SparqlClient, settings: DbpediaSettings
) -> pd.DataFrame:
    """(uri, relation, value) for every relation of the domain; one query per URI batch."""
    relation_of: dict[str, str] = {}
    for relation in relations:
        for uri in relation.uris:
            relation_of[uri] = relation.name
            relation_of[sparql_iri(uri)[1:-1]] = relation.name  # as sent, if it had to be encoded
    rows: list[tuple[str, str, str]] = []
    if not relations:
        return pd.DataFrame(rows, columns=["uri", "relation", "value"], dtype="str")
    for binding in _bindings_in_batches(
        uris, lambda uris: facts_query(uris, relations, settings.language), client, settings, "facts"
    ):
        predicate = binding.get("p", {}).get("value")
        # The relation is named by the returned predicate itself.
        relation_name = relation_of.get(predicate) if predicate is not None else None
        value = fact_value(binding)
        if relation_name is None or value is None or "uri" not in binding:
            continue
        rows.append((binding["uri"]["value"], relation_name, value))
    return pd.DataFrame(rows, columns=["uri", "relation", "value"], dtype="str").drop_duplicates(ignore_index=True)


def fetch_abstracts(uris: Sequence[str], client: SparqlClient, settings: DbpediaSettings) -> dict[str, str]:
    """uri -> English abstract (the first in order when a page has several)."""
    abstracts: dict[str, str] = {}
    for binding in _bindings_in_batches(
        uris, lambda uris: abstracts_query(uris, settings.language), client, settings, "abstracts"
    ):
        text = binding.get("abstract", {}).get("value", "").strip()
        if text and "uri" in binding:
            abstracts.setdefault(binding["uri"]["value"], text)
    return abstracts
