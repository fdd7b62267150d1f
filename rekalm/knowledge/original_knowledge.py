"""The ``graph`` facts of the original study, read from the files it published with its code.

The original built its ``graph`` text from pre-built tables rather than from live DBpedia
(which has changed since). This module turns those tables into the same ``triples`` table
the DBpedia route writes (item, relation, value, source='original'), so the graph
ablations of DBbook, Last.FM and MovieLens run offline on the original's inputs.

Files (roles of ``datasets.<name>.files``):

``item_props``  ``item-prop/train.tsv``: item entity id, value entity id, relation id, in
    that column order for DBbook and MovieLens and (item, relation, value) for Last.FM; the
    relation column is recognised by its values (checked, never guessed silently).
    ``item-prop/test.tsv`` is a copy of ``user-item/test.tsv`` and holds no item facts.
``relations``   ``mapping_relations.tsv``: relation id <-> relation URI (either column
    order); ids 0/1 are dislike/like and carry no item facts.
``entities``    entity id -> DBpedia URI (DBbook ``mapping_entities.tsv`` "name;uri",
    Last.FM ``mapping_props.tsv``, MovieLens ``mapping_entities.tsv``).
``names``       ``entities_names.json``: entity id -> display name.

Each value is named by its relation through the domain's relation table
(``domains.<d>.relations``, matched on the relation URI). Two defects of the original are
handled here:

- MovieLens relation ids do not match its ``mapping_relations.tsv`` (cinematographers
  appear as "based on", editors as "country"). ``relation_ids`` (config) replaces the file's
  id -> relation table; without it :func:`check_relation_alignment` stops the run, because
  the values of the id labelled ``dct:subject`` are not Wikipedia categories.
- Many names in ``entities_names.json`` belong to another page ("List of awards and
  nominations received by Robert De Niro" for Robert De Niro). ``value_names: uri``
  (default) names a value from its DBpedia URI; ``original`` keeps the file's names.

A value that neither file names is left out and counted (``original_values_without_name``,
with a warning); more than ``max_unnamed_share`` of the facts about the items is an error
naming the file, as for unnamed items in ``prepare``: the file is wrong or truncated.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from rekalm.common.tables import TRIPLES
from rekalm.data.prepare import read_entity_names, read_original_uris
from rekalm.knowledge.dbpedia_facts import readable_iri
from rekalm.knowledge.domains import DomainSettings

log = logging.getLogger(__name__)

#: The file roles (``datasets.<ds>.files``) that ``knowledge.graph.source: original`` reads.
FILE_ROLES = ("item_props", "relations", "entities", "names")
SUBJECT_URI = "http://purl.org/dc/terms/subject"
INTERACTION_RELATIONS = {"like", "dislike"}
_DISAMBIGUATION = re.compile(r"\s*\([^()]*\)\s*$")

ValueNames = Literal["uri", "original"]
Match = Literal["item", "dbpedia_uri"]


@dataclass(frozen=True)
class OriginalGraphSettings:
    """``datasets.<name>.knowledge.graph`` when its ``source`` is ``original``."""

    relation_ids: Mapping[int, str] | None = None  # relation id -> domain relation name
    value_names: ValueNames = "uri"
    match: Match = "item"  # item ids are entity ids, or join on items' dbpedia_uri
    # Facts whose value has no name are left out; more than this share of the facts about the
    # items means a wrong or truncated entities/names file, not a few gaps (an error).
    max_unnamed_share: float = 0.1

    @classmethod
    def from_config(cls, block: Mapping[str, Any]) -> OriginalGraphSettings:
        ids = block.get("relation_ids")
        value_names = block.get("value_names", cls.value_names)
        match = block.get("match", cls.match)
        if value_names not in ("uri", "original"):
            raise ValueError(f"knowledge.graph.value_names: expected 'uri' or 'original', got {value_names!r}")
        if match not in ("item", "dbpedia_uri"):
            raise ValueError(f"knowledge.graph.match: expected 'item' or 'dbpedia_uri', got {match!r}")
        share = float(block.get("max_unnamed_share", cls.max_unnamed_share))
        if not 0 <= share <= 1:
            raise ValueError(f"knowledge.graph.max_unnamed_share: expected a share in [0, 1], got {share!r}")
        return cls({int(key): str(name) for key, name in ids.items()} if ids else None, value_names, match, share)


@dataclass
class OriginalGraph:
    triples: pd.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)


def read_relations(path: Path) -> dict[int, str]:
    """Relation id -> URI from ``mapping_relations.tsv`` ("id<TAB>uri" or "uri<TAB>id")."""
    frame = pd.read_csv(path, sep="\t", header=None, dtype=str, quoting=csv.QUOTE_NONE, keep_default_na=False)
    if frame.shape[1] != 2:
        raise ValueError(
            f"{path}: expected 2 tab-separated columns (relation id, relation URI), found {frame.shape[1]}"
        )
    relations: dict[int, str] = {}
    for row, (first, second) in enumerate(zip(frame[0].str.strip(), frame[1].str.strip()), start=1):
        if first.isdigit() != second.isdigit():
            number, uri = (first, second) if first.isdigit() else (second, first)
            relations[int(number)] = uri
        else:
            raise ValueError(f"{path}: row {row}: expected one relation id and one URI, got {first!r}, {second!r}")
    return relations


def read_item_props(path: Path, relation_ids: set[int]) -> pd.DataFrame:
    """(item, value, relation) as integer ids, whichever column holds the relation."""
    frame = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False)
    if frame.shape[1] != 3:
        raise ValueError(f"{path}: expected 3 tab-separated columns (item, value, relation), found {frame.shape[1]}")
    numbers = frame.apply(pd.to_numeric, errors="coerce")
    if numbers.isna().any().any():
        row = int(numbers.isna().any(axis=1).to_numpy().nonzero()[0][0])
        raise ValueError(f"{path}: row {row + 1}: expected three integer ids, got {frame.iloc[row].tolist()}")
    numbers = numbers.astype("int64")
    # Column 3 holds the relation in DBbook/MovieLens, column 2 in Last.FM: the relation column
    # is the one whose every value is a relation id of mapping_relations.tsv.
    fits = [column for column in (2, 1) if numbers[column].isin(relation_ids).all()]
    if len(fits) != 1:
        raise ValueError(
            f"{path}: cannot tell the relation column: {'both' if fits else 'neither'} of columns 2 and 3 hold only "
            "relation ids of mapping_relations.tsv"
        )
    relation = fits[0]
    value = 3 - relation
    return pd.DataFrame({"item": numbers[0], "value": numbers[value], "relation": numbers[relation]})


def relation_names(
    relation_uris: Mapping[int, str], domain: DomainSettings, override: Mapping[int, str] | None
) -> dict[int, str]:
    """Relation id -> the domain's short relation name; like/dislike and unknown URIs are left out."""
    by_uri = {uri: relation.name for relation in domain.relations for uri in relation.uris}
    known = {relation.name for relation in domain.relations}
    if override is not None:
        unknown = sorted(name for name in override.values() if name not in known)
        if unknown:
            raise ValueError(
                f"knowledge.graph.relation_ids: {unknown} are not relations of domain {domain.name!r} (known: "
                f"{sorted(known)})"
            )
        missing = sorted(
            set(relation_uris)
            - set(override)
            - {i for i, uri in relation_uris.items() if uri in INTERACTION_RELATIONS}
        )
        if missing:
            raise ValueError(
                f"knowledge.graph.relation_ids: relation id(s) {missing} of mapping_relations.tsv have no entry"
            )
        return dict(override)
    return {number: by_uri[uri] for number, uri in relation_uris.items() if uri in by_uri}


def check_relation_alignment(
    facts: pd.DataFrame,
    names: Mapping[int, str],
    relation_uris: Mapping[int, str],
    overridden: bool,
    domain: DomainSettings,
    value_uris: Mapping[str, str],
    path: Path,
) -> None:
    """Stop when relation ids and values disagree: a ``dct:subject`` relation must hold
    Wikipedia categories and no other relation may (the original's MovieLens defect)."""
    uris_of_name = {relation.name: set(relation.uris) for relation in domain.relations}
    uris = facts["value"].astype(str).map(value_uris)
    is_category = uris.fillna("").str.contains("/Category:", regex=False)
    known = uris.notna()
    for number, name in names.items():
        relation_uri = {relation_uris.get(number)} if not overridden else uris_of_name.get(name, set())
        if len(relation_uri & {SUBJECT_URI}) != len(relation_uri) and SUBJECT_URI in relation_uri:
            continue  # a name merging dct:subject with other IRIs: no single expectation
        rows = (facts["relation"] == number) & known
        if not rows.any():
            continue
        share = float(is_category[rows].mean())
        expected_category = relation_uri == {SUBJECT_URI}
        if (expected_category and share < 0.5) or (not expected_category and share > 0.5):
            example = uris[rows].iloc[0]
            raise ValueError(
                f"{path}: relation id {number} is read as {name!r} but {share:.0%} of its values are Wikipedia "
                "categories "
                f"(e.g. {example}): the relation ids do not match mapping_relations.tsv; set "
                "knowledge.graph.relation_ids"
            )


def value_name(uri: str | None, original_name: str | None, how: ValueNames) -> str | None:
    """A value's display name: from its DBpedia URI ("Category:American_films" -> "American
    films", "Michael_Kahn_(film_editor)" -> "Michael Kahn"), or the original's name."""
    if how == "original" or not uri:
        return original_name.strip() if original_name and original_name.strip() else None
    name = _DISAMBIGUATION.sub("", readable_iri(uri)).strip()
    return name or None


def item_entities(
    items: pd.DataFrame, entity_uris: Mapping[str, str], match: Match, source: str = "items.parquet"
) -> dict[str, str]:
    """item -> entity id of the knowledge files."""
    if match == "item":
        return {str(item): str(item) for item in items["item"]}
    if "dbpedia_uri" not in items.columns:
        raise ValueError(
            f"{source}: knowledge.graph.match 'dbpedia_uri' needs a dbpedia_uri column (a DBpedia mapping file)"
        )
    entity_of_uri = {uri: entity for entity, uri in entity_uris.items()}
    return {
        str(item): entity_of_uri[uri]
        for item, uri in zip(items["item"], items["dbpedia_uri"])
        if isinstance(uri, str) and uri in entity_of_uri
    }


def _check_unnamed_values(
    unnamed: int, about_items: int, files: Mapping[str, Path], settings: OriginalGraphSettings
) -> None:
    """The rule for unnamed items (``prepare``'s ``max_unnamed_share``), for values: a few
    are a logged, counted repair; more than the share is a wrong or truncated file."""
    if not unnamed:
        return
    # The file a value's name comes from (value_names: uri falls back to the names file).
    where = files["entities"] if settings.value_names == "uri" else files["names"]
    if unnamed > settings.max_unnamed_share * about_items:
        raise ValueError(
            f"{where}: {unnamed} of {about_items} facts about the items have a value without a name (more than "
            f"knowledge.graph.max_unnamed_share={settings.max_unnamed_share:g}); is the file complete?"
        )
    log.warning(
        "%s: %d of %d facts about the items have a value without a name; left out "
        "(original_values_without_name in stats.json)",
        where,
        unnamed,
        about_items,
    )


def original_triples(
    items: pd.DataFrame, files: Mapping[str, Path], domain: DomainSettings, settings: OriginalGraphSettings
) -> OriginalGraph:
    """The original's facts about ``items`` as (item, relation, value, 'original') rows, in
    item (items.parquet), relation (config) and value (file) order."""
    missing = [role for role in FILE_ROLES if role not in files]
    if missing:
        raise ValueError(f"knowledge.graph.source 'original' needs the file role(s) {missing} (datasets.<name>.files)")
    relation_uris = read_relations(files["relations"])
    facts = read_item_props(files["item_props"], set(relation_uris))
    names_of = relation_names(relation_uris, domain, settings.relation_ids)
    entity_uris = read_original_uris(files["entities"])
    check_relation_alignment(
        facts, names_of, relation_uris, settings.relation_ids is not None, domain, entity_uris, files["item_props"]
    )
    entity_names = read_entity_names(files["names"])

    interaction = facts["relation"].map(relation_uris).isin(INTERACTION_RELATIONS)
    unknown_relation = ~facts["relation"].isin(names_of) & ~interaction
    if unknown_relation.any():
        dropped = sorted({relation_uris[number] for number in facts.loc[unknown_relation, "relation"]})
        log.warning(
            "%s: %d fact(s) under relations the domain %r does not list were left out: %s",
            files["item_props"],
            int(unknown_relation.sum()),
            domain.name,
            dropped,
        )
    facts = facts[~interaction & ~unknown_relation]

    entity_of = item_entities(items, entity_uris, settings.match)
    item_of_entity: dict[str, list[str]] = {}
    for item, entity in entity_of.items():
        item_of_entity.setdefault(entity, []).append(item)
    order = {relation.name: position for position, relation in enumerate(domain.relations)}
    position = {str(item): index for index, item in enumerate(items["item"])}
    rows, unnamed, about_items = [], 0, 0
    for entity, value, number in zip(facts["item"].astype(str), facts["value"].astype(str), facts["relation"]):
        if entity not in item_of_entity:
            continue
        about_items += 1
        text = value_name(entity_uris.get(value), entity_names.get(value), settings.value_names)
        if text is None:
            unnamed += 1
            continue
        for item in item_of_entity[entity]:
            rows.append((position[item], order[names_of[number]], item, names_of[number], text))
    _check_unnamed_values(unnamed, about_items, files, settings)
    if not rows:
        raise ValueError(
            f"{files['item_props']}: no fact about any of the {len(items)} items (knowledge.graph.match is "
            f"{settings.match!r}; do the item ids fit the files?)"
        )
    rows.sort(key=lambda row: (row[0], row[1]))  # stable: values keep their file order
    triples = pd.DataFrame(
        {
            "item": pd.Series([row[2] for row in rows], dtype="str"),
            "relation": pd.Series([row[3] for row in rows], dtype="str"),
            "value": pd.Series([row[4] for row in rows], dtype="str"),
            "source": pd.Series(["original"] * len(rows), dtype="str"),
        }
    ).drop_duplicates(ignore_index=True)
    stats = {
        "original_facts": int(len(facts)),
        "original_facts_about_items": about_items,
        "original_items_matched": int(len(entity_of)),
        "original_values_without_name": unnamed,
        "original_facts_unknown_relation": int(unknown_relation.sum()),
        "original_value_names": settings.value_names,
        "original_relation_ids": "config" if settings.relation_ids is not None else "mapping_relations.tsv",
    }
    log.info("original knowledge: %d triples about %d items", len(triples), triples["item"].nunique())
    return OriginalGraph(triples[list(TRIPLES.columns)] if len(triples) else TRIPLES.empty(), stats)
