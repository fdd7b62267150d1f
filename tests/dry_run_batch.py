"""Run many ``snakemake`` command lines from one interpreter: Snakemake and the package are
imported once (most of a dry-run's time), then one forked child per command runs Snakemake's
own command-line entry point in its working directory, a few at a time.

Usage: ``python tests/dry_run_batch.py PARALLEL < jobs.json``, where jobs.json is a list of
``{"workdir": ..., "arguments": [...], "log": ...}``; prints the exit codes as a JSON list,
in the jobs' order. Each child's stdout and stderr go to its ``log``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any


def _child(job: dict[str, Any]) -> None:
    """Run one command line in this (forked) process, then leave with its exit code."""
    code = 1
    try:
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.chdir(job["workdir"])
        sys.argv = ["snakemake", *job["arguments"]]
        import snakemake.cli

        snakemake.cli.main(list(job["arguments"]))
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    except BaseException:  # noqa: BLE001 (the log says what went wrong; the code says that it did)
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    parallel = int(sys.argv[1])
    jobs = json.load(sys.stdin)
    # The imports every dry-run pays for, paid once: Snakemake's CLI and what the Snakefile loads.
    import snakemake.cli  # noqa: F401
    import snakemake.workflow  # noqa: F401

    import rekalm.config  # noqa: F401
    import rekalm.data.prepare  # noqa: F401
    import rekalm.evaluation.baselines  # noqa: F401
    import rekalm.extensions  # noqa: F401
    import rekalm.ranking.inference_inputs  # noqa: F401
    import rekalm.replicates  # noqa: F401
    import rekalm.systems  # noqa: F401
    import rekalm.training.train  # noqa: F401

    codes: dict[int, int] = {}
    running: dict[int, int] = {}
    pending = list(enumerate(jobs))
    while pending or running:
        while pending and len(running) < parallel:
            index, job = pending.pop(0)
            pid = os.fork()
            if pid == 0:
                _child(job)
            running[pid] = index
        pid, status = os.wait()
        codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
    json.dump([codes[index] for index in range(len(jobs))], sys.stdout)


if __name__ == "__main__":
    main()
