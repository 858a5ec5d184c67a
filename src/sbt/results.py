"""Evaluation result JSONs -> one summary table (rows: runs, columns: benchmark metrics).

Reads what evaluate.py writes: `run` {backbone, data, method[, name]} and `metrics`
{"<task>/<metric>": value in lm-eval's scale}. Rows are grouped by backbone (sorted by
name); inside a backbone: base model, full fine-tunes, LoRA runs, multimodal runs,
external checkpoints, anything else. Columns are grouped by benchmark family in the study's order. Scores are
percentages with one decimal; what was not evaluated stays empty (NaN), never zero.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from sbt.benchmark_files import chance_level
from sbt.common import input_error
from sbt.mm_evaluate import TASKS as MM_EVALUATE_TASKS

METHOD_ORDER = ("base", "full", "lora", "mm_full", "mm_lora", "external")
ETHICS_TASKS = (
    "ethics_cm",
    "ethics_deontology",
    "ethics_justice",
    "ethics_utilitarianism",
    "ethics_virtue",
)
# task -> (family, short name used in column labels)
TASK_FAMILY = {
    "truthfulqa_mc1": ("TruthfulQA", "mc1"),
    "truthfulqa_mc2": ("TruthfulQA", "mc2"),
    "truthfulqa_gen": ("TruthfulQA", "gen"),
    **{task: ("ETHICS", task.removeprefix("ethics_")) for task in ETHICS_TASKS},
    "boolq": ("BoolQ", ""),
    "mmlu": ("MMLU", ""),
    "mmlu_study": ("MMLU", "study"),  # the study's own MMLU script (sbt/mmlu_study.py)
    "gsm8k": ("GSM8K", ""),
    "mathqa": ("MathQA", ""),
    "squadv2": ("SQuAD2", ""),
}
# sbt.mm_evaluate's tasks: a family each, its benchmarks' names (task prefix dropped) the
# column labels ("pope_random" -> "POPE random f1").
MM_FAMILY = {"pope": "POPE", "vqav2": "VQAv2", "caption": "Captions", "mme": "MME"}
FAMILY_ORDER = (
    "TruthfulQA", "ETHICS", "BoolQ", "MMLU", "GSM8K", "MathQA", "SQuAD2", *MM_FAMILY.values(),
    "Other",
)  # fmt: skip
TASK_ORDER = tuple(TASK_FAMILY)
# The metric a task's column shows without naming it (its accuracy).
HEADLINE_METRIC = {
    task: "acc"
    for task in (
        "truthfulqa_mc1",
        "truthfulqa_mc2",
        *ETHICS_TASKS,
        "boolq",
        "mmlu",
        "mmlu_study",
        "mathqa",
    )
}
METRIC_ORDER = (
    "acc",
    "em",  # ETHICS grouped exact match (the study mode), beside each subset's acc
    "acc_norm",
    "exact_match,strict-match",
    "exact_match,flexible-extract",
    "exact_match",
    "exact",
    "f1",
    *(f"{m}_{s}" for m in ("bleu", "rouge1", "rouge2", "rougeL") for s in ("max", "acc", "diff")),
)
# lm-eval reports these as fractions; the tables show percentages. Others (BLEU, ROUGE,
# SQuAD2 exact/f1) are already on a 0-100 scale.
FRACTION_METRICS = {"acc", "acc_norm", "exact_match", "em"}
# sbt.mm_evaluate's metrics, keyed "<benchmark>/<metric>": all fractions.
MM_FRACTION_METRICS = {
    "accuracy", "precision", "recall", "f1", "yes_ratio", "bleu_4", "meteor", "rouge_l", "cider",
    "perception", "cognition",
}  # fmt: skip


# sbt.mm_evaluate's documents name their task (one of its TASKS); every score of theirs
# is a fraction.
MM_TASKS = set(MM_EVALUATE_TASKS)


def is_fraction(metric: str) -> bool:
    base = metric.partition(",")[0]
    if "/" in base:
        return base.rpartition("/")[2] in MM_FRACTION_METRICS
    return base in FRACTION_METRICS or base.endswith("_acc")


@dataclass(frozen=True)
class Column:
    family: str
    label: str  # shown under the family, e.g. "mc2", "cm", "mean", "mc2 vs base"
    task: str | None = None  # None for derived columns (ETHICS mean, deltas)
    metric: str | None = None
    delta_of: str | None = None  # key of the column a delta column compares to base

    @property
    def key(self) -> str:
        return f"{self.family} {self.label}"


@dataclass
class RunResult:
    """One run's metrics gathered from all its result files."""

    backbone: str
    data: str
    method: str
    name: str
    scores: dict[str, float | None]  # "<task>/<metric>" -> percentage (None: not a number)
    sources: dict[str, Path]  # "<task>/<metric>" -> file it came from
    stderrs: dict[str, float | None] = field(default_factory=dict)  # same keys, percentage
    chance: dict[str, float | None] = field(default_factory=dict)  # same keys, percentage
    mm_tasks: dict[str, str] = field(default_factory=dict)  # mm benchmark -> "pope"|"vqav2"

    @property
    def row_key(self) -> tuple[str, str, str, str]:
        return (self.backbone, self.data, self.method, self.name)

    @property
    def shown_data(self) -> str:
        """Data column text: "-" for base models, the checkpoint name for external ones."""
        if self.method == "base":
            return self.data or "-"
        return self.data or self.name or "-"


def _string_field(path: Path, run: dict, key: str, *, required: bool) -> str:
    value = run.get(key)
    if value is None:
        if required:
            raise input_error(path, "missing", field=f"run.{key}")
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise input_error(path, f"must be a non-empty string, got {value!r}", field=f"run.{key}")
    return value


def _stderr(document: dict, metric_key: str) -> float | None:
    """lm-eval's standard error of one metric ("acc_stderr,none"), None where it gave none."""
    task, _, metric = metric_key.partition("/")
    name, _, filter_name = metric.partition(",")
    value = (
        (document.get("results") or {}).get(task, {}).get(f"{name}_stderr,{filter_name or 'none'}")
    )
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def read_result_document(
    path: str | Path,
) -> tuple[dict[str, str], dict[str, float | None], dict]:
    """(run description, metrics, the whole document) of one result JSON, validated."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise input_error(path, f"cannot read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise input_error(path, f"invalid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise input_error(path, "expected a JSON object (an evaluate.py result)")
    run = document.get("run")
    if not isinstance(run, dict):
        raise input_error(path, "missing or not an object", field="run")
    description = {
        "backbone": _string_field(path, run, "backbone", required=True),
        "method": _string_field(path, run, "method", required=True),
        "data": _string_field(path, run, "data", required=False),
        "name": _string_field(path, run, "name", required=False),
    }
    metrics = document.get("metrics")
    if not isinstance(metrics, dict):
        raise input_error(path, "missing or not an object", field="metrics")
    values: dict[str, float | None] = {}
    for key, value in metrics.items():
        task, sep, metric = key.partition("/")
        if not sep or not task or not metric:
            raise input_error(path, "expected '<task>/<metric>'", field=f"metrics.{key}")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise input_error(path, f"not a number: {value!r}", field=f"metrics.{key}")
        values[key] = None if value is None or not math.isfinite(value) else float(value)
    return description, values, document


def result_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given plus every *.json under given directories (sorted, no duplicates)."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.json") if p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise input_error(path, "no such result file or directory")
    return list(dict.fromkeys(files))


def load_runs(paths: Sequence[str | Path]) -> list[RunResult]:
    """Merge result files by run; the same metric twice must agree."""
    runs: dict[tuple[str, str, str, str], RunResult] = {}
    for path in result_files(paths):
        description, metrics, document = read_result_document(path)
        key = (description["backbone"], description["data"], description["method"])
        key += (description["name"],)
        run = runs.setdefault(key, RunResult(**description, scores={}, sources={}))
        data_files = (document.get("config") or {}).get("data_files") or {}
        fractions = document.get("task") in MM_TASKS
        if fractions:
            run.mm_tasks.update({key.partition("/")[0]: document["task"] for key in metrics})
        for metric_key, value in metrics.items():
            score = None if value is None else _as_percent(metric_key, value, fractions)
            stderr = _stderr(document, metric_key)
            run.stderrs[metric_key] = (
                None if stderr is None else _as_percent(metric_key, stderr, fractions)
            )
            level = chance_level(metric_key, data_files)
            run.chance[metric_key] = (
                None if level is None else _as_percent(metric_key, level, fractions)
            )
            if metric_key in run.scores and run.scores[metric_key] != score:
                raise input_error(
                    path,
                    f"differs from {run.sources[metric_key]} for the same run",
                    field=f"metrics.{metric_key}",
                )
            run.scores[metric_key] = score
            run.sources[metric_key] = Path(path)
    return sort_runs(runs.values())


def _as_percent(metric_key: str, value: float, fraction: bool = False) -> float:
    """A score as the tables show it: fractions (``fraction``, or by name) as percentages."""
    return value * 100 if fraction or is_fraction(metric_key.partition("/")[2]) else value


def sort_runs(runs: Iterable[RunResult]) -> list[RunResult]:
    def order(run: RunResult):
        method_rank = METHOD_ORDER.index(run.method) if run.method in METHOD_ORDER else 99
        return (run.backbone, method_rank, run.method, run.data, run.name)

    return sorted(runs, key=order)


def _metric_rank(metric: str) -> tuple[int, str]:
    return (METRIC_ORDER.index(metric) if metric in METRIC_ORDER else len(METRIC_ORDER), metric)


def metric_columns(runs: Sequence[RunResult]) -> list[Column]:
    """One column per (task, metric) present in any run, in family/task/metric order."""
    present = {key for run in runs for key in run.scores}
    mm_tasks = {name: task for run in runs for name, task in run.mm_tasks.items()}
    columns = []
    for key in present:
        task, _, metric = key.partition("/")
        family, short = TASK_FAMILY.get(task, ("Other", task))
        if task in mm_tasks:
            family = MM_FAMILY[mm_tasks[task]]
            short = task.removeprefix(mm_tasks[task]).removeprefix("_")
        if short and metric == HEADLINE_METRIC.get(task):
            label = short
        else:
            label = f"{short} {metric}" if short else metric
        columns.append(Column(family, label.replace(",", " "), task, metric))

    def order(column: Column):
        task_rank = TASK_ORDER.index(column.task) if column.task in TASK_ORDER else len(TASK_ORDER)
        return (
            FAMILY_ORDER.index(column.family),
            task_rank,
            column.task,
            _metric_rank(column.metric),
        )

    return sorted(columns, key=order)


def round_score(value: float) -> float:
    """One decimal, halves rounded up as a reader expects (6.25 -> 6.3, not Python's 6.2)."""
    return float(Decimal(repr(value)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def _mean(values: Sequence[float | None]) -> float | None:
    if any(v is None for v in values):
        return None
    return sum(values) / len(values)


@dataclass
class Summary:
    runs: list[RunResult]
    columns: list[Column]
    values: list[list[float | None]]  # per run, per column: rounded to 0.1 (None: blank)
    # Standard errors in points, like `values` (a delta's: both scores' combined); None
    # where lm-eval reported none.
    errors: list[list[float | None]] = field(default_factory=list)
    chance: list[float | None] = field(default_factory=list)  # per column, in percent
    # (run, column) of deltas smaller than twice their combined standard error
    indistinct: set[tuple[int, int]] = field(default_factory=set)

    def has_errors(self, column: int) -> bool:
        return any(row[column] is not None for row in self.errors)

    def families(self) -> list[str]:
        return list(dict.fromkeys(column.family for column in self.columns))

    def column_index(self, key: str) -> int:
        return [c.key for c in self.columns].index(key)


def _combined(errors: Sequence[float | None]) -> float | None:
    """sqrt of the summed squares: the standard error of a sum of independent scores."""
    if not errors or any(e is None for e in errors):
        return None
    return math.sqrt(sum(e * e for e in errors))


def build_summary(runs: Sequence[RunResult]) -> Summary:
    """The table: metric columns, the ETHICS mean, and the vs-base delta columns.

    Scores are rounded to one decimal; a delta is the difference of the rounded scores
    shown in the table (so a reader can check it), the ETHICS mean is the mean of the
    five unrounded subset scores, then rounded. Standard errors come from lm-eval; the
    ETHICS mean's is that of a mean of five independent subsets, a delta's combines the
    run's and the base model's, and a delta smaller than twice that is `indistinct`.
    """
    runs = sort_runs(runs)
    columns = metric_columns(runs)
    keys = [f"{c.task}/{c.metric}" for c in columns]
    raw = [[run.scores.get(k) for k in keys] for run in runs]
    raw_errors = [[run.stderrs.get(k) for k in keys] for run in runs]
    chance = [
        next((run.chance[k] for run in runs if run.chance.get(k) is not None), None) for k in keys
    ]

    ethics_keys = [f"{task}/acc" for task in ETHICS_TASKS]
    ethics_means = [_mean([run.scores.get(k) for k in ethics_keys]) for run in runs]
    if any(mean is not None for mean in ethics_means):
        last_ethics = max(i for i, c in enumerate(columns) if c.family == "ETHICS")
        columns.insert(last_ethics + 1, Column("ETHICS", "mean"))
        chance.insert(last_ethics + 1, 50.0)
        for run, row, errors, mean in zip(runs, raw, raw_errors, ethics_means, strict=True):
            row.insert(last_ethics + 1, mean)
            subset = _combined([run.stderrs.get(k) for k in ethics_keys])
            errors.insert(last_ethics + 1, None if subset is None else subset / 5)
    values = [[None if v is None else round_score(v) for v in row] for row in raw]

    deltas = []
    names = [c.key for c in columns]
    truthful = next((k for k in ("TruthfulQA mc2", "TruthfulQA mc1") if k in names), None)
    for source in (truthful, "ETHICS mean" if "ETHICS mean" in names else None):
        if source is not None:
            deltas.append(source)
    indistinct_rows: dict[str, set[int]] = {}
    for source in deltas:
        index = [c.key for c in columns].index(source)
        column = columns[index]
        delta_column = Column(column.family, f"{column.label} vs base", delta_of=source)
        base_of = {
            run.backbone: (row[index], errors[index])
            for run, row, errors in zip(runs, values, raw_errors, strict=True)
            if run.method == "base"
        }
        for n, (run, row, errors) in enumerate(zip(runs, values, raw_errors, strict=True)):
            base, base_error = base_of.get(run.backbone, (None, None))
            own = row[index]
            if run.method == "base" or base is None or own is None:
                row.insert(index + 1, None)
                errors.insert(index + 1, None)
                continue
            delta = round_score(own - base)
            combined = _combined([errors[index], base_error])
            row.insert(index + 1, delta)
            errors.insert(index + 1, combined)
            if combined is not None and abs(delta) < 2 * combined:
                indistinct_rows.setdefault(delta_column.key, set()).add(n)
        columns.insert(index + 1, delta_column)
        chance.insert(index + 1, None)
    errors = [[None if e is None else round_score(e) for e in row] for row in raw_errors]
    column_index = {c.key: i for i, c in enumerate(columns)}
    indistinct = {(n, column_index[key]) for key, rows in indistinct_rows.items() for n in rows}
    return Summary(runs, columns, values, errors, chance, indistinct)
