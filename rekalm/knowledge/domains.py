"""Item domains: the typed view of one ``domains.<name>`` block of config/domains.yaml.

A domain says what its items are called (``item_noun``), how DBpedia types and labels
them (``dbpedia_types``, ``label_qualifiers``, ``year_property``), which DBpedia
predicates name which relation (``relations``: short name -> one or more IRIs, each IRI
under one name only) and which item columns serve as relations offline
(``attribute_relations``: short name -> column). For example::

    book:
      relations:
        author: {uri: [http://dbpedia.org/property/author, http://dbpedia.org/property/authors]}
        genre: {uri: http://dbpedia.org/property/genre}
      attribute_relations:
        release_year: {column: year}

gives ``DomainSettings(name="book", relations=(Relation("author", (".../author",
".../authors")), Relation("genre", (".../genre",))),
attribute_relations=(AttributeRelation("release_year", "year"),), ...)``.
Config order is kept: it is the order of relations in the triples table.
Keys this view does not read (sentence templates) belong to the lexicalizer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rekalm.knowledge.sparql import sparql_iri


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
