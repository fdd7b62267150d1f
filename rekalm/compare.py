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

FAMILY_TITLES = {"ndcg": "nDCG", "precision": "Precision", "recall": "Recall", "f1": "F1"}  # also the table order
STAT_TEST_NAMES = {"student": "paired Student's t-test", "fisher": "Fisher's randomization test", "tukey": "Tukey's HSD test"}
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


# --- ranx compare ------------------------------------------------------------------------


def compare_runs(
    runs: Mapping[str, Mapping[str, Mapping[str, float]]],
    qrels: Mapping[str, Mapping[str, int]],
    settings: MetricSettings,
) -> dict[str, Any]:
    """ranx.compare over the standard metrics: means, pairwise p-values and significance."""
    ranx = import_ranx(settings.numba_cache_dir)
    names = list(runs)
    metrics = standard_metric_names(settings.cutoffs)
    # A paired test needs the same users in every run: those ranked by all systems.
    qrels = {user: items for user, items in qrels.items() if all(user in run for run in runs.values())}
    if not qrels:
        raise ValueError("compare: no test user with a liked held-out item was ranked by every system")
    ranx_runs = [ranx.Run.from_dict(run_for_qrels(run, qrels, source=f"run of {name}"), name=name) for name, run in runs.items()]
    report = ranx.compare(
        ranx.Qrels.from_dict(dict(qrels)),
        ranx_runs,
        metrics,
        stat_test=settings.stat_test,
        max_p=settings.max_p,
        n_permutations=settings.n_permutations,
        random_seed=settings.seed,
        rounding_digits=4,
    )
    pairs: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in names}
    for name in names:
        for other in names:
            if other != name:
                pairs[name][other] = {metric: dict(report.comparisons[name, other][metric]) for metric in metrics}
    return {
        "stat_test": settings.stat_test,
        "max_p": settings.max_p,
        "metrics": metrics,
        "systems": names,
        "users": len(qrels),
        "means": {name: {metric: report.results[name][metric] for metric in metrics} for name in names},
        "comparisons": pairs,
        "win_tie_loss": {name: {other: report.win_tie_loss[(name, other)] for other in names if other != name} for name in names},
    }


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


def family_rows(
    metrics: Mapping[str, Mapping[str, Any]], definition: str, family: str, cutoffs: Sequence[int], comparison: Mapping[str, Any] | None
) -> tuple[list[str], list[list[tuple[str, bool, str]]]]:
    """(column names, rows of (text, is_best, superscript)) for one metric family."""
    names = [f"{family}@{k}" for k in cutoffs] + [family]
    headers = [f"@{k}" for k in cutoffs] + ["all"]
    return headers, single_rows(metrics, definition, names, comparison)


def single_rows(metrics: Mapping[str, Mapping[str, Any]], definition: str, names: Sequence[str], comparison: Mapping[str, Any] | None, higher_is_better: bool = True) -> list[list[tuple[str, bool, str]]]:
    columns = {name: [metrics[system].get(definition, {}).get(name) for system in metrics] for name in names}
    best = {name: _best(values) for name, values in columns.items()}
    rows = []
    for index, system in enumerate(metrics):
        cells = []
        for name in names:
            value = columns[name][index]
            is_best = higher_is_better and value is not None and best[name] is not None and round(value, 4) == round(best[name], 4)
            marks = significant_wins(comparison, system, name) if comparison and definition == "standard" else ""
            cells.append((_fmt(value), is_best, marks))
        rows.append(cells)
    return rows


def _markdown_table(headers: Sequence[str], systems: Sequence[str], rows: Sequence[Sequence[tuple[str, bool, str]]]) -> str:
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
    for char, escaped in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("$", r"\$")):
        text = text.replace(char, escaped)
    return text


def _latex_table(caption: str, label: str, headers: Sequence[str], systems: Sequence[str], rows: Sequence[Sequence[tuple[str, bool, str]]]) -> str:
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
            text = text.replace("–", "--")
            text = rf"\textbf{{{text}}}" if is_best else text
            texts.append(text + (rf"$^{{\mathrm{{{marks}}}}}$" if marks else ""))
        lines.append(f"{letters[system]} & {_latex_escape(system)} & " + " & ".join(texts) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def _sections(metrics: Mapping[str, Mapping[str, Any]], settings: MetricSettings, comparison: Mapping[str, Any] | None) -> list[tuple[str, str, list[str], list[list[tuple[str, bool, str]]]]]:
    """(heading, label key, headers, rows) of every table, in reading order."""
    cutoffs = list(settings.cutoffs)
    sections = []
    titles = {"standard": "Standard definitions (ranx)", "clayrs": "ClayRS definitions (comparable with the original paper)"}
    for definition in settings.definitions:
        for family in FAMILY_TITLES:
            headers, rows = family_rows(metrics, definition, family, cutoffs, comparison)
            sections.append((f"{titles[definition]}: {FAMILY_TITLES[family]}", f"{definition}-{family}", headers, rows))
        if definition == "standard":
            names = ["mrr"] + [f"hit_rate@{k}" for k in cutoffs]
        else:
            names = ["mrr"]
        rows = single_rows(metrics, definition, names, comparison)
        sections.append((f"{titles[definition]}: MRR" + (" and hit rate" if definition == "standard" else ""), f"{definition}-mrr", [metric_label(n) for n in names], rows))
    popularity_names = iter_metric_names(["avg_popularity"], cutoffs) + ["candidates_avg_popularity"]
    rows = single_rows(metrics, "popularity", popularity_names, None, higher_is_better=False)
    headers = [metric_label(n) if n != "candidates_avg_popularity" else "candidates" for n in popularity_names]
    parsing = single_rows(metrics, "parsing", [key for key, _ in PARSING_COLUMNS], None, higher_is_better=False)
    combined = [a + b for a, b in zip(rows, parsing)]
    sections.append(("Average popularity and parsing", "popularity-parsing", headers + [title for _, title in PARSING_COLUMNS], combined))
    return sections


def _preamble(dataset: str, metrics: Mapping[str, Mapping[str, Any]], settings: MetricSettings) -> list[str]:
    first = next(iter(metrics.values()))
    users = first.get("users", {})
    return [
        f"Relevant items: the liked held-out items of the test users; {users.get('evaluated', '?')} users evaluated "
        f"({users.get('without_relevant', '?')} without a liked held-out item left out).",
        "Standard: ranx (trec_eval) definitions over the complete list (appended candidates included). "
        f"Superscript letters: the row is significantly better than those systems ({STAT_TEST_NAMES[settings.stat_test]}, "
        f"p <= {settings.max_p}). Best value per column in bold.",
        "ClayRS: the original paper's definitions over the list the model returned (P@k divides by min(k, list length); "
        "nDCG's ideal comes from the returned list; users without a relevant returned item are left out).",
        "Popularity: mean share of training users who interacted with the top-k items; 'candidates' is the mean over "
        "whole candidate lists (a random ranking). Parsing counts are zero in score mode.",
    ]


def markdown_report(dataset: str, metrics: Mapping[str, Mapping[str, Any]], settings: MetricSettings, comparison: Mapping[str, Any] | None) -> str:
    systems = list(metrics)
    parts = [f"# Systems on {dataset}", "", *(_preamble(dataset, metrics, settings)), ""]
    for heading, _, headers, rows in _sections(metrics, settings, comparison):
        parts += [f"## {heading}", "", _markdown_table(headers, systems, rows), ""]
    return "\n".join(parts)


def latex_report(dataset: str, metrics: Mapping[str, Mapping[str, Any]], settings: MetricSettings, comparison: Mapping[str, Any] | None) -> str:
    systems = list(metrics)
    parts = ["% Needs \\usepackage{booktabs}. " + " ".join(_preamble(dataset, metrics, settings)), ""]
    for heading, key, headers, rows in _sections(metrics, settings, comparison):
        label = f"tab:{dataset}-{key}".replace("_", "-")
        parts += [_latex_table(f"{dataset}: {heading}", label, headers, systems, rows), ""]
    return "\n".join(parts)


# --- plot --------------------------------------------------------------------------------


def plot_comparison(dataset: str, metrics: Mapping[str, Mapping[str, Any]], settings: MetricSettings, path: str | Path) -> None:
    """Grouped bars of ``settings.plot_metric`` at every cutoff, one panel per definition."""
    import matplotlib

    matplotlib.use("Agg")  # headless: cluster nodes have no display
    import matplotlib.pyplot as plt

    systems = list(metrics)
    definitions = list(settings.definitions)
    names = [f"{settings.plot_metric}@{k}" for k in settings.cutoffs] + [settings.plot_metric]
    width = 0.8 / len(names)
    figure, axes = plt.subplots(len(definitions), 1, figsize=(max(6.0, 1.1 * len(systems) + 2), 3.2 * len(definitions)), squeeze=False)
    positions = np.arange(len(systems))
    for axis, definition in zip(axes[:, 0], definitions):
        for offset, name in enumerate(names):
            values = [metrics[a].get(definition, {}).get(name) for a in systems]
            heights = [v if v is not None else 0.0 for v in values]
            axis.bar(positions + (offset - (len(names) - 1) / 2) * width, heights, width, label=metric_label(name) if "@" in name else f"{metric_label(name)} (all)")
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


def comparison_summary(dataset: str, metrics: Mapping[str, Mapping[str, Any]], comparison: Mapping[str, Any] | None) -> dict[str, Any]:
    """compare.json content."""
    return _clean({"dataset": dataset, "systems": list(metrics), "letters": letters_for(list(metrics)), "ranx": comparison, "metrics": dict(metrics)})


def write_comparison(
    dataset: str,
    metrics: Mapping[str, Mapping[str, Any]],
    runs: Mapping[str, Mapping[str, Mapping[str, float]]],
    qrels: Mapping[str, Mapping[str, int]],
    settings: MetricSettings,
    outputs: Mapping[str, str | Path],
) -> dict[str, Any]:
    """Write outputs['table'] (Markdown), ['latex'], ['plot'] (PNG) and ['summary'] (JSON)."""
    if list(metrics) != list(runs):
        raise ValueError(f"compare: metrics and runs name different systems ({list(metrics)} vs {list(runs)})")
    if not metrics:
        raise ValueError("compare: no system to compare")
    comparison = compare_runs(runs, qrels, settings) if "standard" in settings.definitions else None
    for key, text in (("table", markdown_report(dataset, metrics, settings, comparison)), ("latex", latex_report(dataset, metrics, settings, comparison))):
        with atomic_path(outputs[key]) as temp:
            temp.write_text(text, encoding="utf-8")
    with atomic_path(outputs["plot"]) as temp:
        plot_comparison(dataset, metrics, settings, temp)
    summary = comparison_summary(dataset, metrics, comparison)
    write_json(summary, outputs["summary"])
    return summary
