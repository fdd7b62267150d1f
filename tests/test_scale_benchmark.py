"""benchmarks/scale.py writes a BoardGameGeek-shaped dataset that the bgg_kaggle parser and
the original's filters keep whole: exact row and user counts, 11-99 reviews per user."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from rekalm.data.prepare import PrepareSettings, prepare_dataset

REPO = Path(__file__).resolve().parents[1]


def scale_module():
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("scale_benchmark", REPO / "benchmarks" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_bgg_shape_survives_the_original_filters(tmp_path):
    scale = scale_module()
    users = 6000
    shape = scale.write_dataset(tmp_path, users, seed=7)
    expected_ratings = round(scale.RATINGS * users / scale.USERS)
    assert shape["ratings"] == expected_ratings and shape["users"] == users
    files = {"ratings": tmp_path / "bgg-19m-reviews.csv", "items": tmp_path / "games_detailed_info.csv"}
    interactions, items = prepare_dataset(
        "bgg_kaggle", files, PrepareSettings(like_if="> 7", min_user_interactions=11, max_user_interactions=99)
    )
    assert len(interactions) == expected_ratings and interactions["user"].nunique() == users
    per_user = interactions.groupby("user").size()
    assert per_user.min() >= 11 and per_user.max() <= 99
    assert per_user.quantile(0.9) > 2 * per_user.median()  # long-tailed activity
    popularity = interactions.groupby("item").size().sort_values(ascending=False).to_numpy()
    assert popularity[0] > 4 * np.median(popularity)  # long-tailed popularity (6,000 users, 774 games)
    assert 0.2 < interactions["liked"].mean() < 0.6
    assert len(items) == shape["items"] and {"mechanics", "min_players", "playing_time"} <= set(items.columns)
