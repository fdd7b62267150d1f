# Two commands do everything: `make run` (set up + run the embedded default) and
# `make test` (set up + run the test suite). Both create .venv on first use.
VENV ?= .venv
PYTHON ?= python3
CORES ?= 2
# The CPU build of PyTorch goes in first: a bare `torch` requirement would pull a
# multi-GB CUDA build. On a GPU machine set TORCH_SPEC/TORCH_INDEX (see README).
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# ranx compiles its metrics with numba on first use (~1 min); keep that cache.
export NUMBA_CACHE_DIR ?= $(CURDIR)/.venv/numba-cache

.PHONY: venv run dryrun report test lint clean

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH_SPEC)
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --profile profiles/local --cores $(CORES)

dryrun: $(STAMP)
	$(BIN)/snakemake --profile profiles/local -n

report: $(STAMP)
	$(BIN)/snakemake --profile profiles/local --report results/report.html

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check .
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP)
	$(BIN)/pytest

clean:
	rm -rf results/* logs .snakemake
