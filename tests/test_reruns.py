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


def plan(workdir: Path, targets: list[str], overrides: list[Path] = (), forcerun: list[str] = (), forceall: bool = False, executor: str = "dryrun") -> list[tuple[str, dict[str, str]]]:
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
    from rekalm.config import ablations_for, load_yaml

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
