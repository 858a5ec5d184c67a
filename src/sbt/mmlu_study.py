"""MMLU the way the study scored it, as an lm-eval task (`mmlu_study`).

The study did not run lm-eval's MMLU. Its `eval_scripts/eval_mmlu.sh` runs
`llava/eval/mmlu/evaluate_mmlu.py` (adapted from hendrycks/test's `evaluate_flan.py`) on the
original `data.tar` CSV files. This module does the same inside lm-eval 0.4, so the rest of
the workflow (result JSON, samples, tables) stays one path:

- data: `{data_dir}/test/{subject}_test.csv` (subjects: the sorted file names) and
  `{data_dir}/dev/{subject}_dev.csv`, header-less CSV (question, choices..., answer), read
  with `pandas.read_csv(path, header=None)` as the study did, so cells keep pandas' type
  inference (a numeric choice column prints as `2` or `2.0`, a `None` or `NA` cell as
  `nan`);
- prompt: "The following are multiple choice questions (with answers) about {subject}.\\n\\n",
  where subject is " " + each word of the file name (hence two spaces after "about"), then
  the first k `dev` rows as `question\\nA. ..\\nB. ..\\nAnswer: X\\n\\n`, then the test
  question ending in `\\nAnswer:`; k starts at num_fewshot (the study's ntrain, 5) and drops
  by one while the prompt is longer than 2048 tokens (counted with the model's tokenizer,
  special tokens included, as `len(tokenizer(prompt).input_ids)`);
- answer: 2 tokens generated greedily (no stop strings but EOS), correct when
  `generated.strip().startswith(answer_letter)`;
- score: `acc`, the mean over all test questions of all subjects (a micro average, the
  study's "Avg Acc."), not the mean of per-subject accuracies.

Why a task class (`lmeval_tasks_study/task.py`, named by `lmeval_tasks_study/mmlu_study.yaml`):
the shot-dropping rule needs the model's tokenizer, and an lm-eval task never sees the
model, so neither `doc_to_text` nor a few-shot sampler can count tokens. lm-eval hands
every task the model's arguments as `metadata` (its TaskManager does; RULER sizes its
prompts the same way), so `MMLUStudy.fewshot_context` loads the tokenizer named there
(`tokenizer`, else `pretrained`) and builds the study's whole prompt itself. The model side
needs two settings, applied by `study_model_args`: BOS as the tokenizer adds it (the study
called `tokenizer(prompt)`), and a context limit of 2048 + 2 so lm-eval never
left-truncates a prompt the study kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sbt.common import input_error

TASK_NAME = "mmlu_study"
TASK_DIR = Path(__file__).resolve().parent / "lmeval_tasks_study"
TASK_YAML = TASK_DIR / f"{TASK_NAME}.yaml"
TASK_SOURCE = "src/sbt/lmeval_tasks_study/mmlu_study.yaml"  # provenance: no machine path
TASK_VERSION = 1
MAX_INPUT_TOKENS = 2048  # evaluate_mmlu.py: select_model(max_input_length=2048, ...)
MAX_NEW_TOKENS = 2  # ... max_output_length=2
NTRAIN = 5  # evaluate_mmlu.py main(ntrain=5)
CHOICES = ("A", "B", "C", "D")
HEADER = "The following are multiple choice questions (with answers) about {}.\n\n"


# --------------------------------------------------------------------------- the prompt
def format_subject(subject: str) -> str:
    """`abstract_algebra` -> " abstract algebra" (a leading space, as in the study)."""
    return "".join(" " + word for word in subject.split("_"))


def format_example(row: Mapping[str, Any], include_answer: bool = True) -> str:
    """One question with its lettered choices, ending "Answer:" (plus " X\\n\\n" for a shot)."""
    prompt = row["question"]
    for letter, choice in zip(CHOICES, row["choices"], strict=False):
        prompt += f"\n{letter}. {choice}"
    prompt += "\nAnswer:"
    if include_answer:
        prompt += f" {row['answer']}\n\n"
    return prompt


def gen_prompt(dev_rows: Sequence[Mapping[str, Any]], subject: str, k: int) -> str:
    """The header and the first k dev rows with their answers."""
    return HEADER.format(format_subject(subject)) + "".join(
        format_example(row) for row in dev_rows[:k]
    )


def fit_prompt(
    doc: Mapping[str, Any],
    dev_rows: Sequence[Mapping[str, Any]],
    num_fewshot: int,
    count_tokens: Callable[[str], int],
    max_tokens: int = MAX_INPUT_TOKENS,
) -> tuple[str, int]:
    """The study's prompt for one test question and the number of shots it kept."""
    k = num_fewshot
    end = format_example(doc, include_answer=False)
    prompt = gen_prompt(dev_rows, doc["subject"], k) + end
    while count_tokens(prompt) > max_tokens and k > 0:
        k -= 1
        prompt = gen_prompt(dev_rows, doc["subject"], k) + end
    return prompt, k


def is_correct(generated: str, answer: str) -> bool:
    return generated.strip().startswith(answer)


# --------------------------------------------------------------------------- the files
def subjects_in(data_dir: str | Path) -> list[str]:
    """Subjects as the study listed them: every `*_test.csv` name in test/, sorted."""
    test_dir = Path(data_dir) / "test"
    if not test_dir.is_dir():
        raise input_error(test_dir, "MMLU folder has no test/ subfolder (data.tar's layout)")
    names = [name.split("_test.csv")[0] for name in os.listdir(test_dir) if "_test.csv" in name]
    if not names:
        raise input_error(test_dir, "no {subject}_test.csv files")
    return sorted(names)


def read_rows(path: Path, subject: str) -> list[dict[str, Any]]:
    """A header-less MMLU CSV as rows {subject, question, choices, answer}.

    Read with pandas exactly as the study read it; each cell is then formatted with
    `"{}".format(cell)` as the study's prompt did, so numbers and missing cells print the
    same way (`2`, `2.0`, `nan`).
    """
    import pandas as pd

    if not path.is_file():
        raise input_error(path, "MMLU file not found")
    try:
        frame = pd.read_csv(path, header=None)
    except (ValueError, pd.errors.ParserError) as exc:
        raise input_error(path, f"not a readable CSV: {exc}") from None
    n_cols = frame.shape[1]
    if not 3 <= n_cols <= 2 + len(CHOICES):
        raise input_error(path, f"expected question, 1-4 choices and answer; got {n_cols} columns")
    columns = [frame[c].tolist() for c in frame.columns]
    rows = []
    for index in range(frame.shape[0]):
        question, answer = columns[0][index], columns[-1][index]
        if not isinstance(question, str):
            raise input_error(path, f"question is {question!r}", index=index, field="question")
        if not isinstance(answer, str) or answer not in CHOICES:
            raise input_error(
                path, f"answer {answer!r} is not a letter A-D", index=index, field="answer"
            )
        choices = [f"{col[index]}" for col in columns[1:-1]]  # = "{}".format(cell)
        rows.append(
            {"subject": subject, "question": question, "choices": choices, "answer": answer}
        )
    return rows


def load_mmlu(data_dir: str | Path) -> tuple[list[dict], dict[str, list[dict]]]:
    """(test rows of every subject in the study's order, dev rows per subject)."""
    data_dir = Path(data_dir)
    test: list[dict] = []
    dev: dict[str, list[dict]] = {}
    for subject in subjects_in(data_dir):
        dev[subject] = read_rows(data_dir / "dev" / f"{subject}_dev.csv", subject)
        for index, row in enumerate(read_rows(data_dir / "test" / f"{subject}_test.csv", subject)):
            test.append({**row, "index": index})
    return test, dev


# --------------------------------------------------------------------------- the task
def load_tokenizer(metadata: Mapping[str, Any]):
    """The model's tokenizer, from the model arguments lm-eval hands every task."""
    from transformers import AutoTokenizer, PreTrainedTokenizerBase

    tokenizer = metadata.get("tokenizer") or metadata.get("pretrained")
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return tokenizer
    if not isinstance(tokenizer, str):
        raise ValueError(
            f"{TASK_NAME} counts prompt tokens with the model's tokenizer: pass its name or "
            "path as model argument `tokenizer` (or `pretrained`)"
        )
    kwargs = {"trust_remote_code": bool(metadata.get("trust_remote_code", False))}
    if metadata.get("revision"):
        kwargs["revision"] = metadata["revision"]
    if "use_fast_tokenizer" in metadata:
        kwargs["use_fast"] = bool(metadata["use_fast_tokenizer"])
    return AutoTokenizer.from_pretrained(tokenizer, **kwargs)


# --------------------------------------------------------------------------- wiring
def plan_study_task(data_dir: str | Path):
    """The `mmlu_study` task bound to a data.tar-style folder, as a LocalTask (its YAML
    `include:`s the committed one and sets only the folder)."""
    from sbt.lmeval_tasks import LocalTask

    data_dir = Path(data_dir)
    load_mmlu(data_dir)  # every file and row checked, before any model loads
    overrides = {
        "include": str(TASK_YAML),
        "task": TASK_NAME,
        "dataset_kwargs": {"data_dir": str(data_dir.resolve())},
    }
    config = {"task": TASK_NAME, "metric_list": [{"metric": "acc"}, {"metric": "shots"}]}
    return LocalTask(TASK_NAME, TASK_YAML, overrides, config)


def plan_from_cli(tasks: Sequence[str], data_dir: str | None, data_files: Mapping) -> list | None:
    """evaluate.py's `--task mmlu_study --data-dir DIR` as [LocalTask]; None for other tasks."""
    if TASK_NAME not in tasks and not data_dir:
        return None
    if list(tasks) != [TASK_NAME]:
        raise input_error(
            "--task", f"{TASK_NAME} runs alone in its benchmark (--data-dir is for it only)"
        )
    if not data_dir:
        raise input_error(
            "--data-dir", f"{TASK_NAME} reads data.tar's CSV files: give --data-dir DIR"
        )
    if data_files:
        raise input_error("--data-files", f"{TASK_NAME} takes --data-dir, not --data-files")
    return [plan_study_task(data_dir)]


def study_model_args(model_args: Mapping[str, Any]) -> dict[str, Any]:
    """The lm-eval model arguments the study's MMLU needs on top of the run's own.

    - `add_bos_token: True`: the tokenizer's own special tokens, as `tokenizer(prompt)` in
      the study (BOS for LLaMA), even where the run's other benchmarks encode without them.
    - `max_length: 2050`: lm-eval's generate_until keeps max_length - max_gen_toks context
      tokens, and a 2048-position model (LLaMA-1) would otherwise lose the first tokens of
      a prompt the study ran whole (2048 tokens fit by the rule above; RoPE extends past
      the trained length, in transformers 4.31 as today).
    """
    args = dict(model_args)
    args["add_bos_token"] = True
    args["max_length"] = MAX_INPUT_TOKENS + MAX_NEW_TOKENS
    return args
