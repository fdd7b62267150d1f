"""The real workflow through Snakemake: the full-grid dry-run, lint/format checks, a failing
input, and an end-to-end run of the embedded default."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from snakemake_helpers import CONFIG_FILES, REPO, planned_jobs, run_workflow, write_override

from rekalm.config import ablations_for, load_yaml

SNAKEMAKE = Path(sys.executable).parent / "snakemake"
SNAKEFMT = Path(sys.executable).parent / "snakefmt"


def load_config() -> dict:
    config: dict = {}
    for path in CONFIG_FILES:
        config.update(load_yaml(path))
    return config


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
    assert len(expected_pairs) == 8 * 3 + 4 * 2  # ml1m/dbbook/lastfm have every source; ml1m_mini and bgg lack text
    for rule, wildcard_sets in by_rule.items():
        pairs = {(dict(w)["dataset"], dict(w)["ablation"]) for w in wildcard_sets if "ablation" in dict(w)}
        if pairs:
            assert pairs == expected_pairs, rule


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


def test_malformed_input_stops_the_run_and_writes_nothing(tmp_path):
    (tmp_path / "train.tsv").write_text("1\t2\n")  # two columns, three expected
    (tmp_path / "test.tsv").write_text("1\t3\t1\n")
    (tmp_path / "names.json").write_text("{}")
    files = {role: {"path": str(tmp_path / name)} for role, name in (("train", "train.tsv"), ("test", "test.tsv"), ("names", "names.json"))}
    override = write_override(tmp_path, {"datasets": {"broken": {"domain": "book", "format": "rekalm_original", "files": files, "knowledge": {}}}, "run": {"datasets": ["broken"], "ablations": ["no_kn"]}})
    with pytest.raises(Exception):
        run_workflow(tmp_path, targets=["results/broken/split/split.parquet"], overrides=[override], cores=1)
    assert not (tmp_path / "results/broken/prepare").exists() or not any((tmp_path / "results/broken/prepare").iterdir())
    log = (tmp_path / "logs/broken/prepare.log").read_text()
    assert "train.tsv: expected 3 tab-separated columns (user, item, 0/1), found 2" in log


@pytest.mark.slow
def test_embedded_default_runs_end_to_end(tmp_path):
    run_workflow(tmp_path, cores=2)
    prepared = json.loads((tmp_path / "results/ml1m_mini/prepare/stats.json").read_text())
    assert prepared["users"] == load_config()["datasets"]["ml1m_mini"]["max_users"]
    candidates = pd.read_parquet(tmp_path / "results/ml1m_mini/split/candidates.parquet")
    assert candidates.groupby("user").size().max() <= load_config()["datasets"]["ml1m_mini"]["split"]["max_candidates"]
    assert len(pd.read_parquet(tmp_path / "results/ml1m_mini/mine_rules/rules.parquet")) > 0
    config = load_config()
    steps = config["training"][config["datasets"]["ml1m_mini"]["training"]]["max_steps"]
    for ablation in ablations_for(config, "ml1m_mini"):
        run = tmp_path / "results/ml1m_mini/train" / ablation
        assert (run / "adapter/adapter_config.json").is_file(), ablation
        assert len(pd.read_csv(run / "train_log.tsv", sep="\t")) == steps, ablation
        assert (run / "loss.png").stat().st_size > 0
    test_users = set(candidates.loc[candidates["user_set"] == "test", "user"])
    for baseline in config["baselines"]["names"]:
        ranked = pd.read_parquet(tmp_path / "results/ml1m_mini/baselines" / baseline / "predictions.parquet")
        assert set(ranked["user"]) == test_users, baseline
