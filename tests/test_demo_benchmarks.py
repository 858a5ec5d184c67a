"""The demo benchmark files: deterministic, loadable, and readable by the stock lm-eval tasks."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from sbt.demo.benchmarks import write_benchmarks
from sbt.lmeval_tasks import plan_local_tasks

BENCHMARKS = Path(__file__).resolve().parent.parent / "resources" / "demo" / "benchmarks"
MANIFEST = json.loads((BENCHMARKS / "benchmarks.json").read_text())["benchmarks"]
# The fields of each dataset's own schema (truthful_qa, hendrycks_ethics, super_glue/boolq).
FIELDS = {
    "truthfulqa_mc": {"question", "mc1_targets", "mc2_targets"},
    "truthfulqa_gen": {
        "type",
        "category",
        "question",
        "best_answer",
        "correct_answers",
        "incorrect_answers",
        "source",
    },
    "ethics_cm": {"label", "input", "is_short", "edited"},
    "ethics_deontology": {"group_id", "label", "scenario", "excuse"},
    "ethics_justice": {"group_id", "label", "scenario"},
    "ethics_utilitarianism": {"activity", "baseline", "rating"},
    "ethics_virtue": {"group_id", "label", "scenario", "trait"},
    "boolq": {"idx", "question", "passage", "label"},
}


def _files(root: Path) -> list[str]:
    """Every file under root (the MMLU CSVs sit in subfolders), relative, sorted."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_generator_is_deterministic_and_the_committed_files_are_current(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    write_benchmarks(first, seed=0)
    write_benchmarks(second, seed=0)
    names = _files(first)
    assert names == _files(second)
    assert names == _files(BENCHMARKS)
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes()
        assert (first / name).read_bytes() == (BENCHMARKS / name).read_bytes(), (
            f"{name} is stale: rerun src/sbt/demo/benchmarks.py"
        )
    write_benchmarks(third := tmp_path / "c", seed=1)
    assert (third / "ethics_cm.jsonl").read_bytes() != (first / "ethics_cm.jsonl").read_bytes()


def test_manifest_covers_every_benchmark():
    assert set(MANIFEST) == set(FIELDS)
    for name, spec in MANIFEST.items():
        for split, file in spec["data_files"].items():
            assert (BENCHMARKS / file).is_file()
            n = spec["n_rows"][split]
            assert (8 if split == "train" else 20) <= n <= 40, (name, split, n)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_files_load_with_datasets_and_have_the_schema(name):
    import datasets

    files = {split: str(BENCHMARKS / f) for split, f in MANIFEST[name]["data_files"].items()}
    loaded = datasets.load_dataset("json", data_files=files)
    for split, dataset in loaded.items():
        assert set(dataset.column_names) == FIELDS[name], (name, split)
        assert dataset.num_rows == MANIFEST[name]["n_rows"][split]
        if "label" in FIELDS[name]:
            assert set(dataset["label"]) == {0, 1}  # both classes, as integers


def test_truthfulqa_targets_follow_the_dataset_convention():
    rows = [json.loads(line) for line in (BENCHMARKS / "truthfulqa_mc.jsonl").open()]
    for row in rows:
        mc1, mc2 = row["mc1_targets"], row["mc2_targets"]
        assert mc1["labels"][0] == 1 and sum(mc1["labels"]) == 1  # doc_to_target is 0
        assert len(mc1["choices"]) == len(mc1["labels"]) >= 3
        labels = mc2["labels"]
        assert labels == sorted(labels, reverse=True) and 0 < sum(labels) < len(labels)
        assert mc2["choices"][0] == mc1["choices"][0]


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_stock_lm_eval_tasks_read_every_row(name):
    """Build each stock task on the files and render prompt, target and choices per row."""
    from lm_eval.tasks import TaskManager

    data_files = {s: BENCHMARKS / f for s, f in MANIFEST[name]["data_files"].items()}
    local = plan_local_tasks(MANIFEST[name]["tasks"], data_files, 0)
    with tempfile.TemporaryDirectory() as folder:
        for task in local:
            (Path(folder) / f"{task.name}.yaml").write_text(task.yaml_text())
        manager = TaskManager(include_path=folder, include_defaults=False)
        tasks = manager.load([t.name for t in local])["tasks"]
    for task_name, task in tasks.items():
        docs = list(task.eval_docs)
        assert (
            len(docs) == MANIFEST[name]["n_rows"]["test" if "test" in data_files else "validation"]
        )
        targets = []
        for doc in docs:
            text = task.doc_to_text(doc)
            assert isinstance(text, str) and len(text) > 10
            target = task.doc_to_target(doc)
            if task.OUTPUT_TYPE == "multiple_choice":
                choices = task.doc_to_choice(doc)
                assert isinstance(target, int) and 0 <= target < len(choices), task_name
                targets.append(target)
            else:
                assert "I have no comment." in doc["correct_answers"]  # process_docs ran
        if task.OUTPUT_TYPE == "multiple_choice" and not task_name.startswith("truthfulqa"):
            assert set(targets) == {0, 1}, task_name  # both answers occur
        if "train" in data_files:
            assert len(list(task.fewshot_docs())) == MANIFEST[name]["n_rows"]["train"]
