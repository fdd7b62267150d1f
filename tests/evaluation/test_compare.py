"""Comparison across ablations: ranx compare + paired test, Markdown/LaTeX tables, plot, JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rekalm.common.parse_counts import PARSE_COUNT_COLUMNS
from rekalm.common.tables import run_from_predictions
from rekalm.evaluation.compare import write_comparison
from rekalm.evaluation.evaluate import (
    MetricSettings,
    evaluate_ranking,
    held_out_judgements,
    import_ranx,
    relevant_qrels,
)
from rekalm.evaluation.report import letters_for, markdown_report

N_USERS, N_CANDIDATES, N_LIKED = 30, 6, 2


def synthetic_candidates() -> pd.DataFrame:
    rows = []
    for user in range(N_USERS):
        for position in range(N_CANDIDATES):
            rows.append((f"u{user}", "test", position, f"i{user}_{position}", int(position < N_LIKED)))
    return pd.DataFrame(rows, columns=["user", "user_set", "position", "item", "liked"])


def synthetic_split(candidates: pd.DataFrame) -> pd.DataFrame:
    held_out = candidates.assign(side="held_out")[["user", "user_set", "item", "liked", "side"]]
    # popular history items seen by every test user, so popularity is not all zero
    history = pd.DataFrame(
        {"user": candidates["user"].unique(), "user_set": "test", "item": "i0_0", "liked": 1, "side": "history"}
    )
    split = pd.concat([history, held_out], ignore_index=True)
    split["row"] = np.arange(len(split), dtype="int64")
    return split


def ranked_predictions(candidates: pd.DataFrame, strategy: str, seed: int = 0) -> pd.DataFrame:
    """oracle: liked first; inverse: liked last; random: a seeded shuffle (appended tail)."""
    rng = np.random.default_rng(seed)
    rows = []
    for user, group in candidates.groupby("user", sort=False):
        items = group.sort_values("liked", ascending=strategy == "inverse", kind="stable")["item"].tolist()
        if strategy == "random":
            items = [items[i] for i in rng.permutation(len(items))]
        for rank, item in enumerate(items, start=1):
            appended = strategy == "random" and rank > 3
            row = {
                "user": user,
                "item": item,
                "rank": rank,
                "score": 1 - (rank - 1) / len(items),
                "source": "appended" if appended else "model",
            }
            row.update({column: 0 for column in PARSE_COUNT_COLUMNS})
            row["n_appended"] = 3 if strategy == "random" else 0
            rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def evaluated() -> tuple[dict, dict, dict, MetricSettings]:
    candidates = synthetic_candidates()
    split = synthetic_split(candidates)
    settings = MetricSettings(cutoffs=(1, 3), numba_cache_dir=os.environ.get("NUMBA_CACHE_DIR"))
    metrics, runs = {}, {}
    for name in ("oracle", "zero_shot", "inverse"):
        predictions = ranked_predictions(candidates, {"zero_shot": "random"}.get(name, name))
        runs[name] = json.loads(json.dumps(run_from_predictions(predictions)))
        metrics[name] = evaluate_ranking(predictions, runs[name], candidates, split, settings, labels={"system": name})
    qrels = relevant_qrels(held_out_judgements(candidates))
    return metrics, runs, qrels, settings


def one_seed(per_system: dict) -> dict:
    """system -> {seed: value}: every system with a single replicate (seed 22)."""
    return {name: {22: value} for name, value in per_system.items()}


def test_letters_follow_ranx_order() -> None:
    assert letters_for(["x", "y", "z"]) == {"x": "a", "y": "b", "z": "c"}
    assert list(letters_for([str(i) for i in range(28)]).values())[-3:] == ["z", "aa", "ab"]


@pytest.mark.slow
def test_comparison_outputs(tmp_path: Path, evaluated: tuple) -> None:
    metrics, runs, qrels, settings = evaluated
    outputs = {
        key: tmp_path / name
        for key, name in (
            ("table", "table.md"),
            ("latex", "table.tex"),
            ("plot", "plot.png"),
            ("summary", "compare.json"),
        )
    }
    summary = write_comparison("mini", one_seed(metrics), one_seed(runs), qrels, settings, outputs)

    # compare.json: ranx means, a paired test of every pair, and each ablation's metrics
    written = json.loads(outputs["summary"].read_text())
    assert written == json.loads(json.dumps(summary))
    ranx = written["ranx"]
    assert ranx["systems"] == ["oracle", "zero_shot", "inverse"] and ranx["stat_test"] == "student"
    assert ranx["means"]["oracle"]["ndcg@3"] == pytest.approx(1.0)
    assert ranx["means"]["oracle"]["ndcg@3"] == pytest.approx(metrics["oracle"]["standard"]["ndcg@3"])
    assert ranx["comparisons"]["oracle"]["inverse"]["ndcg@3"]["significant"] is True
    assert ranx["comparisons"]["oracle"]["inverse"]["ndcg@3"]["p_value"] < 0.05
    assert ranx["win_tie_loss"]["oracle"]["inverse"]["ndcg@3"]["W"] == N_USERS
    assert written["metrics"]["zero_shot"]["parsing"]["appended_per_user"] == 3

    # Markdown: sections for both definitions, popularity and parsing; oracle beats b and c
    table = outputs["table"].read_text()
    for heading in (
        "## Standard definitions (ranx): nDCG",
        "## ClayRS definitions",
        "## Average popularity and parsing",
        "MRR and hit rate",
    ):
        assert heading in table
    oracle_row = next(
        line for line in table.splitlines() if line.startswith("| a | oracle |") and "**1.0000**<sup>bc</sup>" in line
    )
    assert oracle_row
    inverse_row = next(line for line in table.splitlines() if line.startswith("| c | inverse |"))
    assert "<sup>" not in inverse_row.split("|")[3]  # the worst ablation beats nobody at @1

    # LaTeX: booktabs tables, escaped names, significance as superscripts
    latex = outputs["latex"].read_text()
    assert latex.count(r"\begin{tabular}") == latex.count(r"\end{tabular}") >= 10
    assert r"zero\_shot" in latex and "zero_shot &" not in latex
    assert r"\textbf{1.0000}$^{\mathrm{bc}}$" in latex and r"\toprule" in latex

    # plot: a real PNG
    assert outputs["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert outputs["plot"].stat().st_size > 10_000


@pytest.mark.slow
def test_single_ablation_and_clayrs_only(tmp_path: Path, evaluated: tuple) -> None:
    metrics, runs, qrels, settings = evaluated
    outputs = {key: tmp_path / f"{key}.out" for key in ("table", "latex", "plot", "summary")}
    write_comparison(
        "mini", {"oracle": {22: metrics["oracle"]}}, {"oracle": {22: runs["oracle"]}}, qrels, settings, outputs
    )
    assert "| a | oracle |" in outputs["table"].read_text()
    clayrs_only = MetricSettings(cutoffs=(1, 3), definitions=("clayrs",))
    summary = write_comparison("mini", one_seed(metrics), one_seed(runs), qrels, clayrs_only, outputs)
    assert summary["ranx"] is None  # no standard metrics asked for: no ranx comparison
    assert "Standard definitions" not in outputs["table"].read_text()
    assert outputs["plot"].read_bytes()[:4] == b"\x89PNG"


def test_mismatched_inputs_are_rejected(tmp_path: Path) -> None:
    settings = MetricSettings(cutoffs=(1,))
    outputs = {key: tmp_path / key for key in ("table", "latex", "plot", "summary")}
    with pytest.raises(ValueError, match="different systems"):
        write_comparison("mini", {"a": {22: {}}}, {"b": {22: {}}}, {}, settings, outputs)
    with pytest.raises(ValueError, match="no system"):
        write_comparison("mini", {}, {}, {}, settings, outputs)


def test_markdown_without_significance_marks_best_values() -> None:
    settings = MetricSettings(cutoffs=(1,), definitions=("clayrs",))
    metrics = {
        "no_kn": {
            "users": {"evaluated": 2, "without_relevant": 0},
            "clayrs": {"ndcg@1": 0.5, "ndcg": 0.6},
            "popularity": {},
            "parsing": {},
        },
        "graph": {
            "users": {"evaluated": 2, "without_relevant": 0},
            "clayrs": {"ndcg@1": 0.75, "ndcg": None},
            "popularity": {},
            "parsing": {},
        },
    }
    table = markdown_report("mini", metrics, settings, None)
    assert "| a | no_kn | 0.5000 | **0.6000** |" in table
    assert "| b | graph | **0.7500** | – |" in table


def evaluate_system(
    candidates: pd.DataFrame, split: pd.DataFrame, settings: MetricSettings, strategy: str, seed: int, name: str
) -> tuple[dict, dict]:
    predictions = ranked_predictions(candidates, strategy, seed)
    run = json.loads(json.dumps(run_from_predictions(predictions)))
    return evaluate_ranking(predictions, run, candidates, split, settings, labels={"system": name}), run


@pytest.mark.slow
def test_single_seed_tests_equal_ranx_compare(evaluated: tuple) -> None:
    from ranx import Qrels, Run, compare

    from rekalm.evaluation.compare import compare_runs

    _, runs, qrels, settings = evaluated
    summary, _ = compare_runs(one_seed(runs), qrels, settings)
    report = compare(
        Qrels.from_dict(qrels),
        [Run.from_dict(run, name=name) for name, run in runs.items()],
        summary["metrics"],
        stat_test="student",
        max_p=0.05,
    )
    for name in runs:
        for metric in summary["metrics"]:
            assert summary["means"][name][metric] == pytest.approx(report.results[name][metric])
            for other in runs:
                if other != name:
                    expected = report.comparisons[name, other][metric]
                    assert summary["comparisons"][name][other][metric]["p_value"] == pytest.approx(
                        expected["p_value"], nan_ok=True
                    )
                    assert summary["comparisons"][name][other][metric]["significant"] == expected["significant"]


@pytest.mark.slow
def test_replicates_are_averaged_tested_per_user_and_judged(tmp_path: Path) -> None:
    candidates = synthetic_candidates()
    split = synthetic_split(candidates)
    settings = MetricSettings(cutoffs=(1, 3), numba_cache_dir=os.environ.get("NUMBA_CACHE_DIR"))
    ranx = import_ranx(settings.numba_cache_dir)  # ranx only through import_ranx (its caches)
    plan = {  # system -> seed -> ranking strategy (and its shuffle seed)
        "no_kn": {22: ("random", 1), 23: ("random", 2)},
        "graph": {22: ("oracle", 0), 23: ("random", 3)},
        "popularity": {None: ("inverse", 0)},  # a deterministic baseline: one replicate
        "random": {22: ("random", 4), 23: ("random", 5)},
    }
    kinds = {"no_kn": "ablation", "graph": "ablation", "popularity": "baseline", "random": "baseline"}
    metrics: dict = {name: {} for name in plan}
    runs: dict = {name: {} for name in plan}
    for name, by_seed in plan.items():
        for seed, (strategy, shuffle) in by_seed.items():
            metrics[name][seed], runs[name][seed] = evaluate_system(
                candidates, split, settings, strategy, shuffle, name
            )
    outputs = {key: tmp_path / f"{key}.out" for key in ("table", "latex", "plot", "summary")}
    qrels = relevant_qrels(held_out_judgements(candidates))
    summary = write_comparison("mini", metrics, runs, qrels, settings, outputs, kinds=kinds)

    # means and sds over seeds equal a recomputation from the per-seed metrics
    for name, by_seed in metrics.items():
        values = [m["standard"]["ndcg@3"] for m in by_seed.values()]
        assert summary["metrics"][name]["standard"]["ndcg@3"] == pytest.approx(np.mean(values))
        expected_sd = np.std(values, ddof=1) if len(values) > 1 else None
        assert summary["sd"][name]["standard"]["ndcg@3"] == (
            pytest.approx(expected_sd) if expected_sd is not None else None
        )
        assert summary["seeds"][name] == list(by_seed)
        for seed, values_of_seed in by_seed.items():
            assert summary["replicates"][name][str(seed)]["standard"] == pytest.approx(values_of_seed["standard"])
    assert summary["metrics"]["graph"]["parsing"]["appended_per_user"] == pytest.approx(1.5)  # (0 + 3) / 2
    assert summary["metrics"]["popularity"] == json.loads(
        json.dumps(metrics["popularity"][None])
    )  # one replicate: as it is
    assert isinstance(summary["metrics"]["popularity"]["users"]["evaluated"], int)

    # the paired test: per-user metric averaged over seeds, then a paired t-test
    def per_user(name: str) -> np.ndarray:
        arrays = [
            ranx.evaluate(dict(qrels), {u: run[u] for u in qrels}, ["ndcg@3", "mrr"], return_mean=False)["ndcg@3"]
            for run in runs[name].values()
        ]
        return np.mean(arrays, axis=0)

    graph, no_kn = per_user("graph"), per_user("no_kn")
    comparison = summary["ranx"]
    assert comparison["means"]["graph"]["ndcg@3"] == pytest.approx(graph.mean())
    assert comparison["comparisons"]["graph"]["no_kn"]["ndcg@3"]["p_value"] == pytest.approx(
        stats.ttest_rel(graph, no_kn).pvalue
    )
    assert comparison["seeds"]["popularity"] == [None]

    # the verdict: graph and the best baseline (random beats popularity's inverse order)
    verdict = {(row["system"], row["comparator"]): row for row in summary["verdict"]}
    assert set(verdict) == {("graph", "no_kn"), ("graph", "random")}
    row = verdict["graph", "no_kn"]
    assert row["difference"] == pytest.approx(np.mean(graph - no_kn))
    half = stats.t.ppf(0.975, len(graph) - 1) * np.std(graph - no_kn, ddof=1) / np.sqrt(len(graph))
    assert (row["low"], row["high"]) == (
        pytest.approx(row["difference"] - half),
        pytest.approx(row["difference"] + half),
    )
    assert row["word"] == ("better" if row["low"] > 0 else "worse" if row["high"] < 0 else "no detectable difference")
    assert row["word"] == "better"  # an oracle seed and a random seed beat two random seeds
    assert row["system_sd"] == pytest.approx(summary["sd"]["graph"]["standard"]["ndcg@3"])

    table = outputs["table"].read_text()
    assert table.index("## Verdict") < table.index("## Standard definitions (ranx): nDCG")
    assert "| graph | no_kn (reference) |" in table and "| graph | random (best baseline) |" in table
    graph_row = next(line for line in table.splitlines() if line.startswith("| b | graph |"))
    assert " ± " in graph_row
    popularity_row = next(line for line in table.splitlines() if line.startswith("| c | popularity |"))
    assert " ± " not in popularity_row  # one replicate: no spread
    assert f"; {N_USERS} users evaluated (0 without" in table  # counts averaged over seeds stay counts
    assert r"$\pm$" in outputs["latex"].read_text() and "tab:mini-verdict" in outputs["latex"].read_text()
    assert outputs["plot"].read_bytes()[:4] == b"\x89PNG"


def test_replicate_mismatch_is_rejected(tmp_path: Path) -> None:
    outputs = {key: tmp_path / key for key in ("table", "latex", "plot", "summary")}
    with pytest.raises(ValueError, match="different systems or seeds"):
        write_comparison("mini", {"a": {22: {}, 23: {}}}, {"a": {22: {}}}, {}, MetricSettings(cutoffs=(1,)), outputs)


@pytest.mark.slow
def test_one_split_per_seed_pools_split_user_pairs(tmp_path: Path) -> None:
    from rekalm.evaluation.compare import compare_runs

    settings = MetricSettings(cutoffs=(1, 3), numba_cache_dir=os.environ.get("NUMBA_CACHE_DIR"))
    split_qrels, metrics, runs = {}, {"no_kn": {}, "graph": {}}, {"no_kn": {}, "graph": {}}
    for seed, users in ((22, range(0, 20)), (23, range(10, 40))):  # different test users per split
        candidates = synthetic_candidates()
        candidates = candidates[candidates["user"].isin([f"u{u % N_USERS}" for u in users])].copy()
        candidates["user"] = candidates["user"] + f"_{seed}"  # each split's own users
        split = synthetic_split(candidates)
        split_qrels[seed] = relevant_qrels(held_out_judgements(candidates))
        for name, strategy in (("no_kn", "random"), ("graph", "oracle")):
            metrics[name][seed], runs[name][seed] = evaluate_system(candidates, split, settings, strategy, seed, name)
    summary, scores = compare_runs(runs, split_qrels[22], settings, split_qrels)
    assert summary["users"] == len(split_qrels[22]) + len(split_qrels[23])
    assert summary["test_unit"] == "(split, test user) pair"
    assert len(scores["graph"]["ndcg@3"]) == summary["users"]
    assert summary["comparisons"]["graph"]["no_kn"]["ndcg@3"]["p_value"] == pytest.approx(
        stats.ttest_rel(scores["graph"]["ndcg@3"], scores["no_kn"]["ndcg@3"]).pvalue
    )
    outputs = {key: tmp_path / f"{key}.out" for key in ("table", "latex", "plot", "summary")}
    written = write_comparison(
        "mini",
        metrics,
        runs,
        split_qrels[22],
        settings,
        outputs,
        kinds={"no_kn": "ablation", "graph": "ablation"},
        split_qrels=split_qrels,
    )
    assert [row["word"] for row in written["verdict"]] == ["better"]
    assert written["verdict"][0]["users"] == summary["users"]
    assert "(split, test user) pair" in outputs["table"].read_text()
    with pytest.raises(ValueError, match="every system needs"):
        compare_runs(
            {"no_kn": runs["no_kn"], "graph": {22: runs["graph"][22]}}, split_qrels[22], settings, split_qrels
        )


@pytest.mark.slow
def test_compare_rule_gathers_every_split_replicate(tmp_path: Path) -> None:
    """rules/compare.smk + workflow_scripts/compare.py through Snakemake with run.resplit: the
    replicates of each seed live under their own dataset variant and are judged against that
    split's candidates."""
    import yaml
    from snakemake_helpers import REPO, api_run

    settings = MetricSettings(cutoffs=(1, 3), numba_cache_dir=os.environ.get("NUMBA_CACHE_DIR"))
    for variant, users in (("mini", range(0, 20)), ("mini.seed23", range(10, 30))):
        candidates = synthetic_candidates()
        candidates = candidates[candidates["user"].isin([f"u{u}" for u in users])]
        split = synthetic_split(candidates)
        (tmp_path / f"results/{variant}/split").mkdir(parents=True)
        candidates.to_parquet(tmp_path / f"results/{variant}/split/candidates.parquet")
        for name, strategy in (("no_kn", "random"), ("graph", "oracle")):
            metrics, run = evaluate_system(candidates, split, settings, strategy, len(variant), name)
            for path, payload in ((f"metrics/{name}.json", metrics), (f"infer/{name}/run.json", run)):
                (tmp_path / f"results/{variant}" / path).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / f"results/{variant}" / path).write_text(json.dumps(payload))
    config = {
        "run": {
            "datasets": ["mini"],
            "ablations": ["no_kn", "graph"],
            "seeds": [22, 23],
            "resplit": True,
            "zero_shot": [],
            "baselines": False,
        },
        "ablations": {"no_kn": [], "graph": ["graph"]},
        "datasets": {"mini": {"knowledge": {"graph": {"source": "attributes"}}}},
        "baselines": {"names": ["random"]},
        "metrics": {
            "cutoffs": [1, 3],
            "definitions": ["standard", "clayrs"],
            "significance": {"test": "student", "max_p": 0.05},
        },
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text("".join(f'include: "{REPO / "rules" / name}"\n' for name in ("common.smk", "compare.smk")))
    api_run(
        tmp_path,
        ["results/mini/compare/compare.json"],
        "local",
        [tmp_path / "config.yaml"],
        snakefile=snakefile,
        quiet=True,
    )
    summary = json.loads((tmp_path / "results/mini/compare/compare.json").read_text())
    assert summary["seeds"] == {"no_kn": [22, 23], "graph": [22, 23]}
    assert summary["ranx"]["users"] == 40 and summary["ranx"]["test_unit"] == "(split, test user) pair"
    per_seed = [
        json.loads((tmp_path / f"results/{v}/metrics/graph.json").read_text())["standard"]["ndcg@3"]
        for v in ("mini", "mini.seed23")
    ]
    assert summary["metrics"]["graph"]["standard"]["ndcg@3"] == pytest.approx(np.mean(per_seed))
    assert [(row["system"], row["comparator"], row["word"]) for row in summary["verdict"]] == [
        ("graph", "no_kn", "better")
    ]
