"""Seeding the models that draw from NumPy's global generator.

Some Cornac models ignore their ``seed`` for part of their randomness: HFT draws its topic
assignments, C2PF's C++ code its starting values, from ``np.random``. Those fits run inside
:func:`numpy_global_seed`, which seeds that generator and puts its state back afterwards,
so a baseline's scores depend on its seed and nothing else's randomness is disturbed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


@contextmanager
def numpy_global_seed(seed: int) -> Iterator[None]:
    """Seed NumPy's global generator for the block and restore its state after."""
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)
