import json
from pathlib import Path

import pandas as pd
import pytest

from rekalm.data.prepare import PrepareSettings, Repairs, dataset_stats, prepare_dataset
from rekalm.data.raw_files import binarize

RECBOLE_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "1m_1\tThe Matrix (1999)\t5\t100\n"
    "1m_1\tToy Story (1995)\t3\t101\n"
    "1m_2\tThe Matrix (1999)\t4\t102\n"
    "1m_2\tSe7en (1995)\t1\t103\n"
    "1m_2\tSe7en (1995)\t5\t104\n"
)
RECBOLE_ITEM = (
    "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\n"
    "The Matrix (1999)\tThe Matrix\t1999\tAction Sci-Fi\n"
    "Toy Story (1995)\tToy Story\t1995\tAnimation Children's Comedy\n"
    "Se7en (1995)\tSe7en\t1995\tCrime Thriller\n"
    "Unrated (2000)\tUnrated\t2000\tDrama\n"
)


def write(folder: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = folder / name
    path.write_text(text, encoding=encoding)
    return path


def test_ml1m_recbole_keeps_titles_intact_and_binarizes(tmp_path):
    files = {"ratings": write(tmp_path, "r.inter", RECBOLE_INTER), "items": write(tmp_path, "i.item", RECBOLE_ITEM)}
    files["dbpedia_mapping"] = write(
        tmp_path, "map.tsv", "2571\tThe Matrix (1999)\thttp://dbpedia.org/resource/The_Matrix\n"
    )
    interactions, items = prepare_dataset("ml1m_recbole", files, PrepareSettings(like_if=">= 4"))
    assert interactions[["user", "item", "liked"]].values.tolist() == [
        ["1m_1", "The Matrix (1999)", 1],
        ["1m_1", "Toy Story (1995)", 0],
        ["1m_2", "The Matrix (1999)", 1],
        ["1m_2", "Se7en (1995)", 0],  # the duplicate rating keeps the first row
    ]
    assert interactions["timestamp"].tolist() == [100, 101, 102, 103]
    assert sorted(items["name"]) == ["Se7en (1995)", "The Matrix (1999)", "Toy Story (1995)"]  # unrated item dropped
    matrix = items.set_index("item").loc["The Matrix (1999)"]
    assert list(matrix["genres"]) == ["Action", "Sci-Fi"] and matrix["year"] == 1999
    assert matrix["dbpedia_uri"] == "http://dbpedia.org/resource/The_Matrix"
    assert pd.isna(items.set_index("item").loc["Se7en (1995)", "dbpedia_uri"])


@pytest.mark.parametrize(("like_if", "label"), [(">= 1", "liked"), ("> 5", "disliked")])
def test_a_like_rule_that_gives_one_label_is_a_warning(tmp_path, caplog, like_if, label):
    """like_if ">= 1" on a 1-5 scale liked everything; nothing said so until the metrics
    came out perfect (split now stops on it too)."""
    files = {"ratings": write(tmp_path, "r.inter", RECBOLE_INTER), "items": write(tmp_path, "i.item", RECBOLE_ITEM)}
    with caplog.at_level("WARNING", logger="rekalm.data.prepare"):
        prepare_dataset("ml1m_recbole", files, PrepareSettings(like_if=like_if))
    assert (
        f"{files['ratings']}: all 4 interactions kept are {label} (like_if='{like_if}'): no test user can be ranked "
        "meaningfully" in caplog.text
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger="rekalm.data.prepare"):
        prepare_dataset("ml1m_recbole", files, PrepareSettings(like_if=">= 4"))
    assert "interactions kept are" not in caplog.text


def test_ml1m_grouplens_dat_files(tmp_path):
    files = {
        "ratings": write(tmp_path, "ratings.dat", "1::2571::5::978300760\n1::1::2::978300761\n2::1::4::978300762\n"),
        "items": write(
            tmp_path,
            "movies.dat",
            "1::Toy Story (1995)::Animation|Children's|Comedy\n2571::Matrix, The (1999)::Action|Sci-Fi\n",
            encoding="latin-1",
        ),
        "dbpedia_mapping": write(
            tmp_path, "map.tsv", "2571\tMatrix, The (1999)\thttp://dbpedia.org/resource/The_Matrix\n"
        ),
    }
    interactions, items = prepare_dataset("ml1m_grouplens", files, PrepareSettings(like_if=">= 4"))
    assert interactions["liked"].tolist() == [1, 0, 1]
    matrix = items.set_index("item").loc["2571"]
    assert matrix["name"] == "Matrix, The (1999)"  # the original study lost the comma: "Matrix The"
    assert matrix["year"] == 1999 and list(matrix["genres"]) == ["Action", "Sci-Fi"]
    assert matrix["dbpedia_uri"] == "http://dbpedia.org/resource/The_Matrix"


def test_rekalm_original_keeps_train_then_test_order_and_uris(tmp_path):
    files = {
        "train": write(tmp_path, "train.tsv", "7\t10001\t1\n7\t10000\t0\n"),
        "test": write(tmp_path, "test.tsv", "8\t10001\t0\n7\t10002\t1\n"),
        "names": write(
            tmp_path,
            "names.json",
            json.dumps(
                {"10000": "The Seventh Scroll", "10001": "Pride and Prejudice", "10002": "Moby-Dick; or, The Whale"}
            ),
        ),
        "mapping": write(
            tmp_path, "map.tsv", "id\turi\n10000\tThe Seventh Scroll;http://dbpedia.org/resource/The_Seventh_Scroll\n"
        ),
    }
    interactions, items = prepare_dataset("rekalm_original", files, PrepareSettings())
    assert interactions[["user", "item", "liked"]].values.tolist() == [
        ["7", "10001", 1],
        ["7", "10000", 0],
        ["8", "10001", 0],
        ["7", "10002", 1],
    ]
    assert items.set_index("item").loc["10002", "name"] == "Moby-Dick; or, The Whale"
    assert items.set_index("item").loc["10000", "dbpedia_uri"] == "http://dbpedia.org/resource/The_Seventh_Scroll"


def test_rekalm_original_item_names_file(tmp_path):
    files = {
        "train": write(tmp_path, "train.tsv", "1\t2000\t1\n"),
        "test": write(tmp_path, "test.tsv", "2\t2001\t0\n"),
        "names": write(tmp_path, "names.json", json.dumps({"20000": "!!!"})),
        "item_names": write(tmp_path, "mapping_items.tsv", "2000\tMALICE MIZER\n2001\tDiary of Dreams\n"),
    }
    _, items = prepare_dataset("rekalm_original", files, PrepareSettings())
    assert dict(zip(items["item"], items["name"])) == {"2000": "MALICE MIZER", "2001": "Diary of Dreams"}


def test_bgg_kaggle(tmp_path):
    files = {
        "ratings": write(
            tmp_path,
            "reviews.csv",
            ",user,rating,comment,ID,name\n0,ann,8.5,,13,Catan\n1,ann,7,,822,Carcassonne\n2,bob,9,,822,Carcassonne\n",
        ),
        "items": write(
            tmp_path,
            "games.csv",
            ",id,primary,yearpublished,minplayers,playingtime,boardgamecategory,boardgamemechanic\n"
            "0,13,Catan,1995,3,120,\"['Negotiation']\",\"['Dice Rolling', 'Trading']\"\n"
            "1,822,Carcassonne,2000,2,45,\"['Medieval']\",\"['Tile Placement']\"\n",
        ),
    }
    interactions, items = prepare_dataset("bgg_kaggle", files, PrepareSettings(like_if="> 7", min_user_interactions=2))
    assert interactions[["user", "item", "liked"]].values.tolist() == [["ann", "13", 1], ["ann", "822", 0]]
    catan = items.set_index("item").loc["13"]
    assert (
        list(catan["mechanics"]) == ["Dice Rolling", "Trading"]
        and catan["min_players"] == 3
        and catan["playing_time"] == 120
    )


def test_user_slice_is_seeded_and_keeps_row_order(tmp_path):
    rows = "".join(f"1m_{u}\tThe Matrix (1999)\t5\t{u}\n1m_{u}\tSe7en (1995)\t2\t{u}\n" for u in range(20))
    files = {
        "ratings": write(tmp_path, "r.inter", RECBOLE_INTER.splitlines(True)[0] + rows),
        "items": write(tmp_path, "i.item", RECBOLE_ITEM),
    }
    first, _ = prepare_dataset("ml1m_recbole", files, PrepareSettings(like_if=">= 4", max_users=5, slice_seed=1))
    again, _ = prepare_dataset("ml1m_recbole", files, PrepareSettings(like_if=">= 4", max_users=5, slice_seed=1))
    other, _ = prepare_dataset("ml1m_recbole", files, PrepareSettings(like_if=">= 4", max_users=5, slice_seed=2))
    assert first["user"].nunique() == 5 and first.equals(again) and not first.equals(other)
    assert first["timestamp"].is_monotonic_increasing


@pytest.mark.parametrize(
    "fmt,files,message",
    [
        (
            "rekalm_original",
            {"train": "1\t2\n", "test": "1\t3\t1\n", "names": "{}"},
            r"train\.tsv: expected 3 tab-separated columns",
        ),
        (
            "rekalm_original",
            {"train": "1\t2\tyes\n", "test": "1\t3\t1\n", "names": "{}"},
            r"train\.tsv: column 3 must be 0",
        ),
        (
            "rekalm_original",
            {"train": "1\t2\t1\n", "test": "1\t3\t1\n", "names": "{not json"},
            r"names\.json: not valid JSON",
        ),
        (
            "ml1m_recbole",
            {"ratings": "user_id:token\titem_id:token\n1\t2\n", "items": RECBOLE_ITEM},
            r"ratings\.inter: missing column\(s\) \['rating:float'",
        ),
        (
            "ml1m_recbole",
            {"ratings": RECBOLE_INTER.replace("\t3\t", "\tthree\t"), "items": RECBOLE_ITEM},
            r"ratings\.inter: column 'rating:float' row 2: expected a number, got 'three'",
        ),
        (
            "ml1m_grouplens",
            {"ratings": "1::2::5\n", "items": "2::X (1999)::Drama\n"},
            r"ratings\.dat: expected 4 '::'-separated fields",
        ),
    ],
)
def test_malformed_files_fail_with_one_line_naming_the_file(tmp_path, fmt, files, message):
    names = {
        "train": "train.tsv",
        "test": "test.tsv",
        "names": "names.json",
        "ratings": "ratings.inter" if fmt == "ml1m_recbole" else "ratings.dat",
        "items": "items.txt",
    }
    paths = {role: write(tmp_path, names[role], text) for role, text in files.items()}
    with pytest.raises(ValueError, match=message) as error:
        prepare_dataset(fmt, paths, PrepareSettings(like_if=">= 4"))
    assert "\n" not in str(error.value)


def test_items_missing_from_the_item_file_are_reported(tmp_path):
    files = {
        "ratings": write(tmp_path, "r.inter", RECBOLE_INTER + "1m_3\tNowhere (2001)\t5\t200\n"),
        "items": write(tmp_path, "i.item", RECBOLE_ITEM),
    }
    with pytest.raises(ValueError, match="no entry in the item file.*Nowhere"):
        prepare_dataset("ml1m_recbole", files, PrepareSettings(like_if=">= 4"))


def test_like_rules():
    ratings = pd.Series([3.0, 4.0, 7.0, 7.5])
    assert binarize(ratings, ">= 4", "x").tolist() == [0, 1, 1, 1]
    assert binarize(ratings, "> 7", "x").tolist() == [0, 0, 0, 1]
    with pytest.raises(ValueError, match="like_if"):
        binarize(ratings, "=> 4", "x")
    with pytest.raises(ValueError, match="like rule"):
        binarize(ratings, None, "x")


def test_unknown_format():
    with pytest.raises(ValueError, match="format 'nope' is unknown"):
        prepare_dataset("nope", {}, PrepareSettings())


def test_original_files_parse(original_data):
    base = original_data / "dbbook"
    files = {
        "train": base / "user-item/train.tsv",
        "test": base / "user-item/test.tsv",
        "names": base / "entities_names.json",
        "mapping": base / "mapping_entities.tsv",
    }
    interactions, items = prepare_dataset("rekalm_original", files, PrepareSettings())
    stats = dataset_stats(interactions, items)
    rows = sum(1 for role in ("train", "test") for line in open(files[role]) if line.strip())
    assert stats["interactions"] == rows == 129513  # every row of train.tsv + test.tsv
    assert stats["items_with_dbpedia_uri"] == stats["items"]


# --- every column and every value is checked ------------------------------------------

GROUPLENS_RATINGS = "1::1::5::978300760\n1::2::2::978300761\n2::1::4::978300762\n2::2::3::978300763\n"
GROUPLENS_MOVIES = "1::Amélie (2001)::Comedy|Romance\n2::Léon (1994)::Crime|Drama\n"


def grouplens(
    tmp_path: Path, ratings: str = GROUPLENS_RATINGS, movies: str = GROUPLENS_MOVIES, encoding: str = "utf-8"
) -> dict[str, Path]:
    return {
        "ratings": write(tmp_path, "ratings.dat", ratings),
        "items": write(tmp_path, "movies.dat", movies, encoding=encoding),
    }


def original(tmp_path: Path, train: str, names: dict | str, test: str | None = None) -> dict[str, Path]:
    text = names if isinstance(names, str) else json.dumps(names)
    test = test if test is not None else f"9\t{train.split()[1]}\t1\n"  # user 9 likes the first item
    return {
        "train": write(tmp_path, "train.tsv", train),
        "test": write(tmp_path, "test.tsv", test),
        "names": write(tmp_path, "names.json", text),
    }


def test_a_ratings_file_given_as_the_movies_file_is_rejected(tmp_path):
    files = grouplens(tmp_path, movies=GROUPLENS_RATINGS)  # an extra field on every line
    with pytest.raises(
        ValueError, match=r"movies\.dat: expected 3 '::'-separated fields per line \(item, title, genres\), found 4$"
    ):
        prepare_dataset("ml1m_grouplens", files, PrepareSettings(like_if=">= 4"))


def test_a_line_with_a_missing_field_names_its_line(tmp_path):
    files = grouplens(tmp_path, movies=GROUPLENS_MOVIES + "3::Heat (1995)\n")
    with pytest.raises(ValueError, match=r"movies\.dat: line 3: expected 3 '::'-separated fields"):
        prepare_dataset("ml1m_grouplens", files, PrepareSettings(like_if=">= 4"))


@pytest.mark.parametrize("rating,row", [("99", 2), ("-3", 2), ("0", 2), ("5.5", 2)])
def test_ratings_outside_the_scale_are_errors(tmp_path, rating, row):
    files = grouplens(tmp_path, ratings=GROUPLENS_RATINGS.replace("1::2::2::", f"1::2::{rating}::"))
    with pytest.raises(
        ValueError, match=rf"ratings\.dat: column 'rating' row {row}: rating {rating} is outside the scale 1\.\.5"
    ):
        prepare_dataset("ml1m_grouplens", files, PrepareSettings(like_if=">= 4"))


def test_bgg_ratings_outside_one_to_ten_are_errors(tmp_path):
    files = {
        "ratings": write(tmp_path, "reviews.csv", "user,rating,ID\nann,11,13\n"),
        "items": write(tmp_path, "games.csv", "id\n13\n"),
    }
    with pytest.raises(
        ValueError, match=r"reviews\.csv: column 'rating' row 1: rating 11 is outside the scale 0\.\.10"
    ):
        prepare_dataset("bgg_kaggle", files, PrepareSettings(like_if="> 7"))


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_movie_titles_are_decoded_in_the_files_own_encoding(tmp_path, encoding):
    _, items = prepare_dataset(
        "ml1m_grouplens", grouplens(tmp_path, encoding=encoding), PrepareSettings(like_if=">= 4")
    )
    assert sorted(items["name"]) == ["Amélie (2001)", "Léon (1994)"]  # no "AmÃ©lie"


def test_a_latin1_byte_late_in_a_file_is_detected(tmp_path):
    movies = (
        "".join(f"{i}::Movie {i} (1990)::Drama\n" for i in range(3, 3000))
        + "1::Amélie (2001)::Comedy\n2::Léon (1994)::Drama\n"
    )
    _, items = prepare_dataset(
        "ml1m_grouplens", grouplens(tmp_path, movies=movies, encoding="latin-1"), PrepareSettings(like_if=">= 4")
    )
    assert sorted(items["name"]) == ["Amélie (2001)", "Léon (1994)"]


def test_a_null_name_is_a_missing_name_not_none(tmp_path):
    names = {"10": None, **{str(i): f"Book {i}" for i in range(11, 30)}}
    train = "".join(f"1\t{i}\t{i % 2}\n" for i in range(10, 30))
    repairs = Repairs()
    interactions, items = prepare_dataset(
        "rekalm_original", original(tmp_path, train, names), PrepareSettings(), repairs
    )
    assert items.set_index("item").loc["10", "name"] == ""
    assert repairs.counts == {"items_without_name": 1}
    assert dataset_stats(interactions, items, repairs)["repairs"] == {"items_without_name": 1}


def test_names_that_look_like_nulls_are_kept(tmp_path):
    files = {
        "ratings": write(tmp_path, "r.inter", RECBOLE_INTER.replace("Toy Story (1995)", "NA")),
        "items": write(tmp_path, "i.item", RECBOLE_ITEM.replace("Toy Story (1995)", "NA")),
    }
    _, items = prepare_dataset("ml1m_recbole", files, PrepareSettings(like_if=">= 4"))
    assert "NA" in set(items["name"])


def test_a_names_file_missing_half_the_items_is_an_error(tmp_path):
    train = "".join(f"1\t{i}\t1\n" for i in range(10))
    with pytest.raises(
        ValueError, match=r"names\.json: 5 of 10 interacted items have no name \(more than max_unnamed_share=0\.1\)"
    ):
        prepare_dataset(
            "rekalm_original", original(tmp_path, train, {str(i): f"B{i}" for i in range(5)}), PrepareSettings()
        )
    _, items = prepare_dataset(
        "rekalm_original",
        original(tmp_path, train, {str(i): f"B{i}" for i in range(5)}),
        PrepareSettings(max_unnamed_share=0.5),
    )
    assert (items["name"] == "").sum() == 5


def test_repeated_and_conflicting_pairs_are_counted(tmp_path):
    train = "1\t10\t1\n1\t11\t0\n1\t10\t0\n2\t11\t1\n2\t11\t1\n"
    repairs = Repairs()
    interactions, _ = prepare_dataset(
        "rekalm_original", original(tmp_path, train, {"10": "A", "11": "B"}), PrepareSettings(), repairs
    )
    assert interactions[["user", "item", "liked"]].values.tolist() == [
        ["1", "10", 1],
        ["1", "11", 0],
        ["2", "11", 1],
        ["9", "10", 1],
    ]
    assert repairs.counts == {"repeated_pairs": 1, "conflicting_pairs": 1}


def test_bgg_reviews_without_a_user_are_counted(tmp_path):
    files = {
        "ratings": write(tmp_path, "reviews.csv", "user,rating,ID\nann,8,13\n,9,13\nbob,3,13\n"),
        "items": write(
            tmp_path,
            "games.csv",
            "id,primary,yearpublished,minplayers,playingtime,boardgamecategory,boardgamemechanic\n13,Catan,1995,3,120,[],[]\n",
        ),
    }
    repairs = Repairs()
    interactions, _ = prepare_dataset("bgg_kaggle", files, PrepareSettings(like_if="> 7"), repairs)
    assert interactions["user"].tolist() == ["ann", "bob"] and repairs.counts == {"reviews_without_user": 1}


def test_an_empty_id_names_its_row(tmp_path):
    files = {
        "ratings": write(tmp_path, "r.inter", RECBOLE_INTER.replace("1m_2\tSe7en (1995)\t1", "\tSe7en (1995)\t1")),
        "items": write(tmp_path, "i.item", RECBOLE_ITEM),
    }
    with pytest.raises(ValueError, match=r"r\.inter: column 'user_id:token' row 4: empty value"):
        prepare_dataset("ml1m_recbole", files, PrepareSettings(like_if=">= 4"))


def compressed(path: Path, data: bytes, suffix: str) -> Path:
    import bz2
    import gzip
    import io
    import zipfile

    if suffix == ".gz":
        blob = gzip.compress(data)
    elif suffix == ".bz2":
        blob = bz2.compress(data)
    else:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
            bundle.writestr(path.name, data)
        blob = buffer.getvalue()
    target = path.with_name(path.name + suffix)
    target.write_bytes(blob[: len(blob) * 2 // 3])  # cut: a truncated download or copy
    return target


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".zip"])
def test_a_truncated_compressed_file_is_one_line_naming_it(tmp_path, suffix):
    ratings = compressed(
        tmp_path / "ratings.dat", ("".join(f"{u}::1::5::{u}\n" for u in range(2000))).encode(), suffix
    )
    files = {"ratings": ratings, "items": write(tmp_path, "movies.dat", GROUPLENS_MOVIES)}
    with pytest.raises(
        ValueError,
        match=rf"^{tmp_path}/ratings\.dat{suffix}: cannot be read .*truncated or corrupt\? download it again$",
    ) as error:
        prepare_dataset("ml1m_grouplens", files, PrepareSettings(like_if=">= 4"))
    assert "\n" not in str(error.value)


def test_a_non_utf8_json_names_the_file(tmp_path):
    files = original(tmp_path, "1\t10\t1\n", "{}")
    files["names"].write_bytes('{"10": "Amélie"}'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"names\.json: not UTF-8 \(byte 10: b'\\xe9'\); JSON must be UTF-8$"):
        prepare_dataset("rekalm_original", files, PrepareSettings())


def test_a_json_name_that_is_not_text_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"names\.json: entry '10': expected a name \(string\), got list"):
        prepare_dataset("rekalm_original", original(tmp_path, "1\t10\t1\n", {"10": ["A", "B"]}), PrepareSettings())


# --- empty input is an error ------------------------------------------------------------


def test_an_empty_ratings_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"ratings\.dat: the file is empty"):
        prepare_dataset("ml1m_grouplens", grouplens(tmp_path, ratings=""), PrepareSettings(like_if=">= 4"))
    header_only = {
        "ratings": write(tmp_path, "r.inter", RECBOLE_INTER.splitlines(True)[0]),
        "items": write(tmp_path, "i.item", RECBOLE_ITEM),
    }
    with pytest.raises(ValueError, match=r"r\.inter: no interactions in the file"):
        prepare_dataset("ml1m_recbole", header_only, PrepareSettings(like_if=">= 4"))


def test_filters_that_drop_every_user_are_an_error(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"the user filters keep none of the 2 users \(min_user_interactions=11, max_user_interactions=99",
    ):
        prepare_dataset(
            "ml1m_grouplens",
            grouplens(tmp_path),
            PrepareSettings(like_if=">= 4", min_user_interactions=11, max_user_interactions=99),
        )


# --- one display name everywhere --------------------------------------------------------


def test_names_with_line_breaks_are_shown_and_scored_the_same(tmp_path):
    from rekalm.llm.prompts import RankingRequest, ranking_answer, render_ranking_prompt

    raw = {
        "10": "Amélie\n(2001)",
        "11": "Léon:\r\nThe Professional",
        "12": "Heat\t (1995) ",
        "13": "Ran\u2028(1985)",
        "14": "Se7en",
    }
    train = "".join(f"1\t{i}\t1\n" for i in raw)
    repairs = Repairs()
    _, items = prepare_dataset("rekalm_original", original(tmp_path, train, raw), PrepareSettings(), repairs)
    names = dict(zip(items["item"], items["name"]))
    assert names == {
        "10": "Amélie (2001)",
        "11": "Léon: The Professional",
        "12": "Heat (1995)",
        "13": "Ran (1985)",
        "14": "Se7en",
    }
    assert repairs.counts == {"names_with_line_breaks_or_runs_of_spaces": 4}
    # What the prompt lists and what the target (and inference) uses is the stored name.
    prompt = render_ranking_prompt(None, RankingRequest("movie", [], [], list(names.values())))
    candidates = prompt.split("Rank the following items:\n", 1)[1].split("\n\n", 1)[0].split("\n")
    assert candidates == list(names.values())
    assert ranking_answer(list(names.values())).split("\n")[1:] == [
        f"{rank}. {name}" for rank, name in enumerate(names.values(), start=1)
    ]
