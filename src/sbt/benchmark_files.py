"""Check local benchmark files against the fields their stock lm-eval task reads.

lm-eval itself fails late and obscurely on a bad row (a Jinja `UndefinedError` with no
file or row), or not at all: an ETHICS row without `label` is scored as wrong and only a
warning says so. So before any model is loaded, each row of each local file is validated
against a JSON Schema of its benchmark family (the fields the stock task's prompt, choices
and target use), and the first bad row stops the job with one line naming the file, the
row and the field. During evaluation, lm-eval's "label index out of range" warning is
turned into an error for the same reason (`labels_must_fit_the_choices`).

Families are found by the stock task name; tasks of other families are not checked here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from sbt.common import InputError, input_error, read_json_file

_TEXT = {"type": "string", "minLength": 1}
_BINARY = {"type": "integer", "enum": [0, 1]}
_TEXTS = {"type": "array", "items": {"type": "string"}, "minItems": 1}


def _targets() -> dict:
    return {
        "type": "object",
        "required": ["choices", "labels"],
        "properties": {"choices": _TEXTS, "labels": {"type": "array", "items": _BINARY}},
    }


def _row(**fields: dict) -> dict:
    return {"type": "object", "required": list(fields), "properties": fields}


# Family -> the schema of one row, in the dataset's own (hub) schema.
ROW_SCHEMAS: dict[str, dict] = {
    "truthfulqa_mc": _row(question=_TEXT, mc1_targets=_targets(), mc2_targets=_targets()),
    "truthfulqa_gen": _row(
        question=_TEXT, best_answer=_TEXT, correct_answers=_TEXTS, incorrect_answers=_TEXTS
    ),
    "ethics_cm": _row(input=_TEXT, label=_BINARY),
    "ethics_deontology": _row(scenario=_TEXT, excuse={"type": "string"}, label=_BINARY),
    "ethics_justice": _row(scenario=_TEXT, label=_BINARY),
    "ethics_utilitarianism": _row(activity=_TEXT, baseline=_TEXT),
    "ethics_virtue": _row(scenario=_TEXT, trait=_TEXT, label=_BINARY),
    "boolq": _row(question=_TEXT, passage=_TEXT, label=_BINARY),
    "gsm8k": _row(question=_TEXT, answer={"type": "string", "pattern": "#### "}),
    "mathqa": _row(Problem=_TEXT, options=_TEXT, correct={"type": "string", "enum": list("abcde")}),
    "squadv2": _row(
        id=_TEXT,
        context=_TEXT,
        question=_TEXT,
        answers={
            "type": "object",
            "required": ["text", "answer_start"],
            "properties": {
                "text": {"type": "array", "items": {"type": "string"}},
                "answer_start": {"type": "array", "items": {"type": "integer"}},
            },
        },
    ),
}
_FAMILY_OF_TASK = {"truthfulqa_mc1": "truthfulqa_mc", "truthfulqa_mc2": "truthfulqa_mc"}


def family_of(task: str) -> str | None:
    """The benchmark family of a stock task name (None: not checked here)."""
    family = _FAMILY_OF_TASK.get(task, task)
    return family if family in ROW_SCHEMAS else None


def _field(error) -> str:
    """Dotted path of the offending field; for a missing one, the field that is missing."""
    path = [str(part) for part in error.absolute_path]
    if error.validator == "required":
        missing = next(name for name in error.validator_value if name not in error.instance)
        path.append(missing)
    return ".".join(path) or "(row)"


def check_rows(path: str | Path, family: str) -> int:
    """Validate every row of one local file; return the number of rows."""
    import jsonschema

    rows = read_json_file(path)
    if not isinstance(rows, list):
        rows = [rows]
    validator = jsonschema.Draft202012Validator(ROW_SCHEMAS[family])
    for index, row in enumerate(rows):
        errors = sorted(validator.iter_errors(row), key=lambda e: [str(p) for p in e.absolute_path])
        error = errors[0] if errors else None  # the first, in field order
        if error is not None:
            message = "missing" if error.validator == "required" else error.message
            raise input_error(path, f"{message} ({family} row)", index=index, field=_field(error))
    return len(rows)


def check_benchmark_files(tasks: Iterable[tuple[str, Mapping[str, Path]]]) -> None:
    """(task name, {split: file}) pairs: every file of a known family, row by row."""
    checked: set[tuple[str, Path]] = set()
    for task, files in tasks:
        family = family_of(task)
        for path in files.values() if family else ():
            if (family, Path(path)) not in checked:
                check_rows(path, family)
                checked.add((family, Path(path)))


# Accuracy of a model that picks uniformly among each document's choices, where the
# benchmark's choices are fixed (fractions); TruthfulQA's depend on the file's rows.
CONSTANT_CHANCE = {
    **{f"ethics_{s}": 0.5 for s in ("cm", "deontology", "justice", "utilitarianism", "virtue")},
    "boolq": 0.5,
    "mmlu": 0.25,
}


def chance_level(metric_key: str, data_files: Mapping[str, str | Path]) -> float | None:
    """Chance level of `"<task>/acc"` as a fraction, or None where none is defined or the
    rows it depends on are not at hand (a benchmark read from the hub cache)."""
    task, _, metric = metric_key.partition("/")
    if metric != "acc":
        return None
    if task in CONSTANT_CHANCE:
        return CONSTANT_CHANCE[task]
    if task not in ("truthfulqa_mc1", "truthfulqa_mc2") or len(data_files) != 1:
        return None
    (path,) = data_files.values()
    try:
        rows = read_json_file(path)
    except InputError:
        return None
    targets = [row.get(f"mc{task[-1]}_targets") or {} for row in rows if isinstance(row, dict)]
    if not targets or not all(t.get("labels") for t in targets):
        return None
    if task == "truthfulqa_mc1":  # one true answer among the choices
        per_doc = [1 / len(t["labels"]) for t in targets]
    else:  # mc2: the probability mass on the true answers, uniform over the choices
        per_doc = [sum(t["labels"]) / len(t["labels"]) for t in targets]
    return sum(per_doc) / len(per_doc)


class _LabelErrors(logging.Handler):
    """Remembers lm-eval's warning about a gold label outside a document's choices."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.first is None and message.startswith("Label index was not in within range"):
            self.first = " ".join(message.split())[:300]


@contextlib.contextmanager
def labels_must_fit_the_choices(what: str) -> Iterator[None]:
    """Fail (after lm-eval returns) where lm-eval only warned that a label is out of range:
    such a document is scored as wrong, which would put a silently wrong number in the
    tables."""
    handler = _LabelErrors()
    task_logger = logging.getLogger("lm_eval.api.task")
    task_logger.addHandler(handler)
    try:
        yield
    finally:
        task_logger.removeHandler(handler)
    if handler.first:
        raise InputError(f"{what}: a document's label is not one of its choices: {handler.first}")
