"""The train rule as a cluster job, through the real Snakemake rules: two data-parallel CPU
workers (``processes: 2``, gloo, the same launcher as multi-GPU) started from a workflow
whose working directory is outside the repository, killed twice at its "time limit" and
finished from checkpoints by the rule's own retries; a worker's traceback in the rule's
log; and the resources a multi-GPU job asks Slurm for."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml
from snakemake_helpers import snakemake_command as fresh_snakemake

REPO = Path(__file__).resolve().parents[2]
MOVIES = ["The Matrix (1999)", "Toy Story (1995)", "Heat (1995)", "Alien (1979)", "Fargo (1996)", "Jaws (1975)"]
ROWS = 16  # one example per item (no packing): 8 steps per epoch with 2 workers x batch 1
WORKER_PRESET = {
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.0,
    "seq_len": 128,
    "learning_rate": 1e-2,
    "epochs": 2,
    "per_device_batch_size": 1,
    "packing": False,
    "gradient_checkpointing": False,
    "save_steps": 1,
    "save_total_limit": 2,
    "keep_checkpoints": True,
    "device": "cpu",
    "processes": 2,
}


def rows(count: int) -> list[dict[str, str]]:
    return [
        {
            "kind": "ranking",
            "prompt": f"Liked: {MOVIES[i % 6]}. Rank: {', '.join(MOVIES[2:5])}.\nAnswer: ",
            "completion": f"Here a list:\n1. {MOVIES[(i + 2) % 6]}",
        }
        for i in range(count)
    ]


def write_workflow(work: Path, tiny_llama_dir: Path, datasets: dict[str, tuple[list[dict], dict]]) -> None:
    """A workflow of the real prepare_model and train rules; each dataset gets its own rows
    and training preset."""
    from rekalm.common.io import write_jsonl

    for name, (train_rows, _) in datasets.items():
        write_jsonl(train_rows, work / f"results/{name}/build_sets/no_kn/train.jsonl")
    config = {
        "trust_remote_code": False,
        "run": {"seeds": [22]},
        "models": {"tiny": {"source": "local", "path": str(tiny_llama_dir)}},
        "datasets": {name: {"model": "tiny", "training": name} for name in datasets},
        "training": {name: preset for name, (_, preset) in datasets.items()},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    # The real rules and input functions, as the root Snakefile includes them.
    includes = "".join(f'include: "{REPO}/rules/{stage}.smk"\n' for stage in ("common", "prepare_model", "train"))
    (work / "Snakefile").write_text(f"import sys\nsys.path.insert(0, {str(REPO)!r})\n{includes}", encoding="utf-8")


def worker_preset(max_slices: int, **changes) -> dict:
    return {
        **WORKER_PRESET,
        **changes,
        "resources": {"gpu": 0, "mem_mb": 2000, "runtime": 5, "max_slices": max_slices},
    }


def snakemake_command(work: Path, datasets: list[str]) -> list[str]:
    targets = [f"results/{name}/train/no_kn/loss.png" for name in datasets]
    return fresh_snakemake(
        work, targets, [work / "config.yaml"], cores=2, extra=["--show-failed-logs", "--keep-going"]
    )


def clean_environment() -> dict[str, str]:
    """No PYTHONPATH: the workers must find the parent's code by themselves."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}


def newest_complete_step(checkpoints: Path) -> int:
    steps = [
        int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").is_file()
    ]
    return max(steps, default=0)


def time_limit(snakemake: subprocess.Popen) -> None:
    """What Slurm does at a job's time limit: SIGTERM to every process of the job (here the
    script and its launcher and workers, not Snakemake itself), SIGKILL to the survivors."""
    job = psutil.Process(snakemake.pid).children(recursive=True)
    for process in job:
        process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(job, timeout=5)
    for process in alive:
        process.kill()


@pytest.mark.slow
def test_two_workers_from_elsewhere_killed_twice_finish_from_checkpoints(tmp_path, tiny_llama_dir):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_workflow(work, tiny_llama_dir, {"toy": (rows(ROWS), worker_preset(max_slices=3))})
    checkpoints = work / "results/toy/checkpoints/no_kn"
    snakemake = subprocess.Popen(
        snakemake_command(work, ["toy"]),
        cwd=elsewhere,
        env=clean_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for kill_after in (2, 4):  # both inside the first epoch (8 steps), so epoch 2 runs whole
            deadline = time.monotonic() + 240
            while (
                newest_complete_step(checkpoints) < kill_after
                and snakemake.poll() is None
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)
            assert snakemake.poll() is None, snakemake.stdout.read()[-4000:]
            time_limit(snakemake)
        output, _ = snakemake.communicate(timeout=300)
    finally:
        if snakemake.poll() is None:
            snakemake.kill()
    assert snakemake.returncode == 0, output[-5000:]
    assert output.count("Trying to restart job") == 2, output[-3000:]

    # Resumed twice and finished: every step once, three sessions (1 before the first kill).
    log = pd.read_csv(work / "results/toy/train/no_kn/train_log.tsv", sep="\t")
    assert list(log["step"]) == list(range(1, ROWS + 1))  # 2 epochs x 8 steps
    assert sorted(set(log["session"])) == [1, 2, 3]
    assert (work / "results/toy/train/no_kn/adapter/adapter_model.safetensors").is_file()

    # The last attempt's log (each attempt rewrites it): both workers ran the parent's code,
    # and process 0 alone wrote the outputs.
    rule_log = (work / "logs/toy/train/no_kn.log").read_text()
    for rank in ("0", "1"):
        # the whole line's end: the package's folder, not one of its subpackages
        said = f"worker rank {rank} of 2: rekalm from {REPO / 'rekalm'}"
        assert any(line.endswith(said) for line in rule_log.splitlines()), rule_log[-3000:]
    writers = [line for line in rule_log.splitlines() if "writes the adapter" in line]
    assert len(writers) == 1 and "process 0 of 2" in writers[0]
    assert "resuming from" in rule_log

    # Disjoint shards: per epoch the two ranks never train on the same item, no item comes
    # twice, and the second (uninterrupted) epoch covers every item exactly once.
    shards = {
        rank: [json.loads(line) for line in (checkpoints / "shards" / f"rank-{rank}.jsonl").read_text().splitlines()]
        for rank in (0, 1)
    }
    for epoch in (0, 1):
        seen = {
            rank: [item for entry in shards[rank] if entry["epoch"] == epoch for item in entry["items"]]
            for rank in (0, 1)
        }
        assert seen[0] and seen[1], (epoch, shards)
        assert len(set(seen[0])) == len(seen[0]) and len(set(seen[1])) == len(seen[1])
        assert not set(seen[0]) & set(seen[1]), epoch
    last = {
        rank: {item for entry in shards[rank] if entry["epoch"] == 1 for item in entry["items"]} for rank in (0, 1)
    }
    assert last[0] | last[1] == set(range(ROWS)) and len(last[0]) == len(last[1]) == ROWS // 2


@pytest.mark.slow
def test_failing_jobs_say_why_in_the_rule_log(tmp_path, tiny_llama_dir):
    """Two train jobs that must fail, in one Snakemake run: a worker that raises leaves its
    traceback in the log; a job that asked for a GPU and finds no CUDA stops at once with
    one line naming the rule, the preset and what torch reports."""
    import torch

    work = tmp_path / "work"
    bad = rows(4)
    bad[1]["prompt"] = None  # read by the workers, not the parent
    gpu_job = worker_preset(max_slices=1, device="auto", processes=None)  # max_slices 1: no retries
    gpu_job["resources"]["gpu"] = 1  # what the full preset asks for
    write_workflow(work, tiny_llama_dir, {"bad": (bad, worker_preset(max_slices=1)), "nogpu": (rows(4), gpu_job)})
    done = subprocess.run(
        snakemake_command(work, ["bad", "nogpu"]),
        cwd=tmp_path,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0

    worker_log = (work / "logs/bad/train/no_kn.log").read_text()
    assert "Traceback (most recent call last)" in worker_log
    assert "train.jsonl:2: field 'prompt' must be a string" in worker_log
    assert "data-parallel training failed: the launcher exited with status" in worker_log

    gpu_log = (work / "logs/nogpu/train/no_kn.log").read_text()
    (error,) = [line for line in gpu_log.splitlines() if " ERROR " in line]
    assert (
        "rule train (nogpu/no_kn), preset training.nogpu: expected a CUDA device (the job asked for resources.gpu = 1)"
        in error
    )
    assert f"torch {torch.__version__}" in error and "torch.cuda.is_available() = False" in error
    assert "Traceback" not in gpu_log and not (work / "results/nogpu/checkpoints/no_kn").exists()


def test_multi_gpu_train_jobs_ask_for_one_node_cpus_per_gpu_and_retries(tmp_path):
    """The sbatch line the Slurm plugin builds for a 4-GPU `full` training job."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_helpers import CONFIG_FILES, api_run, write_override

    override = write_override(
        tmp_path,
        {"run": {"datasets": ["dbbook"], "ablations": ["no_kn"]}, "training": {"full": {"resources": {"gpu": 4}}}},
    )
    dag = api_run(tmp_path, ["results/dbbook/train/no_kn/loss.png"], "dryrun", [*CONFIG_FILES, override], cores=64)
    (train,) = [job for job in dag.finished_jobs if job.rule.name == "train"]
    assert train.threads == 32 and train.resources["nodes"] == 1 and train.resources["runtime"] == 1440
    assert train.rule.restart_times == 3  # full: max_slices 4 -> three resubmissions
    params = {
        "run_uuid": "x",
        "slurm_logfile": "x.log",
        "comment_str": "rule_train",
        "account": "-A acct",
        "partition": "-p gpu",
        "workdir": str(tmp_path),
    }
    command = get_submit_command(train, params)
    assert train.resources["gpu"] == 4  # the plugin adds --gpus=4 elsewhere
    assert "--nodes=1" in command and "-t 1440" in command and "--cpus-per-task=32" in command, command
    (prepare_model,) = [job for job in dag.finished_jobs if job.rule.name == "prepare_model"]
    assert prepare_model.is_local  # hub downloads run where Snakemake runs (the login node)
