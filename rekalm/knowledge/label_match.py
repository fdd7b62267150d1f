"""Label matching: an item without a mapped DBpedia URI is found by an exact English
``rdfs:label`` match on plausible Wikipedia titles of its name.

Candidates, most specific first (:func:`label_candidates`), for "Heat (1995)" in the movie
domain (qualifier "film")::

    ["Heat (1995 film)", "Heat (film)", "Heat"]

Dataset titles are normalized first (:func:`title_variants`): a trailing article moves to
the front and a trailing alias in parentheses is dropped, so "City of Lost Children, The
(Cité des enfants perdus, La)" tries "The City of Lost Children" first. Among the entities
that match (restricted to the domain's ``dbpedia_types``), :func:`choose_entity` takes the
most specific label, then the closest release year, then the smallest IRI; an entity whose
known years are all more than ``year_tolerance`` from the item's is a different item.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import pandas as pd
from tqdm import tqdm

from rekalm.knowledge.dbpedia import RDF_TYPE, RDFS_LABEL, DbpediaSettings
from rekalm.knowledge.domains import DomainSettings
from rekalm.knowledge.sparql import Binding, SparqlClient, sparql_iri, sparql_string, term_year, values_block

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
            matched = [binding for label in candidates[key] for binding in by_label.get(label, [])]
            entity = choose_entity(candidates[key], matched, year, settings.year_tolerance)
            if entity is not None:
                found[str(row.item)] = entity
    return found
