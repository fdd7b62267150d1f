"""Classical baselines (rekalm/evaluation/baselines.py, rules/baselines.smk): known best answers on tiny
data, no test leakage, seeded determinism, exact candidate coverage, validation tuning."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from rekalm.evaluation import baselines
from rekalm.evaluation.baselines import (
    BASELINES,
    BaselineSettings,
    expand_grid,
    mean_ndcg,
    run_baseline,
    training_rows,
)

REPO = Path(__file__).resolve().parents[2]
SHARED_LASTFM = REPO.parent / "shared" / "data" / "rekalm-original" / "lastfm" / "user-item"
ALL = sorted(BASELINES)


# --- tiny data ---------------------------------------------------------------------------


def make_tables(rows: list[tuple[str, str, str, int, str]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(split, candidates) from (user, user_set, item, liked, side) rows; the candidates are
    the held-out rows, in the given order (as split.py's shuffled positions)."""
    split = pd.DataFrame(rows, columns=["user", "user_set", "item", "liked", "side"])
    split["liked"] = split["liked"].astype("int8")
    split["row"] = np.arange(len(split), dtype="int64")
    held = split[split["side"] == "held_out"].copy()
    held["position"] = held.groupby("user").cumcount().astype("int32")
    return split, held[["user", "user_set", "position", "item", "liked"]].reset_index(drop=True)


def cooccurrence_data() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Whoever likes X likes Y, whoever likes P likes Q; Z is the most liked item but liked
    by other users only. Test user t1 likes X (history); candidates Z, Q, Y: Y is the answer
    of any co-occurrence model, Z of popularity."""
    rows = []
    for n in range(12):
        rows += [
            (f"x{n}", "train", "X", 1, "history"),
            (f"x{n}", "train", "Y", 1, "held_out"),
            (f"x{n}", "train", "Q", 0, "held_out"),
        ]
        rows += [
            (f"p{n}", "train", "P", 1, "history"),
            (f"p{n}", "train", "Q", 1, "held_out"),
            (f"p{n}", "train", "Y", 0, "held_out"),
        ]
    for n in range(20):
        rows += [(f"z{n}", "train", "Z", 1, "history"), (f"z{n}", "train", "W", 1, "held_out")]
    rows += [
        ("t1", "test", "X", 1, "history"),
        ("t1", "test", "Z", 0, "held_out"),
        ("t1", "test", "Q", 0, "held_out"),
        ("t1", "test", "Y", 1, "held_out"),
    ]
    rows += [
        ("t2", "test", "P", 1, "history"),
        ("t2", "test", "Y", 0, "held_out"),
        ("t2", "test", "Q", 1, "held_out"),
        ("t2", "test", "Z", 0, "held_out"),
    ]
    return make_tables(rows)


def ranking_of(predictions: pd.DataFrame, user: str) -> list[str]:
    return predictions[predictions["user"] == user].sort_values("rank")["item"].tolist()


FAST = BaselineSettings(seed=7, validation_fraction=0.25, grid={})


# --- known answers -----------------------------------------------------------------------


def test_popularity_ranks_the_most_liked_item_first():
    rows = [(f"u{n}", "train", "A", 1, "history") for n in range(5)]
    rows += [(f"u{n}", "train", "B", 1, "history") for n in range(2)]
    rows += [
        ("u0", "train", "C", 0, "history"),
        ("u1", "train", "C", 0, "history"),
        ("u2", "train", "C", 0, "history"),
    ]  # dislikes are not popularity
    rows += [("u3", "train", "D", 1, "held_out")]
    rows += [
        ("t", "test", "E", 1, "history"),
        ("t", "test", "C", 0, "held_out"),
        ("t", "test", "B", 1, "held_out"),
        ("t", "test", "A", 1, "held_out"),
    ]
    split, candidates = make_tables(rows)
    predictions, _, _ = run_baseline("popularity", split, candidates, FAST)
    assert ranking_of(predictions, "t") == ["A", "B", "C"]
    assert predictions.set_index("item")["score"].to_dict() == {"A": 5.0, "B": 2.0, "C": 0.0}


@pytest.mark.parametrize("name", ["ease", "itemknn", "bpr"])
def test_collaborative_baselines_recover_an_obvious_cooccurrence(name):
    split, candidates = cooccurrence_data()
    # BPR's defaults suit real data; ~100 interactions need a higher rate to converge
    # (20 of 20 seeds recover the pairs with these settings).
    grid = {"factors": [8], "lr": [0.05], "iterations": [200]} if name == "bpr" else {}
    predictions, _, _ = run_baseline(
        name, split, candidates, BaselineSettings(seed=7, validation_fraction=0.25, grid=grid)
    )
    assert ranking_of(predictions, "t1")[0] == "Y"
    assert ranking_of(predictions, "t2")[0] == "Q"
    popularity, _, _ = run_baseline("popularity", split, candidates, FAST)
    assert ranking_of(popularity, "t1")[0] == "Z"  # the data really separates the two ideas


def test_ease_matches_its_closed_form():
    # X'X + l2 I inverted by hand for a 3-item example; B = -P/diag(P) with a zero diagonal.
    X = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1], [1, 0, 0]], dtype=float)
    users, items = np.array(["a", "b", "c", "d"], dtype=object), np.array(["i0", "i1", "i2"], dtype=object)
    data = baselines.Interactions(matrix=sparse.csr_matrix(X), users=users, items=items)
    P = np.linalg.inv(X.T @ X + 2.0 * np.eye(3))
    B = -P / np.diag(P)
    np.fill_diagonal(B, 0.0)
    u, i = np.repeat(np.arange(4), 3), np.tile(np.arange(3), 4)
    np.testing.assert_allclose(baselines.fit_ease(data, seed=0, threads=1, l2=2.0)(u, i), (X @ B)[u, i], rtol=1e-10)


def test_validation_ndcg_is_the_standard_definition():
    ranked = pd.DataFrame(
        {"user": ["a"] * 3 + ["b"] * 2 + ["c"] * 2, "rank": [1, 2, 3, 1, 2, 1, 2], "liked": [0, 1, 1, 1, 0, 0, 0]}
    )
    expected_a = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert mean_ndcg(ranked, cutoff=10) == pytest.approx((expected_a + 1.0) / 2)  # c has no like: skipped
    assert mean_ndcg(ranked, cutoff=1) == pytest.approx((0.0 + 1.0) / 2)


# --- no leakage, coverage, determinism ----------------------------------------------------


def test_training_rows_drop_exactly_the_test_users_held_out_side():
    split, _ = cooccurrence_data()
    kept = training_rows(split)
    assert not ((kept["user_set"] == "test") & (kept["side"] == "held_out")).any()
    assert len(kept) == len(split) - int(((split["user_set"] == "test") & (split["side"] == "held_out")).sum())


@pytest.mark.parametrize("name", ALL)
def test_no_held_out_item_of_a_test_user_reaches_any_fit(name, monkeypatch):
    split, candidates = cooccurrence_data()
    seen: list[set[tuple[str, str]]] = []
    real_fit = BASELINES[name]

    def spy(data, seed, threads, **params):
        rows, cols = data.matrix.nonzero()
        seen.append({(data.users[r], data.items[c]) for r, c in zip(rows, cols)})
        return real_fit(data, seed, threads, **params)

    spy.__signature__ = inspect.signature(real_fit)
    monkeypatch.setitem(BASELINES, name, spy)
    _, _, tuning = run_baseline(name, split, candidates, FAST)
    assert len(seen) == 2  # one tuning fit (empty grid) + the final fit
    test_held_out = {
        (u, i)
        for u, i in split.loc[
            (split["user_set"] == "test") & (split["side"] == "held_out"), ["user", "item"]
        ].itertuples(index=False)
    }
    assert all(not (pairs & test_held_out) for pairs in seen)
    assert ("t1", "X") in seen[-1]  # a test user's history does train the final model
    assert ("x0", "Y") in seen[-1] or ("x1", "Y") in seen[-1]  # and train users' held-out side too
    assert tuning["validation_users"] == round(0.25 * 44)


def test_leaked_held_out_likes_would_change_the_answer():
    # S is liked only as held-out by test users: with leakage its popularity would be 3 > 1.
    rows = [
        ("u0", "train", "T", 1, "history"),
        ("u0", "train", "V", 1, "held_out"),
        ("u1", "train", "V", 1, "held_out"),
    ]
    for user in ("t0", "t1", "t2"):
        rows += [
            (user, "test", "V", 1, "history"),
            (user, "test", "T", 0, "held_out"),
            (user, "test", "S", 1, "held_out"),
        ]
    split, candidates = make_tables(rows)
    predictions, _, _ = run_baseline("popularity", split, candidates, FAST)
    assert set(predictions.loc[predictions["item"] == "S", "score"]) == {0.0}
    assert all(ranking_of(predictions, user) == ["T", "S"] for user in ("t0", "t1", "t2"))


@pytest.mark.parametrize("name", ALL)
def test_output_covers_exactly_the_test_candidates(name):
    split, candidates = cooccurrence_data()
    predictions, run, tuning = run_baseline(name, split, candidates, FAST)
    test = candidates[candidates["user_set"] == "test"]
    assert list(predictions.columns) == ["user", "item", "rank", "score", "source"]
    assert sorted(zip(predictions["user"], predictions["item"])) == sorted(zip(test["user"], test["item"]))
    assert (predictions["source"] == "model").all() and predictions["score"].map(math.isfinite).all()
    assert predictions.groupby("user")["rank"].apply(lambda r: sorted(r) == list(range(1, len(r) + 1))).all()
    assert set(run) == {"t1", "t2"}
    for user, scores in run.items():  # ranx order == predictions order, no ties
        assert sorted(scores, key=lambda item: -scores[item]) == ranking_of(predictions, user)
    assert json.loads(json.dumps(tuning))["training"]["test_candidates"] == len(test)


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_output(name):
    split, candidates = cooccurrence_data()
    first = run_baseline(name, split, candidates, FAST)
    again = run_baseline(name, split.sample(frac=1.0, random_state=3), candidates, FAST)  # row order must not matter
    pd.testing.assert_frame_equal(first[0], again[0])
    assert first[1] == again[1] and first[2] == again[2]


def test_random_depends_on_its_seed_only():
    rows = [("u0", "train", "A", 1, "history"), ("u0", "train", "B", 1, "held_out")]
    rows += [("t", "test", "A", 1, "history")] + [("t", "test", f"c{n:02d}", n % 2, "held_out") for n in range(30)]
    split, candidates = make_tables(rows)
    orders = [
        ranking_of(run_baseline("random", split, candidates, BaselineSettings(seed=seed))[0], "t")
        for seed in (1, 1, 2)
    ]
    assert orders[0] == orders[1] != orders[2]
    assert orders[0] != sorted(orders[0])


# --- tuning ------------------------------------------------------------------------------


def test_grid_expansion_and_unknown_parameters():
    grid = expand_grid("bpr", {"factors": [8, 16], "lr": [0.01, 0.1]})
    assert len(grid) == 4 and all(point["iterations"] == 100 and point["reg"] == 0.01 for point in grid)
    assert expand_grid("popularity", {}) == [{}]
    with pytest.raises(ValueError, match=r"baselines\.grids\.ease: unknown parameter\(s\) \['lambda'\]"):
        expand_grid("ease", {"lambda": [1.0]})
    with pytest.raises(ValueError, match="baselines.names: unknown baseline 'lightgcn'"):
        run_baseline("lightgcn", *cooccurrence_data(), FAST)


def test_tuning_picks_the_best_grid_point_on_train_users_only(monkeypatch):
    split, candidates = cooccurrence_data()
    scored_users: list[set[str]] = []

    truth = {
        (user, item): liked for user, item, liked in zip(candidates["user"], candidates["item"], candidates["liked"])
    }

    def oracle(data, seed, threads, sign: int = 1):
        # A fake baseline that knows the labels: sign 1 is perfect, sign -1 the worst order.
        def score(user_index, item_index):
            scored_users.append({data.users[u] for u in user_index})
            return np.array(
                [sign * truth[data.users[u], data.items[i]] for u, i in zip(user_index, item_index)], dtype=float
            )

        return score

    monkeypatch.setitem(BASELINES, "oracle", oracle)
    _, _, tuning = run_baseline("oracle", split, candidates, BaselineSettings(seed=3, grid={"sign": [-1, 1]}))
    scores = {row["params"]["sign"]: row["ndcg@10"] for row in tuning["grid"]}
    assert tuning["chosen"] == {"sign": 1} and tuning["chosen_score"] == scores[1] == 1.0 > scores[-1]
    train_users = set(split.loc[split["user_set"] == "train", "user"])
    assert scored_users[0] <= train_users and scored_users[1] <= train_users  # validation
    assert scored_users[-1] == {"t1", "t2"}  # final scoring: test users only


def test_bad_input_names_the_table():
    split, candidates = cooccurrence_data()
    with pytest.raises(ValueError, match=r"^split: missing column\(s\) \['side'\]"):
        run_baseline("popularity", split.drop(columns=["side"]), candidates, FAST)
    with pytest.raises(ValueError, match=r"^candidates: missing column\(s\) \['position'\]"):
        run_baseline("popularity", split, candidates.drop(columns=["position"]), FAST)
    with pytest.raises(ValueError, match="baselines.validation_fraction"):
        BaselineSettings(validation_fraction=1.0)


# --- the rule ----------------------------------------------------------------------------


@pytest.mark.slow
def test_rule_writes_predictions_run_and_tuning(tmp_path):
    """rules/baselines.smk + workflow_scripts/baselines.py through Snakemake, with a tiny
    Snakefile of the real rule and rules/common.smk."""
    from snakemake_helpers import api_run

    split, candidates = cooccurrence_data()
    (tmp_path / "results/tiny/split").mkdir(parents=True)
    split.to_parquet(tmp_path / "results/tiny/split/split.parquet")
    candidates.to_parquet(tmp_path / "results/tiny/split/candidates.parquet")
    (tmp_path / "config.yaml").write_text(
        "baselines: {names: [popularity, ease], validation_seed: 22, validation_fraction: 0.2, validation_cutoff: "
        "10, grids: {ease: {l2: [1.0, 10.0]}}}\n"
    )
    snakefile = tmp_path / "Snakefile"  # the real rule and the input functions it calls
    snakefile.write_text("".join(f'include: "{REPO / "rules" / name}"\n' for name in ("common.smk", "baselines.smk")))
    targets = [f"results/tiny/baselines/ease/{name}" for name in ("predictions.parquet", "run.json", "tuning.json")]
    api_run(tmp_path, targets, "local", [tmp_path / "config.yaml"], snakefile=snakefile, quiet=True)
    predictions = pd.read_parquet(tmp_path / targets[0])
    assert ranking_of(predictions, "t1")[0] == "Y" and len(predictions) == 6
    assert set(json.loads((tmp_path / targets[1]).read_text())) == {"t1", "t2"}
    tuning = json.loads((tmp_path / targets[2]).read_text())
    assert [row["params"] for row in tuning["grid"]] == [{"l2": 1.0}, {"l2": 10.0}]
    assert "chose" in (tmp_path / "logs/tiny/baselines/ease.log").read_text()
    assert not list((tmp_path / "results/tiny/baselines/ease").glob(".*.tmp"))  # atomic writes


# --- real data ---------------------------------------------------------------------------


@pytest.mark.slow
def test_on_original_lastfm_slice_models_beat_random():
    """A slice of the original Last.FM data: EASE and popularity must beat random on test
    users (a sanity check that scores map to the right candidates)."""
    if not SHARED_LASTFM.is_dir():
        pytest.skip(f"original study data not found at {SHARED_LASTFM} (shared/ is not beside the checkout)")
    from rekalm.data.split import SplitSettings, split_interactions

    frame = pd.read_csv(SHARED_LASTFM / "train.tsv", sep="\t", header=None, names=["user", "item", "liked"], dtype=str)
    users = sorted(frame["user"].unique())[:300]
    interactions = frame[frame["user"].isin(users)].assign(liked=lambda f: f["liked"].astype("int8"))
    split, candidates = split_interactions(interactions, SplitSettings(method="seeded"))
    ndcg = {}
    for name in ("random", "popularity", "ease"):
        settings = BaselineSettings(grid={"l2": [100.0]} if name == "ease" else {})
        predictions, _, _ = run_baseline(name, split, candidates, settings)
        ranked = predictions.merge(candidates[["user", "item", "liked"]], on=["user", "item"])
        ndcg[name] = mean_ndcg(ranked, cutoff=10)
    assert ndcg["ease"] > ndcg["random"] and ndcg["popularity"] > ndcg["random"], ndcg


def test_ease_switches_to_float32_past_the_lapack_limit(monkeypatch):
    """SciPy's OpenBLAS crashes in dpotrf on large float64 matrices (BoardGameGeek's 21,772
    items): past 12,000 items EASE runs in float32, and past float32's limit it stops with
    one line."""
    rng = np.random.default_rng(3)
    X = sparse.csr_matrix((rng.random((30, 12)) < 0.3).astype(np.float32))
    data = baselines.Interactions(
        matrix=X, users=np.array([f"u{n}" for n in range(30)]), items=np.array([f"i{n}" for n in range(12)])
    )
    u, i = np.repeat(np.arange(30), 12), np.tile(np.arange(12), 30)
    exact = baselines.fit_ease(data, seed=0, threads=1, l2=2.0)(u, i)
    active = int((X.getnnz(axis=0) > 0).sum())
    monkeypatch.setattr(baselines, "_FLOAT64_MAX_ITEMS", active - 1)
    assert baselines.lapack_dtype(active) == np.float32
    np.testing.assert_allclose(baselines.fit_ease(data, seed=0, threads=1, l2=2.0)(u, i), exact, rtol=1e-4, atol=1e-5)
    monkeypatch.setattr(baselines, "_LAPACK_MAX_BYTES", active * active * 4 - 1)
    with pytest.raises(ValueError, match=rf"EASE: {active} items exceed what SciPy's LAPACK"):
        baselines.fit_ease(data, seed=0, threads=1, l2=2.0)
