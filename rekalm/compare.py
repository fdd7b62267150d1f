"""Compare the systems of one dataset: ranx ``compare`` with a paired test, tables, a plot.

Inputs are each system's ``metrics.json`` (standard, ClayRS, popularity and parsing
figures) and ``run.json`` (for the per-user scores the paired test needs: ranx recomputes
the standard metrics per user and tests every pair of systems). Outputs:

- ``table.md`` and ``table.tex``: one table per metric family (rows = systems, columns =
  cutoffs and the full list). Standard values carry ranx-style superscript letters naming
  the systems a row beats significantly; the best value of a column is bold. ClayRS
  values (comparable with the original paper) and the popularity / parsing figures follow.
- ``plot.png``: grouped bars of one metric family at every cutoff, per definition.
- ``compare.json``: the ranx report (means, p-values, win/tie/loss) plus every system's
  metrics, in one file.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rekalm.evaluate import (
    MetricSettings,
    import_ranx,
    iter_metric_names,
    metric_label,
    run_for_qrels,
    standard_metric_names,
)
from rekalm.io import atomic_path, write_json
from rekalm.verdict import Verdict, verdict_rows, verdicts

FAMILY_TITLES = {"ndcg": "nDCG", "precision": "Precision", "recall": "Recall", "f1": "F1"}  # also the table order
STAT_TEST_NAMES = {
    "student": "paired Student's t-test",
    "fisher": "Fisher's randomization test",
    "tukey": "Tukey's HSD test",
}
PARSING_COLUMNS = (
    ("hallucinated_per_user", "hallucinated/user"),
    ("duplicates_per_user", "duplicates/user"),
    ("appended_per_user", "appended/user"),
    ("users_with_appended", "users with appended"),
)


def letters_for(systems: Sequence[str]) -> dict[str, str]:
    """a, b, c, ... (then aa, ab, ...) in the given order, as ranx labels its rows."""
    alphabet = string.ascii_lowercase
    labels = {}
    for index, name in enumerate(systems):
        label, number = "", index
        while True:
            label = alphabet[number % 26] + label
            number = number // 26 - 1
            if number < 0:
                break
        labels[name] = label
    return labels


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, Mapping):
        return {str(key): _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    return value


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


#: What one sample of the paired test is, with one split for all seeds / one split per seed.
TEST_UNITS = {False: "test user (metric averaged over the system's seeds)", True: "(split, test user) pair"}


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
        # Plain dicts (see rekalm.evaluate.standard_metrics); run_for_qrels keeps qrels' order.
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


def significant_wins(comparison: Mapping[str, Any], system: str, metric: str) -> str:
    """Letters of the systems that ``system`` beats significantly on ``metric``."""
    letters = letters_for(comparison["systems"])
    mine = comparison["means"][system][metric]
    wins = []
    for other in comparison["systems"]:
        if other == system:
            continue
        result = comparison["comparisons"][system][other][metric]
        if result.get("significant") and mine > comparison["means"][other][metric]:
            wins.append(letters[other])
    return "".join(wins)


# --- tables ------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _best(values: Sequence[Any]) -> float | None:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return max(finite) if finite else None


Spread = Mapping[str, Mapping[str, Any]]  # system -> sd over seeds, shaped like its metrics


def family_rows(
    metrics: Mapping[str, Mapping[str, Any]],
    definition: str,
    family: str,
    cutoffs: Sequence[int],
    comparison: Mapping[str, Any] | None,
    spread: Spread | None = None,
) -> tuple[list[str], list[list[tuple[str, bool, str]]]]:
    """(column names, rows of (text, is_best, superscript)) for one metric family."""
    names = [f"{family}@{k}" for k in cutoffs] + [family]
    headers = [f"@{k}" for k in cutoffs] + ["all"]
    return headers, single_rows(metrics, definition, names, comparison, spread=spread)


def single_rows(
    metrics: Mapping[str, Mapping[str, Any]],
    definition: str,
    names: Sequence[str],
    comparison: Mapping[str, Any] | None,
    higher_is_better: bool = True,
    spread: Spread | None = None,
) -> list[list[tuple[str, bool, str]]]:
    """One row per system: (value text, is the column's best, significance letters). A value
    averaged over several seeds reads "mean ± sd"; the best is judged on the mean."""
    columns = {name: [metrics[system].get(definition, {}).get(name) for system in metrics] for name in names}
    best = {name: _best(values) for name, values in columns.items()}
    rows = []
    for index, system in enumerate(metrics):
        cells = []
        for name in names:
            value = columns[name][index]
            is_best = (
                higher_is_better
                and value is not None
                and best[name] is not None
                and round(value, 4) == round(best[name], 4)
            )
            marks = significant_wins(comparison, system, name) if comparison and definition == "standard" else ""
            sd = ((spread or {}).get(system) or {}).get(definition, {}) or {}
            text = _fmt(value) + (f" ± {_fmt(sd[name])}" if sd.get(name) is not None and value is not None else "")
            cells.append((text, is_best, marks))
        rows.append(cells)
    return rows


def _markdown_table(
    headers: Sequence[str], systems: Sequence[str], rows: Sequence[Sequence[tuple[str, bool, str]]]
) -> str:
    letters = letters_for(systems)
    lines = ["| # | System | " + " | ".join(headers) + " |", "|---|---|" + "|".join("---:" for _ in headers) + "|"]
    for system, cells in zip(systems, rows):
        texts = []
        for text, is_best, marks in cells:
            text = f"**{text}**" if is_best else text
            texts.append(text + (f"<sup>{marks}</sup>" if marks else ""))
        lines.append(f"| {letters[system]} | {system} | " + " | ".join(texts) + " |")
    return "\n".join(lines)


def _latex_escape(text: str) -> str:
    for char, escaped in (
        ("\\", r"\textbackslash{}"),
        ("_", r"\_"),
        ("%", r"\%"),
        ("&", r"\&"),
        ("#", r"\#"),
        ("$", r"\$"),
    ):
        text = text.replace(char, escaped)
    return text


def _latex_table(
    caption: str,
    label: str,
    headers: Sequence[str],
    systems: Sequence[str],
    rows: Sequence[Sequence[tuple[str, bool, str]]],
) -> str:
    letters = letters_for(systems)
    lines = [
        r"\begin{table}[ht]",
        r"\centering",
        rf"\caption{{{_latex_escape(caption)}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{cl" + "r" * len(headers) + "}",
        r"\toprule",
        r"\# & System & " + " & ".join(_latex_escape(h).replace("@", "@") for h in headers) + r" \\",
        r"\midrule",
    ]
    for system, cells in zip(systems, rows):
        texts = []
        for text, is_best, marks in cells:
            text = text.replace("–", "--").replace(" ± ", r" $\pm$ ")
            text = rf"\textbf{{{text}}}" if is_best else text
            texts.append(text + (rf"$^{{\mathrm{{{marks}}}}}$" if marks else ""))
        lines.append(f"{letters[system]} & {_latex_escape(system)} & " + " & ".join(texts) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def _sections(
    metrics: Mapping[str, Mapping[str, Any]],
    settings: MetricSettings,
    comparison: Mapping[str, Any] | None,
    spread: Spread | None = None,
) -> list[tuple[str, str, list[str], list[list[tuple[str, bool, str]]]]]:
    """(heading, label key, headers, rows) of every table, in reading order."""
    cutoffs = list(settings.cutoffs)
    sections = []
    titles = {
        "standard": "Standard definitions (ranx)",
        "clayrs": "ClayRS definitions (comparable with the original paper)",
    }
    for definition in settings.definitions:
        for family in FAMILY_TITLES:
            headers, rows = family_rows(metrics, definition, family, cutoffs, comparison, spread)
            sections.append(
                (f"{titles[definition]}: {FAMILY_TITLES[family]}", f"{definition}-{family}", headers, rows)
            )
        if definition == "standard":
            names = ["mrr"] + [f"hit_rate@{k}" for k in cutoffs]
        else:
            names = ["mrr"]
        rows = single_rows(metrics, definition, names, comparison, spread=spread)
        sections.append(
            (
                f"{titles[definition]}: MRR" + (" and hit rate" if definition == "standard" else ""),
                f"{definition}-mrr",
                [metric_label(n) for n in names],
                rows,
            )
        )
    popularity_names = iter_metric_names(["avg_popularity"], cutoffs) + ["candidates_avg_popularity"]
    rows = single_rows(metrics, "popularity", popularity_names, None, higher_is_better=False, spread=spread)
    headers = [metric_label(n) if n != "candidates_avg_popularity" else "candidates" for n in popularity_names]
    parsing = single_rows(
        metrics, "parsing", [key for key, _ in PARSING_COLUMNS], None, higher_is_better=False, spread=spread
    )
    combined = [a + b for a, b in zip(rows, parsing)]
    sections.append(
        (
            "Average popularity and parsing",
            "popularity-parsing",
            headers + [title for _, title in PARSING_COLUMNS],
            combined,
        )
    )
    return sections


def _count(value: Any) -> str:
    """A user count; averaged over seeds (several splits) it may be fractional."""
    if not isinstance(value, (int, float)):
        return "?"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _preamble(dataset: str, metrics: Mapping[str, Mapping[str, Any]], settings: MetricSettings) -> list[str]:
    first = next(iter(metrics.values()))
    users = first.get("users", {})
    return [
        f"Relevant items: the liked held-out items of the test users; {_count(users.get('evaluated'))} users "
        "evaluated "
        f"({_count(users.get('without_relevant'))} without a liked held-out item left out).",
        "Standard: ranx (trec_eval) definitions over the complete list (appended candidates included). "
        "Superscript letters: the row is significantly better than those systems "
        f"({STAT_TEST_NAMES[settings.stat_test]}, "
        f"p <= {settings.max_p}). Best value per column in bold.",
        "ClayRS: the original paper's definitions over the list the model returned (P@k divides by min(k, list "
        "length); "
        "nDCG's ideal comes from the returned list; users without a relevant returned item are left out).",
        "Popularity: mean share of training users who interacted with the top-k items; 'candidates' is the mean over "
        "whole candidate lists (a random ranking). Parsing counts are zero in score mode.",
    ]


def _verdict_heading(settings: MetricSettings) -> str:
    return (
        f"Verdict: knowledge ablations against {settings.verdict_reference} and the best baseline "
        f"({settings.verdict_metric})"
    )


def _verdict_note(comparison: Mapping[str, Any] | None) -> str:
    unit = (comparison or {}).get("test_unit", TEST_UNITS[False])
    return (
        f"Δ: mean of the paired difference over each {unit}; CI: paired t-interval; better / worse when the "
        "interval excludes 0, else no detectable difference."
    )


def markdown_report(
    dataset: str,
    metrics: Mapping[str, Mapping[str, Any]],
    settings: MetricSettings,
    comparison: Mapping[str, Any] | None,
    spread: Spread | None = None,
    verdict: Sequence[Verdict] = (),
) -> str:
    systems = list(metrics)
    parts = [f"# Systems on {dataset}", ""]
    headers, rows = verdict_rows(verdict)
    if rows:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        parts += [f"## {_verdict_heading(settings)}", "", _verdict_note(comparison), "", *lines, ""]
    parts += [*(_preamble(dataset, metrics, settings)), ""]
    for heading, _, headers, rows in _sections(metrics, settings, comparison, spread):
        parts += [f"## {heading}", "", _markdown_table(headers, systems, rows), ""]
    return "\n".join(parts)


def latex_report(
    dataset: str,
    metrics: Mapping[str, Mapping[str, Any]],
    settings: MetricSettings,
    comparison: Mapping[str, Any] | None,
    spread: Spread | None = None,
    verdict: Sequence[Verdict] = (),
) -> str:
    systems = list(metrics)
    parts = ["% Needs \\usepackage{booktabs}. " + " ".join(_preamble(dataset, metrics, settings)), ""]
    headers, rows = verdict_rows(verdict)
    if rows:
        body = [" & ".join(_latex_escape(cell).replace("–", "--") for cell in row) + r" \\" for row in rows]
        caption = dataset + ": " + _verdict_heading(settings) + ". " + _verdict_note(comparison)
        parts += [
            "\n".join(
                [
                    r"\begin{table}[ht]",
                    r"\centering",
                    rf"\caption{{{_latex_escape(caption)}}}",
                    rf"\label{{tab:{dataset.replace('_', '-')}-verdict}}",
                    r"\begin{tabular}{ll" + "r" * (len(headers) - 2) + "}",
                    r"\toprule",
                    " & ".join(_latex_escape(h) for h in headers) + r" \\",
                    r"\midrule",
                    *body,
                    r"\bottomrule",
                    r"\end{tabular}",
                    r"\end{table}",
                ]
            ),
            "",
        ]
    for heading, key, headers, rows in _sections(metrics, settings, comparison, spread):
        label = f"tab:{dataset}-{key}".replace("_", "-")
        parts += [_latex_table(f"{dataset}: {heading}", label, headers, systems, rows), ""]
    return "\n".join(parts)


# --- plot --------------------------------------------------------------------------------


def plot_comparison(
    dataset: str,
    metrics: Mapping[str, Mapping[str, Any]],
    settings: MetricSettings,
    path: str | Path,
    spread: Spread | None = None,
) -> None:
    """Grouped bars of ``settings.plot_metric`` at every cutoff, one panel per definition;
    error bars show the sd over seeds of replicated systems."""
    import matplotlib

    matplotlib.use("Agg")  # headless: cluster nodes have no display
    import matplotlib.pyplot as plt

    systems = list(metrics)
    definitions = list(settings.definitions)
    names = [f"{settings.plot_metric}@{k}" for k in settings.cutoffs] + [settings.plot_metric]
    width = 0.8 / len(names)
    figure, axes = plt.subplots(
        len(definitions), 1, figsize=(max(6.0, 1.1 * len(systems) + 2), 3.2 * len(definitions)), squeeze=False
    )
    positions = np.arange(len(systems))
    for axis, definition in zip(axes[:, 0], definitions):
        for offset, name in enumerate(names):
            values = [metrics[a].get(definition, {}).get(name) for a in systems]
            heights = [v if v is not None else 0.0 for v in values]
            errors = [(((spread or {}).get(a) or {}).get(definition, {}) or {}).get(name) or 0.0 for a in systems]
            label = metric_label(name) if "@" in name else f"{metric_label(name)} (all)"
            axis.bar(
                positions + (offset - (len(names) - 1) / 2) * width,
                heights,
                width,
                yerr=errors,
                capsize=2,
                label=label,
            )
        axis.set_xticks(positions, systems, rotation=30, ha="right")
        axis.set_ylim(0, 1)
        axis.set_ylabel(metric_label(settings.plot_metric))
        axis.set_title(f"{dataset}: {definition} definitions")
        axis.grid(axis="y", alpha=0.3)
    handles, legend_labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, legend_labels, loc="lower center", ncol=len(names), fontsize="small", frameon=False)
    figure.tight_layout(rect=(0, 0.05, 1, 1))  # leave the bottom strip to the shared legend
    figure.savefig(path, dpi=150, format="png")  # explicit: atomic temp files end in .tmp
    plt.close(figure)


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
    return _clean(
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
