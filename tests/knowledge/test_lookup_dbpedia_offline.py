"""lookup_dbpedia's offline route (triples from the items' own columns, no request), and the
dbpedia settings and domain relations it reads."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from synthetic_dbpedia import DOMAINS, closed_port

from rekalm.common.tables import ABSTRACTS
from rekalm.knowledge.dbpedia import DbpediaSettings
from rekalm.knowledge.domains import DomainSettings
from rekalm.knowledge.lookup_dbpedia import attribute_triples, lookup_dbpedia_files


def test_attributes_route_builds_triples_from_item_columns_without_network(tmp_path, monkeypatch):
    import SPARQLWrapper

    def no_network(*args, **kwargs):
        raise AssertionError("the attributes route must not query anything")

    monkeypatch.setattr(SPARQLWrapper.SPARQLWrapper, "query", no_network)
    items = pd.DataFrame(
        {
            "item": ["1", "2", "3"],
            "name": ["Toy Story (1995)", "Heat (1995)", "Untitled"],
            "year": pd.array([1995, 1995, None], dtype="Int64"),
            "genres": [["Animation", "Comedy"], [], ["Drama"]],
            "dbpedia_uri": ["http://dbpedia.org/resource/Toy_Story", None, None],
        }
    )
    items.to_parquet(tmp_path / "items.parquet", index=False)
    outputs = {name: tmp_path / "out" / f"{name}.parquet" for name in ("triples", "abstracts", "mapping")}
    unreachable = {
        "endpoint": f"http://127.0.0.1:{closed_port()}/sparql",
        "retries": 0,
        "cache_dir": str(tmp_path / "cache"),
    }
    lookup_dbpedia_files(
        tmp_path / "items.parquet",
        outputs["triples"],
        outputs["abstracts"],
        outputs["mapping"],
        tmp_path / "out" / "stats.json",
        knowledge={"collab": {"min_support": 0.1, "min_confidence": 0.1}, "graph": {"source": "attributes"}},
        domain_name="movie",
        domain=DOMAINS["movie"],
        dbpedia=unreachable,
    )
    triples = pd.read_parquet(outputs["triples"])
    assert triples.values.tolist() == [
        ["1", "genre", "Animation", "attributes"],
        ["1", "genre", "Comedy", "attributes"],
        ["1", "release_year", "1995", "attributes"],
        ["2", "release_year", "1995", "attributes"],
        ["3", "genre", "Drama", "attributes"],
    ]
    abstracts = pd.read_parquet(outputs["abstracts"])
    assert abstracts.empty and list(abstracts.columns) == list(ABSTRACTS.columns)
    assert all(str(dtype) == "str" for dtype in abstracts.dtypes)
    mapping = pd.read_parquet(outputs["mapping"])
    assert mapping["how"].tolist() == ["mapping", "unmapped", "unmapped"]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["requests_made"] == 0 and stats["graph_source"] == "attributes" and stats["triples"] == 5
    assert not (tmp_path / "cache").exists()


def test_attribute_relations_take_any_column_and_name_a_missing_one():
    boardgame = DomainSettings.from_config("boardgame", DOMAINS["boardgame"])
    games = pd.DataFrame(
        {
            "item": ["g1"],
            "name": ["Catan"],
            "year": pd.array([1995], dtype="Int64"),
            "genres": [["Negotiation"]],
            "mechanics": [["Dice Rolling", "Trading"]],
            "min_players": pd.array([3], dtype="Int64"),
            "playing_time": pd.array([None], dtype="Int64"),
        }
    )
    triples = attribute_triples(games, boardgame.attribute_relations)
    assert list(zip(triples["relation"], triples["value"])) == [
        ("category", "Negotiation"),
        ("mechanic", "Dice Rolling"),
        ("mechanic", "Trading"),
        ("min_players", "3"),
        ("release_year", "1995"),
    ]
    with pytest.raises(
        ValueError, match=r"items.parquet: column 'mechanics' \(attribute relation 'mechanic'\) is missing"
    ):
        attribute_triples(games.drop(columns="mechanics"), boardgame.attribute_relations)


def test_settings_reject_unknown_keys_and_duplicate_relation_iris():
    with pytest.raises(ValueError, match=r"dbpedia: unknown key\(s\) \['endpont'\]"):
        DbpediaSettings.from_config({"endpont": "https://dbpedia.org/sparql"})
    settings = DbpediaSettings.from_config({"backoff": {"initial_s": 1, "max_s": 9}, "local_dump": "x.ttl"})
    assert (settings.backoff_initial_s, settings.backoff_max_s, settings.local_dump) == (1.0, 9.0, ("x.ttl",))
    with pytest.raises(ValueError, match="listed under both 'a' and 'b'"):
        DomainSettings.from_config(
            "d", {"relations": {"a": {"uri": "http://x/p"}, "b": {"uri": ["http://x/q", "http://x/p"]}}}
        )


def test_domain_relations_are_the_original_relation_lists(original_data):
    def original_uris(dataset: str) -> set[str]:
        rows = [
            line.split("\t")
            for line in (original_data / dataset / "mapping_relations.tsv").read_text().splitlines()
            if line.strip()
        ]
        return {field for row in rows for field in row if field.startswith("http")}

    def configured(domain: str) -> set[str]:
        return {
            uri for relation in DomainSettings.from_config(domain, DOMAINS[domain]).relations for uri in relation.uris
        }

    assert configured("movie") == original_uris("movielens")
    assert configured("book") == original_uris("dbbook")
    assert configured("music") == original_uris("lastfm")
    for name, block in DOMAINS.items():
        assert {"item_noun", "dbpedia_types", "relations", "attribute_relations"} <= set(block), name
        assert all(isinstance(spec, dict) for spec in block["relations"].values()), name
