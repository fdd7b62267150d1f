"""HPC: profiles/slurm on a REAL single-node Slurm cluster (the conda envs: tests/test_envs.py).

The slow test starts a cluster with tests/slurm/cluster.sh (Debian slurm-wlm + munge, two
fake GPUs as gres on character devices, partitions `debug` and `gpu`), runs one ablation
of the embedded default through profiles/slurm with its placeholders filled in for that
cluster, and then asks Slurm itself (squeue, scontrol, the plugin's per-job logs) where each
job ran and what it was given. The fake GPUs are not CUDA devices: torch runs on the CPU.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from snakemake_helpers import CONFIG_FILES, REPO, SNAKEFILE, write_override

SNAKEMAKE = Path(sys.executable).parent / "snakemake"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
CLUSTER_SH = REPO / "tests" / "slurm" / "cluster.sh"
GPU_RULES = ("train", "merge", "infer")
CANNOT_HOST = 77  # cluster.sh: this machine cannot host the cluster

# What a user of the test cluster writes over the profile's placeholders.
TEST_CLUSTER_VALUES = {
    "CHANGE_ME_cpu_partition": "debug",
    "CHANGE_ME_gpu_partition": "gpu",
}
TEST_GPU_MODEL = "fake"  # gres.conf: Name=gpu Type=fake


# --- the profile ------------------------------------------------------------------------


def test_profile_sends_gpu_rules_to_the_gpu_partition_and_keeps_placeholders():
    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["executor"] == "slurm"
    assert profile["retries"] >= 1  # a timed-out training job is resubmitted and resumes
    defaults = profile["default-resources"]
    assert defaults["slurm_partition"] == "CHANGE_ME_cpu_partition"
    assert defaults["slurm_account"] == "CHANGE_ME_account"
    assert set(profile["set-resources"]) == set(GPU_RULES)
    for rule in GPU_RULES:
        assert profile["set-resources"][rule]["slurm_partition"] == "CHANGE_ME_gpu_partition", rule
    assert "slurm-status-command" in PROFILE.read_text()  # the note for clusters without sacct


def derive_test_profile(folder: Path, max_threads: int) -> Path:
    """profiles/slurm with its placeholders filled in for the test cluster, plus settings
    that only make sense there (no accounting, a 2-CPU node, fast polling, kept logs)."""
    profile = yaml.safe_load(PROFILE.read_text())
    del profile["default-resources"]["slurm_account"]  # the test cluster has no accounts

    def fill(value):
        if isinstance(value, dict):
            return {key: fill(item) for key, item in value.items()}
        return TEST_CLUSTER_VALUES.get(value, value)

    profile = fill(profile)
    assert "CHANGE_ME" not in yaml.safe_dump(profile), "a placeholder the test cluster does not fill"
    for rule in GPU_RULES:
        profile["set-resources"][rule]["gpu_model"] = TEST_GPU_MODEL  # the optional knob
    profile.update(
        {
            "slurm-status-command": "squeue",  # no slurmdbd: sacct has nothing to say
            "slurm-init-seconds-before-status-checks": 2,
            "seconds-between-status-checks": 2,
            "slurm-keep-successful-logs": True,
            "max-threads": max_threads,  # rules ask for up to 8 threads; the node has fewer CPUs
            "set-threads": {"prepare_model": 1},  # so that the data stages run beside it
            "latency-wait": 5,
            "retries": 0,
        }
    )
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return folder


# --- the cluster ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running single-node Slurm cluster; stopped (every daemon it started, by PID) after."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("the Slurm test needs root on Linux (it installs slurm-wlm and starts slurmd as root)")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("slurm-wlm is not installed and there is no apt-get to install it")
    # Not under pytest's tmp dirs: those are private to root and slurmctld runs as `slurm`.
    base = Path(tempfile.mkdtemp(prefix="rekalm-slurm-"))
    base.chmod(0o755)
    try:
        started = subprocess.run(
            ["bash", str(CLUSTER_SH), "up", str(base)], capture_output=True, text=True, timeout=900
        )
        if started.returncode == CANNOT_HOST:
            reason = (started.stderr.strip().splitlines() or ["cluster.sh up exited with 77"])[-1]
            pytest.skip(f"no Slurm cluster on this machine: {reason}")
        assert started.returncode == 0, f"cluster.sh up failed:\n{started.stdout}\n{started.stderr}"
        yield base
    finally:
        stopped = subprocess.run(
            ["bash", str(CLUSTER_SH), "down", str(base)], capture_output=True, text=True, timeout=120
        )
        shutil.rmtree(base, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stderr


def slurm_jobs() -> list[dict[str, str]]:
    """Every job slurmctld still knows (MinJobAge keeps finished ones for an hour)."""
    fields = ("id", "partition", "tres_per_job", "comment", "state")
    out = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--Format=JobID:|,Partition:|,tres-per-job:|,Comment:|,State:"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]


def scontrol_job(job_id: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "job", "-d", job_id], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def job_rule(comment: str) -> str:
    """The plugin's --comment is rule_<rule>[_wildcards_<values>]."""
    return re.match(r"rule_(.+?)(?:_wildcards_.*)?$", comment).group(1)


def slurm_timing_summary(jobs: list[dict[str, str]], wall_s: float) -> str:
    """One line per job: submitted / started / ended (s after the first submission)."""

    def seconds(stamp: str) -> float:
        return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))

    infos = [(job, scontrol_job(job["id"])) for job in jobs]
    origin = min(seconds(info["SubmitTime"]) for _, info in infos)
    lines = [f"{len(jobs)} Slurm jobs, snakemake wall {wall_s:.0f} s (submit/start/end in s)"]
    for job, info in sorted(infos, key=lambda pair: int(pair[0]["id"])):
        submit, begin, end = (seconds(info[key]) - origin for key in ("SubmitTime", "StartTime", "EndTime"))
        lines.append(
            f"  {job['id']:>3} {job_rule(job['comment']):<15} {job['partition']:<6} {job['tres_per_job']:<16} "
            f"{submit:5.0f} {begin:5.0f} {end:5.0f}"
        )
    return "\n".join(lines)


@pytest.mark.slow
@pytest.mark.slurm
def test_one_ablation_runs_on_slurm_with_gpu_rules_on_the_gpu_partition(slurm_cluster, tmp_path):
    max_threads = os.cpu_count() or 2
    profile = derive_test_profile(tmp_path / "profile", max_threads)
    # One ablation, two training steps, six test users to rank; the GPU rules ask for one
    # GPU each (the cpu_small presets ask for none), inference loads the merged model so
    # that merge runs too, and merge fits the test node's memory.
    override = write_override(
        tmp_path,
        {
            "run": {"ablations": ["graph"]},
            "datasets": {"ml1m_mini": {"split": {"test_fraction": 0.05}}},
            # The fake GPUs are no CUDA devices: GPU jobs stop unless told to use the CPU.
            "training": {"cpu_small": {"max_steps": 2, "device": "cpu", "resources": {"gpu": 1}}},
            "inference": {"cpu_small": {"load": "merged", "device": "cpu", "resources": {"gpu": 1}}},
            "merge": {"mem_mb": 4000, "device": "cpu"},
        },
    )
    workdir = tmp_path / "run"
    workdir.mkdir()
    # The ablation's ranking: every GPU rule (train, merge, infer) and the CPU stages before
    # them. (Its metrics would add evaluate, a CPU job like the others, for ~35 s.)
    target = "results/ml1m_mini/infer/graph/predictions.parquet"
    command = [
        str(SNAKEMAKE),
        target,
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        "--profile",
        str(profile),
    ]
    command += ["--configfiles", *map(str, CONFIG_FILES), str(override)]
    began = time.monotonic()
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    wall_s = time.monotonic() - began
    (tmp_path / "snakemake.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert (workdir / target).is_file()

    jobs = slurm_jobs()
    print(slurm_timing_summary(jobs, wall_s))
    by_rule: dict[str, list[dict[str, str]]] = {}
    for job in jobs:
        by_rule.setdefault(job_rule(job["comment"]), []).append(job)
    # Every job of the target ran on Slurm, exactly once; download and prepare_model (hub
    # downloads need the login node's internet) are local rules.
    expected = {"prepare", "split", "lookup_dbpedia", "lexicalize", "build_sets", "train", "merge", "infer"}
    assert set(by_rule) == expected
    assert all(len(rule_jobs) == 1 for rule_jobs in by_rule.values()), by_rule
    for rule, (job,) in by_rule.items():
        assert job["state"] == "COMPLETED", job
        if rule in GPU_RULES:
            # --gpus=fake:1 on the gpu partition, and Slurm gave the job one of the fake GPUs.
            assert job["partition"] == "gpu", job
            assert job["tres_per_job"] == f"gres:gpu:{TEST_GPU_MODEL}:1", job
            assert scontrol_job(job["id"])["JOB_GRES"] == f"gpu:{TEST_GPU_MODEL}:1", job
        else:
            assert job["partition"] == "debug", job
            assert job["tres_per_job"] in ("", "N/A"), job
    # The resources reached sbatch: the training preset's memory and wall time, capped threads.
    train = scontrol_job(by_rule["train"][0]["id"])
    assert train["TimeLimit"] == "00:30:00"
    assert "mem=6000M" in train["TRES"]
    assert train["NumCPUs"] == str(min(8, max_threads))
    assert train["NumNodes"] == "1"  # nodes=1: a multi-GPU job's workers share one node
    # Each job's own log, written by Slurm on the node (kept by the test profile).
    for rule, (job,) in by_rule.items():
        logs = list((workdir / ".snakemake" / "slurm_logs").glob(f"rule_{rule}/*/{job['id']}.log"))
        assert len(logs) == 1 and "Finished job" in logs[0].read_text(), (rule, logs)
