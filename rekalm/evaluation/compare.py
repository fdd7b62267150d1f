"""Compare the systems of one dataset: seed averages, a paired test per pair of systems, and
the files that report them.

Inputs are each system's ``metrics.json`` (standard, ClayRS, popularity and parsing
figures) and ``run.json`` (for the per-user scores the paired test needs: ranx recomputes
the standard metrics per user and tests every pair of systems), one of each per seed of a
replicated system. The statistics, owned here:

- seed averaging (:func:`mean_over_seeds`, :func:`sd_over_seeds`): key by key over the
  metrics nests, ``mean = sum_s m_s / S`` and the sample ``sd = sqrt(sum_s (m_s - mean)^2 /
  (S - 1))`` (None with one seed; a single replicate passes through unchanged);
- per-user scores (:func:`per_user_scores`): each test user's standard metric averaged over
  the system's seeds, ``m_u = mean_s m_{u,s}``, over the users every replicate ranked (with
  one split per seed the unit is a (split, user) pair instead);
- the paired test (:func:`compare_runs`): ranx's ``settings.stat_test`` on the ``m_u`` of
  every pair of systems, plus means and win/tie/loss counts. With one seed per system this
  is exactly ``ranx.compare``.

Outputs: ``table.md``, ``table.tex`` and ``plot.png``, rendered by :mod:`rekalm.evaluation.report`;
``compare.json`` (:func:`comparison_summary`): the ranx report (means, p-values,
win/tie/loss), the verdict, and every system's mean, sd and per-seed metrics, in one file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rekalm.common.io import atomic_path, json_safe, write_json
from rekalm.evaluation.evaluate import MetricSettings, import_ranx, run_for_qrels, standard_metric_names
from rekalm.evaluation.report import (
    TEST_UNITS,
    Spread,
    latex_report,
    letters_for,
    markdown_report,
    plot_comparison,
)
from rekalm.evaluation.verdict import Verdict, verdicts

# --- replicates --------------------------------------------------------------------------


def _numbers(values: Sequence[Any]) -> list[float] | None:
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values]
    return None


def _key_by_key(per_seed: Sequence[Any], leaf: Any) -> Any:
    """Walk a nest of metrics dicts (one per seed) key by key, applying ``leaf`` to each
    leaf's per-seed values (None where a seed lacks the key)."""
    if isinstance(per_seed[0], Mapping):
        return {
            key: _key_by_key([values.get(key) if isinstance(values, Mapping) else None for values in per_seed], leaf)
            for key in per_seed[0]
        }
    return leaf(per_seed)


def _mean_leaf(values: Sequence[Any]) -> Any:
    numbers = _numbers(values)
    if numbers is None:
        return None if any(isinstance(v, (int, float)) for v in values) else values[0]
    return float(np.mean(numbers)) if all(math.isfinite(v) for v in numbers) else None


def _sd_leaf(values: Sequence[Any]) -> float | None:
    numbers = _numbers(values)
    if numbers is None or len(numbers) < 2 or not all(math.isfinite(v) for v in numbers):
        return None
    return float(np.std(numbers, ddof=1))


def mean_over_seeds(per_seed: Sequence[Any]) -> Any:
    """The mean of every number in a nest of metrics dicts, key by key (None when a seed
    lacks the value or it is not finite); other leaves are taken from the first seed. A
    single replicate is returned as it is (counts stay integers)."""
    return per_seed[0] if len(per_seed) == 1 else _key_by_key(per_seed, _mean_leaf)


def sd_over_seeds(per_seed: Sequence[Any]) -> Any:
    """The sample standard deviation (n - 1) over seeds of every number, like mean_over_seeds;
    None with a single seed (a spread needs two replicates)."""
    return _key_by_key(per_seed, _sd_leaf)


# --- per-user scores and the paired test --------------------------------------------------


def per_user_scores(
    runs: Mapping[str, Mapping[int, Mapping[str, Mapping[str, float]]]],
    qrels: Mapping[str, Mapping[str, int]],
    settings: MetricSettings,
    split_qrels: Mapping[int, Mapping[str, Mapping[str, int]]] | None = None,
) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """Every standard metric per unit of the paired test, and the units' ids.

    ``runs`` maps system -> seed -> ranx run. One split for all seeds (``split_qrels`` None):
    the unit is the test user and each user's metric is averaged over the system's seeds;
    only users ranked by every replicate of every system are kept. With one seed per
    system these are exactly the per-user scores ``ranx.compare`` tests. One split per seed
    (``split_qrels``: seed -> that split's qrels, run.resplit): every system has one
    replicate per split, the unit is a (split, test user) pair, and the units of all splits
    are pooled.
    """
    ranx = import_ranx(settings.numba_cache_dir)
    metrics = standard_metric_names(settings.cutoffs)
    if split_qrels is not None:
        return _per_split_user_scores(ranx, runs, split_qrels, metrics)
    replicate_runs = [run for by_seed in runs.values() for run in by_seed.values()]
    qrels = {user: items for user, items in qrels.items() if all(user in run for run in replicate_runs)}
    if not qrels:
        raise ValueError("compare: no test user with a liked held-out item was ranked by every system")
    scores: dict[str, dict[str, np.ndarray]] = {}
    for name, by_seed in runs.items():
        if not by_seed:
            raise ValueError(f"compare: system {name!r} has no replicate")
        # Plain dicts (see rekalm.evaluation.evaluate.standard_metrics); run_for_qrels keeps qrels' order.
        per_seed = [
            ranx.evaluate(
                dict(qrels),
                run_for_qrels(run, qrels, source=f"run of {name} (seed {seed})"),
                metrics,
                return_mean=False,
            )
            for seed, run in by_seed.items()
        ]
        scores[name] = {
            metric: np.mean([np.asarray(seed_scores[metric], dtype=np.float64) for seed_scores in per_seed], axis=0)
            for metric in metrics
        }
    return scores, list(qrels)


def _per_split_user_scores(
    ranx: Any,
    runs: Mapping[str, Mapping[int, Any]],
    split_qrels: Mapping[int, Mapping[str, Mapping[str, int]]],
    metrics: list[str],
) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    seeds = list(split_qrels)
    for name, by_seed in runs.items():
        if list(by_seed) != seeds:
            raise ValueError(
                f"compare: system {name!r} has replicates for seeds {list(by_seed)}; with one split per seed every "
                f"system needs {seeds}"
            )
    parts: dict[str, dict[str, list[np.ndarray]]] = {name: {metric: [] for metric in metrics} for name in runs}
    units: list[str] = []
    for seed in seeds:
        qrels = {
            user: items for user, items in split_qrels[seed].items() if all(user in runs[name][seed] for name in runs)
        }
        if not qrels:
            raise ValueError(
                f"compare: no test user of the split of seed {seed} with a liked held-out item was ranked by every "
                "system"
            )
        for name in runs:
            seed_scores = ranx.evaluate(
                dict(qrels),
                run_for_qrels(runs[name][seed], qrels, source=f"run of {name} (split {seed})"),
                metrics,
                return_mean=False,
            )
            for metric in metrics:
                parts[name][metric].append(np.asarray(seed_scores[metric], dtype=np.float64))
        units += [f"{seed}:{user}" for user in qrels]
    return {
        name: {metric: np.concatenate(arrays) for metric, arrays in by_metric.items()}
        for name, by_metric in parts.items()
    }, units


def compare_runs(
    runs: Mapping[str, Mapping[int, Mapping[str, Mapping[str, float]]]],
    qrels: Mapping[str, Mapping[str, int]],
    settings: MetricSettings,
    split_qrels: Mapping[int, Mapping[str, Mapping[str, int]]] | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """(summary, per-user scores): means, pairwise paired tests and win/tie/loss over the
    standard metrics.

    The unit of the test is the test user: each user's metric is averaged over the system's
    seeds first, then ranx's test (``settings.stat_test``) compares the per-user values of
    every pair of systems. With a single seed this is exactly ``ranx.compare``.
    """
    from ranx.statistical_tests import compute_statistical_significance

    scores, units = per_user_scores(runs, qrels, settings, split_qrels)
    names = list(runs)
    metrics = standard_metric_names(settings.cutoffs)
    significance = compute_statistical_significance(
        model_names=names,
        metric_scores=scores,
        stat_test=settings.stat_test,
        n_permutations=settings.n_permutations,
        max_p=settings.max_p,
        random_seed=settings.seed,
    )
    pairs: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in names}
    win_tie_loss: dict[str, dict[str, dict[str, dict[str, int]]]] = {name: {} for name in names}
    for name in names:
        for other in names:
            if other == name:
                continue
            pairs[name][other] = {metric: dict(significance[name, other][metric]) for metric in metrics}
            win_tie_loss[name][other] = {
                metric: {
                    "W": int(np.sum(scores[name][metric] > scores[other][metric])),
                    "T": int(np.sum(scores[name][metric] == scores[other][metric])),
                    "L": int(np.sum(scores[name][metric] < scores[other][metric])),
                }
                for metric in metrics
            }
    return {
        "stat_test": settings.stat_test,
        "max_p": settings.max_p,
        "test_unit": TEST_UNITS[split_qrels is not None],
        "metrics": metrics,
        "systems": names,
        "seeds": {name: list(runs[name]) for name in names},
        "users": len(units),
        "means": {name: {metric: float(np.mean(scores[name][metric])) for metric in metrics} for name in names},
        "comparisons": pairs,
        "win_tie_loss": win_tie_loss,
    }, scores


# --- the stage ---------------------------------------------------------------------------


def comparison_summary(
    dataset: str,
    metrics: Mapping[str, Mapping[str, Any]],
    comparison: Mapping[str, Any] | None,
    replicates: Mapping[str, Mapping[int, Mapping[str, Any]]] | None = None,
    spread: Spread | None = None,
    verdict: Sequence[Verdict] = (),
) -> dict[str, Any]:
    """compare.json content: per system the mean over seeds (``metrics``), the sd over seeds
    (``sd``), every seed's own metrics (``replicates``), the paired tests and the verdict."""
    return json_safe(
        {
            "dataset": dataset,
            "systems": list(metrics),
            "letters": letters_for(list(metrics)),
            "seeds": {name: list(by_seed) for name, by_seed in (replicates or {}).items()},
            "ranx": comparison,
            "verdict": [result.as_dict() for result in verdict],
            "metrics": dict(metrics),
            "sd": dict(spread or {}),
            "replicates": {
                name: {str(seed): values for seed, values in by_seed.items()}
                for name, by_seed in (replicates or {}).items()
            },
        }
    )


def write_comparison(
    dataset: str,
    metrics: Mapping[str, Mapping[int, Mapping[str, Any]]],
    runs: Mapping[str, Mapping[int, Mapping[str, Mapping[str, float]]]],
    qrels: Mapping[str, Mapping[str, int]],
    settings: MetricSettings,
    outputs: Mapping[str, str | Path],
    kinds: Mapping[str, str] | None = None,
    split_qrels: Mapping[int, Mapping[str, Mapping[str, int]]] | None = None,
) -> dict[str, Any]:
    """Write outputs['table'] (Markdown), ['latex'], ['plot'] (PNG) and ['summary'] (JSON).

    ``metrics`` and ``runs`` map system -> seed -> that replicate's metrics.json / run.json
    (one seed for unreplicated systems). ``kinds`` (system -> "ablation", "zero_shot" or
    "baseline") enables the verdict table at the top. ``split_qrels`` (seed -> qrels, with
    one split per seed) judges each seed's replicates against its own split.
    """
    if list(metrics) != list(runs) or any(list(metrics[name]) != list(runs[name]) for name in metrics):
        raise ValueError(
            f"compare: metrics and runs name different systems or seeds ({_replicate_keys(metrics)} vs "
            f"{_replicate_keys(runs)})"
        )
    if not metrics:
        raise ValueError("compare: no system to compare")
    empty = [name for name, by_seed in metrics.items() if not by_seed]
    if empty:
        raise ValueError(f"compare: system(s) {empty} have no replicate")
    means = {name: mean_over_seeds(list(by_seed.values())) for name, by_seed in metrics.items()}
    spread = {name: sd_over_seeds(list(by_seed.values())) for name, by_seed in metrics.items()}
    comparison, verdict = None, []
    if "standard" in settings.definitions:
        comparison, scores = compare_runs(runs, qrels, settings, split_qrels)
        if kinds is not None:
            assert settings.verdict_metric is not None  # MetricSettings.__post_init__ resolves a null one
            seed_sd = {name: (spread[name] or {}).get("standard", {}).get(settings.verdict_metric) for name in metrics}
            verdict = verdicts(
                scores, kinds, settings.verdict_metric, settings.verdict_reference, 1 - settings.max_p, seed_sd
            )
    for key, text in (
        ("table", markdown_report(dataset, means, settings, comparison, spread, verdict)),
        ("latex", latex_report(dataset, means, settings, comparison, spread, verdict)),
    ):
        with atomic_path(outputs[key]) as temp:
            temp.write_text(text, encoding="utf-8")
    with atomic_path(outputs["plot"]) as temp:
        plot_comparison(dataset, means, settings, temp, spread)
    summary = comparison_summary(dataset, means, comparison, metrics, spread, verdict)
    write_json(summary, outputs["summary"])
    return summary


def _replicate_keys(nested: Mapping[str, Mapping[int, Any]]) -> dict[str, list[int]]:
    return {name: list(by_seed) for name, by_seed in nested.items()}
