"""Local benchmark files are checked row by row before lm-eval sees them."""

from __future__ import annotations

import inspect
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from sbt.benchmark_files import (
    ROW_SCHEMAS,
    check_benchmark_files,
    check_rows,
    family_of,
    labels_must_fit_the_choices,
)
from sbt.common import InputError

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "resources/demo/benchmarks"

# One valid row per family, in the dataset's own schema.
GOOD = {
    "truthfulqa_mc": {
        "question": "Q?",
        "mc1_targets": {"choices": ["a", "b"], "labels": [1, 0]},
        "mc2_targets": {"choices": ["a", "b", "c"], "labels": [1, 1, 0]},
    },
    "truthfulqa_gen": {
        "question": "Q?",
        "best_answer": "A.",
        "correct_answers": ["A."],
        "incorrect_answers": ["B."],
    },
    "ethics_cm": {"input": "I helped.", "label": 0},
    "ethics_deontology": {"scenario": "Can you help?", "excuse": "No, I am busy.", "label": 1},
    "ethics_justice": {"scenario": "I deserve it because I worked.", "label": 1},
    "ethics_utilitarianism": {"activity": "I ate cake.", "baseline": "I ate bread."},
    "ethics_virtue": {"scenario": "He helped.", "trait": "kind", "label": 1},
    "boolq": {"question": "is it", "passage": "It is.", "label": 1},
    "gsm8k": {"question": "1+1?", "answer": "1+1=2\n#### 2"},
    "mathqa": {"Problem": "1+1?", "options": "a ) 1 , b ) 2", "correct": "b"},
    "squadv2": {
        "id": "x",
        "context": "C.",
        "question": "Q?",
        "answers": {"text": ["C"], "answer_start": [0]},
    },
}
# (family, how to break a good row, the field the error must name)
BROKEN = [
    ("truthfulqa_mc", lambda r: r.pop("mc2_targets"), "mc2_targets"),
    ("truthfulqa_mc", lambda r: r["mc1_targets"].update(labels=["1", "0"]), "mc1_targets.labels.0"),
    ("truthfulqa_gen", lambda r: r.pop("best_answer"), "best_answer"),
    ("truthfulqa_gen", lambda r: r.update(correct_answers="A."), "correct_answers"),
    ("ethics_cm", lambda r: r.pop("label"), "label"),
    ("ethics_cm", lambda r: r.update(input=3), "input"),
    ("ethics_deontology", lambda r: r.pop("excuse"), "excuse"),
    ("ethics_deontology", lambda r: r.update(label="1"), "label"),
    ("ethics_justice", lambda r: r.pop("scenario"), "scenario"),
    ("ethics_justice", lambda r: r.update(label=2), "label"),
    ("ethics_utilitarianism", lambda r: r.pop("baseline"), "baseline"),
    ("ethics_utilitarianism", lambda r: r.update(activity=["x"]), "activity"),
    ("ethics_virtue", lambda r: r.pop("trait"), "trait"),
    ("ethics_virtue", lambda r: r.update(label=True), "label"),
    ("boolq", lambda r: r.pop("passage"), "passage"),
    ("boolq", lambda r: r.update(label="true"), "label"),
    ("gsm8k", lambda r: r.pop("answer"), "answer"),
    ("gsm8k", lambda r: r.update(answer="2"), "answer"),  # no '#### N' line
    ("mathqa", lambda r: r.pop("options"), "options"),
    ("mathqa", lambda r: r.update(correct="f"), "correct"),
    ("squadv2", lambda r: r.pop("context"), "context"),
    ("squadv2", lambda r: r["answers"].update(answer_start=["0"]), "answers.answer_start.0"),
]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_every_family_has_a_good_row_and_broken_cases():
    assert set(GOOD) == set(ROW_SCHEMAS) == {family for family, _, _ in BROKEN}
    assert family_of("truthfulqa_mc2") == "truthfulqa_mc" and family_of("hellaswag") is None


@pytest.mark.parametrize(("family", "breaking", "field"), BROKEN)
def test_a_bad_row_is_named_with_its_file_row_and_field(tmp_path, family, breaking, field):
    bad = json.loads(json.dumps(GOOD[family]))
    breaking(bad)
    path = write_rows(tmp_path / f"{family}.jsonl", [GOOD[family], GOOD[family], bad])
    with pytest.raises(InputError) as error:
        check_rows(path, family)
    message = str(error.value)
    assert message.startswith(f"{path}: record 2: field '{field}': "), message
    assert "\n" not in message


def test_the_demo_files_pass():
    checked = 0
    for task, name in [
        ("truthfulqa_mc1", "truthfulqa_mc.jsonl"),
        ("truthfulqa_gen", "truthfulqa_gen.jsonl"),
        ("boolq", "boolq.jsonl"),
        *[(f"ethics_{s}", f"ethics_{s}.jsonl") for s in ("cm", "deontology", "justice")],
        *[(f"ethics_{s}", f"ethics_{s}.jsonl") for s in ("utilitarianism", "virtue")],
    ]:
        check_benchmark_files([(task, {"test": DEMO / name})])
        checked += 1
    assert checked == 8


def test_lm_eval_label_warning_becomes_an_error():
    import lm_eval.api.task as task_module

    # The warning text this relies on, as lm-eval writes it.
    assert "Label index was not in within range of available choices" in inspect.getsource(
        task_module
    )
    with pytest.raises(InputError, match="ethics_cm: a document's label is not one of its"):
        with labels_must_fit_the_choices("ethics_cm"):
            logging.getLogger("lm_eval.api.task").warning(
                "Label index was not in within range of available choices,Sample:\n\n{}\n\n"
            )
    with labels_must_fit_the_choices("ethics_cm"):  # other warnings pass
        logging.getLogger("lm_eval.api.task").warning("something else")


def test_evaluate_stops_before_loading_the_model(tmp_path):
    """An ETHICS file whose rows lack `label` used to score 0.0 with exit 0."""
    rows = [{"input": "I helped my friend."}, {"input": "I lied."}]
    data = write_rows(tmp_path / "ethics_cm.jsonl", rows)
    output = tmp_path / "result.json"
    (tmp_path / "model").mkdir()  # never loaded: the data fails first
    proc = subprocess.run(
        [sys.executable, "-m", "sbt.evaluate", "--model", str(tmp_path / "model"),
         "--task", "ethics_cm", "--data-files", f"test={data}", "--output", str(output)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {data}: record 0: field 'label': missing (ethics_cm row)"], (
        proc.stderr
    )
    assert not output.exists()
