"""Systems: what ranks the test candidates, what each is called, where its rankings live,
and the order in which every comparison lists them.

A *system* is one of three kinds, always listed in this order:

==============  =================================  ==========================================
kind            names                              rankings (``predictions.parquet``, ``run.json``)
==============  =================================  ==========================================
``zero_shot``   ``zero_shot_<mode>``, per          ``results/<dataset>/infer/<name>/``
                ``run.zero_shot`` mode
``ablation``    the keys of ``ablations`` in       ``results/<dataset>/infer/<name>/``
                ``run.ablations`` whose knowledge
                sources the dataset provides
``baseline``    ``baselines.names`` (when          ``results/<dataset>/baselines/<name>/``
                ``run.baselines``)
==============  =================================  ==========================================

Trained ablations and seeded baselines have one replicate per seed of ``run.seeds``
(``graph``, ``graph.seed23``: :mod:`rekalm.replicates`); zero-shot systems and deterministic
baselines have one. The workflow (``rules/common.smk``), the configuration check and the
tests ask this module rather than restating any of it.

Example::

    >>> config = {"run": {"ablations": ["no_kn", "graph"], "zero_shot": ["score"], "baselines": True},
    ...           "ablations": {"no_kn": [], "graph": ["graph"]},
    ...           "datasets": {"mini": {"knowledge": {"collab": {}, "graph": None}}},
    ...           "baselines": {"names": ["popularity"]}}
    >>> compared_systems(config, "mini")  # mini provides no graph source
    ['zero_shot_score', 'no_kn', 'popularity']
    >>> system_kind(config, "popularity"), ranking_dir(config, "mini", "no_kn.seed23")
    ('baseline', 'results/mini/infer/no_kn.seed23')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from rekalm.evaluation.baselines import SEEDED_BASELINES
from rekalm.replicates import SUFFIX_PATTERN, split_replicate

Config = Mapping[str, Any]
Kind = Literal["zero_shot", "ablation", "baseline"]
KINDS: tuple[Kind, ...] = ("zero_shot", "ablation", "baseline")  # the table order
ZERO_SHOT_PREFIX = "zero_shot_"
#: The ranking modes of the untrained base model (the inference modes).
ZERO_SHOT_MODES = ("score", "generate")


def zero_shot_name(mode: str) -> str:
    return ZERO_SHOT_PREFIX + mode


def zero_shot_mode(system: str) -> str | None:
    """The ranking mode of a zero-shot system; None for any other system."""
    return system.removeprefix(ZERO_SHOT_PREFIX) if system.startswith(ZERO_SHOT_PREFIX) else None


def dataset_sources(config: Config, dataset: str) -> list[str]:
    """The knowledge sources a dataset provides (a source set to null is switched off)."""
    return sorted(source for source, block in config["datasets"][dataset]["knowledge"].items() if block is not None)


def ablations_for(config: Config, dataset: str, requested: Sequence[str] | None = None) -> list[str]:
    """Requested ablations (default: run.ablations) whose sources the dataset provides."""
    available = set(dataset_sources(config, dataset))
    names = requested if requested is not None else config["run"]["ablations"]
    return [name for name in names if set(config["ablations"][name]) <= available]


def baseline_names(config: Config) -> list[str]:
    return list(config["baselines"]["names"])


def system_kind(config: Config, system: str) -> Kind:
    """The kind of a system (its replicate suffix, if any, aside)."""
    name = split_replicate(system)[0]
    if zero_shot_mode(name) is not None:
        return "zero_shot"
    return "baseline" if name in baseline_names(config) else "ablation"


def is_seeded(config: Config, system: str) -> bool:
    """Whether a system has one replicate per seed: trained ablations and seeded baselines."""
    if system in baseline_names(config):
        return system in SEEDED_BASELINES
    return system in config["ablations"]


def compared_systems(config: Config, dataset: str) -> list[str]:
    """The systems a run compares on ``dataset``, in table order (see :data:`KINDS`)."""
    run = config["run"]
    zero_shot = [zero_shot_name(mode) for mode in run["zero_shot"]]
    baselines = baseline_names(config) if run["baselines"] else []
    return [*zero_shot, *ablations_for(config, dataset), *baselines]


def ranking_dir(config: Config, dataset: str, system: str) -> str:
    """Where a system replicate's ``predictions.parquet`` and ``run.json`` live."""
    stage = "baselines" if system_kind(config, system) == "baseline" else "infer"
    return f"results/{dataset}/{stage}/{system}"


def _alternatives(names: Sequence[str]) -> str:
    return "(" + "|".join(names) + ")"


def llm_system_pattern(config: Config) -> str:
    """The systems the LLM ranks (the infer rule's wildcard): a trained ablation's replicate
    or a zero-shot system (deterministic: no replicates)."""
    zero_shot = [zero_shot_name(mode) for mode in ZERO_SHOT_MODES]
    return f"{_alternatives(list(config['ablations']))}{SUFFIX_PATTERN}|{_alternatives(zero_shot)}"


def any_system_pattern(config: Config) -> str:
    """Every system replicate (the evaluate rule's wildcard)."""
    return f"{llm_system_pattern(config)}|{_alternatives(baseline_names(config))}{SUFFIX_PATTERN}"


def reserved_name_errors(config: Config) -> list[str]:
    """Ablations, zero-shot systems and baselines share results/<dataset>/metrics/<name>.json,
    so an ablation may not take a name of the other kinds."""
    taken = set(baseline_names(config))
    return [
        f"ablations.{name}: the name is taken by a zero-shot system or a baseline; choose another"
        for name in config["ablations"]
        if zero_shot_mode(name) is not None or name in taken
    ]
