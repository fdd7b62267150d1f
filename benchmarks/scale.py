"""BoardGameGeek at its real size, through the workflow: wall time and peak RSS per stage.

BGG after the original's filters has 6.3 M ratings by 168,733 users (each with 11-99
reviews) on 21,772 games. The Kaggle dump needs a login, so this script writes a
BGG-shaped stand-in in the ``bgg_kaggle`` format (``bgg-19m-reviews.csv`` +
``games_detailed_info.csv``), seeded: user activity is a truncated power law on 11..99
with the real mean (37.3 reviews), game popularity a Zipf-Mandelbrot law (the top game
rated by ~17 % of users, every game by at least ~30), ratings on BGG's 1-10 scale
around a per-game quality, likes = rating > 7 (the config's rule).

It then runs ``snakemake`` once per stage (prepare -> split -> mine_rules -> lookup
(attributes) -> lexicalize -> prepare_model (tokenizer) -> build_sets -> baselines),
each in its own process, and prints the stage's wall time and the peak RSS of its
largest process (``getrusage(RUSAGE_CHILDREN)``):

    nice -n 10 .venv/bin/python benchmarks/scale.py [--out DIR] [--users N] [--cores 2]
        [--baselines-first] [--one-grid-point]

``--users`` scales the generated data down (ratings and games in proportion) for a quick
look; the figures in the README come from the default full size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workflow_stages import cpu_stages, run_stages  # noqa: E402 (benchmarks/ is not a package)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "out" / "scale"

USERS = 168_733
ITEMS = 21_772
RATINGS = 6_300_000
MIN_REVIEWS, MAX_REVIEWS = 11, 99  # the original kept users with 10 < reviews < 100
# Game popularity p(rank) ~ 1 / (rank + 30) at 21,772 games (Zipf-Mandelbrot; the offset
# scales with the number of games): at full size the top game is rated by ~17 % of users,
# the median game by ~90, the least popular by ~30.
POPULARITY_OFFSET_SHARE = 30 / ITEMS
MECHANICS = [
    "Dice Rolling",
    "Hand Management",
    "Set Collection",
    "Worker Placement",
    "Area Majority / Influence",
    "Deck Building",
    "Tile Placement",
    "Cooperative Game",
    "Auction/Bidding",
    "Trading",
]
CATEGORIES = [
    "Strategy",
    "Card Game",
    "Fantasy",
    "Economic",
    "Wargame",
    "Party Game",
    "Abstract Strategy",
    "Science Fiction",
    "Adventure",
    "Medieval",
]


def review_counts(rng: np.random.Generator, users: int, total: int) -> np.ndarray:
    """Reviews per user on 11..99, long-tailed (P(n) ~ n^-a), summing exactly to ``total``."""
    support = np.arange(MIN_REVIEWS, MAX_REVIEWS + 1)
    target_mean = total / users
    low, high = 0.0, 5.0  # bisect the exponent so the distribution's mean is the target
    for _ in range(60):
        exponent = (low + high) / 2
        weights = support.astype(float) ** -exponent
        mean = float((support * weights).sum() / weights.sum())
        low, high = (exponent, high) if mean > target_mean else (low, exponent)
    counts = rng.choice(support, size=users, p=weights / weights.sum())
    # Nudge single users by one review until the total is exact (stays within 11..99).
    gap = total - int(counts.sum())
    while gap:
        step = 1 if gap > 0 else -1
        movable = np.flatnonzero((counts + step >= MIN_REVIEWS) & (counts + step <= MAX_REVIEWS))
        chosen = rng.choice(movable, size=min(abs(gap), len(movable)), replace=False)
        counts[chosen] += step
        gap = total - int(counts.sum())
    return counts


def sample_items(rng: np.random.Generator, counts: np.ndarray, items: int) -> np.ndarray:
    """Each user's games, without repeats, by popularity: draws with replacement in which
    a user's repeated game is skipped, i.e. successive sampling without replacement
    (vectorised: a few extra draws per user, then a top-up for users still short)."""
    popularity = 1.0 / (np.arange(1, items + 1, dtype=np.float64) + POPULARITY_OFFSET_SHARE * items)
    popularity /= popularity.sum()
    chosen = pd.DataFrame({"user": np.array([], dtype=np.int64), "item": np.array([], dtype=np.int64)})
    missing = counts.astype(np.int64).copy()
    while missing.any():
        users = np.flatnonzero(missing)
        draws = np.ceil(missing[users] * 1.5).astype(np.int64) + 4
        batch = pd.DataFrame(
            {"user": np.repeat(users, draws), "item": rng.choice(items, size=int(draws.sum()), p=popularity)}
        )
        chosen = pd.concat([chosen, batch], ignore_index=True).drop_duplicates(
            ["user", "item"]
        )  # keeps the first draw
        chosen = chosen[chosen.groupby("user").cumcount() < counts[chosen["user"].to_numpy()]]
        missing = counts - np.bincount(chosen["user"].to_numpy(), minlength=len(counts))
    return chosen.sort_values("user", kind="stable")["item"].to_numpy()


def write_dataset(out: Path, users: int, seed: int = 22) -> dict[str, object]:
    """bgg-19m-reviews.csv and games_detailed_info.csv in the Kaggle layout."""
    rng = np.random.default_rng(seed)
    items = max(50, round(ITEMS * users / USERS))
    total = round(RATINGS * users / USERS)
    counts = review_counts(rng, users, total)
    game_index = sample_items(rng, counts, items)
    # Game ids are shuffled so that popularity is not the id order.
    game_ids = rng.permutation(np.arange(1, items + 1) * 7 + 1000)
    quality = rng.normal(0.0, 1.0, size=items)
    taste = rng.normal(0.0, 0.8, size=users)
    user_of_row = np.repeat(np.arange(users), counts)
    rating = np.clip(
        np.round(2 * (6.8 + 0.9 * quality[game_index] + taste[user_of_row] + rng.normal(0, 1.1, size=len(game_index))))
        / 2,
        1,
        10,
    )
    reviews = pd.DataFrame(
        {"user": np.char.add("user", user_of_row.astype(str)), "rating": rating, "ID": game_ids[game_index]}
    )
    reviews = reviews.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # the dump is not grouped by user
    out.mkdir(parents=True, exist_ok=True)
    reviews.insert(0, "", np.arange(len(reviews)))
    reviews["comment"] = ""
    reviews["name"] = "Game " + reviews["ID"].astype(str)
    reviews[["", "user", "rating", "comment", "ID", "name"]].to_csv(out / "bgg-19m-reviews.csv", index=False)

    def literal_lists(pool: list[str]) -> list[str]:
        picks = rng.integers(1, 4, size=items)
        return [str([pool[j] for j in rng.choice(len(pool), size=n, replace=False)]) for n in picks]

    games = pd.DataFrame(
        {
            "id": game_ids,
            "primary": [f"Game {g}" for g in game_ids],
            "yearpublished": rng.integers(1960, 2022, size=items),
            "boardgamecategory": literal_lists(CATEGORIES),
            "boardgamemechanic": literal_lists(MECHANICS),
            "minplayers": rng.integers(1, 5, size=items),
            "playingtime": rng.choice([15, 30, 45, 60, 90, 120, 180], size=items),
        }
    )
    games.to_csv(out / "games_detailed_info.csv", index=False)
    return {
        "ratings": int(len(reviews)),
        "users": int(users),
        "items": int(len(np.unique(game_index))),
        "liked_share": round(float((rating > 7).mean()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--baselines", nargs="*", default=["popularity", "random", "itemknn", "bpr", "ease"])
    parser.add_argument(
        "--baselines-first", action="store_true", help="run the baselines before prepare_model and build_sets"
    )
    parser.add_argument(
        "--one-grid-point", action="store_true", help="tune each baseline on its grid's first point only"
    )
    args = parser.parse_args()
    data = args.out / "data"
    shape_file = data / "shape.json"
    if shape_file.is_file():  # same seed, same data: rewriting it would re-run every stage
        shape = json.loads(shape_file.read_text())
        print(f"reusing {shape} in {data}", flush=True)
    else:
        started = time.monotonic()
        shape = write_dataset(data, args.users)
        shape_file.write_text(json.dumps(shape))
        print(f"generated {shape} in {time.monotonic() - started:.0f} s -> {data}", flush=True)
    settings: dict[str, object] = {
        "run": {"datasets": ["bgg"], "ablations": [], "zero_shot": []},
        "datasets": {
            "bgg": {
                "files": {
                    "ratings": {"path": str(data / "bgg-19m-reviews.csv")},
                    "items": {"path": str(data / "games_detailed_info.csv")},
                },
                "model": "smollm2_135m",
            }
        },
    }
    if args.one_grid_point:
        grids = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["baselines"]["grids"]
        settings["baselines"] = {
            "grids": {name: {key: values[:1] for key, values in grid.items()} for name, grid in grids.items()}
        }
    override = args.out / "scale.yaml"
    override.write_text(yaml.safe_dump(settings))
    stages = cpu_stages("bgg", "attributes", args.baselines, evaluate=False)
    if args.baselines_first:
        stages.sort(key=lambda stage: stage[0].split()[0] in ("prepare_model", "build_sets"))  # stable
    rows = run_stages(args.out, [override], stages, args.cores)
    prepared = json.loads((args.out / "results/bgg/prepare/stats.json").read_text())
    print(f"prepared: {prepared}")
    (args.out / "scale.json").write_text(
        json.dumps({"generated": shape, "prepared": prepared, "stages": rows}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
