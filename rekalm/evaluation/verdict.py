"""The verdict: does a knowledge ablation beat training without knowledge, and the best baseline?

For each knowledge ablation (every trained ablation except the reference, ``no_kn`` by
default) and each comparator (the reference, and the baseline with the highest mean on the
headline metric), the verdict is the mean paired difference on the headline metric over the
test users, with a confidence interval:

    d_u = m_u(ablation) - m_u(comparator),   m_u = the user's metric averaged over seeds
    d = mean(d_u),  CI = d ± t_{(1 + level) / 2, n - 1} · sd(d_u) / sqrt(n)

and a word read off the interval: *better* when it lies above 0, *worse* when below,
*no detectable difference* when it contains 0. ``level`` is ``1 - metrics.significance.max_p``,
so a two-sided paired t-test at ``max_p`` rejects exactly when the interval excludes 0.
Averaging each user over seeds first keeps the user the unit of the test (seeds are not
independent samples of users), and the spread of each system's mean over seeds is shown
beside it, so a reader sees how much of a difference the training seed alone can make.

Example::

    >>> import numpy as np
    >>> paired_interval(np.array([0.9, 0.8, 1.0, 0.7]), np.array([0.5, 0.6, 0.4, 0.5]), 0.95)[0]
    0.35
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no detectable difference"


@dataclass(frozen=True)
class Verdict:
    system: str
    comparator: str
    role: str  # "reference" or "best baseline"
    metric: str
    difference: float
    low: float | None
    high: float | None
    level: float
    users: int
    word: str
    system_sd: float | None  # sd of the system's mean over its seeds (None: one seed)
    comparator_sd: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def paired_interval(
    system: np.ndarray, comparator: np.ndarray, level: float
) -> tuple[float, float | None, float | None]:
    """(mean difference, low, high) of the paired per-user differences; no interval with
    fewer than two users."""
    differences = np.asarray(system, dtype=np.float64) - np.asarray(comparator, dtype=np.float64)
    n = len(differences)
    if n == 0:
        raise ValueError("verdict: no test user to compare")
    mean = float(np.mean(differences))
    if n < 2:
        return round(mean, 12), None, None
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * float(np.std(differences, ddof=1)) / math.sqrt(n)
    return round(mean, 12), mean - half, mean + half


def verdict_word(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return NO_DIFFERENCE
    if low > 0:
        return BETTER
    if high < 0:
        return WORSE
    return NO_DIFFERENCE


def verdicts(
    scores: Mapping[str, Mapping[str, np.ndarray]],
    kinds: Mapping[str, str],
    metric: str,
    reference: str,
    level: float,
    seed_sd: Mapping[str, float | None],
) -> list[Verdict]:
    """One verdict per (knowledge ablation, comparator); ``kinds`` maps each system to
    "ablation", "zero_shot" or "baseline"; ``seed_sd`` is each system's sd over seeds."""
    ablations = [name for name, kind in kinds.items() if kind == "ablation" and name != reference]
    baselines = [name for name, kind in kinds.items() if kind == "baseline"]
    comparators: list[tuple[str, str]] = []
    if reference in scores and kinds.get(reference) == "ablation":
        comparators.append((reference, "reference"))
    if baselines:
        best = max(baselines, key=lambda name: float(np.mean(scores[name][metric])))  # first on ties
        comparators.append((best, "best baseline"))
    results = []
    for system in ablations:
        for comparator, role in comparators:
            difference, low, high = paired_interval(scores[system][metric], scores[comparator][metric], level)
            results.append(
                Verdict(
                    system=system,
                    comparator=comparator,
                    role=role,
                    metric=metric,
                    difference=difference,
                    low=low,
                    high=high,
                    level=level,
                    users=len(scores[system][metric]),
                    word=verdict_word(low, high),
                    system_sd=seed_sd.get(system),
                    comparator_sd=seed_sd.get(comparator),
                )
            )
    return results


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.4f}"


def _plain(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def verdict_rows(results: Sequence[Verdict]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows of text) of the verdict table."""
    if not results:
        return [], []
    first = results[0]
    headers = [
        "Ablation",
        "compared with",
        f"Δ {first.metric}",
        f"{first.level:.0%} CI",
        "verdict",
        "sd over seeds (ablation / other)",
    ]
    rows = []
    for result in results:
        interval = "–" if result.low is None else f"[{_signed(result.low)}, {_signed(result.high)}]"
        rows.append(
            [
                result.system,
                f"{result.comparator} ({result.role})",
                _signed(result.difference),
                interval,
                result.word,
                f"{_plain(result.system_sd)} / {_plain(result.comparator_sd)}",
            ]
        )
    return headers, rows
