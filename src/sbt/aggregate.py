#!/usr/bin/env python
"""Collect evaluation results into the study's tables (CSV, Markdown, LaTeX) and plots.

One row per run, grouped by backbone: the base model, then full fine-tuning, LoRA, the
multimodal runs and released (external) checkpoints. Columns are grouped by benchmark
family: TruthfulQA (mc1, mc2, generation metrics), ETHICS (five subsets and their mean),
then BoolQ, MMLU, GSM8K, MathQA, SQuAD2, the multimodal runs' POPE, VQAv2, Captions and
MME and anything else present, plus the difference to the backbone's base model for
TruthfulQA mc2 (mc1 when mc2 is absent) and the ETHICS mean. Scores are percentages
with one decimal, as in the paper; missing results are left blank. Where lm-eval reported
a standard error, the CSV has a "<column> stderr" column beside the score, Markdown and
LaTeX show "score ± stderr", and a "vs base" difference smaller than twice its combined
standard error is marked † (not distinguishable from the base model). One PNG per family:
bars per run grouped by backbone with error bars, the base model's score as a dashed line,
chance level as a dotted one where defined, one y-axis for the family's panels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sbt.common import atomic_path, cli, input_error
from sbt.results import Summary, build_summary, load_runs

LABEL_COLUMNS = ("backbone", "data", "method")
METHOD_COLORS = {
    "base": "#8c8c8c",
    "full": "#1f77b4",
    "lora": "#ff7f0e",
    "mm_full": "#17becf",
    "mm_lora": "#d62728",
    "external": "#2ca02c",
}
OTHER_COLOR = "#9467bd"
MARKDOWN_HEADER = """\
# Evaluation summary

One row per run, grouped by backbone (base model, full fine-tuning, LoRA, multimodal
runs with images, released checkpoints). Scores are percentages with one decimal (lm-eval
accuracies x 100; BLEU, ROUGE and SQuAD2 scores on their own 0-100 scale; caption scores
x 100 as COCO reports them, so CIDEr may pass 100; MME's Perception and Cognition as sums
of task scores, as MME reports them). Columns are
"<family> <metric>": TruthfulQA mc1/mc2 are the multiple-choice scores; ETHICS mean is the
mean of the five ETHICS subsets (shown only when all five were evaluated); POPE, VQAv2,
Captions and MME (multimodal runs only) are named by benchmark ("VQAv2 shapes_constant": the
same questions with one grey image); "vs base" is the difference, in
points, to the same backbone's base model. "± x" is lm-eval's standard error, in points (a
difference's combines both runs'); † marks a difference smaller than twice its standard
error, which these samples cannot tell apart from no difference. A blank cell means not
evaluated.
"""


def frame(summary: Summary):
    """The summary as a pandas DataFrame: label columns, then per metric a float column,
    its "stderr" column where any run has one, and for a delta a "distinguishable" one."""
    import pandas as pd

    columns, floats = list(LABEL_COLUMNS), []
    for i, column in enumerate(summary.columns):
        columns.append(column.key)
        floats.append(column.key)
        if summary.has_errors(i):
            columns.append(f"{column.key} stderr")
            floats.append(f"{column.key} stderr")
            if column.delta_of:
                columns.append(f"{column.key} distinguishable")
    rows = []
    for n, (run, values, errors) in enumerate(
        zip(summary.runs, summary.values, summary.errors, strict=True)
    ):
        row = {"backbone": run.backbone, "data": run.shown_data, "method": run.method}
        for i, column in enumerate(summary.columns):
            row[column.key] = values[i]
            if summary.has_errors(i):
                row[f"{column.key} stderr"] = errors[i]
                if column.delta_of and errors[i] is not None:
                    row[f"{column.key} distinguishable"] = (n, i) not in summary.indistinct
        rows.append(row)
    return pd.DataFrame(rows, columns=columns).astype({key: "float64" for key in floats})


def formatted_cells(
    summary: Summary, plus_minus: str = " ± ", dagger: str = "†"
) -> list[list[str]]:
    """Display text per run and column: "61.3 ± 2.1", "+1.2 ± 3.0†" for a delta that is
    not distinguishable, "" when missing."""
    table = []
    for n, (values, errors) in enumerate(zip(summary.values, summary.errors, strict=True)):
        cells = []
        for i, (column, value) in enumerate(zip(summary.columns, values, strict=True)):
            if value is None:
                cells.append("")
                continue
            text = f"{value:+.1f}" if column.delta_of else f"{value:.1f}"
            if errors[i] is not None:
                text += f"{plus_minus}{errors[i]:.1f}"
            if (n, i) in summary.indistinct:
                text += dagger
            cells.append(text)
        table.append(cells)
    return table


def to_csv(summary: Summary) -> str:
    return frame(summary).to_csv(index=False, float_format="%.1f", na_rep="", lineterminator="\n")


def to_markdown(summary: Summary) -> str:
    import pandas as pd

    cells = formatted_cells(summary)
    rows = [
        [run.backbone, run.shown_data, run.method, *row]
        for run, row in zip(summary.runs, cells, strict=True)
    ]
    table = pd.DataFrame(rows, columns=[*LABEL_COLUMNS, *(c.key for c in summary.columns)])
    align = ["left"] * len(LABEL_COLUMNS) + ["right"] * len(summary.columns)
    return (
        MARKDOWN_HEADER
        + "\n"
        + table.to_markdown(index=False, colalign=align, disable_numparse=True)
        + "\n"
    )


def latex_escape(text: str) -> str:
    replacements = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
    }
    return "".join(replacements.get(ch, ch) for ch in text)


PLUS_MINUS, DAGGER = "\x01", "\x02"  # placeholders that latex_escape leaves alone


def latex_cell(text: str) -> str:
    return latex_escape(text).replace(PLUS_MINUS, r" $\pm$ ").replace(DAGGER, r"$^\dagger$")


def to_latex(summary: Summary) -> str:
    """A booktabs table: family headers over their metrics, \\midrule between backbones."""
    n_labels = len(LABEL_COLUMNS)
    spec = "l" * n_labels + "r" * len(summary.columns)
    lines = [
        "% Evaluation summary: scores in percent; blank = not evaluated;",
        "% 'vs base' = difference in points to the backbone's base model; +- lm-eval's",
        "% standard error; \\dagger = a difference below twice its combined standard error.",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
    ]
    family_cells = [""] * n_labels
    rules = []
    start = n_labels + 1
    for family in summary.families():
        width = sum(1 for c in summary.columns if c.family == family)
        family_cells.append(f"\\multicolumn{{{width}}}{{c}}{{{latex_escape(family)}}}")
        rules.append(f"\\cmidrule(lr){{{start}-{start + width - 1}}}")
        start += width
    lines.append(" & ".join(family_cells) + " \\\\")
    lines.append(" ".join(rules))
    header = [*LABEL_COLUMNS, *(c.label for c in summary.columns)]
    lines.append(" & ".join(latex_escape(h) for h in header) + " \\\\")
    lines.append("\\midrule")
    previous = None
    cells_of = formatted_cells(summary, plus_minus=PLUS_MINUS, dagger=DAGGER)
    for run, cells in zip(summary.runs, cells_of, strict=True):
        if previous is not None and run.backbone != previous:
            lines.append("\\midrule")
        previous = run.backbone
        row = [run.backbone, run.shown_data, run.method, *cells]
        lines.append(" & ".join(latex_cell(cell) for cell in row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def family_slug(family: str) -> str:
    return "".join(ch for ch in family.lower() if ch.isalnum())


def plot_family(summary: Summary, family: str, path: Path) -> bool:
    """One panel per metric of `family` (deltas left out); False when nothing to plot.

    Runs without any score in the family are left out; bars of one backbone stand
    together under its name, the base model's score as a dashed line across them.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    indices = [
        i for i, c in enumerate(summary.columns) if c.family == family and c.delta_of is None
    ]
    indices = [i for i in indices if any(row[i] is not None for row in summary.values)]
    if not indices:
        return False
    shown = [  # (run, its scores, their standard errors)
        (run, row, errors)
        for run, row, errors in zip(summary.runs, summary.values, summary.errors, strict=True)
        if any(row[i] is not None for i in indices)
    ]
    # x positions: runs in table order, a gap between backbones
    positions, groups, x = [], {}, 0.0
    for n, (run, _, _) in enumerate(shown):
        if n and run.backbone != shown[n - 1][0].backbone:
            x += 0.8
        positions.append(x)
        groups.setdefault(run.backbone, []).append(x)
        x += 1.0
    labels = [
        run.method if run.method == "base" else f"{run.method}: {run.shown_data}"
        for run, _, _ in shown
    ]
    n_cols = min(3, len(indices))
    n_rows = -(-len(indices) // n_cols)
    width = max(3.5, 0.5 * len(shown) + 1.5)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(width * n_cols, 3.8 * n_rows), squeeze=False, sharey=True
    )
    # One y-axis for the whole family, so its panels compare at a glance.
    tops, bottoms = [1.0], [0.0]
    for _, row, errors in shown:
        for index in indices:
            if row[index] is not None:
                error = errors[index] or 0.0
                tops.append(row[index] + error)
                bottoms.append(row[index] - error)
    tops += [summary.chance[i] for i in indices if summary.chance[i] is not None]
    axes[0][0].set_ylim(min(0.0, *bottoms), max(tops) * 1.2)
    for ax, index in zip(axes.flat, indices, strict=False):
        column = summary.columns[index]
        for x_pos, (run, row, errors) in zip(positions, shown, strict=True):
            value, error = row[index], errors[index]
            if value is not None:
                color = METHOD_COLORS.get(run.method, OTHER_COLOR)
                ax.bar(x_pos, value, width=0.8, color=color, edgecolor="black", linewidth=0.4,
                       yerr=error, capsize=3 if error else 0, error_kw={"linewidth": 0.8})  # fmt: skip
        if summary.chance[index] is not None:
            ax.axhline(summary.chance[index], color="firebrick", linestyle=":", linewidth=1.2)
        for backbone, xs in groups.items():
            base = next(
                (
                    row[index]
                    for run, row, _ in shown
                    if run.backbone == backbone and run.method == "base"
                ),
                None,
            )
            if base is not None:
                ax.hlines(base, min(xs) - 0.5, max(xs) + 0.5, colors="black", linestyles="--")
            ax.text(
                (min(xs) + max(xs)) / 2,
                0.97,
                backbone,
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="top",
                fontsize=8,
                fontweight="bold",
            )
        ax.set_xticks(positions, labels, fontsize=7, rotation=35, ha="right")
        ax.set_title(f"{family} {column.label}", fontsize=10)
        ax.set_ylabel("score (%)")
        ax.grid(axis="y", linewidth=0.3)
        ax.set_axisbelow(True)
    for ax in list(axes.flat)[len(indices) :]:
        ax.set_visible(False)
    methods = [m for m in METHOD_COLORS if any(run.method == m for run, _, _ in shown)]
    handles = [plt.Rectangle((0, 0), 1, 1, color=METHOD_COLORS[m]) for m in methods]
    handles.append(plt.Line2D([0], [0], color="black", linestyle="--"))
    names = [*methods, "base model"]
    if any(summary.chance[i] is not None for i in indices):
        handles.append(plt.Line2D([0], [0], color="firebrick", linestyle=":"))
        names.append("chance")
    fig.legend(handles, names, loc="upper right", fontsize=8, ncols=6)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return True


def write_outputs(summary: Summary, tables_dir: Path, plots_dir: Path) -> list[Path]:
    texts = {
        "summary.csv": to_csv(summary),
        "summary.md": to_markdown(summary),
        "summary.tex": to_latex(summary),
    }  # all rendered before anything is written
    written = []
    for name, text in texts.items():
        target = tables_dir / name
        with atomic_path(target) as tmp:
            tmp.write_text(text, encoding="utf-8")
        written.append(target)
    plots_dir.mkdir(parents=True, exist_ok=True)
    for family in summary.families():
        target = plots_dir / f"{family_slug(family)}.png"
        if plot_family(summary, family, target):
            written.append(target)
    return written


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--results",
        nargs="+",
        required=True,
        metavar="PATH",
        help="result JSONs of evaluate.py, or folders searched for *.json",
    )
    parser.add_argument("--tables-dir", required=True, help="writes summary.{csv,md,tex} here")
    parser.add_argument("--plots-dir", required=True, help="writes <family>.png here")
    return parser.parse_args(argv)


@cli
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = load_runs(args.results)
    if not runs:
        raise input_error(args.results[0], "no result JSON files found")
    summary = build_summary(runs)
    for path in write_outputs(summary, Path(args.tables_dir), Path(args.plots_dir)):
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
