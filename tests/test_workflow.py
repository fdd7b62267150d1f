"""The real workflow through Snakemake: the full-grid dry-run, lint/format checks, a failing
input, and an end-to-end run of the embedded default."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from snakemake_helpers import CONFIG_FILES, REPO, load_config, planned_jobs, run_workflow, write_override

from rekalm import systems
from rekalm.replicates import replicate_names
from rekalm.systems import ablations_for

SNAKEMAKE = Path(sys.executable).parent / "snakemake"
SNAKEFMT = Path(sys.executable).parent / "snakefmt"
RUFF = Path(sys.executable).parent / "ruff"


def test_full_grid_dry_run_lists_every_dataset_and_ablation(tmp_path):
    config = load_config()
    datasets, ablations = list(config["datasets"]), list(config["ablations"])
    override = write_override(tmp_path, {"run": {"datasets": datasets, "ablations": ablations}})
    jobs = planned_jobs(tmp_path, overrides=[override])
    by_rule: dict[str, set] = {}
    for rule, wildcards in jobs:
        by_rule.setdefault(rule, set()).add(tuple(sorted(wildcards.items())))
    for rule in ("download", "prepare", "split"):
        assert {dict(w)["dataset"] for w in by_rule[rule]} == set(datasets), rule
    expected_pairs = {(d, a) for d in datasets for a in ablations_for(config, d, ablations)}
    # An ablation runs where the dataset provides all of its sources (ml1m_mini and bgg lack text).
    sources = {
        d: {s for s, block in config["datasets"][d]["knowledge"].items() if block is not None} for d in datasets
    }
    assert len(expected_pairs) == sum(set(config["ablations"][a]) <= sources[d] for d in datasets for a in ablations)
    assert {a for d, a in expected_pairs if d == "ml1m_mini"} < set(ablations)  # some are left out
    for rule, wildcard_sets in by_rule.items():
        pairs = {(dict(w)["dataset"], dict(w)["ablation"]) for w in wildcard_sets if "ablation" in dict(w)}
        if rule == "merge":  # only datasets whose inference preset loads a merged model
            merged = {
                d for d in datasets if config["inference"][config["datasets"][d]["inference"]]["load"] == "merged"
            }
            assert merged == set(datasets) - {"ml1m_mini"}
            assert pairs == {(d, a) for d, a in expected_pairs if d in merged}
        elif pairs:
            assert pairs == expected_pairs, rule
    zero_shot = {systems.zero_shot_name(mode) for mode in config["run"]["zero_shot"]}
    assert zero_shot == {"zero_shot_score", "zero_shot_generate"}
    ranked_pairs = {
        rule: {(dict(w)["dataset"], dict(w)["system"]) for w in by_rule[rule]} for rule in ("infer", "evaluate")
    }
    llm_systems = expected_pairs | {(d, z) for d in datasets for z in zero_shot}
    assert ranked_pairs["infer"] == llm_systems
    assert ranked_pairs["evaluate"] == llm_systems | {(d, b) for d in datasets for b in config["baselines"]["names"]}
    assert {dict(w)["dataset"] for w in by_rule["compare"]} == set(datasets)
    assert len(by_rule["evaluate"]) == len(expected_pairs) + len(datasets) * (
        len(zero_shot) + len(config["baselines"]["names"])
    )


def test_default_target_is_the_embedded_dataset(tmp_path):
    datasets = {wildcards.get("dataset") for _, wildcards in planned_jobs(tmp_path)}
    assert datasets - {None} == {"ml1m_mini"}


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_snakemake_lint_is_clean():
    result = run_cli(str(SNAKEMAKE), "--lint", "--configfile", *map(str, CONFIG_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_snakefmt_is_clean():
    result = run_cli(str(SNAKEFMT), "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_lint_and_format_are_clean():
    """The Python side's style gate (pyproject.toml [tool.ruff]), as snakefmt is for the rules."""
    lint = run_cli(str(RUFF), "check", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    formatted = run_cli(str(RUFF), "format", "--check", ".")
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


def test_malformed_input_stops_the_run_and_writes_nothing(tmp_path):
    (tmp_path / "train.tsv").write_text("1\t2\n")  # two columns, three expected
    (tmp_path / "test.tsv").write_text("1\t3\t1\n")
    (tmp_path / "names.json").write_text("{}")
    files = {
        role: {"path": str(tmp_path / name)}
        for role, name in (("train", "train.tsv"), ("test", "test.tsv"), ("names", "names.json"))
    }
    override = write_override(
        tmp_path,
        {
            "datasets": {"broken": {"domain": "book", "format": "rekalm_original", "files": files, "knowledge": {}}},
            "run": {"datasets": ["broken"], "ablations": ["no_kn"]},
        },
    )
    with pytest.raises(Exception):  # noqa: B017 (the Snakemake API's own failure type)
        run_workflow(tmp_path, targets=["results/broken/split/split.parquet"], overrides=[override], cores=1)
    assert not (tmp_path / "results/broken/prepare").exists() or not any(
        (tmp_path / "results/broken/prepare").iterdir()
    )
    log = (tmp_path / "logs/broken/prepare.log").read_text()
    assert "train.tsv: expected 3 tab-separated columns (user, item, 0/1), found 2" in log


# The end-to-end run: two seeds of two ablations (no_kn and collab_graph, which exercises both
# knowledge sources and the merged-sources mix), zero-shot in both modes and every baseline.
E2E_RUN = {"ablations": ["no_kn", "collab_graph"], "seeds": [22, 23]}
CONFIG_ABLATIONS = load_config()["ablations"]


@pytest.mark.slow
def test_embedded_default_runs_end_to_end(tmp_path):
    config = load_config()
    config["run"].update(E2E_RUN)
    # Two changes to keep CI short: four training jobs (two ablations x two seeds, as many
    # as the four single-seed ablations of the default), and the untrained model's
    # generate-mode run (zero_shot_generate) gets a fixed 48-token budget instead of one
    # sized for every candidate (~170 tokens, ~2.5 min on 2 cores). The generate path,
    # parsing and appending are still exercised.
    inference = copy.deepcopy(config["inference"])
    inference["cpu_small"]["max_new_tokens"] = 48
    override = write_override(tmp_path, {"inference": inference, "run": config["run"]})
    run_workflow(tmp_path, cores=2, overrides=[override])
    prepared = json.loads((tmp_path / "results/ml1m_mini/prepare/stats.json").read_text())
    assert prepared["users"] == load_config()["datasets"]["ml1m_mini"]["max_users"]
    candidates = pd.read_parquet(tmp_path / "results/ml1m_mini/split/candidates.parquet")
    assert candidates.groupby("user").size().max() <= load_config()["datasets"]["ml1m_mini"]["split"]["max_candidates"]
    assert len(pd.read_parquet(tmp_path / "results/ml1m_mini/mine_rules/rules.parquet")) > 0
    steps = config["training"][config["datasets"]["ml1m_mini"]["training"]]["max_steps"]
    for ablation in trained_replicates(config):
        run = tmp_path / "results/ml1m_mini/train" / ablation
        assert (run / "adapter/adapter_config.json").is_file(), ablation
        assert len(pd.read_csv(run / "train_log.tsv", sep="\t")) == steps, ablation
        assert (run / "loss.png").stat().st_size > 0
    test_users = set(candidates.loc[candidates["user_set"] == "test", "user"])
    for baseline in baseline_replicates(config):
        ranked = pd.read_parquet(tmp_path / "results/ml1m_mini/baselines" / baseline / "predictions.parquet")
        assert set(ranked["user"]) == test_users, baseline
    check_rankings_and_metrics(tmp_path, config, candidates)
    check_replicates(tmp_path, config)
    check_report(tmp_path, override)


def trained_replicates(config: dict) -> list[str]:
    return [
        name
        for ablation in ablations_for(config, "ml1m_mini")
        for name in replicate_names(ablation, config["run"]["seeds"])
    ]


def baseline_replicates(config: dict) -> list[str]:
    from rekalm.evaluation.baselines import SEEDED_BASELINES

    return [
        name
        for b in config["baselines"]["names"]
        for name in (replicate_names(b, config["run"]["seeds"]) if b in SEEDED_BASELINES else [b])
    ]


def check_replicates(workdir: Path, config: dict) -> None:
    """Seeds change what they must (adapters, seeded baselines) and nothing else; compare's
    aggregates are the per-seed files' means; the verdict words follow the intervals."""
    results = workdir / "results/ml1m_mini"
    first, second = config["run"]["seeds"]
    for ablation in ablations_for(config, "ml1m_mini"):
        adapters = [
            (results / "train" / name / "adapter/adapter_model.safetensors").read_bytes()
            for name in replicate_names(ablation, [first, second])
        ]
        assert adapters[0] != adapters[1], f"{ablation}: both seeds trained the same adapter"
        assert not (results / "build_sets" / f"{ablation}.seed{second}").exists()  # one training set for every seed
    random_rankings = [
        pd.read_parquet(results / "baselines" / name / "predictions.parquet")
        for name in replicate_names("random", [first, second])
    ]
    assert not random_rankings[0].equals(random_rankings[1])
    tunings = [
        json.loads((results / "baselines" / name / "tuning.json").read_text())
        for name in replicate_names("bpr", [first, second])
    ]
    assert [t["seed"] for t in tunings] == [first, second]
    assert (
        tunings[0]["validation_users"] == tunings[1]["validation_users"]
        and tunings[0]["validation_seed"] == tunings[1]["validation_seed"]
    )
    for deterministic in ("popularity", "ease", "zero_shot_score"):
        assert not list(results.glob(f"*/{deterministic}.seed*")), deterministic
    summary = json.loads((results / "compare/compare.json").read_text())
    for system in ablations_for(config, "ml1m_mini") + ["random", "bpr"]:
        per_seed = [
            json.loads((results / "metrics" / f"{name}.json").read_text())
            for name in replicate_names(system, [first, second])
        ]
        values = [m["standard"]["ndcg@10"] for m in per_seed]
        assert summary["metrics"][system]["standard"]["ndcg@10"] == pytest.approx(sum(values) / 2), system
        assert summary["sd"][system]["standard"]["ndcg@10"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5), (
            system
        )
        assert summary["seeds"][system] == [first, second]
    assert summary["seeds"]["popularity"] == [None]
    verdict = summary["verdict"]
    assert {(row["system"], row["role"]) for row in verdict} == {
        ("collab_graph", "reference"),
        ("collab_graph", "best baseline"),
    }
    for row in verdict:
        assert row["word"] == (
            "better" if row["low"] > 0 else "worse" if row["high"] < 0 else "no detectable difference"
        ), row
    assert "## Verdict" in (results / "compare/table.md").read_text()


def check_rankings_and_metrics(workdir: Path, config: dict, candidates: pd.DataFrame) -> None:
    """Every system ranked every test candidate once and has finite metrics in [0, 1]."""
    test = candidates[candidates["user_set"] == "test"]
    replicates = (
        [systems.zero_shot_name(mode) for mode in config["run"]["zero_shot"]]
        + trained_replicates(config)
        + baseline_replicates(config)
    )
    for system in replicates:
        ranked = pd.read_parquet(workdir / systems.ranking_dir(config, "ml1m_mini", system) / "predictions.parquet")
        if systems.system_kind(config, system) != "baseline":
            assert sorted(zip(ranked["user"], ranked["item"])) == sorted(zip(test["user"], test["item"])), system
        metrics = json.loads((workdir / "results/ml1m_mini/metrics" / f"{system}.json").read_text())
        assert metrics["system"] == system
        for definition in config["metrics"]["definitions"]:
            for name in ("ndcg@10", "precision@5", "mrr", *(["hit_rate@5"] if definition == "standard" else [])):
                value = metrics[definition].get(name)
                assert value is not None and 0 <= value <= 1, (system, definition, name, value)
    generated = json.loads((workdir / "results/ml1m_mini/metrics/zero_shot_generate.json").read_text())
    assert {"hallucinated_total", "appended_total"} <= set(generated["parsing"])
    table = (workdir / "results/ml1m_mini/compare/table.md").read_text()
    assert all(system.split(".")[0] in table for system in replicates)
    assert (workdir / "results/ml1m_mini/compare/plot.png").stat().st_size > 0
    assert "\\begin{tabular}" in (workdir / "results/ml1m_mini/compare/table.tex").read_text()


def check_report(workdir: Path, override: Path) -> None:
    report = workdir / "report.html"
    args = [
        str(SNAKEMAKE),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        *map(str, CONFIG_FILES),
        str(override),
        "--report",
        str(report),
    ]
    result = run_cli(*args, cwd=workdir)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert report.stat().st_size > 100_000  # self-contained: plots and tables embedded
    # The front page (config/report/workflow.rst): the comparison first, then what ran.
    page = report.read_text(encoding="utf-8")
    assert page.index("The comparison comes first") < page.index("What the pipeline did")
    trained = ", ".join(
        f"{a} (" + (" + ".join(CONFIG_ABLATIONS[a]) or "ranking prompts only") + ")" for a in E2E_RUN["ablations"]
    )
    assert f"trained ablations: {trained}" in page
