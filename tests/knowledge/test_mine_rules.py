"""Rule mining: semantics, engines, leakage, edge cases, original reproduction."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import rekalm.knowledge.bitset_apriori as bitset_apriori
import rekalm.knowledge.mine_rules as mine
from rekalm.common.io import write_parquet
from rekalm.knowledge.mine_rules import (
    ENGINES,
    RuleMiningSettings,
    mine_rules,
    mine_rules_file,
    read_rules,
    train_transactions,
)

REFERENCE_ENGINES = ["efficient_apriori", "mlxtend_fpgrowth", "mlxtend_apriori", "mlxtend_apriori_low_memory"]

# Seven transactions, one of them empty (it still counts in every support denominator).
# Counts: a 5, b 4, c 4, ab 3, ac 3, bc 3, abc 2.
HAND_BUILT = [["a", "b", "c"], ["a", "b", "c"], ["a", "b"], ["a", "c"], ["b", "c"], ["a"], []]


def rules_as_tuples(table: pd.DataFrame) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    return [(tuple(a), tuple(c)) for a, c in zip(table["antecedent"], table["consequent"])]


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_hand_built_rules_have_known_measures_and_order(engine: str) -> None:
    table = mine_rules(HAND_BUILT, RuleMiningSettings(min_support=0.25, min_confidence=0.5, engine=engine))

    # a -> bc has confidence 2/5 and is out; b -> ac and c -> ab sit exactly at 0.5 and stay.
    assert rules_as_tuples(table) == [
        (("b",), ("c",)),
        (("c",), ("b",)),
        (("b",), ("a",)),
        (("c",), ("a",)),
        (("a", "b"), ("c",)),
        (("a", "c"), ("b",)),
        (("b", "c"), ("a",)),
        (("a",), ("b",)),
        (("a",), ("c",)),
        (("b",), ("a", "c")),
        (("c",), ("a", "b")),
    ]
    by_rule = dict(zip(rules_as_tuples(table), table[["support", "confidence", "lift"]].itertuples(index=False)))
    assert by_rule[(("b",), ("c",))] == pytest.approx((3 / 7, 3 / 4, (3 / 7) / (4 * 4 / 49)))
    assert by_rule[(("a", "b"), ("c",))] == pytest.approx((2 / 7, 2 / 3, (2 / 7) / (3 * 4 / 49)))
    assert by_rule[(("b",), ("a", "c"))] == pytest.approx((2 / 7, 1 / 2, (2 / 7) / (4 * 3 / 49)))
    assert list(table.columns) == ["antecedent", "consequent", "support", "confidence", "lift"]
    assert all(table[c].dtype == np.float64 for c in ("support", "confidence", "lift"))


def test_support_threshold_is_a_count_over_all_transactions() -> None:
    # abc has count 2 of 7 = 0.2857: frequent at 0.28, not at 0.29 (no 3-item rule then).
    low = mine_rules(HAND_BUILT, RuleMiningSettings(min_support=0.28, min_confidence=0.0))
    high = mine_rules(HAND_BUILT, RuleMiningSettings(min_support=0.29, min_confidence=0.0))
    assert max(len(a) + len(c) for a, c in rules_as_tuples(low)) == 3
    assert max(len(a) + len(c) for a, c in rules_as_tuples(high)) == 2
    assert len(low) == 12 and len(high) == 6


def test_min_count_matches_float_division_of_the_original() -> None:
    # 0.0003 * 10000 = 3.0000000000000004, yet 3 / 10000 >= 0.0003 holds: count 3 is enough.
    assert mine.min_count_for(0.0003, 10000) == 3
    assert mine.min_count_for(0.01, 4832) == 49
    assert mine.min_count_for(1.0, 5) == 5


def test_confidence_exactly_at_threshold_is_kept_by_every_engine() -> None:
    # x in 20 of 49 transactions, with y in one: conf(x -> y) = 1/20 = 0.05 exactly. mlxtend
    # recomputes it from rounded supports, ((1/49)*49) / ((20/49)*49) < 0.05, and on its own
    # drops the rule (the ML-1M disagreement at 0.05); our mlxtend wrapper keeps it.
    transactions = [["x", "y"]] + [["x"]] * 19 + [["y"]] + [["z"]] * 28
    params = dict(min_support=0.02, min_confidence=0.05)
    tables = {engine: mine_rules(transactions, RuleMiningSettings(**params, engine=engine)) for engine in ENGINES}
    for engine, table in tables.items():
        assert (("x",), ("y",)) in rules_as_tuples(table), engine
        pd.testing.assert_frame_equal(table, tables["bitset"], obj=engine)
    assert tables["bitset"]["confidence"].min() == 0.05

    from mlxtend.frequent_patterns import association_rules, fpgrowth

    onehot = pd.DataFrame([{item: item in t for item in "xyz"} for t in transactions])
    raw = association_rules(fpgrowth(onehot, min_support=0.02, use_colnames=True), num_itemsets=49, min_threshold=0.05)
    assert not ((raw["antecedents"] == frozenset("x")) & (raw["consequents"] == frozenset("y"))).any()


def correlated_transactions(seed: int, n: int, n_items: int = 60) -> list[list[str]]:
    """Users draw mostly from one of a few taste groups, so itemsets of 4-6 items occur."""
    rng = np.random.default_rng(seed)
    groups = np.array_split(rng.permutation(n_items), 6)
    transactions = []
    for _ in range(n):
        group = groups[rng.integers(len(groups))]
        core = rng.choice(group, size=rng.integers(0, len(group) + 1), replace=False)
        noise = rng.choice(n_items, size=rng.integers(0, 4), replace=False)
        transactions.append([f"item {i:02d}" for i in np.union1d(core, noise)])
    return transactions


@pytest.mark.parametrize("max_len", [2, 3, 8])
def test_engines_give_identical_tables(max_len: int) -> None:
    transactions = correlated_transactions(seed=7, n=300)
    params = dict(min_support=0.06, min_confidence=0.3, max_len=max_len)
    expected = mine_rules(transactions, RuleMiningSettings(**params))
    sizes = [len(a) + len(c) for a, c in rules_as_tuples(expected)]
    assert len(expected) > 200 and max(sizes) == min(max_len, 6)
    assert any(len(c) >= 2 for _, c in rules_as_tuples(expected)) == (max_len > 2)
    for engine in REFERENCE_ENGINES:
        pd.testing.assert_frame_equal(
            mine_rules(transactions, RuleMiningSettings(**params, engine=engine)), expected, obj=engine
        )


def test_default_itemset_length_cap_is_efficient_aprioris_8() -> None:
    transactions = correlated_transactions(seed=7, n=300)
    params = dict(min_support=0.04, min_confidence=0.3)  # frequent itemsets go past 8 items here
    expected = mine_rules(transactions, RuleMiningSettings(**params, engine="efficient_apriori"))
    table = mine_rules(transactions, RuleMiningSettings(**params))
    pd.testing.assert_frame_equal(table, expected)
    assert max(len(a) + len(c) for a, c in rules_as_tuples(table)) == 8
    longer = mine_rules(transactions, RuleMiningSettings(**params, max_len=9))
    assert max(len(a) + len(c) for a, c in rules_as_tuples(longer)) == 9


def test_bitset_engine_is_independent_of_chunk_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    transactions = correlated_transactions(seed=3, n=250)
    params = RuleMiningSettings(min_support=0.04, min_confidence=0.2)
    expected = mine_rules(transactions, params)
    monkeypatch.setattr(bitset_apriori, "_CANDIDATE_CHUNK", 7)
    monkeypatch.setattr(bitset_apriori, "_BLOCK_WORDS", 1)
    monkeypatch.setattr(bitset_apriori, "_CHUNK_WORDS", 1)
    pd.testing.assert_frame_equal(mine_rules(transactions, params), expected)


def test_cap_keeps_the_strongest_rules_per_consequent() -> None:
    table = mine_rules(
        HAND_BUILT, RuleMiningSettings(min_support=0.25, min_confidence=0.5, max_rules_per_consequent=1)
    )
    assert rules_as_tuples(table) == [
        (("b",), ("c",)),
        (("c",), ("b",)),
        (("b",), ("a",)),
        (("b",), ("a", "c")),
        (("c",), ("a", "b")),
    ]


def split_frame(rows: list[tuple[str, str, str, int, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user", "user_set", "item", "liked", "side"])
    frame["liked"] = frame["liked"].astype("int8")
    frame["row"] = np.arange(len(frame), dtype=np.int64)
    return frame


def test_no_leakage_from_test_users_or_held_out_items() -> None:
    rows = []
    for u in range(8):  # train users: history likes {h1, h2}, held-out likes {leak_held_1, leak_held_2}
        rows += [(f"train{u}", "train", "h1", 1, "history"), (f"train{u}", "train", "h2", 1, "history")]
        rows += [
            (f"train{u}", "train", "leak_held_1", 1, "held_out"),
            (f"train{u}", "train", "leak_held_2", 1, "held_out"),
        ]
        rows += [(f"train{u}", "train", "leak_disliked", 0, "history")]
    for u in range(20):  # many test users with a strong pattern of their own
        for item in ("leak_test_1", "leak_test_2", "h1"):
            rows.append((f"test{u}", "test", item, 1, "history"))
    rows.append(("train_no_likes", "train", "h1", 0, "history"))  # an empty transaction
    split = split_frame(rows)

    transactions = train_transactions(split)
    assert transactions == [["h1", "h2"]] * 8 + [[]]
    table = mine_rules(transactions, RuleMiningSettings(min_support=0.01, min_confidence=0.01))
    assert rules_as_tuples(table) == [(("h1",), ("h2",)), (("h2",), ("h1",))]
    # Denominator = 9 train users (the one without likes included), never the 29 users.
    assert table["support"].tolist() == [8 / 9, 8 / 9]
    assert not any("leak" in item for a, c in rules_as_tuples(table) for item in a + c)


def test_transactions_keep_user_order_and_count_users_without_likes() -> None:
    split = split_frame(
        [
            ("u2", "train", "x", 1, "history"),
            ("u1", "train", "y", 1, "history"),
            ("u1", "train", "x", 1, "history"),
            ("u1", "train", "x", 1, "history"),  # a repeated row counts once
            ("u3", "train", "z", 1, "held_out"),  # only held-out likes -> empty
            ("u4", "train", "w", 0, "history"),  # only dislikes -> empty
            ("u2", "train", "v", 1, "history"),
        ]
    )
    assert train_transactions(split) == [["v", "x"], ["x", "y"], [], []]


def test_no_rule_gives_an_empty_typed_table_and_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    split = split_frame([(f"u{i}", "train", f"item{i}", 1, "history") for i in range(5)])
    write_parquet(split, tmp_path / "split.parquet")
    with caplog.at_level(logging.WARNING, logger="rekalm.knowledge.mine_rules"):
        table = mine_rules_file(
            tmp_path / "split.parquet",
            tmp_path / "out" / "rules.parquet",
            RuleMiningSettings(min_support=0.5, min_confidence=0.5),
        )
    assert table.empty
    assert any("no association rule" in record.getMessage() for record in caplog.records)
    schema = pq.read_schema(tmp_path / "out" / "rules.parquet")
    assert schema.field("antecedent").type == pa.list_(pa.string())
    assert schema.field("consequent").type == pa.list_(pa.string())
    assert all(schema.field(name).type == pa.float64() for name in ("support", "confidence", "lift"))
    assert pd.read_parquet(tmp_path / "out" / "rules.parquet").empty
    assert list(read_rules(tmp_path / "out" / "rules.parquet").columns) == list(table.columns)


@pytest.mark.parametrize("transactions", [[], [[], []], [["only"]]])
def test_degenerate_inputs_give_no_rules(transactions: list[list[str]]) -> None:
    for engine in ENGINES:
        assert mine_rules(transactions, RuleMiningSettings(min_support=0.1, min_confidence=0.1, engine=engine)).empty


def test_max_len_one_gives_no_rules() -> None:
    assert mine_rules(HAND_BUILT, RuleMiningSettings(min_support=0.1, min_confidence=0.1, max_len=1)).empty


ODD_IDS = [
    "Amélie (2001)",
    'say "hi", then; leave',
    "tab\there",
    "new\nline",
    "[1, 2]",
    "🎲 Catan",
    " leading space",
    "Ω",
    "a|b",
]


def test_odd_characters_in_item_ids_survive_mining_and_parquet(tmp_path: Path) -> None:
    transactions = [ODD_IDS[:5], ODD_IDS[:5], ODD_IDS[4:], ODD_IDS[4:], ODD_IDS]
    split = split_frame(
        [(f"u{u}", "train", item, 1, "history") for u, items in enumerate(transactions) for item in items]
    )
    write_parquet(split, tmp_path / "split.parquet")
    table = mine_rules_file(
        tmp_path / "split.parquet",
        tmp_path / "rules.parquet",
        RuleMiningSettings(min_support=0.4, min_confidence=0.9, max_len=2),
    )
    back = read_rules(tmp_path / "rules.parquet")
    pd.testing.assert_frame_equal(back, table)
    seen = {item for a, c in rules_as_tuples(back) for item in a + c}
    assert seen == set(ODD_IDS)
    assert all(list(a) == sorted(a) for a in back["antecedent"])  # sorted as Python sorts str
    plain = pd.read_parquet(tmp_path / "rules.parquet")  # what downstream stages read
    assert [list(a) for a in plain["antecedent"]] == [list(a) for a in table["antecedent"]]


def test_output_is_deterministic_across_runs_and_transaction_order() -> None:
    transactions = correlated_transactions(seed=11, n=200)
    params = RuleMiningSettings(min_support=0.05, min_confidence=0.2)
    first = mine_rules(transactions, params)
    shuffled = [list(reversed(t)) for t in reversed(transactions)]
    pd.testing.assert_frame_equal(mine_rules(shuffled, params), first)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("min_support", 0),
        ("min_support", 1.5),
        ("min_confidence", -0.1),
        ("max_len", 0),
        ("max_rules_per_consequent", 0),
        ("engine", "pyfim"),
    ],
)
def test_bad_params_raise_one_line_errors(field: str, value: object) -> None:
    params = {"min_support": 0.1, "min_confidence": 0.1, field: value}
    with pytest.raises(ValueError, match=f"knowledge.collab.{field}"):
        RuleMiningSettings(**params)


def test_bad_split_file_names_the_file_and_column(tmp_path: Path) -> None:
    split = split_frame([("u1", "train", "x", 1, "prompt")])
    write_parquet(split, tmp_path / "split.parquet")
    with pytest.raises(ValueError, match=r"split\.parquet: column 'side'"):
        mine_rules_file(tmp_path / "split.parquet", tmp_path / "rules.parquet", RuleMiningSettings(0.1, 0.1))
    write_parquet(split.drop(columns="side"), tmp_path / "split.parquet")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['side'\]"):
        mine_rules_file(tmp_path / "split.parquet", tmp_path / "rules.parquet", RuleMiningSettings(0.1, 0.1))


def test_rule_and_script_run_through_snakemake(tmp_path: Path) -> None:
    """The rule runs the script; a dataset whose thresholds yield no rule still completes."""
    from snakemake_helpers import api_run

    repo = Path(__file__).resolve().parents[2]
    rows = [(f"u{u}", "train", item, 1, "history") for u in range(6) for item in ("a", "b")]
    rows += [(f"t{u}", "test", "leak", 1, "history") for u in range(6)]
    for dataset in ("toy", "sparse"):
        write_parquet(split_frame(rows), tmp_path / "results" / dataset / "split" / "split.parquet")
    # The real rule and the input functions it calls, on a config with only what they read.
    (tmp_path / "Snakefile").write_text(
        "".join(f"include: {str(repo / 'rules' / name)!r}\n" for name in ("common.smk", "mine_rules.smk"))
    )
    (tmp_path / "config.yaml").write_text(
        "datasets:\n"
        "  toy: {knowledge: {collab: {min_support: 0.5, min_confidence: 0.5}}}\n"
        "  sparse: {knowledge: {collab: {min_support: 0.5, min_confidence: 0.5, max_len: 1}}}\n"
    )
    targets = [f"results/{dataset}/mine_rules/rules.parquet" for dataset in ("toy", "sparse")]
    api_run(tmp_path, targets, "local", [tmp_path / "config.yaml"], snakefile=tmp_path / "Snakefile", quiet=True)
    assert rules_as_tuples(read_rules(tmp_path / targets[0])) == [(("a",), ("b",)), (("b",), ("a",))]
    assert "wrote 2 rules" in (tmp_path / "logs" / "toy" / "mine_rules" / "mine_rules.log").read_text()
    assert read_rules(tmp_path / targets[1]).empty
    assert "WARNING" in (tmp_path / "logs" / "sparse" / "mine_rules" / "mine_rules.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dataset", "min_support", "min_confidence", "train_users", "expected_rules"),
    [("dbbook", 0.0003, 0.001, 4528, 13244), ("lastfm", 0.0015, 0.002, 1505, 13390)],
)
def test_reproduces_the_original_rule_counts(
    original_data: Path, dataset: str, min_support: float, min_confidence: float, train_users: int, expected_rules: int
) -> None:
    """The original reports 13,245 / 13,391 rules; its shipped rule files hold 13,244 /
    13,390 lines, and efficient-apriori 2.0.6 on this same split gives 13,244 / 13,390 too."""
    from rekalm.data.split import SplitSettings, split_interactions

    folder = original_data / dataset / "user-item"
    files = [
        pd.read_csv(folder / f"{part}.tsv", sep="\t", names=["user", "item", "liked"], dtype=str)
        for part in ("train", "test")
    ]
    interactions = pd.concat(files, ignore_index=True)
    # object columns: split.py converts the item column to numpy once per user, which is
    # instant for object dtype and slow for pandas' Arrow-backed str dtype.
    interactions = interactions.astype({"user": object, "item": object}).astype({"liked": "int8"})
    split, _ = split_interactions(interactions, SplitSettings(method="original"))
    transactions = train_transactions(split)
    assert len(transactions) == train_users
    table = mine_rules(transactions, RuleMiningSettings(min_support=min_support, min_confidence=min_confidence))
    assert len(table) == expected_rules
    assert table["confidence"].min() >= min_confidence
