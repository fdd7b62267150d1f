"""Targeted re-runs, through Snakemake's own planning (dry-runs via the API):

- one ablation's target plans that ablation's jobs plus the shared upstream, nothing of
  the other ablations;
- on a finished workdir, a changed training parameter re-plans training and what depends
  on it, nothing upstream; a changed resource (runtime, memory, GPUs) re-plans nothing;
- forcing one ablation's training (`-R train` with its target) re-plans only its jobs.

The finished workdir is built without training: every output of the default `rule all` is
created empty and then recorded with Snakemake's touch executor, which stores the same
metadata as a real run (params, code, input, software env), the basis of the rerun triggers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from snakemake_helpers import CONFIG_FILES, api_run, jobs_of, planned_jobs, write_override

DATASET = "ml1m_mini"
UPSTREAM = {"download", "prepare", "split", "prepare_model"}  # shared by every ablation


def plan(
    workdir: Path,
    targets: list[str],
    overrides: list[Path] = (),
    forcerun: list[str] = (),
    forceall: bool = False,
    executor: str = "dryrun",
) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job `executor` runs, the `all` target aside; like
    snakemake_helpers.planned_jobs, plus --forcerun and the touch executor."""
    dag = api_run(workdir, targets, executor, [*CONFIG_FILES, *overrides], forceall=forceall, forcerun=forcerun)
    return [(rule, wildcards) for rule, wildcards in jobs_of(dag) if rule != "all"]


def per_ablation(jobs) -> set[tuple[str, str]]:
    """(rule, ablation) of the jobs that belong to one ablation or system."""
    return {(rule, w.get("ablation") or w["system"]) for rule, w in jobs if {"ablation", "system"} & set(w)}


def rules_of(jobs) -> set[str]:
    return {rule for rule, _ in jobs}


@pytest.mark.parametrize(
    "target, own_rules",
    [
        (f"results/{DATASET}/train/graph/adapter", {"build_sets", "train"}),
        (f"results/{DATASET}/metrics/graph.json", {"build_sets", "train", "infer", "evaluate"}),
    ],
)
def test_one_ablation_target_plans_its_jobs_and_the_shared_upstream(tmp_path, target, own_rules):
    jobs = planned_jobs(tmp_path, targets=[target])
    # The graph ablation needs the graph facts as text (lookup_dbpedia, lexicalize of the
    # graph source), no association rules, no baselines, no comparison.
    assert rules_of(jobs) == UPSTREAM | {"lookup_dbpedia", "lexicalize"} | own_rules
    assert per_ablation(jobs) == {(rule, "graph") for rule in own_rules}
    assert [w["source"] for rule, w in jobs if rule == "lexicalize"] == ["graph"]
    assert len(jobs) == len(UPSTREAM) + 2 + len(own_rules)  # one job each


@pytest.fixture(scope="module")
def finished_workdir(tmp_path_factory) -> Path:
    """A workdir in which the default `rule all` counts as finished (about 10 s)."""
    workdir = tmp_path_factory.mktemp("finished")
    for job in api_run(workdir, [], "dryrun", CONFIG_FILES).finished_jobs:
        for output in job.output:
            path = workdir / str(output)
            if output.is_directory:
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
    touched = plan(workdir, [], forceall=True, executor="touch")
    assert rules_of(touched) >= {"train", "infer", "evaluate", "compare"}
    assert plan(workdir, []) == [], "a finished workdir plans nothing"
    return workdir


def default_ablations() -> list[str]:
    from rekalm.config import load_yaml
    from rekalm.systems import ablations_for

    config: dict = {}
    for path in CONFIG_FILES:
        config.update(load_yaml(path))
    return ablations_for(config, DATASET)


def test_changed_learning_rate_reruns_training_and_its_dependents_only(finished_workdir, tmp_path):
    override = write_override(tmp_path, {"training": {"cpu_small": {"learning_rate": 1.0e-3}}})
    jobs = plan(finished_workdir, [], [override])
    ablations = default_ablations()
    # Every ablation trains with the changed preset: each is retrained and re-ranked, and
    # the comparison is rebuilt. Nothing upstream; zero-shot and baseline rankings stay.
    assert per_ablation(jobs) == {(rule, a) for a in ablations for rule in ("train", "infer", "evaluate")}
    assert rules_of(jobs) == {"train", "infer", "evaluate", "compare"}
    assert len(jobs) == 3 * len(ablations) + 1


def test_changed_training_resources_rerun_nothing(finished_workdir, tmp_path):
    resources = {"gpu": 2, "mem_mb": 64000, "runtime": 600}
    override = write_override(tmp_path, {"training": {"cpu_small": {"resources": resources}}})
    assert plan(finished_workdir, [], [override]) == []


def test_forcing_one_ablations_training_reruns_only_that_ablation(finished_workdir):
    # `snakemake results/ml1m_mini/metrics/graph.json -R train`
    jobs = plan(finished_workdir, [f"results/{DATASET}/metrics/graph.json"], forcerun=["train"])
    assert per_ablation(jobs) == {("train", "graph"), ("infer", "graph"), ("evaluate", "graph")}
    assert rules_of(jobs) == {"train", "infer", "evaluate"}


# --- replicates (run.seeds) -----------------------------------------------------------


def replicates_of(jobs, rule: str) -> set[tuple[str, str]]:
    """(ablation or system or baseline, replicate suffix) of one rule's jobs."""
    out = set()
    for job_rule, w in jobs:
        if job_rule == rule:
            name = w.get("ablation") or w.get("baseline") or w["system"]
            out.add((name, w.get("replicate", "")))
    return out


def test_adding_a_seed_plans_only_the_new_seeds_jobs(finished_workdir, tmp_path):
    override = write_override(tmp_path, {"run": {"seeds": [22, 23]}})
    jobs = plan(finished_workdir, [], [override])
    ablations = default_ablations()
    assert replicates_of(jobs, "train") == {(a, ".seed23") for a in ablations}
    assert replicates_of(jobs, "infer") == {(f"{a}.seed23", "") for a in ablations}
    # seeded baselines replicate; deterministic ones and zero-shot ranking do not
    assert replicates_of(jobs, "baselines") == {("random", ".seed23"), ("bpr", ".seed23")}
    assert {w["system"] for rule, w in jobs if rule == "evaluate"} == {f"{a}.seed23" for a in ablations} | {
        "random.seed23",
        "bpr.seed23",
    }
    assert rules_of(jobs) == {"train", "infer", "baselines", "evaluate", "compare"}
    assert len(jobs) == 3 * len(ablations) + 2 * 2 + 1  # nothing of seed 22 re-runs


def test_one_replicate_can_be_targeted_alone(tmp_path):
    override = write_override(tmp_path, {"run": {"seeds": [22, 23, 24]}})
    jobs = planned_jobs(tmp_path, targets=[f"results/{DATASET}/metrics/graph.seed23.json"], overrides=[override])
    assert replicates_of(jobs, "train") == {("graph", ".seed23")}
    assert {w["system"] for rule, w in jobs if rule in ("infer", "evaluate")} == {"graph.seed23"}
    assert rules_of(jobs) == UPSTREAM | {"lookup_dbpedia", "lexicalize", "build_sets", "train", "infer", "evaluate"}


def test_several_seeds_multiply_the_gpu_jobs_of_a_dry_run(tmp_path):
    override = write_override(tmp_path, {"run": {"seeds": [1, 2, 3]}})
    jobs = planned_jobs(tmp_path, overrides=[override])
    ablations = default_ablations()
    assert replicates_of(jobs, "train") == {(a, suffix) for a in ablations for suffix in ("", ".seed2", ".seed3")}
    infer = {w["system"] for rule, w in jobs if rule == "infer"}
    assert len(infer) == 3 * len(ablations) + 2  # zero-shot ranks once per mode


@pytest.mark.parametrize(
    "target, message",
    [
        (f"results/{DATASET}/metrics/graph.seed99.json", "seed 99 is not in run.seeds"),
        (f"results/{DATASET}/baselines/ease.seed23/run.json", "'ease' is deterministic and has no replicate"),
    ],
)
def test_replicates_outside_run_seeds_are_refused(tmp_path, target, message):
    override = write_override(tmp_path, {"run": {"seeds": [22, 23]}})
    with pytest.raises(Exception) as error:
        planned_jobs(tmp_path, targets=[target], overrides=[override])
    assert message in str(error.value) or message in repr(error.value.__cause__)


def test_resplit_replicates_the_split_and_everything_after_it(tmp_path):
    override = write_override(tmp_path, {"run": {"seeds": [22, 23], "resplit": True}})
    jobs = planned_jobs(tmp_path, overrides=[override])
    datasets = {
        rule: sorted(w["dataset"] for r, w in jobs if r == rule) for rule in rules_of(jobs) - {"all", "prepare_model"}
    }
    both = [DATASET, f"{DATASET}.seed23"]
    # split-free stages run once for the base dataset, the split and all after it per seed
    for rule in ("download", "prepare", "lookup_dbpedia", "compare"):
        assert datasets[rule] == [DATASET], rule
    assert datasets["split"] == datasets["mine_rules"] == both
    lexicalized = {(w["dataset"], w["source"]) for rule, w in jobs if rule == "lexicalize"}
    assert lexicalized == {
        (DATASET, "graph"),
        (DATASET, "collab"),
        (f"{DATASET}.seed23", "collab"),
    }  # facts do not depend on the split
    ablations = default_ablations()
    assert {(w["dataset"], w["ablation"], w["replicate"]) for rule, w in jobs if rule == "train"} == {
        (d, a, "") for d in both for a in ablations
    }
    # every system, deterministic ones too, ranks each split's own test users
    evaluated = {(w["dataset"], w["system"]) for rule, w in jobs if rule == "evaluate"}
    assert {system for dataset, system in evaluated if dataset == f"{DATASET}.seed23"} == {
        system for dataset, system in evaluated if dataset == DATASET
    }
    assert len(evaluated) == 2 * (len(ablations) + 2 + 5)


def test_a_split_replicate_needs_resplit(tmp_path):
    override = write_override(tmp_path, {"run": {"seeds": [22, 23]}})
    with pytest.raises(Exception) as error:
        planned_jobs(tmp_path, targets=[f"results/{DATASET}.seed23/split/split.parquet"], overrides=[override])
    assert "needs run.resplit: true" in str(error.value) or "needs run.resplit: true" in repr(error.value.__cause__)


@pytest.mark.slow
def test_resplit_draws_each_seeds_split_from_the_same_prepared_data(tmp_path):
    import pandas as pd
    from snakemake_helpers import run_workflow

    override = write_override(tmp_path, {"run": {"seeds": [22, 23], "resplit": True}})
    targets = [f"results/{DATASET}/split/split.parquet", f"results/{DATASET}.seed23/split/split.parquet"]
    run_workflow(tmp_path, targets=targets, overrides=[override], cores=1)
    first, second = (pd.read_parquet(tmp_path / target) for target in targets)
    test_users = [set(split.loc[split["user_set"] == "test", "user"]) for split in (first, second)]
    assert test_users[0] != test_users[1]  # another seed, another draw of test users
    assert len(test_users[0]) == len(test_users[1])
    # both splits cut the one prepared table (the history/candidate caps keep different rows)
    prepared = pd.read_parquet(tmp_path / f"results/{DATASET}/prepare/interactions.parquet")
    known = set(zip(prepared["user"], prepared["item"], prepared["liked"].astype(int)))
    for split in (first, second):
        assert set(split["user"]) == set(prepared["user"])
        assert set(zip(split["user"], split["item"], split["liked"].astype(int))) <= known
    assert not (tmp_path / f"results/{DATASET}.seed23/prepare").exists()  # prepared once, for the base dataset
