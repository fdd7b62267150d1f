"""Data-parallel training workers: the launch line, their environment and their log.

With N > 1 workers (one per GPU of the job, or ``processes: N`` on the CPU) the training job
starts them with ``accelerate launch`` (torchrun underneath: NCCL on GPUs, gloo on the CPU)
on the worker entry point ``python -m rekalm.training.train --job job.json``. Each worker imports
exactly the parent's ``rekalm`` (its folder goes first on ``PYTHONPATH``) and gets its share
of the job's CPU threads; their stdout and stderr are copied into the parent's stderr (the
rule's log), so a worker's traceback lands in the log.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def data_parallel_command(processes: int, job_path: str | os.PathLike[str]) -> list[str]:
    """``accelerate launch`` line that starts ``processes`` workers on this module: torchrun
    underneath, NCCL on GPUs, gloo when the preset trains on the CPU (``processes: N``)."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_machines",
        "1",
        "--num_processes",
        str(processes),
        "--main_process_port",
        "0",  # a free port: two jobs on one node must not collide
        "--mixed_precision",
        "no",  # the Trainer sets bf16 itself from the preset
        "--dynamo_backend",
        "no",
        "-m",
        "rekalm.training.train",
        "--job",
        str(job_path),
    ]


def worker_environment(threads: int) -> dict[str, str]:
    """The parent's environment, with this process's own ``rekalm`` first on the import path
    (workers must run exactly the parent's code, installed or not, wherever the workflow's
    working directory is) and each worker's share of the job's CPU threads."""
    package_root = str(Path(__file__).resolve().parents[2])
    path = [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(path)), "OMP_NUM_THREADS": str(threads)}


def run_workers(command: list[str], env: dict[str, str]) -> None:
    """Run the launcher with every worker's stdout and stderr copied into this process's
    ``sys.stderr`` (the rule's log), so a worker's traceback lands in the log."""
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stderr.write(line)
        code = process.wait()
    sys.stderr.flush()
    if code != 0:
        raise RuntimeError(
            f"data-parallel training failed: the launcher exited with status {code}; the workers' output, "
            "tracebacks included, is above in this log"
        )
