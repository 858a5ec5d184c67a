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

from sbt.lmeval_tasks import plan_local_tasks
from sbt.prefetch_benchmarks import ETHICS_SUBSETS, main

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


# --------------------------------------------------------------------------- MMLU (data.tar)
MMLU_CSV = {
    "data/dev/anatomy_dev.csv": 'What is the largest bone?,Femur,Tibia,"Ulna, or radius",Skull,A\n',
    "data/test/anatomy_test.csv": "Which organ pumps blood?,Lung,Heart,Liver,None,B\n",
    "data/dev/virology_dev.csv": "What is a virion?,A cell,A particle,A gene,An organ,B\n",
    "data/test/virology_test.csv": "Viruses replicate in?,Host cells,Soil,Water,Air,A\n",
    "data/val/anatomy_val.csv": "Not read?,a,b,c,d,A\n",
    "data/auxiliary_train/arc_easy.csv": "Not read either?,a,b,c,d,A\n",
    "data/README.txt": "MMLU\n",
}


def make_mmlu_archive(path: Path, members: dict[str, str]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        evil = tarfile.TarInfo("../data/test/escape_test.csv")  # never written anywhere
        evil.size = 0
        tar.addfile(evil, io.BytesIO(b""))
    return path


def test_mmlu_archive_unpacks_dev_and_test_as_they_are(tmp_path):
    from sbt.mmlu_study import load_mmlu

    archive = make_mmlu_archive(tmp_path / "data.tar", MMLU_CSV)
    out = tmp_path / "mmlu"
    manifest = tmp_path / "manifest.json"
    code = main(
        ["--mmlu-dir", str(out), "--mmlu-archive", str(archive), "--manifest", str(manifest)]
    )
    assert code == 0
    assert json.loads(manifest.read_text())["mmlu"] == {"dev": 2, "test": 2}
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "dev/anatomy_dev.csv",
        "dev/virology_dev.csv",
        "test/anatomy_test.csv",
        "test/virology_test.csv",
    ]
    for name in files:
        assert (out / name).read_text() == MMLU_CSV[f"data/{name}"]
    assert not (tmp_path / "data").exists()
    test, dev = load_mmlu(out)  # what task mmlu_study reads
    assert [(d["subject"], d["answer"]) for d in test] == [("anatomy", "B"), ("virology", "A")]
    assert test[0]["choices"] == ["Lung", "Heart", "Liver", "nan"]  # pandas reads "None" as NaN
    assert dev["anatomy"][0]["choices"][2] == "Ulna, or radius"


def test_mmlu_archive_without_a_dev_file_is_one_clear_error(tmp_path, capsys):
    members = {k: v for k, v in MMLU_CSV.items() if k != "data/dev/virology_dev.csv"}
    archive = make_mmlu_archive(tmp_path / "data.tar", members)
    code = main(
        ["--mmlu-dir", str(tmp_path / "out"), "--mmlu-archive", str(archive)]
        + ["--manifest", str(tmp_path / "m.json")]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data/dev/virology_dev.csv" in err[0], err
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "out").exists()
