"""Replicates: every seeded system runs once per seed of ``run.seeds``.

A *replicate* is one training + ranking run of a system with one seed. The first seed of
``run.seeds`` keeps the plain names and paths (``graph``,
``results/<ds>/metrics/graph.json``), so a single-seed configuration looks exactly as it
did before replicates existed; every other seed ``s`` appends ``.seed<s>``
(``graph.seed23``, ``results/<ds>/metrics/graph.seed23.json``,
``results/<ds>/train/graph.seed23/adapter``). Adding a seed therefore adds paths and never
renames the existing ones, so Snakemake plans only the new seed's jobs.

Which systems replicate: trained ablations (training seed and data order) and the baselines
whose result depends on their seed (:data:`rekalm.evaluation.baselines.SEEDED_BASELINES`). Zero-shot
ranking and the deterministic baselines run once.

Example::

    >>> replicate_names("graph", [22, 23, 24])
    ['graph', 'graph.seed23', 'graph.seed24']
    >>> split_replicate("collab_graph.seed23")
    ('collab_graph', '.seed23')
    >>> replicate_seed(".seed23", [22, 23, 24]), replicate_seed("", [22, 23, 24])
    (23, 22)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

SUFFIX_PREFIX = ".seed"
#: The regular expression of a replicate suffix, also Snakemake's wildcard constraint
#: (the empty suffix is the first seed's replicate).
SUFFIX_PATTERN = r"(\.seed[0-9]+)?"
_NAME = re.compile(rf"^(?P<system>.+?)(?P<suffix>{SUFFIX_PATTERN})$")


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """``run.seeds`` as a list: at least one seed, no seed twice."""
    seeds = [int(seed) for seed in seeds]
    if not seeds:
        raise ValueError("run.seeds: expected at least one seed, e.g. [22]")
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise ValueError(f"run.seeds: seed(s) {repeated} listed twice; every replicate needs its own seed")
    return seeds


def replicate_suffix(seed: int, seeds: Sequence[int]) -> str:
    """'' for the first seed, '.seed<s>' for the others."""
    seeds = check_seeds(seeds)
    if seed not in seeds:
        raise ValueError(f"seed {seed} is not in run.seeds {seeds}")
    return "" if seed == seeds[0] else f"{SUFFIX_PREFIX}{seed}"


def replicate_seed(suffix: str, seeds: Sequence[int]) -> int:
    """The seed of a replicate suffix; a suffix must name a seed of run.seeds other than the
    first (whose replicate has no suffix), so that no replicate has two names."""
    seeds = check_seeds(seeds)
    if suffix == "":
        return seeds[0]
    if not re.fullmatch(SUFFIX_PATTERN, suffix):
        raise ValueError(f"replicate suffix {suffix!r}: expected '' or '.seed<integer>'")
    seed = int(suffix[len(SUFFIX_PREFIX) :])
    if seed not in seeds:
        raise ValueError(f"replicate {suffix!r}: seed {seed} is not in run.seeds {seeds}; add it there first")
    if seed == seeds[0]:
        raise ValueError(f"replicate {suffix!r}: seed {seed} is the first of run.seeds, whose replicate has no suffix")
    return seed


def replicate_names(system: str, seeds: Sequence[int]) -> list[str]:
    """The names of a system's replicates, first seed first."""
    return [system + replicate_suffix(seed, seeds) for seed in check_seeds(seeds)]


def split_replicate(name: str) -> tuple[str, str]:
    """('graph', '.seed23') from 'graph.seed23'; ('graph', '') from 'graph'."""
    match = _NAME.match(name)
    if match is None:  # only the empty string fails to match
        raise ValueError(f"replicate name {name!r}: expected '<system>' or '<system>.seed<integer>'")
    return match["system"], match["suffix"]
