"""Fixtures of the llm tests: the build_sets tests' tokenizer (SmolLM2's) and toy world
(build_sets_world.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from build_sets_world import make_world

from rekalm.llm import build_sets as bs


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer_dir: Path):
    return bs.load_tokenizer(smollm2_tokenizer_dir)


@pytest.fixture(scope="module")
def world() -> dict[str, pd.DataFrame]:
    return make_world()
