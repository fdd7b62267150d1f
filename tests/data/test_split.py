import random

import numpy as np
import pandas as pd
import pytest

from rekalm.data.split import SplitSettings, original_sample, select_test_users, split_interactions, split_stats


def make_interactions(users: int = 50, seed: int = 0) -> pd.DataFrame:
    """Users with 3..30 interactions over 200 items, ~60 % liked, with timestamps."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(users):
        count = int(rng.integers(3, 31))
        for position, item in enumerate(rng.choice(200, size=count, replace=False)):
            rows.append(
                {
                    "user": f"u{user}",
                    "item": f"i{item}",
                    "liked": int(rng.random() < 0.6),
                    "timestamp": 1000 + position,
                }
            )
    frame = pd.DataFrame(rows)
    frame["timestamp"] = frame["timestamp"].astype("Int64")
    return frame


def test_original_sample_matches_the_original_helper():
    values = [f"x{i}" for i in range(37)]
    random.seed(22)
    expected = set(random.sample(values, int(0.5 * len(values)) + 1))
    rest, sample = original_sample(values, 0.5, 1, 22)
    assert set(sample) == expected
    assert set(rest) == set(values) - expected
    assert sample == [v for v in values if v in expected]  # file order kept


def test_original_sample_reseeds_every_call():
    """Two calls on lists of the same length pick the same positions (the original's quirk)."""
    first = original_sample(list(range(10)), 0.5, 1, 22)[1]
    second = original_sample(list(range(100, 110)), 0.5, 1, 22)[1]
    assert [v + 100 for v in first] == second


@pytest.mark.parametrize("method", ["original", "seeded"])
def test_split_invariants(method):
    interactions = make_interactions()
    split, candidates = split_interactions(interactions, SplitSettings(method=method))
    users = split.groupby("user_set")["user"].unique()
    assert not set(users["train"]) & set(users["test"])
    assert len(users["test"]) == int(0.2 * interactions["user"].nunique())
    for user, rows in split.groupby("user"):
        source = interactions[interactions["user"] == user]
        for liked in (0, 1):
            n = int((source["liked"] == liked).sum())
            held = int(((rows["side"] == "held_out") & (rows["liked"] == liked)).sum())
            assert held == (min(int(0.5 * n) + 1, n) if n else 0)
        history = set(rows.loc[rows["side"] == "history", "item"])
        user_candidates = candidates[candidates["user"] == user]
        assert not history & set(user_candidates["item"])
        assert set(user_candidates["item"]) == set(rows.loc[rows["side"] == "held_out", "item"])
        assert sorted(user_candidates["position"]) == list(range(len(user_candidates)))
    assert len(split) == len(interactions)


@pytest.mark.parametrize("method", ["original", "seeded"])
def test_split_is_stable_for_a_seed_and_changes_with_it(method):
    interactions = make_interactions()
    first = split_interactions(interactions, SplitSettings(method=method, seed=22))
    again = split_interactions(interactions, SplitSettings(method=method, seed=22))
    other = split_interactions(interactions, SplitSettings(method=method, seed=23))
    pd.testing.assert_frame_equal(first[0], again[0])
    pd.testing.assert_frame_equal(first[1], again[1])
    assert not first[0].equals(other[0])


def test_seeded_split_does_not_depend_on_row_order():
    interactions = make_interactions()
    shuffled = interactions.sample(frac=1.0, random_state=5).reset_index(drop=True)
    config = SplitSettings(method="seeded")
    key = ["user", "item"]
    a = split_interactions(interactions, config)[0].drop(columns="row").sort_values(key).reset_index(drop=True)
    b = split_interactions(shuffled, config)[0].drop(columns="row").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_original_split_depends_on_first_appearance_order():
    """The original takes users in order of first appearance; reordering users changes who is tested."""
    interactions = make_interactions(users=60)
    reordered = pd.concat(
        [g for _, g in sorted(interactions.groupby("user"), key=lambda kv: kv[0], reverse=True)], ignore_index=True
    )
    test_a = set(split_interactions(interactions, SplitSettings())[0].query("user_set == 'test'")["user"])
    test_b = set(split_interactions(reordered, SplitSettings())[0].query("user_set == 'test'")["user"])
    assert test_a != test_b


def test_caps_shorten_history_to_most_recent_and_keep_liked_candidates():
    interactions = make_interactions(users=30)
    config = SplitSettings(max_history_liked=2, max_history_disliked=1, max_candidates=4)
    split, candidates = split_interactions(interactions, config)
    uncapped, uncapped_candidates = split_interactions(interactions, SplitSettings())
    for user, rows in split.groupby("user"):
        history = rows[rows["side"] == "history"]
        assert (history["liked"] == 1).sum() <= 2 and (history["liked"] == 0).sum() <= 1
        full_liked = uncapped[(uncapped["user"] == user) & (uncapped["side"] == "history") & (uncapped["liked"] == 1)]
        latest = full_liked.sort_values("row")["item"].tolist()[-2:]
        assert set(history.loc[history["liked"] == 1, "item"]) == set(latest)
        user_candidates = candidates[candidates["user"] == user]
        assert len(user_candidates) <= 4
        if (uncapped_candidates[uncapped_candidates["user"] == user]["liked"] == 1).any():
            assert (user_candidates["liked"] == 1).any()
    # caps never move a user between train and test
    assert split.groupby("user")["user_set"].first().equals(uncapped.groupby("user")["user_set"].first())


def test_user_without_likes_and_single_interactions():
    interactions = pd.DataFrame(
        {"user": ["a", "a", "b", "c", "c"], "item": ["1", "2", "1", "3", "4"], "liked": [0, 0, 1, 1, 0]}
    )
    split, candidates = split_interactions(interactions, SplitSettings(test_fraction=0.67))  # 2 test users of 3
    a = split[split["user"] == "a"]
    assert (a["liked"] == 0).all() and (a["side"] == "held_out").sum() == 2  # int(0.5*2)+1 = 2
    assert split[split["user"] == "b"]["side"].tolist() == ["held_out"]


def test_missing_column_is_named():
    with pytest.raises(ValueError, match="liked"):
        split_interactions(pd.DataFrame({"user": ["a"], "item": ["b"]}), SplitSettings())


def test_split_stats_counts():
    split, candidates = split_interactions(make_interactions(), SplitSettings(max_candidates=5))
    stats = split_stats(split, candidates)
    assert stats["test"]["users"] + stats["train"]["users"] == 50
    assert stats["train"]["candidates_max"] <= 5
    assert stats["train"]["held_out"] == int((candidates["user_set"] == "train").sum())


# --- an empty split is an error ---------------------------------------------------------


def test_no_interactions_is_an_error():
    with pytest.raises(ValueError, match=r"interactions: no rows, nothing to split"):
        split_interactions(make_interactions().iloc[:0], SplitSettings())


@pytest.mark.parametrize("method", ["original", "seeded"])
def test_a_test_fraction_that_selects_no_test_user_is_an_error(method):
    with pytest.raises(
        ValueError, match=r"split\.test_fraction=0\.2 of 4 users leaves no test user; raise split\.test_fraction"
    ):
        split_interactions(make_interactions(users=4), SplitSettings(method=method))


def test_test_users_without_any_liked_candidate_is_an_error():
    interactions = make_interactions(users=10)
    test_users = select_test_users(list(pd.unique(interactions["user"])), SplitSettings())
    interactions.loc[interactions["user"].isin(test_users), "liked"] = 0
    with pytest.raises(ValueError, match=r"none of the 2 test users has a liked held-out item"):
        split_interactions(interactions, SplitSettings())


# --- degenerate labels: nothing to rank -------------------------------------------------


def test_every_rating_liked_is_an_error_not_perfect_metrics():
    """With every rating liked (like_if ">= 1" on a 1-5 scale) no candidate list had a
    negative, and precision@k and nDCG@10 came out 1.0 with exit 0."""
    interactions = make_interactions(users=20).assign(liked=1)
    with pytest.raises(ValueError) as error:
        split_interactions(interactions, SplitSettings())
    assert str(error.value) == (
        "split: none of the 4 test users has both a liked and a disliked held-out item (4 only liked, 0 only "
        "disliked), so every ranking scores the same; check like_if (is every rating a like?) or the data"
    )


def test_one_sided_test_users_are_counted_and_warned_about(caplog):
    interactions = make_interactions(users=20)
    test_users = sorted(select_test_users(list(pd.unique(interactions["user"])), SplitSettings()))
    interactions.loc[interactions["user"] == test_users[0], "liked"] = 1
    interactions.loc[interactions["user"].isin(test_users[1:3]), "liked"] = 0
    with caplog.at_level("WARNING", logger="rekalm.data.split"):
        split, candidates = split_interactions(interactions, SplitSettings())
    assert "split: 1 of 4 test users have only liked candidates and 2 only disliked ones" in caplog.text
    stats = split_stats(split, candidates)["test"]
    assert (stats["candidates_all_liked"], stats["candidates_all_disliked"]) == (1, 2)
    by_user = candidates[candidates["user_set"] == "test"].groupby("user")["liked"]
    assert by_user.min()[test_users[0]] == 1 and by_user.max()[test_users[1]] == 0
    caplog.clear()
    with caplog.at_level("WARNING", logger="rekalm.data.split"):
        split_interactions(make_interactions(users=20), SplitSettings())  # every test user has both
    assert "only liked" not in caplog.text
