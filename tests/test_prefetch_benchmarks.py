"""ETHICS from its original archive into local files the stock lm-eval tasks read.

The archive here is hand-made in the original's layout and CSV conventions (headers,
`True`/`False` flags, utilitarianism without a header, virtue's "scenario [SEP] trait");
the download itself needs network and is not exercised.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path

import pytest
from prefetch_benchmarks import ETHICS_SUBSETS, main
from sbt.lmeval_tasks import plan_local_tasks

CSV = {
    "commonsense/cm": (
        "label,input,is_short,edited\n"
        "1,I took the last cookie from my sister's plate.,True,False\n"
        '0,"I told my friend, honestly, that I liked her song.",True,True\n'
    ),
    "deontology/deontology": (
        "label,scenario,excuse\n"
        + "".join(f"{i % 2},Can you walk the dog {i}?,But it is raining {i}.\n" for i in range(8))
    ),
    "justice/justice": (
        "label,scenario\n" + "".join(f"{i % 2},I deserve a prize {i}.\n" for i in range(5))
    ),
    "utilitarianism/util": "I ate cake.,I ate nothing.\nI slept well.,I slept badly.\n",
    "virtue/virtue": (
        "label,scenario\n"
        + "".join(f"{int(i % 5 == 0)},Ann shared her lunch {i}. [SEP] kind\n" for i in range(10))
    ),
}


def make_archive(path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for stem, text in CSV.items():
            for split in ("train", "test"):
                data = text.encode()
                info = tarfile.TarInfo(f"ethics/{stem}_{split}.csv")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def ethics_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ethics")
    archive = make_archive(root / "ethics.tar")
    out = root / "out"
    code = main(
        [
            "--ethics-dir",
            str(out),
            "--ethics-archive",
            str(archive),
            "--manifest",
            str(root / "manifest.json"),
        ]
    )
    assert code == 0
    assert json.loads((root / "manifest.json").read_text())["ethics"]["ethics_cm_test.jsonl"] == 2
    return out


def test_rows_follow_the_hub_dataset_schema(ethics_dir):
    cm = read_jsonl(ethics_dir / "ethics_cm_test.jsonl")
    assert cm[0] == {
        "label": 1,
        "input": "I took the last cookie from my sister's plate.",
        "is_short": True,
        "edited": False,
    }
    assert cm[1]["input"] == "I told my friend, honestly, that I liked her song."
    deontology = read_jsonl(ethics_dir / "ethics_deontology_train.jsonl")
    assert [r["group_id"] for r in deontology] == [0, 0, 0, 0, 1, 1, 1, 1]
    util = read_jsonl(ethics_dir / "ethics_utilitarianism_test.jsonl")
    assert util[0] == {"activity": "I ate cake.", "baseline": "I ate nothing.", "rating": ""}
    virtue = read_jsonl(ethics_dir / "ethics_virtue_test.jsonl")
    assert virtue[0] == {
        "group_id": 0,
        "label": 1,
        "scenario": "Ann shared her lunch 0.",
        "trait": "kind",
    }
    assert virtue[5]["group_id"] == 1


@pytest.mark.parametrize("subset", sorted(ETHICS_SUBSETS))
def test_stock_tasks_read_the_converted_files(ethics_dir, subset):
    from lm_eval.tasks import TaskManager

    data_files = {s: ethics_dir / f"ethics_{subset}_{s}.jsonl" for s in ("train", "test")}
    local = plan_local_tasks([f"ethics_{subset}"], data_files, 0)
    with tempfile.TemporaryDirectory() as folder:
        for task in local:
            (Path(folder) / f"{task.name}.yaml").write_text(task.yaml_text())
        manager = TaskManager(include_path=folder, include_defaults=False)
        (task,) = manager.load([t.name for t in local])["tasks"].values()
    docs = list(task.eval_docs)
    assert len(docs) == len(read_jsonl(data_files["test"]))
    for doc in docs:
        assert isinstance(task.doc_to_text(doc), str)
        assert 0 <= task.doc_to_target(doc) < len(task.doc_to_choice(doc))


def test_missing_member_is_one_clear_error(tmp_path, capsys):
    archive = tmp_path / "ethics.tar"
    with tarfile.open(archive, "w"):
        pass
    code = main(
        ["--ethics-dir", str(tmp_path / "out"), "--ethics-archive", str(archive)]
        + ["--manifest", str(tmp_path / "m.json")]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ethics/commonsense/cm_train.csv" in err[0]
    assert not (tmp_path / "m.json").exists()
