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
it has one; otherwise an exact English ``rdfs:label`` match (:mod:`rekalm.knowledge.label_match`)
on title variants such as "Heat (1995 film)", "Heat (film)", "Heat", restricted to the
domain's ``dbpedia_types`` and, where both are known, to a release year within one year of
the item's. Facts and abstracts of the mapped URIs come from :mod:`rekalm.knowledge.dbpedia_facts`;
the domain's relations from :mod:`rekalm.knowledge.domains`; the endpoint, batching and politeness
from :class:`rekalm.knowledge.dbpedia.DbpediaSettings`.

Every query is batched (``batch_size`` URIs per VALUES block), paged (``page_size`` rows per
LIMIT/OFFSET page) and cached on disk, so a first run makes about one request per batch per
query group (labels, facts, abstracts) and a re-run none. Each fact is named by the
predicate the endpoint returned with it, never by its position in a list, so values cannot
drift to a neighbouring relation (the original study's MovieLens triples had exactly that
defect).

This module orchestrates the stage: it routes each source (DBpedia, item attributes, the
original study's files, or none), maps items, joins the fetched facts to items, and
writes the four outputs.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from rekalm.common.io import read_parquet, write_json, write_parquet
from rekalm.common.tables import ABSTRACTS, ITEMS, TRIPLES, require_columns
from rekalm.knowledge.dbpedia import DbpediaSettings
from rekalm.knowledge.dbpedia_facts import fetch_abstracts, fetch_facts
from rekalm.knowledge.domains import AttributeRelation, DomainSettings, Relation
from rekalm.knowledge.label_match import lookup_labels
from rekalm.knowledge.oxigraph_server import dump_fingerprint, local_sparql_endpoint
from rekalm.knowledge.sparql import QueryCache, RequestCounters, SparqlClient

log = logging.getLogger(__name__)

GraphSource = Literal["dbpedia", "attributes", "original", "none"]
TextSource = Literal["dbpedia", "none"]


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


@dataclass
class LookupResult:
    triples: pd.DataFrame
    abstracts: pd.DataFrame
    mapping: pd.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# Input check
# --------------------------------------------------------------------------------------


def check_items(items: pd.DataFrame, source: str = "items.parquet") -> None:
    require_columns(items, ITEMS.select("item", "name"), source)
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
        return TRIPLES.empty()
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
    uris: list[str | None]
    if "dbpedia_uri" in items.columns:
        uris = [next(iter(_cell_values(uri)), None) for uri in items["dbpedia_uri"]]  # the first, if any
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
# Mapping: the dataset's own, completed by label lookup
# --------------------------------------------------------------------------------------


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
# Item tables from the fetched facts and abstracts
# --------------------------------------------------------------------------------------


def dbpedia_triples(mapping: pd.DataFrame, facts: pd.DataFrame, relations: Sequence[Relation]) -> pd.DataFrame:
    """Facts per item (items sharing a URI share its facts), in item, relation, value order."""
    mapped = mapping.dropna(subset=["dbpedia_uri"])[["item", "dbpedia_uri"]]
    mapped = mapped.assign(_item_order=np.arange(len(mapped)))
    joined = mapped.merge(facts, left_on="dbpedia_uri", right_on="uri", how="inner")
    if joined.empty:
        return TRIPLES.empty()
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
        return ABSTRACTS.empty()
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
    _warn_if_every_answer_was_empty(client.counters, description)
    return _assemble(items, route, domain, mapping, facts, abstracts, client.counters, description)


def _warn_if_every_answer_was_empty(counters: RequestCounters, endpoint: str) -> None:
    # A wrong endpoint (another SPARQL service, an empty local dump) answers every query
    # correctly with no rows: nothing fails here, and the empty knowledge would only show
    # later (an ablation without facts), so say it now.
    queries = counters.fetched + counters.cache_hits
    if queries and counters.empty_answers == queries:
        log.warning(
            "SPARQL endpoint %s answered all %d queries with no rows: is it the endpoint you meant "
            "(dbpedia.endpoint, dbpedia.local_dump) and does it hold DBpedia?",
            endpoint,
            queries,
        )


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
        triples = TRIPLES.empty()
    abstract_table = item_abstracts(mapping, abstracts) if abstracts is not None else ABSTRACTS.empty()
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
        "empty_answers": counters.empty_answers,
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
    items = read_parquet(items_path, required=ITEMS.select("item", "name"))
    route = KnowledgeRoute.from_config(knowledge)
    domain_settings = DomainSettings.from_config(domain_name, domain)
    result = lookup_knowledge(items, route, domain_settings, DbpediaSettings.from_config(dbpedia))
    if route.graph == "original":
        from rekalm.knowledge.original_knowledge import OriginalGraphSettings, original_triples  # imports this module

        graph = original_triples(
            items, original_files or {}, domain_settings, OriginalGraphSettings.from_config((knowledge or {})["graph"])
        )
        result.triples = graph.triples
        result.stats.update(graph_source="original", **graph.stats, **triple_stats(graph.triples))
    write_lookup(result, triples_path, abstracts_path, mapping_path, stats_path)
    return result
