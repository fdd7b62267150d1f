"""The comparison of one dataset as a reader sees it: Markdown and LaTeX tables and a plot.

- ``table.md`` / ``table.tex`` (:func:`markdown_report`, :func:`latex_report`): the verdict
  table first (when there is one), a preamble saying what the numbers mean, then one table
  per metric family (rows = systems, columns = cutoffs and the full list), MRR and hit rate,
  and popularity with the parsing counts. Standard values carry ranx-style superscript
  letters naming the systems a row beats significantly (:func:`significant_wins`); the best
  value of a column is bold; a value averaged over seeds reads "mean ± sd".
- ``plot.png`` (:func:`plot_comparison`): grouped bars of one metric family at every cutoff,
  one panel per definition, error bars = sd over seeds.

Rows are labelled a, b, c, ... in system order (:func:`letters_for`, as ranx labels them).
Example: with systems ``[no_kn, graph, bpr]``, graph's nDCG@10 0.41237 (sd 0.01) is the
column's best and significantly above bpr's, so its Markdown cell reads
``**0.4124 ± 0.0100**<sup>c</sup>``.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rekalm.evaluation.evaluate import MetricSettings, iter_metric_names, metric_label
from rekalm.evaluation.verdict import Verdict, verdict_rows

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


#: What one sample of the paired test is, with one split for all seeds / one split per seed.
TEST_UNITS = {False: "test user (metric averaged over the system's seeds)", True: "(split, test user) pair"}


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
            value, best_value = columns[name][index], best[name]
            is_best = (
                higher_is_better
                and value is not None
                and best_value is not None
                and round(value, 4) == round(best_value, 4)
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
    verdict_headers, verdict_table = verdict_rows(verdict)
    if verdict_table:
        lines = ["| " + " | ".join(verdict_headers) + " |", "|" + "|".join("---" for _ in verdict_headers) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in verdict_table]
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
    verdict_headers, verdict_table = verdict_rows(verdict)
    if verdict_table:
        body = [" & ".join(_latex_escape(cell).replace("–", "--") for cell in row) + r" \\" for row in verdict_table]
        caption = dataset + ": " + _verdict_heading(settings) + ". " + _verdict_note(comparison)
        parts += [
            "\n".join(
                [
                    r"\begin{table}[ht]",
                    r"\centering",
                    rf"\caption{{{_latex_escape(caption)}}}",
                    rf"\label{{tab:{dataset.replace('_', '-')}-verdict}}",
                    r"\begin{tabular}{ll" + "r" * (len(verdict_headers) - 2) + "}",
                    r"\toprule",
                    " & ".join(_latex_escape(h) for h in verdict_headers) + r" \\",
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
