"""Factual knowledge for the ``graph`` and ``text`` sources: DBpedia over SPARQL, or the
dataset's own item attributes.

Outputs (see :func:`lookup_knowledge`):

``triples`` — item (str), relation (str, a short name from ``domains.<d>.relations`` or
    ``attribute_relations``), value (str, an English label), source ('dbpedia'|'attributes').
    Ordered by item (items.parquet order), relation (config order), then value.
``abstracts`` — item (str), abstract (str): the English ``dbo:abstract``; empty (with this
    schema) when the ``text`` source is not taken from DBpedia.
``mapping`` — item (str), dbpedia_uri (str, null when unmapped), how ('mapping'|'label'|'unmapped').
``stats`` — share mapped, requests made, cache hits, counts per relation.

How an item reaches DBpedia: the dataset's own mapping (items.parquet ``dbpedia_uri``) when
it has one; otherwise an exact English ``rdfs:label`` match on title variants such as
"Heat (1995 film)", "Heat (film)", "Heat", restricted to the domain's ``dbpedia_types`` and,
where both are known, to a release year within one year of the item's.

Every query is batched (``batch_size`` URIs per VALUES block), paged (``page_size`` rows per
LIMIT/OFFSET page) and cached on disk, so a first run makes about one request per batch per
query group (labels, facts, abstracts) and a re-run none. Each fact is named by the
predicate the endpoint returned with it, never by its position in a list, so values cannot
drift to a neighbouring relation (the original's MovieLens defect, protocol.md defect 1).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

import numpy as np
import pandas as pd
from tqdm import tqdm

from rekalm.io import read_parquet, write_json, write_parquet
from rekalm.sparql import (
    Binding,
    ClientSettings,
    QueryCache,
    RequestCounters,
    ResultCapExceeded,
    SparqlClient,
    dump_fingerprint,
    local_sparql_endpoint,
    sparql_iri,
    sparql_string,
    term_year,
    values_block,
)

log = logging.getLogger(__name__)

TRIPLE_COLUMNS = ("item", "relation", "value", "source")
ABSTRACT_COLUMNS = ("item", "abstract")
MAPPING_COLUMNS = ("item", "dbpedia_uri", "how")

RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
DBO_ABSTRACT = "http://dbpedia.org/ontology/abstract"
DBO_REDIRECTS = "http://dbpedia.org/ontology/wikiPageRedirects"

GraphSource = Literal["dbpedia", "attributes", "original", "none"]
TextSource = Literal["dbpedia", "none"]


# --------------------------------------------------------------------------------------
# Settings from config
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Relation:
    name: str
    uris: tuple[str, ...]


@dataclass(frozen=True)
class AttributeRelation:
    name: str
    column: str


@dataclass(frozen=True)
class DomainSettings:
    """One block of config/domains.yaml."""

    name: str
    item_noun: str = "item"
    dbpedia_types: tuple[str, ...] = ()
    label_qualifiers: tuple[str, ...] = ()
    year_property: str | None = None
    relations: tuple[Relation, ...] = ()
    attribute_relations: tuple[AttributeRelation, ...] = ()

    @classmethod
    def from_config(cls, name: str, block: Mapping[str, Any]) -> DomainSettings:
        where = f"domains.{name}"
        relations = tuple(
            _relation(f"{where}.relations.{key}", key, spec) for key, spec in (block.get("relations") or {}).items()
        )
        seen: dict[str, str] = {}
        for relation in relations:
            for uri in relation.uris:
                if uri in seen:
                    raise ValueError(
                        f"{where}.relations: {uri} is listed under both {seen[uri]!r} and {relation.name!r}"
                    )
                seen[uri] = relation.name
        attributes = []
        for key, spec in (block.get("attribute_relations") or {}).items():
            if not isinstance(spec, Mapping) or not isinstance(spec.get("column"), str):
                raise ValueError(
                    f"{where}.attribute_relations.{key}: expected a mapping with a 'column' name, got {spec!r}"
                )
            attributes.append(AttributeRelation(str(key), spec["column"]))
        return cls(
            name=name,
            item_noun=str(block.get("item_noun", "item")),
            dbpedia_types=tuple(block.get("dbpedia_types") or ()),
            label_qualifiers=tuple(block.get("label_qualifiers") or ()),
            year_property=block.get("year_property"),
            relations=relations,
            attribute_relations=tuple(attributes),
        )


def _relation(where: str, name: str, spec: Any) -> Relation:
    uris = spec.get("uri") if isinstance(spec, Mapping) else None
    if isinstance(uris, str):
        uris = [uris]
    if not uris or not all(isinstance(uri, str) and uri for uri in uris):
        raise ValueError(f"{where}: expected a mapping with 'uri' (an IRI or a list of IRIs), got {spec!r}")
    for uri in uris:
        sparql_iri(uri)  # fails early, naming the IRI, if it is not absolute
    return Relation(str(name), tuple(uris))


@dataclass(frozen=True)
class KnowledgeRoute:
    """Where the ``graph`` and ``text`` sources of a dataset come from."""

    graph: GraphSource = "none"
    text: TextSource = "none"

    @classmethod
    def from_config(cls, knowledge: Mapping[str, Any] | None) -> KnowledgeRoute:
        knowledge = knowledge or {}
        graph = (knowledge.get("graph") or {}).get("source", "none")
        text = (knowledge.get("text") or {}).get("source", "none")
        if graph not in ("dbpedia", "attributes", "original", "none"):
            raise ValueError(f"knowledge.graph.source: expected 'dbpedia', 'attributes' or 'original', got {graph!r}")
        if text not in ("dbpedia", "none"):
            raise ValueError(f"knowledge.text.source: expected 'dbpedia', got {text!r}")
        return cls(graph, text)

    @property
    def needs_dbpedia(self) -> bool:
        return self.graph == "dbpedia" or self.text == "dbpedia"


@dataclass(frozen=True)
class DbpediaSettings:
    """The global ``dbpedia:`` config block."""

    endpoint: str = "https://dbpedia.org/sparql"
    local_dump: tuple[str, ...] | None = None
    local_store_dir: str = "results/cache/oxigraph"
    cache_dir: str | None = "results/cache/sparql"
    batch_size: int = 50
    page_size: int = 10000
    request_delay_s: float = 0.5
    max_requests: int | None = None
    timeout_s: float = 60  # an int, as config files give it: settings are fingerprinted
    retries: int = 5
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 120.0
    language: str = "en"
    label_lookup: bool = True
    year_tolerance: int = 1

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None) -> DbpediaSettings:
        block = dict(block or {})
        backoff = block.pop("backoff", None) or {}
        known = {name for name in cls.__dataclass_fields__ if not name.startswith("backoff")}
        unknown = sorted(set(block) - known)
        if unknown:
            raise ValueError(f"dbpedia: unknown key(s) {unknown}; known: {sorted(known | {'backoff'})}")
        if block.get("local_dump") is not None:
            dump = block["local_dump"]
            block["local_dump"] = (dump,) if isinstance(dump, str) else tuple(dump)
            if not block["local_dump"]:
                block["local_dump"] = None
        settings = cls(
            **block,
            backoff_initial_s=float(backoff.get("initial_s", cls.backoff_initial_s)),
            backoff_max_s=float(backoff.get("max_s", cls.backoff_max_s)),
        )
        for key in ("batch_size", "page_size"):
            if int(getattr(settings, key)) < 1:
                raise ValueError(f"dbpedia.{key}: expected a positive integer, got {getattr(settings, key)}")
        return settings

    def client_settings(self) -> ClientSettings:
        return ClientSettings(
            timeout_s=self.timeout_s,
            retries=self.retries,
            backoff_initial_s=self.backoff_initial_s,
            backoff_max_s=self.backoff_max_s,
            request_delay_s=self.request_delay_s,
            max_requests=self.max_requests,
        )


@dataclass
class LookupResult:
    triples: pd.DataFrame
    abstracts: pd.DataFrame
    mapping: pd.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# Small table helpers
# --------------------------------------------------------------------------------------


def empty_frame(columns: Sequence[str]) -> pd.DataFrame:
    """A zero-row table with string columns, so downstream readers always see the schema."""
    return pd.DataFrame({column: pd.Series([], dtype="str") for column in columns})


def check_items(items: pd.DataFrame, source: str = "items.parquet") -> None:
    missing = [column for column in ("item", "name") if column not in items.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}")
    duplicated = items["item"][items["item"].duplicated()]
    if len(duplicated):
        raise ValueError(f"{source}: item ids must be unique; {duplicated.iloc[0]!r} appears more than once")


def _cell_values(cell: Any) -> list[str]:
    """The text values of one attribute cell: lists give one value per element, NA none."""
    if isinstance(cell, (list, tuple, np.ndarray, pd.Series)):
        values = list(cell)
    elif cell is None or (not isinstance(cell, str) and pd.isna(cell)):
        return []
    else:
        values = [cell]
    texts = []
    for value in values:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            continue
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)  # a year read as float must read "1995", not "1995.0"
        text = str(value).strip()
        if text:
            texts.append(text)
    return texts


# --------------------------------------------------------------------------------------
# Offline route: facts from item attributes
# --------------------------------------------------------------------------------------


def attribute_triples(
    items: pd.DataFrame, relations: Sequence[AttributeRelation], source: str = "items.parquet"
) -> pd.DataFrame:
    """(item, relation, value, 'attributes') from item columns, in item then config order."""
    rows: list[tuple[int, int, str, str]] = []
    for order, relation in enumerate(relations):
        if relation.column not in items.columns:
            raise ValueError(
                f"{source}: column {relation.column!r} (attribute relation {relation.name!r}) is missing; "
                f"columns are {list(items.columns)}"
            )
        for position, (item, cell) in enumerate(zip(items["item"], items[relation.column])):
            rows.extend((position, order, str(item), value) for value in dict.fromkeys(_cell_values(cell)))
    if not rows:
        return empty_frame(TRIPLE_COLUMNS)
    rows.sort(key=lambda row: (row[0], row[1]))  # stable: values keep their source order
    names = [relation.name for relation in relations]
    return pd.DataFrame(
        {
            "item": pd.Series([row[2] for row in rows], dtype="str"),
            "relation": pd.Series([names[row[1]] for row in rows], dtype="str"),
            "value": pd.Series([row[3] for row in rows], dtype="str"),
            "source": pd.Series(["attributes"] * len(rows), dtype="str"),
        }
    )


def mapping_from_items(items: pd.DataFrame, source: str = "items.parquet") -> pd.DataFrame:
    """The dataset's own DBpedia mapping (items.parquet ``dbpedia_uri``), validated."""
    if "dbpedia_uri" in items.columns:
        uris = [(_cell_values(uri) or [None])[0] for uri in items["dbpedia_uri"]]
    else:
        uris = [None] * len(items)
    for item, uri in zip(items["item"], uris):
        if uri is not None and not re.match(r"^https?://", uri):
            raise ValueError(f"{source}: dbpedia_uri of item {item!r} is {uri!r}; expected an http(s) IRI or null")
    return pd.DataFrame(
        {
            "item": pd.Series(items["item"].astype(str).tolist(), dtype="str"),
            "dbpedia_uri": pd.Series(uris, dtype="str"),
            "how": pd.Series(["mapping" if uri else "unmapped" for uri in uris], dtype="str"),
        }
    )


# --------------------------------------------------------------------------------------
# Label lookup for items without a mapped URI
# --------------------------------------------------------------------------------------

_YEAR_SUFFIX = re.compile(r"\s*\((\d{4})\)\s*$")
_TRAILING_PARENTHESES = re.compile(r"\s*\([^()]*\)\s*$")
# MovieLens writes "Matrix, The" and "Cité des enfants perdus, La"; Wikipedia titles put
# the article first.
_TRAILING_ARTICLE = re.compile(
    r"^(?P<rest>.+), (?P<article>The|A|An|Les|Le|La|Los|Las|El|Il|Lo|Die|Der|Das|L')$", re.IGNORECASE
)


def split_title_year(name: str) -> tuple[str, int | None]:
    """("Heat", 1995) from "Heat (1995)"; the year is None when the name has none."""
    match = _YEAR_SUFFIX.search(name)
    if not match:
        return name.strip(), None
    return name[: match.start()].strip(), int(match.group(1))


def _article_first(title: str) -> str:
    match = _TRAILING_ARTICLE.match(title)
    if not match:
        return title
    article = match.group("article")
    joiner = "" if article.endswith("'") else " "
    return f"{article}{joiner}{match.group('rest')}"


def title_variants(title: str) -> list[str]:
    """Plausible Wikipedia titles for a dataset title, most likely first.

    "City of Lost Children, The (Cité des enfants perdus, La)" gives "The City of Lost
    Children", then the unchanged forms.
    """
    without_alias = _TRAILING_PARENTHESES.sub("", title).strip() or title
    ordered = [_article_first(without_alias), _article_first(title), without_alias, title]
    return [variant for variant in dict.fromkeys(v.strip() for v in ordered) if variant]


def label_candidates(name: str, year: int | None, qualifiers: Sequence[str]) -> list[str]:
    """Labels to try, most specific first: "T (1995 film)", "T (film)", "T"."""
    title, year_in_name = split_title_year(name)
    year = year if year is not None else year_in_name
    variants = title_variants(title) or [name]
    labels: list[str] = []
    if year is not None:
        labels += [f"{variant} ({year} {qualifier})" for variant in variants for qualifier in qualifiers]
    labels += [f"{variant} ({qualifier})" for variant in variants for qualifier in qualifiers]
    labels += variants
    return list(dict.fromkeys(labels))


def label_query(labels: Sequence[str], domain: DomainSettings, language: str) -> str:
    """Entities whose English label is one of the candidate labels, with type and date.

    One variable per VALUES block: Virtuoso 7.2 (DBpedia's engine) answers a leading
    two-variable block such as ``VALUES (?key ?label) {(0 "a") (0 "b")}`` with no rows at
    all, so the caller maps labels back to its items itself.
    """
    terms = " ".join(sparql_string(label, language) for label in labels)
    type_filter = ""
    if domain.dbpedia_types:
        type_filter = (
            f"?entity <{RDF_TYPE}> ?type .\n  {values_block('type', [sparql_iri(t) for t in domain.dbpedia_types])}"
        )
    date = f"OPTIONAL {{ ?entity {sparql_iri(domain.year_property)} ?date }}" if domain.year_property else ""
    return (
        "SELECT DISTINCT ?label ?entity ?date WHERE {\n"
        f"  VALUES ?label {{ {terms} }}\n"
        f"  ?entity <{RDFS_LABEL}> ?label .\n"
        f"  {type_filter}\n"
        f"  {date}\n"
        "}\n"
        "ORDER BY ?label ?entity ?date"
    )


def _item_year(row: Any) -> int | None:
    year = getattr(row, "year", None)
    if year is None or pd.isna(year):
        return None
    return int(year)


def choose_entity(
    candidates: Sequence[str], rows: Sequence[Binding], item_year: int | None, tolerance: int
) -> str | None:
    """The best entity among label matches: most specific label, then closest year, then IRI.

    An entity whose known release years are all more than ``tolerance`` away from the
    item's year is dropped: a remake sharing the title is a different item.
    """
    rank = {label: position for position, label in enumerate(candidates)}
    entities: dict[str, dict[str, Any]] = {}
    for row in rows:
        entity = row.get("entity", {})
        if entity.get("type") != "uri":
            continue
        info = entities.setdefault(entity["value"], {"rank": math.inf, "years": set()})
        info["rank"] = min(info["rank"], rank.get(row["label"]["value"], math.inf))
        year = term_year(row.get("date"))
        if year is not None:
            info["years"].add(year)
    scored = []
    for uri, info in entities.items():
        distance = 2  # year unknown on one side
        if item_year is not None and info["years"]:
            gap = min(abs(year - item_year) for year in info["years"])
            if gap > tolerance:
                continue
            distance = 0 if gap == 0 else 1
        scored.append((info["rank"], distance, uri))
    return min(scored)[2] if scored else None


def lookup_labels(
    items: pd.DataFrame, client: SparqlClient, domain: DomainSettings, settings: DbpediaSettings
) -> dict[str, str]:
    """item -> URI for the given items, by exact label match (one query per batch)."""
    found: dict[str, str] = {}
    rows = list(items.itertuples(index=False))
    batches = [rows[start : start + settings.batch_size] for start in range(0, len(rows), settings.batch_size)]
    for batch in tqdm(batches, desc="lookup_dbpedia labels", unit="batch", mininterval=10, disable=not batches):
        candidates = [label_candidates(str(row.name), _item_year(row), domain.label_qualifiers) for row in batch]
        labels = list(dict.fromkeys(label for item_labels in candidates for label in item_labels))
        bindings = client.select_pages(label_query(labels, domain, settings.language), settings.page_size)
        by_label: dict[str, list[Binding]] = {}
        for binding in bindings:
            if "label" in binding:
                by_label.setdefault(binding["label"]["value"], []).append(binding)
        for key, row in enumerate(batch):
            year = _item_year(row) or split_title_year(str(row.name))[1]
            rows = [binding for label in candidates[key] for binding in by_label.get(label, [])]
            entity = choose_entity(candidates[key], rows, year, settings.year_tolerance)
            if entity is not None:
                found[str(row.item)] = entity
    return found


def map_items(
    items: pd.DataFrame, client: SparqlClient | None, domain: DomainSettings, settings: DbpediaSettings
) -> pd.DataFrame:
    """The dataset's mapping, completed by label lookup for unmapped items (when enabled)."""
    mapping = mapping_from_items(items)
    unmapped = mapping["how"] == "unmapped"
    if client is None or not settings.label_lookup or not unmapped.any():
        return mapping
    found = lookup_labels(items[unmapped.to_numpy()], client, domain, settings)
    uris = [
        found.get(item, uri) if how == "unmapped" else uri
        for item, uri, how in zip(mapping["item"], mapping["dbpedia_uri"], mapping["how"])
    ]
    hows = [
        "label" if how == "unmapped" and item in found else how for item, how in zip(mapping["item"], mapping["how"])
    ]
    mapping["dbpedia_uri"] = pd.Series(uris, dtype="str")
    mapping["how"] = pd.Series(hows, dtype="str")
    return mapping


# --------------------------------------------------------------------------------------
# Facts and abstracts
# --------------------------------------------------------------------------------------


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


def fetch_facts(
    uris: Sequence[str], relations: Sequence[Relation], client: SparqlClient, settings: DbpediaSettings
) -> pd.DataFrame:
    """(uri, relation, value) for every relation of the domain; one query per URI batch."""
    relation_of = {}
    for relation in relations:
        for uri in relation.uris:
            relation_of[uri] = relation.name
            relation_of[sparql_iri(uri)[1:-1]] = relation.name  # as sent, if it had to be encoded
    rows: list[tuple[str, str, str]] = []
    if not relations:
        return pd.DataFrame(rows, columns=["uri", "relation", "value"], dtype="str")
    for batch in tqdm(
        _batches(uris, settings.batch_size),
        desc="lookup_dbpedia facts",
        unit="batch",
        mininterval=10,
        disable=not uris,
    ):
        for binding in select_batch(
            client, batch, lambda uris: facts_query(uris, relations, settings.language), settings.page_size
        ):
            predicate = binding.get("p", {}).get("value")
            relation = relation_of.get(predicate)  # named by the returned predicate itself
            value = fact_value(binding)
            if relation is None or value is None or "uri" not in binding:
                continue
            rows.append((binding["uri"]["value"], relation, value))
    return pd.DataFrame(rows, columns=["uri", "relation", "value"], dtype="str").drop_duplicates(ignore_index=True)


def fetch_abstracts(uris: Sequence[str], client: SparqlClient, settings: DbpediaSettings) -> dict[str, str]:
    """uri -> English abstract (the first in order when a page has several)."""
    abstracts: dict[str, str] = {}
    for batch in tqdm(
        _batches(uris, settings.batch_size),
        desc="lookup_dbpedia abstracts",
        unit="batch",
        mininterval=10,
        disable=not uris,
    ):
        for binding in select_batch(
            client, batch, lambda uris: abstracts_query(uris, settings.language), settings.page_size
        ):
            text = binding.get("abstract", {}).get("value", "").strip()
            if text and "uri" in binding:
                abstracts.setdefault(binding["uri"]["value"], text)
    return abstracts


def dbpedia_triples(mapping: pd.DataFrame, facts: pd.DataFrame, relations: Sequence[Relation]) -> pd.DataFrame:
    """Facts per item (items sharing a URI share its facts), in item, relation, value order."""
    mapped = mapping.dropna(subset=["dbpedia_uri"])[["item", "dbpedia_uri"]]
    mapped = mapped.assign(_item_order=np.arange(len(mapped)))
    joined = mapped.merge(facts, left_on="dbpedia_uri", right_on="uri", how="inner")
    if joined.empty:
        return empty_frame(TRIPLE_COLUMNS)
    relation_order = {relation.name: position for position, relation in enumerate(relations)}
    joined = joined.assign(_relation_order=joined["relation"].map(relation_order))
    joined = joined.sort_values(["_item_order", "_relation_order", "value"], kind="stable")
    return pd.DataFrame(
        {
            "item": pd.Series(joined["item"].tolist(), dtype="str"),
            "relation": pd.Series(joined["relation"].tolist(), dtype="str"),
            "value": pd.Series(joined["value"].tolist(), dtype="str"),
            "source": pd.Series(["dbpedia"] * len(joined), dtype="str"),
        }
    ).drop_duplicates(ignore_index=True)


def item_abstracts(mapping: pd.DataFrame, abstracts: Mapping[str, str]) -> pd.DataFrame:
    rows = [
        (item, abstracts[uri])
        for item, uri in zip(mapping["item"], mapping["dbpedia_uri"])
        if isinstance(uri, str) and uri in abstracts
    ]
    if not rows:
        return empty_frame(ABSTRACT_COLUMNS)
    return pd.DataFrame(
        {
            "item": pd.Series([r[0] for r in rows], dtype="str"),
            "abstract": pd.Series([r[1] for r in rows], dtype="str"),
        }
    )


# --------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------


@contextmanager
def open_endpoint(settings: DbpediaSettings) -> Iterator[tuple[str, str, str]]:
    """(query URL, cache namespace, description): the remote endpoint, or a local oxigraph
    server over the dump files for the duration of the block."""
    if settings.local_dump:
        fingerprint = dump_fingerprint(settings.local_dump)
        with local_sparql_endpoint(settings.local_dump, settings.local_store_dir, settings.timeout_s) as url:
            yield (
                url,
                f"local-dump:{fingerprint}",
                f"local dump {fingerprint} ({len(settings.local_dump)} file(s)) via oxigraph",
            )
    else:
        yield settings.endpoint, settings.endpoint, settings.endpoint


def lookup_knowledge(
    items: pd.DataFrame,
    route: KnowledgeRoute,
    domain: DomainSettings,
    settings: DbpediaSettings,
    client: SparqlClient | None = None,
) -> LookupResult:
    """Mapping, triples and abstracts for ``items``.

    Without a DBpedia source nothing touches the network: triples come from the item
    attributes and abstracts are empty. Otherwise ``client`` is used when given (tests),
    else one is opened on the configured endpoint or local dump.
    """
    check_items(items)
    started = time.monotonic()
    if not route.needs_dbpedia:
        result = _assemble(
            items, route, domain, mapping_from_items(items), None, None, RequestCounters(), "none (offline)"
        )
    elif client is not None:
        result = _lookup_online(items, route, domain, settings, client, client.endpoint)
    else:
        with open_endpoint(settings) as (url, namespace, description):
            cache = QueryCache(settings.cache_dir, namespace) if settings.cache_dir else None
            online = SparqlClient(url, cache, settings.client_settings())
            result = _lookup_online(items, route, domain, settings, online, description)
    result.stats["elapsed_s"] = round(time.monotonic() - started, 3)
    return result


def _lookup_online(
    items: pd.DataFrame,
    route: KnowledgeRoute,
    domain: DomainSettings,
    settings: DbpediaSettings,
    client: SparqlClient,
    description: str,
) -> LookupResult:
    mapping = map_items(items, client, domain, settings)
    uris = list(dict.fromkeys(uri for uri in mapping["dbpedia_uri"] if isinstance(uri, str)))
    log.info("%d of %d items mapped to %d DBpedia URIs", mapping["dbpedia_uri"].notna().sum(), len(mapping), len(uris))
    facts = fetch_facts(uris, domain.relations, client, settings) if route.graph == "dbpedia" else None
    abstracts = fetch_abstracts(uris, client, settings) if route.text == "dbpedia" else None
    return _assemble(items, route, domain, mapping, facts, abstracts, client.counters, description)


def _assemble(
    items: pd.DataFrame,
    route: KnowledgeRoute,
    domain: DomainSettings,
    mapping: pd.DataFrame,
    facts: pd.DataFrame | None,
    abstracts: Mapping[str, str] | None,
    counters: RequestCounters,
    endpoint: str,
) -> LookupResult:
    if route.graph == "attributes":
        triples = attribute_triples(items, domain.attribute_relations)
    elif route.graph == "dbpedia" and facts is not None:
        triples = dbpedia_triples(mapping, facts, domain.relations)
    else:
        triples = empty_frame(TRIPLE_COLUMNS)
    abstract_table = item_abstracts(mapping, abstracts) if abstracts is not None else empty_frame(ABSTRACT_COLUMNS)
    how = mapping["how"].value_counts()
    total = len(mapping)
    queries = counters.fetched + counters.cache_hits
    stats = {
        "domain": domain.name,
        "graph_source": route.graph,
        "text_source": route.text,
        "endpoint": endpoint,
        "items": total,
        "mapped_by": {kind: int(how.get(kind, 0)) for kind in ("mapping", "label", "unmapped")},
        "share_mapped": round(float((mapping["how"] != "unmapped").mean()) if total else 0.0, 4),
        "requests_made": counters.requests,
        "retries": counters.retries,
        "queries": queries,
        "cache_hits": counters.cache_hits,
        "cache_hit_rate": round(counters.cache_hits / queries, 4) if queries else None,
        **triple_stats(triples),
        "abstracts": len(abstract_table),
    }
    log.info(
        "lookup: %d triples, %d abstracts, %.1f%% mapped, %d requests, %d cache hits",
        stats["triples"],
        stats["abstracts"],
        100 * stats["share_mapped"],
        stats["requests_made"],
        stats["cache_hits"],
    )
    return LookupResult(triples=triples, abstracts=abstract_table, mapping=mapping, stats=stats)


def triple_stats(triples: pd.DataFrame) -> dict[str, Any]:
    return {
        "triples": len(triples),
        "triples_by_relation": {str(k): int(v) for k, v in triples["relation"].value_counts(sort=False).items()},
        "items_with_triples": int(triples["item"].nunique()),
    }


def write_lookup(
    result: LookupResult,
    triples_path: str | Path,
    abstracts_path: str | Path,
    mapping_path: str | Path,
    stats_path: str | Path,
) -> None:
    write_parquet(result.triples, triples_path)
    write_parquet(result.abstracts, abstracts_path)
    write_parquet(result.mapping, mapping_path)
    write_json(result.stats, stats_path)


def lookup_dbpedia_files(
    items_path: str | Path,
    triples_path: str | Path,
    abstracts_path: str | Path,
    mapping_path: str | Path,
    stats_path: str | Path,
    knowledge: Mapping[str, Any] | None,
    domain_name: str,
    domain: Mapping[str, Any],
    dbpedia: Mapping[str, Any] | None,
    original_files: Mapping[str, Path] | None = None,
) -> LookupResult:
    """The stage on files: read items.parquet, look up, write the four outputs atomically.
    ``original_files`` (role -> path) feed ``graph: {source: original}``."""
    items = read_parquet(items_path, required=["item", "name"])
    route = KnowledgeRoute.from_config(knowledge)
    domain_settings = DomainSettings.from_config(domain_name, domain)
    result = lookup_knowledge(items, route, domain_settings, DbpediaSettings.from_config(dbpedia))
    if route.graph == "original":
        from rekalm.original_knowledge import OriginalGraphSettings, original_triples  # imports this module

        graph = original_triples(
            items, original_files or {}, domain_settings, OriginalGraphSettings.from_config((knowledge or {})["graph"])
        )
        result.triples = graph.triples
        result.stats.update(graph_source="original", **graph.stats, **triple_stats(graph.triples))
    write_lookup(result, triples_path, abstracts_path, mapping_path, stats_path)
    return result
