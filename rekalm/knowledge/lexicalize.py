"""Lexicalization: every knowledge source becomes short English texts.

A source is one function registered in :data:`LEXICALIZERS` under its config name; adding a
source (multimodal captions, reviews, ...) is one ``@register_lexicalizer`` function plus a
``lexicalize.sources`` config entry naming its input table. Each function receives the
source's table, the item table (``item``, ``name``) and the domain's config mapping, and
returns rows plus statistics.

Rows are written as JSONL. Item-keyed sources (``graph``, ``text``) write
``{"item": id, "text": ...}``; the ``collab`` source writes one row per rule
``{"rule": "r000000", "antecedent": [ids], "consequent": [ids], "confidence": float,
"text": ...}``. ``build_sets`` uses the extra rule fields to put only rules that apply to a
user's history into an in-prompt knowledge block.

The ``graph`` lexicalizer builds each sentence from ONE relation's template and ONLY that
relation's values (the original shifted values between relations: its MovieLens text named
the cinematographer under "based on"); tests check this alignment sentence by sentence.
Display names are used exactly as ``items.parquet`` holds them (the original's
``[^a-zA-Z0-9]+ -> ' '`` turned "The Matrix" into "Matrix The").
"""

from __future__ import annotations

import logging
import os
import string
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pandas as pd
from tqdm import tqdm

from rekalm.common.io import read_parquet, write_json, write_jsonl
from rekalm.common.registry import origin, register
from rekalm.common.tables import ABSTRACTS, ITEMS, RULES, TRIPLES, require_columns

log = logging.getLogger(__name__)

Row = dict[str, Any]
LexicalizerFunction = Callable[[pd.DataFrame, Mapping[str, str], Mapping[str, Any]], tuple[list[Row], dict[str, Any]]]

TEMPLATE_FIELDS = {"name", "item_noun", "values"}
DEFAULT_ITEM_INTRO = "{name} is a {item_noun}."
RULE_SENTENCE = "People who like {antecedent} also tend to like {consequent}."


@dataclass(frozen=True)
class Lexicalizer:
    name: str
    key: str  # "item" or "rule": the id field of each output row
    required_columns: tuple[str, ...]
    function: LexicalizerFunction
    may_be_empty: bool = False  # an empty text file is a result (else build_sets refuses it)


LEXICALIZERS: dict[str, Lexicalizer] = {}


def register_lexicalizer(
    name: str, key: str, required_columns: Sequence[str], may_be_empty: bool = False, replace: bool = False
) -> Callable[[LexicalizerFunction], LexicalizerFunction]:
    """Register ``function(table, names, domain) -> (rows, stats)`` as knowledge source ``name``;
    a name already taken is an error unless ``replace`` (:func:`rekalm.common.registry.register`)."""

    def decorate(function: LexicalizerFunction) -> LexicalizerFunction:
        lexicalizer = Lexicalizer(name, key, tuple(required_columns), function, may_be_empty)
        register(LEXICALIZERS, "knowledge sources", name, lexicalizer, lambda unit: unit.function, replace)
        return function

    return decorate


def join_values(values: Sequence[str]) -> str:
    """ "A", "A and B", "A, B and C"."""
    if len(values) <= 1:
        return "".join(values)
    return ", ".join(values[:-1]) + " and " + values[-1]


def _check_template(template: Any, where: str) -> str:
    if not isinstance(template, str) or not template.strip():
        raise ValueError(f"{where}: expected a non-empty template string, got {template!r}")
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ValueError(f"{where}: bad template {template!r} ({error})") from None
    unknown = fields - TEMPLATE_FIELDS
    if unknown:
        raise ValueError(
            f"{where}: unknown placeholder(s) {sorted(unknown)} in {template!r}; allowed: {sorted(TEMPLATE_FIELDS)}"
        )
    return template


def item_intro(name: str, domain: Mapping[str, Any]) -> str:
    template = _check_template(domain.get("item_intro", DEFAULT_ITEM_INTRO), "domain item_intro")
    return template.format(name=name, item_noun=domain.get("item_noun", "item"), values="")


def relation_templates(domain: Mapping[str, Any]) -> dict[str, str]:
    """relation short name -> sentence template, validated, in config order: ``relations``
    (DBpedia facts) first, then ``attribute_relations`` (facts from dataset columns); a name
    in both uses its ``relations`` template. Relations without a template are left out."""
    templates: dict[str, str] = {}
    for block in ("relations", "attribute_relations"):
        relations = domain.get(block) or {}
        if not isinstance(relations, Mapping):
            raise ValueError(
                f"domain {block}: expected a mapping of relation name -> {{template: ...}}, got "
                f"{type(relations).__name__}"
            )
        for relation, spec in relations.items():
            if isinstance(spec, Mapping) and spec.get("template") is not None and str(relation) not in templates:
                templates[str(relation)] = _check_template(spec["template"], f"domain {block} {relation!r} template")
    return templates


def item_names(items: pd.DataFrame, where: str = "items.parquet") -> dict[str, str]:
    require_columns(items, ITEMS.select("item", "name"), where)
    names = items["name"].astype("string").fillna("")
    return dict(zip(items["item"].astype(str), names.astype(str)))


def _name_of(names: Mapping[str, str], item: str, where: str) -> str:
    try:
        return names[item]
    except KeyError:
        raise ValueError(f"{where}: item {item!r} is not in items.parquet") from None


def _unique_in_order(values: Iterable[Any]) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            continue
        text = " ".join(str(value).split())
        if text:
            seen.setdefault(text, None)
    return list(seen)


def graph_sentences(
    name: str, facts: Mapping[str, Sequence[str]], domain: Mapping[str, Any]
) -> list[tuple[str | None, str]]:
    """(relation, sentence) pairs for one item: the intro (relation None), then one sentence
    per relation that has a template, in the domain's relation order, each built from that
    relation's values only."""
    templates = relation_templates(domain)
    sentences: list[tuple[str | None, str]] = [(None, item_intro(name, domain))]
    for relation, template in templates.items():
        values = list(facts.get(relation, ()))
        if values:
            sentence = template.format(
                name=name, item_noun=domain.get("item_noun", "item"), values=join_values(values)
            )
            sentences.append((relation, sentence))
    return sentences


@register_lexicalizer("graph", key="item", required_columns=TRIPLES.select("item", "relation", "value"))
def lexicalize_graph(
    triples: pd.DataFrame, names: Mapping[str, str], domain: Mapping[str, Any]
) -> tuple[list[Row], dict[str, Any]]:
    """One text per item: "<name> is a <item noun>." + one templated sentence per relation.
    Triples may come from DBpedia or from dataset attributes; only (item, relation, value) matter."""
    templates = relation_templates(domain)
    untemplated: Counter[str] = Counter()
    facts_by_item: dict[str, dict[str, list[str]]] = {}
    for item, relation, values in _grouped_values(triples):
        if relation not in templates:
            untemplated[relation] += len(values)
            continue
        facts_by_item.setdefault(item, {})[relation] = values
    rows = []
    for item, facts in tqdm(facts_by_item.items(), desc="graph", mininterval=5):
        name = _name_of(names, item, "triples.parquet")
        rows.append({"item": item, "text": " ".join(s for _, s in graph_sentences(name, facts, domain))})
    if untemplated:
        log.warning(
            "graph: triples of relations without a template were skipped: %s", dict(sorted(untemplated.items()))
        )
    relation_counts = Counter(r for facts in facts_by_item.values() for r in facts)
    stats = {
        "items": len(rows),
        "triples_in": len(triples),
        "skipped_untemplated_values": dict(sorted(untemplated.items())),
        "items_per_relation": dict(sorted(relation_counts.items())),
    }
    return _sort_by_item_order(rows, names), stats


def _grouped_values(triples: pd.DataFrame) -> Iterable[tuple[str, str, list[str]]]:
    frame = triples.assign(item=triples["item"].astype(str), relation=triples["relation"].astype(str))
    # sort=False keeps first-appearance order, so output order follows the (deterministic) input.
    for keys, group in frame.groupby(["item", "relation"], sort=False):
        item, relation = cast("tuple[str, str]", keys)  # both columns are str since the assign above
        values = _unique_in_order(group["value"])
        if values:
            yield item, relation, values


def _sort_by_item_order(rows: list[Row], names: Mapping[str, str]) -> list[Row]:
    order = {item: position for position, item in enumerate(names)}
    return sorted(rows, key=lambda row: order.get(row["item"], len(order)))


@register_lexicalizer("text", key="item", required_columns=ABSTRACTS.select("item", "abstract"))
def lexicalize_text(
    abstracts: pd.DataFrame, names: Mapping[str, str], domain: Mapping[str, Any]
) -> tuple[list[Row], dict[str, Any]]:
    """The item's description, introduced by the item intro so the text names its item.
    Whitespace is collapsed; trimming to a token budget happens in build_sets, where the
    base model's tokenizer is available (budgets are in that tokenizer's tokens)."""
    rows = []
    empty = 0
    for item, abstract in zip(abstracts["item"].astype(str), abstracts["abstract"]):
        text = " ".join(str(abstract).split()) if isinstance(abstract, str) else ""
        if not text:
            empty += 1
            continue
        rows.append(
            {"item": item, "text": item_intro(_name_of(names, item, "abstracts.parquet"), domain) + " " + text}
        )
    rows = _sort_by_item_order(_first_per_item(rows), names)
    words = pd.Series([len(r["text"].split()) for r in rows], dtype="float64")
    stats = {"items": len(rows), "empty_abstracts": empty, "words": _describe(words)}
    return rows, stats


def _first_per_item(rows: list[Row]) -> list[Row]:
    seen: dict[str, Row] = {}
    for row in rows:
        seen.setdefault(row["item"], row)
    return list(seen.values())


# No association rule at the thresholds is a documented outcome (mine_rules warns).
@register_lexicalizer(
    "collab", key="rule", required_columns=RULES.select("antecedent", "consequent", "confidence"), may_be_empty=True
)
def lexicalize_collab(
    rules: pd.DataFrame, names: Mapping[str, str], domain: Mapping[str, Any]
) -> tuple[list[Row], dict[str, Any]]:
    """One sentence per association rule: "People who like A and B also tend to like C."
    Rule ids follow rules.parquet order (which mine_rules keeps deterministic)."""
    rows: list[Row] = []
    for number, (antecedent, consequent, confidence) in enumerate(
        tqdm(
            zip(rules["antecedent"], rules["consequent"], rules["confidence"]),
            total=len(rules),
            desc="collab",
            mininterval=5,
        )
    ):
        left = [str(i) for i in antecedent]
        right = [str(i) for i in consequent]
        if not left or not right:
            raise ValueError(f"rules.parquet: rule {number} has an empty antecedent or consequent")
        text = RULE_SENTENCE.format(
            antecedent=join_values([_name_of(names, i, "rules.parquet") for i in left]),
            consequent=join_values([_name_of(names, i, "rules.parquet") for i in right]),
        )
        rows.append(
            {
                "rule": f"r{number:06d}",
                "antecedent": left,
                "consequent": right,
                "confidence": float(confidence),
                "text": text,
            }
        )
    sizes = Counter(len(r["antecedent"]) + len(r["consequent"]) for r in rows)
    return rows, {"rules": len(rows), "rules_per_itemset_size": {str(k): v for k, v in sorted(sizes.items())}}


def _describe(values: pd.Series) -> dict[str, float]:
    if values.empty:
        return {"p50": 0.0, "p95": 0.0, "max": 0.0}
    return {"p50": float(values.quantile(0.5)), "p95": float(values.quantile(0.95)), "max": float(values.max())}


def lexicalize(
    source: str, knowledge: pd.DataFrame, items: pd.DataFrame, domain: Mapping[str, Any]
) -> tuple[list[Row], dict[str, Any]]:
    """Run the registered lexicalizer ``source`` on its table."""
    if source not in LEXICALIZERS:
        raise ValueError(f"lexicalize: unknown source {source!r}; registered: {sorted(LEXICALIZERS)}")
    lexicalizer = LEXICALIZERS[source]
    require_columns(knowledge, lexicalizer.required_columns, f"{source} input")
    result = lexicalizer.function(knowledge, item_names(items), domain)
    rows, stats = _checked_result(result, lexicalizer)
    return rows, {"source": source, "key": lexicalizer.key, "rows": len(rows), **stats}


def _checked_result(result: Any, lexicalizer: Lexicalizer) -> tuple[list[Row], Mapping[str, Any]]:
    # An extension's lexicalizer is code we did not write: a wrong return value gets a line
    # naming it and the contract, not "cannot unpack non-iterable NoneType object".
    pair = isinstance(result, tuple) and len(result) == 2
    rows, stats = result if pair else (None, None)
    if not isinstance(rows, list) or not isinstance(stats, Mapping) or not all(isinstance(r, Mapping) for r in rows):
        got = f"({', '.join(type(part).__name__ for part in result)})" if pair else type(result).__name__
        raise TypeError(
            f"lexicalize: lexicalizer {lexicalizer.name!r} ({origin(lexicalizer.function)}) returned {got}; "
            "expected (rows, stats): a list of row dicts and a dict of statistics"
        )
    return rows, stats


def lexicalize_files(
    source: str,
    knowledge_path: str | os.PathLike[str],
    items_path: str | os.PathLike[str],
    domain: Mapping[str, Any],
    output_path: str | os.PathLike[str],
    stats_path: str | os.PathLike[str],
) -> dict[str, Any]:
    knowledge = read_parquet(knowledge_path)
    items = read_parquet(items_path, required=ITEMS.select("item", "name"))
    rows, stats = lexicalize(source, knowledge, items, domain)
    write_jsonl(rows, output_path)
    write_json(stats, stats_path)
    log.info("%s: %d rows -> %s", source, len(rows), output_path)
    return stats
