"""Metrics of one (dataset, ablation) ranking: standard (ranx), ClayRS-style, popularity, parsing.

Relevant = a liked held-out item of a test user (``candidates.parquet``, ``liked == 1``).
Users without a liked held-out item have nothing to find and are left out of the accuracy
metrics (as in ranx/trec_eval practice and ClayRS), but counted in ``users``.

Two definitions of the accuracy metrics:

``standard``
    ranx (trec_eval conventions) over the complete list (model-ranked, then appended items):
    P@k = hits@k / k, R@k = hits@k / |relevant|, F1@k their harmonic mean, nDCG@k with the
    ideal DCG of all relevant items, MRR, hit rate@k; plus the same over the full list.
``clayrs``
    The definitions of ClayRS 0.5.1, which produced the original paper's numbers (ClayRS no
    longer installs on Python 3.11, so they are re-implemented and tested against
    hand-computed values). They apply to the list *the model returned* (appended candidates
    excluded, as the original dropped unmatched names): P@k = hits@k / min(k, |list|);
    nDCG@k takes its ideal DCG from the returned list's own relevances, and a user whose
    returned list holds no relevant item gets NaN and leaves the mean (``np.nanmean``).
    Both make ClayRS values higher than the standard ones.

Average popularity@k (ranx has none; ClayRS's definition): an item's popularity is the
number of its training interactions divided by the number of users with training
interactions; training interactions are every split row except the test users' held-out
ones. The mean over each user's top-k, averaged over users. ``candidates_avg_popularity``
(the same over each user's whole candidate list) is what a random ranking would get.

ranx compiles its metrics with numba on first use (~1-2 min) and caches the result beside
its sources; :func:`configure_numba_cache` moves that cache to a writable folder when the
environment is read-only, and :func:`configure_ir_datasets_home` keeps its import from
writing ``~/.ir_datasets``. Import ranx only through :func:`import_ranx`.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from rekalm.common.io import json_safe
from rekalm.common.parse_counts import PARSE_COUNT_COLUMNS
from rekalm.common.tables import CANDIDATES, PREDICTIONS, SPLIT, require_columns

log = logging.getLogger(__name__)

METRIC_FAMILIES = ("precision", "recall", "f1", "ndcg")
DEFINITIONS = ("standard", "clayrs")
STAT_TESTS = ("student", "fisher", "tukey")

Ranking = dict[str, list[str]]  # user -> items, best first
Judgements = dict[str, dict[str, int]]  # user -> item -> 1 (liked) / 0 (disliked)


@dataclass(frozen=True)
class MetricSettings:
    cutoffs: tuple[int, ...] = (1, 3, 5, 10)
    definitions: tuple[str, ...] = DEFINITIONS
    stat_test: str = "student"
    max_p: float = 0.05
    n_permutations: int = 1000
    seed: int = 22
    numba_cache_dir: str | None = None
    plot_metric: str = "ndcg"
    verdict_metric: str | None = None  # the verdict's headline metric; None = nDCG at the largest cutoff
    verdict_reference: str = "no_kn"  # the ablation every knowledge ablation is compared with

    def __post_init__(self) -> None:
        if not self.cutoffs or any(int(k) < 1 for k in self.cutoffs):
            raise ValueError(f"metrics.cutoffs: expected positive integers, got {list(self.cutoffs)}")
        unknown = sorted(set(self.definitions) - set(DEFINITIONS))
        if unknown or not self.definitions:
            raise ValueError(
                f"metrics.definitions: expected some of {list(DEFINITIONS)}, got {list(self.definitions)}"
            )
        if self.stat_test not in STAT_TESTS:
            raise ValueError(f"metrics.significance.test: expected one of {list(STAT_TESTS)}, got {self.stat_test!r}")
        if not 0 < self.max_p < 1:
            raise ValueError(f"metrics.significance.max_p: expected a p-value in (0, 1), got {self.max_p!r}")
        if self.plot_metric not in METRIC_FAMILIES:
            raise ValueError(f"metrics.plot_metric: expected one of {list(METRIC_FAMILIES)}, got {self.plot_metric!r}")
        if self.verdict_metric is None:
            object.__setattr__(self, "verdict_metric", f"ndcg@{max(int(k) for k in self.cutoffs)}")
        if self.verdict_metric not in standard_metric_names(self.cutoffs):
            raise ValueError(
                "metrics.verdict.metric: expected a standard metric at the configured cutoffs, e.g. "
                f"ndcg@{max(self.cutoffs)}, got {self.verdict_metric!r}"
            )

    @classmethod
    def from_config(cls, block: Mapping[str, Any]) -> MetricSettings:
        significance = dict(block.get("significance") or {})
        verdict = dict(block.get("verdict") or {})
        return cls(
            cutoffs=tuple(sorted({int(k) for k in block.get("cutoffs", cls.cutoffs)})),
            definitions=tuple(block.get("definitions", cls.definitions)),
            stat_test=significance.get("test", cls.stat_test),
            max_p=float(significance.get("max_p", cls.max_p)),
            n_permutations=int(significance.get("n_permutations", cls.n_permutations)),
            seed=int(significance.get("seed", cls.seed)),
            numba_cache_dir=block.get("numba_cache_dir", cls.numba_cache_dir),
            plot_metric=block.get("plot_metric", cls.plot_metric),
            verdict_metric=verdict.get("metric", cls.verdict_metric),
            verdict_reference=verdict.get("reference", cls.verdict_reference),
        )


# --- ranx and its numba cache ------------------------------------------------------------


def default_numba_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rekalm" / "numba"


def configure_numba_cache(cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """Point NUMBA_CACHE_DIR at a writable folder if ranx's own folder is read-only.

    An explicit ``cache_dir`` always wins; an already set NUMBA_CACHE_DIR is kept. Must run
    before numba is imported (numba reads the variable once).
    """
    if cache_dir:
        os.environ["NUMBA_CACHE_DIR"] = str(Path(cache_dir).expanduser())
    elif "NUMBA_CACHE_DIR" not in os.environ:
        import importlib.util

        spec = importlib.util.find_spec("ranx")
        package_dir = Path(spec.origin).parent if spec and spec.origin else None
        if package_dir is None or not os.access(package_dir, os.W_OK):
            os.environ["NUMBA_CACHE_DIR"] = str(default_numba_cache_dir())
    if "NUMBA_CACHE_DIR" in os.environ:
        Path(os.environ["NUMBA_CACHE_DIR"]).mkdir(parents=True, exist_ok=True)
    return os.environ.get("NUMBA_CACHE_DIR")


def configure_ir_datasets_home() -> str:
    """Keep ``import ranx`` from making ``~/.ir_datasets``.

    ranx imports ir_datasets, which creates about 60 empty folders under
    ``$IR_DATASETS_HOME`` (default ``~/.ir_datasets``) as it is imported. The workflow never
    loads an ir_datasets collection, so unless the variable is set they go to a temporary
    folder of this process, removed when it exits. Must run before ranx is imported.
    """
    if not os.environ.get("IR_DATASETS_HOME"):
        folder = tempfile.mkdtemp(prefix="rekalm-ir_datasets-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ["IR_DATASETS_HOME"] = folder
    return os.environ["IR_DATASETS_HOME"]


def import_ranx(cache_dir: str | os.PathLike[str] | None = None) -> Any:
    configure_numba_cache(cache_dir)
    configure_ir_datasets_home()
    import ranx

    return ranx


# --- inputs ------------------------------------------------------------------------------


def held_out_judgements(candidates: pd.DataFrame) -> Judgements:
    """Every held-out item of every test user with its label (1 liked, 0 disliked)."""
    require_columns(candidates, CANDIDATES.select("user", "user_set", "item", "liked"), "candidates")
    test = candidates[candidates["user_set"] == "test"]
    judgements: Judgements = {}
    for user, item, liked in zip(test["user"].astype(str), test["item"].astype(str), test["liked"].astype(int)):
        judgements.setdefault(user, {})[item] = int(liked)
    return judgements


def relevant_qrels(judgements: Judgements) -> Judgements:
    """ranx qrels: liked items only; users without any are dropped (nothing to retrieve)."""
    qrels = {user: {item: 1 for item, liked in items.items() if liked == 1} for user, items in judgements.items()}
    return {user: items for user, items in qrels.items() if items}


def rankings_from_predictions(predictions: pd.DataFrame, model_only: bool = False) -> Ranking:
    """user -> items by rank; ``model_only`` drops appended candidates (the original's list)."""
    require_columns(predictions, PREDICTIONS.select("user", "item", "rank", "source"), "predictions")
    table = predictions[predictions["source"] == "model"] if model_only else predictions
    table = table.sort_values(["user", "rank"], kind="stable")
    rankings: Ranking = {str(user): [] for user in predictions["user"].unique()}
    for user, group in table.groupby("user", sort=False):
        rankings[str(user)] = group["item"].astype(str).tolist()
    return rankings


def run_for_qrels(
    run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]], source: str = "run"
) -> dict[str, dict[str, float]]:
    """The run restricted to the judged users; every judged user must have been ranked."""
    missing = sorted(set(qrels) - set(run))
    if missing:
        raise ValueError(
            f"{source}: {len(missing)} test user(s) with liked held-out items were not ranked, e.g. {missing[:3]}"
        )
    return {user: dict(run[user]) for user in qrels}


# --- standard metrics (ranx) -------------------------------------------------------------


def standard_metric_names(cutoffs: Sequence[int]) -> list[str]:
    names = [f"{family}@{k}" for family in METRIC_FAMILIES for k in cutoffs]
    names += list(METRIC_FAMILIES)  # over the full list
    names += ["mrr"] + [f"hit_rate@{k}" for k in cutoffs]
    return names


def standard_metrics(
    qrels: Judgements,
    run: Mapping[str, Mapping[str, float]],
    cutoffs: Sequence[int],
    numba_cache_dir: str | None = None,
) -> dict[str, float]:
    ranx = import_ranx(numba_cache_dir)
    # Plain dicts, not Qrels/Run objects: building those compiles numba typed dicts anew in
    # every process (~5 s, never cached). ranx pairs the two by position, so the run's users
    # must come in the qrels' order, which run_for_qrels guarantees.
    scores = ranx.evaluate(dict(qrels), run_for_qrels(run, qrels), standard_metric_names(cutoffs))
    return {name: float(value) for name, value in scores.items()}


# --- ClayRS definitions (hand-written: ClayRS 0.5.1 does not install on Python 3.11) -----


def _dcg(gains: Sequence[float]) -> float:
    if len(gains) == 0:
        return float("nan")  # ClayRS: an empty list has no DCG
    values = np.asarray(gains, dtype=np.float64)
    return float(np.sum(values / np.log2(np.arange(2, len(values) + 2))))


def clayrs_ndcg(ranked: Sequence[str], labels: Mapping[str, int], k: int | None) -> float:
    """ClayRS NDCG(@k): gains are the labels of returned items found in the truth, in list
    order; the ideal is those same gains sorted. NaN when that ideal is 0."""
    gains = [labels[item] for item in ranked if item in labels]
    ideal = sorted(gains, reverse=True)
    if k is not None:
        gains, ideal = gains[:k], ideal[:k]
    ideal_dcg = _dcg(ideal)
    if not ideal_dcg or np.isnan(ideal_dcg):
        return float("nan")
    return _dcg(gains) / ideal_dcg


def clayrs_user_metrics(ranked: Sequence[str], labels: Mapping[str, int], cutoffs: Sequence[int]) -> dict[str, float]:
    """One user's ClayRS values; all NaN when the user has no relevant item."""
    relevant = {item for item, liked in labels.items() if liked >= 1}
    values: dict[str, float] = {}
    for k in [*cutoffs, None]:
        suffix = f"@{k}" if k is not None else ""
        if not relevant:
            for family in METRIC_FAMILIES:
                values[f"{family}{suffix}"] = float("nan")
            continue
        cut = list(ranked[:k]) if k is not None else list(ranked)
        hits = sum(1 for item in cut if item in relevant)
        precision = hits / len(cut) if cut else 0.0  # min(k, list length) in the denominator
        recall = hits / len(relevant)
        values[f"precision{suffix}"] = precision
        values[f"recall{suffix}"] = recall
        values[f"f1{suffix}"] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        values[f"ndcg{suffix}"] = clayrs_ndcg(ranked, labels, k)
    first_hit = next((rank for rank, item in enumerate(ranked, start=1) if item in relevant), None)
    values["mrr"] = (1.0 / first_hit if first_hit else 0.0) if relevant else float("nan")
    return values


def clayrs_metrics(rankings: Ranking, judgements: Judgements, cutoffs: Sequence[int]) -> dict[str, float]:
    """System values: the mean over judged users, NaNs left out (ClayRS's 'sys - mean')."""
    per_user = [clayrs_user_metrics(rankings.get(user, []), labels, cutoffs) for user, labels in judgements.items()]
    if not per_user:
        return {}
    table = pd.DataFrame(per_user)
    return {
        cast(str, name): (float(np.nanmean(column)) if np.isfinite(column).any() else float("nan"))
        for name, column in table.items()  # columns named by clayrs_user_metrics' str keys
    }


# --- popularity --------------------------------------------------------------------------


def item_popularity(split: pd.DataFrame) -> dict[str, float]:
    """Training interactions per item / users with training interactions (ClayRS's definition)."""
    require_columns(split, SPLIT.select("user", "user_set", "item", "side"), "split")
    training = split[~((split["user_set"] == "test") & (split["side"] == "held_out"))]
    n_users = training["user"].nunique()
    if n_users == 0:
        return {}
    counts = training["item"].astype(str).value_counts()
    return {cast(str, item): count / n_users for item, count in counts.items()}  # str: astype above


def average_popularity(rankings: Ranking, popularity: Mapping[str, float], cutoffs: Sequence[int]) -> dict[str, float]:
    """avg_popularity@k and over the full list: mean over users of the mean popularity of
    their top-k (items never seen in training count 0); users with empty lists are skipped."""
    result = {}
    lists = [items for items in rankings.values() if items]
    for k in [*cutoffs, None]:
        name = f"avg_popularity@{k}" if k is not None else "avg_popularity"
        per_user = [np.mean([popularity.get(item, 0.0) for item in items[:k]]) for items in lists]
        result[name] = float(np.mean(per_user)) if per_user else float("nan")
    return result


def candidate_popularity(judgements: Judgements, popularity: Mapping[str, float]) -> float:
    per_user = [np.mean([popularity.get(item, 0.0) for item in items]) for items in judgements.values() if items]
    return float(np.mean(per_user)) if per_user else float("nan")


# --- parsing summary ---------------------------------------------------------------------


def parsing_summary(predictions: pd.DataFrame) -> dict[str, float]:
    """Totals and per-user means of the parse counts (all zero in score mode)."""
    present = [column for column in PARSE_COUNT_COLUMNS if column in predictions.columns]
    per_user = predictions.groupby("user", sort=False)[present].first() if present else pd.DataFrame()
    summary: dict[str, float] = {"users": int(predictions["user"].nunique())}
    for column in present:
        name = column.removeprefix("n_")
        summary[f"{name}_total"] = int(per_user[column].sum())
        summary[f"{name}_per_user"] = float(per_user[column].mean()) if len(per_user) else 0.0
    if "n_appended" in per_user:
        summary["users_with_appended"] = int((per_user["n_appended"] > 0).sum())
    return summary


# --- the stage ---------------------------------------------------------------------------


def evaluate_ranking(
    predictions: pd.DataFrame,
    run: Mapping[str, Mapping[str, float]],
    candidates: pd.DataFrame,
    split: pd.DataFrame,
    settings: MetricSettings,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """metrics.json content for one ranking."""
    judgements = held_out_judgements(candidates)
    ranked_users = set(map(str, predictions["user"].unique()))
    unknown = sorted(ranked_users - set(judgements))
    if unknown:
        raise ValueError(
            f"predictions: {len(unknown)} user(s) are not test users of candidates.parquet, e.g. {unknown[:3]}"
        )
    not_ranked = sorted(set(judgements) - ranked_users)
    if not_ranked:
        # build_sets may leave users out (no candidate with a usable name), and a generate-mode
        # smoke run ranks only the first inference.<preset>.generate_max_users: say so, loudly.
        log.warning(
            "%d test user(s) were not ranked (no test prompt, or left out by generate_max_users) and are not "
            "evaluated, e.g. %s",
            len(not_ranked),
            not_ranked[:3],
        )
    qrels = {user: items for user, items in relevant_qrels(judgements).items() if user in ranked_users}
    popularity = item_popularity(split)
    full_lists = rankings_from_predictions(predictions)
    result: dict[str, Any] = dict(labels or {})
    result["cutoffs"] = list(settings.cutoffs)
    result["users"] = {
        "ranked": len(ranked_users),
        "evaluated": len(qrels),
        "without_relevant": len(ranked_users) - len(qrels),
        "not_ranked": len(not_ranked),
    }
    # JSON has no NaN: a metric no user could be scored on is written as null.
    if "standard" in settings.definitions:
        result["standard"] = json_safe(standard_metrics(qrels, run, settings.cutoffs, settings.numba_cache_dir))
    if "clayrs" in settings.definitions:
        returned = rankings_from_predictions(predictions, model_only=True)
        result["clayrs"] = json_safe(
            clayrs_metrics(returned, {user: judgements[user] for user in qrels}, settings.cutoffs)
        )
    result["popularity"] = json_safe(
        {
            **average_popularity(full_lists, popularity, settings.cutoffs),
            "candidates_avg_popularity": candidate_popularity(judgements, popularity),
        }
    )
    result["parsing"] = parsing_summary(predictions)
    return result


def metric_label(name: str) -> str:
    """'ndcg@10' -> 'nDCG@10' for tables and plots."""
    family, _, cutoff = name.partition("@")
    pretty = {
        "precision": "P",
        "recall": "R",
        "f1": "F1",
        "ndcg": "nDCG",
        "mrr": "MRR",
        "hit_rate": "HR",
        "avg_popularity": "Pop",
    }.get(family, family)
    return f"{pretty}@{cutoff}" if cutoff else pretty


def iter_metric_names(families: Iterable[str], cutoffs: Sequence[int]) -> list[str]:
    return [f"{family}@{k}" for family in families for k in cutoffs] + list(families)
