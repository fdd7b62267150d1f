import doctest

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import rekalm.common.tables
from rekalm.common.io import read_parquet, write_parquet
from rekalm.common.tables import (
    CANDIDATES,
    PREDICTIONS,
    RULES,
    RULES_SCHEMA,
    SPLIT,
    TRIPLES,
    Table,
    rank_scores,
    require_columns,
)
from rekalm.data.split import SplitSettings, split_interactions
from rekalm.evaluation.baselines import BaselineSettings, run_baseline


def test_the_check_names_where_and_the_missing_columns():
    frame = pd.DataFrame({"user": ["u1"], "item": ["i1"]})
    with pytest.raises(ValueError) as error:
        require_columns(frame, SPLIT.select("user", "side", "liked"), "split.parquet")
    assert str(error.value) == (
        "split.parquet: missing column(s) ['liked', 'side']; expected ['user', 'side', 'liked'], "
        "found ['user', 'item']"
    )
    require_columns(frame, ["item", "user"], "split.parquet")  # all there: no error


def test_the_check_takes_a_whole_table_and_arrow_tables():
    frame = pd.DataFrame({column: [] for column in CANDIDATES.columns if column != "position"})
    with pytest.raises(ValueError, match=r"^candidates\.parquet: missing column\(s\) \['position'\]; expected \["):
        require_columns(frame, CANDIDATES, "candidates.parquet")
    with pytest.raises(ValueError, match=r"^rules\.parquet: missing column\(s\) \['lift'\]"):
        require_columns(pa.table({name: [] for name in RULES.columns[:-1]}), RULES, "rules.parquet")


def test_a_reader_cannot_require_a_column_the_table_does_not_have():
    with pytest.raises(KeyError, match=r"table 'split' has no column\(s\) \['position'\]"):
        SPLIT.select("user", "position")
    assert Table("t", ("a", "b")).select("b") == ("b",)


def test_read_parquet_names_the_file(tmp_path):
    path = tmp_path / "split.parquet"
    write_parquet(pd.DataFrame({"user": ["u1"]}), path)
    with pytest.raises(ValueError, match=rf"^{path}: missing column\(s\) \['item'\]; expected \['user', 'item'\]"):
        read_parquet(path, required=SPLIT.select("user", "item"))


def test_split_writes_the_declared_columns_and_dtypes():
    rng = np.random.default_rng(0)
    interactions = pd.DataFrame(
        {
            "user": [f"u{u}" for u in range(20) for _ in range(6)],
            "item": [f"i{i}" for _ in range(20) for i in rng.choice(30, 6, replace=False)],
            "liked": rng.integers(0, 2, 120).astype("int8"),
        }
    )
    interactions.loc[interactions.groupby("user").head(1).index, "liked"] = 1  # every user likes something
    split, candidates = split_interactions(interactions, SplitSettings())
    for frame, table in ((split, SPLIT), (candidates, CANDIDATES)):
        assert tuple(frame.columns) == table.columns
        assert {column: frame[column].dtype for column in table.dtypes} == {
            column: pd.Series([], dtype=dtype).dtype for column, dtype in table.dtypes.items()
        }
    baseline, run, _ = run_baseline("popularity", split, candidates, BaselineSettings())
    assert tuple(baseline.columns) == PREDICTIONS.columns
    assert set(run) == set(baseline["user"])
    for user, group in baseline.groupby("user"):  # the run's scores are the contract's rank scores
        assert run[user] == dict(zip(group["item"], rank_scores(group["rank"].to_numpy(), len(group))))


def test_rank_scores_are_distinct_and_start_at_one():
    assert rank_scores(np.array([1, 2, 3, 4]), 4).tolist() == [1.0, 0.75, 0.5, 0.25]
    assert RULES_SCHEMA.names == list(RULES.columns)


def test_an_empty_table_keeps_its_columns_and_dtypes(tmp_path):
    write_parquet(TRIPLES.empty(), tmp_path / "triples.parquet")
    empty = read_parquet(tmp_path / "triples.parquet", required=TRIPLES)
    assert empty.empty and tuple(empty.columns) == TRIPLES.columns
    assert all(pd.api.types.is_string_dtype(empty[column]) for column in TRIPLES.columns)
    with pytest.raises(KeyError):
        PREDICTIONS.empty()  # no fixed dtypes declared: no guessing


def test_the_docstring_example_holds():
    assert doctest.testmod(rekalm.common.tables).failed == 0
