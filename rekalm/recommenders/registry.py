"""The baselines registry (``baselines.names``): a baseline is one fit function
``fit(data, seed, threads, **params)`` returning a scorer of (user index, item index) pairs;
its keyword parameters (with their defaults) are what ``baselines.grids.<name>`` may tune.
A new one lives in an extension module (``extensions:`` in the config) plus its config
entry, registered with :func:`register_baseline` (imported ``from rekalm.registries``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from rekalm.common.registry import register
from rekalm.recommenders.interactions import PairScorer
from rekalm.recommenders.knowledge_inputs import KNOWLEDGE_KINDS

Baseline = Callable[..., PairScorer]
#: The registry (``baselines.names``): name -> fit function ``fit(data, seed, threads, **grid)``
#: returning a scorer of (user index, item index) pairs; its keyword parameters are the
#: tunable grid (``baselines.grids.<name>``).
BASELINES: dict[str, Baseline] = {}
#: Baselines whose result depends on their seed: they run once per seed of run.seeds
#: (rekalm.replicates); the others are deterministic and run once.
SEEDED_BASELINES: set[str] = set()
#: The knowledge each baseline reads (rekalm.recommenders.knowledge_inputs); absent = none.
BASELINE_READS: dict[str, tuple[str, ...]] = {}


def register_baseline(
    name: str, seeded: bool = False, reads: tuple[str, ...] = (), replace: bool = False
) -> Callable[[Baseline], Baseline]:
    """Register a fit function as baseline ``name``; ``seeded``: its scores depend on the seed;
    ``reads``: the kinds of item knowledge it learns from (``KNOWLEDGE_KINDS``), handed to it
    as ``data.knowledge``. A name already taken is an error unless ``replace``
    (:func:`rekalm.common.registry.register`)."""
    unknown = sorted(set(reads) - set(KNOWLEDGE_KINDS))
    if unknown:
        raise ValueError(
            f"baseline {name!r}: reads unknown knowledge {unknown}; expected some of {list(KNOWLEDGE_KINDS)}"
        )

    def decorate(fit: Baseline) -> Baseline:
        register(BASELINES, "baselines", name, fit, replace=replace)
        if seeded:
            SEEDED_BASELINES.add(name)
        else:
            SEEDED_BASELINES.discard(name)  # a replacement that does not depend on the seed
        if reads:
            BASELINE_READS[name] = tuple(reads)
        else:
            BASELINE_READS.pop(name, None)
        return fit

    return decorate


def get_baseline(name: str) -> Baseline:
    if name not in BASELINES:
        raise ValueError(f"baselines.names: unknown baseline {name!r}; expected one of {sorted(BASELINES)}")
    return BASELINES[name]


def tunable_parameters(name: str) -> dict[str, Any]:
    """The keyword parameters of a baseline's fit function, with their defaults."""
    signature = inspect.signature(get_baseline(name))
    return {key: p.default for key, p in signature.parameters.items() if key not in ("data", "seed", "threads")}
