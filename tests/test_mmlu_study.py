"""mmlu_study: the study's MMLU script, as an lm-eval task, against the study's own code.

The golden files were written by scripts/golden/make_mmlu_golden.py, which executes the
study's evaluate_mmlu.py / mmlu_modeling.py (transformers 4.31, slow LlamaTokenizer,
pandas 2.0) on the demo MMLU files. Here src/sbt/evaluate.py (lm-eval 0.4, transformers 5)
must give the same accuracy and, question by question, the same prompt (hash and token
count), the same number of shots kept and the same generated text. Two models:

- tests/golden/mmlu_model: trained a few steps to answer with letters (accuracy 0.23);
- tests/golden/eval_model: the shared evaluation fixture, which answers with words
  (e.g. "Does" counts as correct for answer D: the study's `startswith` rule). When it is
  rebuilt, rerun make_mmlu_golden.py with --model tests/golden/eval_model --output
  tests/golden/mmlu_study_eval_model.json (the fixture hashes below catch a stale golden).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import sbt.evaluate as evaluate_cli
from sbt.common import InputError
from sbt.mmlu_study import (
    CHOICES,
    format_subject,
    gen_prompt,
    is_correct,
    load_mmlu,
    study_model_args,
)

ROOT = Path(__file__).resolve().parent.parent
MMLU = ROOT / "resources" / "demo" / "benchmarks" / "mmlu"
GOLDEN = ROOT / "tests" / "golden"
CASES = {
    "mmlu_model": GOLDEN / "mmlu_study.json",
    "eval_model": GOLDEN / "mmlu_study_eval_model.json",
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    """(golden document, our result JSON, our samples) for one model; batch size 4."""
    golden = json.loads(CASES[request.param].read_text())
    for name, digest in golden["fixtures"].items():  # the golden is about these very files
        assert sha256(ROOT / name) == digest, f"{name} changed: rerun make_mmlu_golden.py"
    out = tmp_path_factory.mktemp(f"mmlu-{request.param}")
    code = evaluate_cli.main(
        [
            "--model",
            str(GOLDEN / request.param),
            "--task",
            "mmlu_study",
            "--num-fewshot",
            "5",
            "--data-dir",
            str(MMLU),
            "--dtype",
            "float32",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--output",
            str(out / "result.json"),
            "--log-samples",
            str(out / "samples.jsonl"),
        ]
    )
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return golden, result, sorted(samples, key=lambda s: s["doc_id"])


def test_accuracy_is_the_studys(case):
    golden, result, _ = case
    assert golden["versions"]["transformers"] == "4.31.0"
    assert golden["tokenizer_class"] == "LlamaTokenizer"  # the slow SentencePiece one
    assert result["metrics"]["mmlu_study/acc"] == pytest.approx(golden["accuracy"], abs=1e-12)
    assert result["n_samples"]["mmlu_study"]["effective"] == golden["n_questions"] == 30
    assert result["provenance"]["lm_eval_task_sources"] == {
        "mmlu_study": "src/sbt/lmeval_tasks_study/mmlu_study.yaml"
    }


def test_every_question_is_the_studys(case):
    golden, result, samples = case
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(result["config"]["model"])
    assert len(samples) == len(golden["questions"])
    for sample, expected in zip(samples, golden["questions"], strict=True):
        doc = sample["doc"]
        where = f"{expected['subject']} #{expected['index']}"
        assert (doc["subject"], doc["index"], doc["answer"]) == (
            expected["subject"],
            expected["index"],
            expected["answer"],
        ), where
        prompt = sample["arguments"][0][0]
        assert hashlib.sha256(prompt.encode()).hexdigest() == expected["prompt_sha256"], where
        assert len(tokenizer(prompt).input_ids) == expected["prompt_tokens"], where
        assert sample["resps"][0][0] == expected["generated"], where
        assert sample["acc"] == float(expected["correct"]), where
        assert sample["shots"] == expected["shots"], where


def test_the_golden_is_not_degenerate():
    golden = json.loads(CASES["mmlu_model"].read_text())
    questions = golden["questions"]
    assert 0 < golden["accuracy"] < 1
    assert len({q["generated"] for q in questions}) >= 3  # not one answer for everything
    assert {q["shots"] for q in questions} > {5}  # the 2048-token rule dropped shots
    assert max(q["prompt_tokens"] for q in questions) <= 2048


def test_prompt_format_and_pandas_cells():
    test, dev = load_mmlu(MMLU)
    assert [d["subject"] for d in test][:: len(test) // 3] == [
        "abstract_algebra",
        "high_school_european_history",
        "high_school_geography",
    ]
    assert format_subject("abstract_algebra") == " abstract algebra"
    prompt = gen_prompt(dev["abstract_algebra"], "abstract_algebra", 1)
    assert prompt.startswith(
        "The following are multiple choice questions (with answers) about  abstract algebra.\n\n"
        "Find the order of the group Z_4.\nA. "
    )
    assert prompt.endswith("\nAnswer: " + dev["abstract_algebra"][0]["answer"] + "\n\n")
    # A "None" cell makes pandas read its column as floats: the study printed 8.0 and nan.
    column_b = [row["choices"][1] for row in dev["abstract_algebra"]]
    assert "nan" in column_b and all(c == "nan" or c.endswith(".0") for c in column_b)
    assert all(row["answer"] in CHOICES for row in test)


def test_scoring_rule_is_startswith():
    assert is_correct(" B\n", "B") and is_correct("Ann", "A") and not is_correct("(A", "A")


def test_model_args_keep_bos_and_the_whole_prompt():
    args = study_model_args({"pretrained": "m", "add_bos_token": False})
    assert args["add_bos_token"] is True and args["max_length"] == 2050


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "mmlu_study"], "give --data-dir"),
        (["--task", "mmlu_study", "--task", "boolq", "--data-dir", str(MMLU)], "runs alone"),
        (["--task", "mmlu_study", "--data-dir", str(MMLU / "dev")], "no test/ subfolder"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path, capsys, argv, message):
    code = evaluate_cli.main(
        ["--model", str(GOLDEN / "mmlu_model"), *argv, "--output", str(tmp_path / "r.json")]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "r.json").exists()


def test_a_bad_csv_row_names_file_and_row(tmp_path):
    for split in ("dev", "test"):
        (tmp_path / split).mkdir()
        (tmp_path / split / f"anatomy_{split}.csv").write_text("What is it?,a,b,c,d,E\n")
    with pytest.raises(InputError, match=r"anatomy_dev.csv: record 0: field 'answer': answer 'E'"):
        load_mmlu(tmp_path)
    # a wrong type: the question cell is a number
    (tmp_path / "test" / "anatomy_test.csv").write_text("What is it?,a,b,c,d,A\n")
    (tmp_path / "dev" / "anatomy_dev.csv").write_text("7,a,b,c,d,B\n")
    with pytest.raises(InputError, match=r"anatomy_dev.csv: record 0: field 'question'"):
        load_mmlu(tmp_path)
    # a missing field: no answer column (question and four choices only)
    (tmp_path / "dev" / "anatomy_dev.csv").write_text("What is it?,a,b,c,d,A\n")
    (tmp_path / "test" / "anatomy_test.csv").write_text("What is it?,a,b,c,d\n")
    with pytest.raises(InputError, match=r"anatomy_test.csv: record 0: field 'answer'"):
        load_mmlu(tmp_path)


# --------------------------------------------------------------------------- the workflow
@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from snakemake_run import copy_repo

    return copy_repo(tmp_path_factory.mktemp("mmlu_config"))


def dry_run(workdir, *args):
    from snakemake_run import output_of, snakemake

    return output_of(snakemake(workdir, "-n", "-p", *args, timeout=300))


@pytest.mark.workflow
@pytest.mark.parametrize(
    ("bench", "expected"),
    [
        ({"tasks": ["mmlu_study"]}, "benchmarks.bad.data_dir: mmlu_study reads data.tar's"),
        (
            {"tasks": ["mmlu_study", "boolq"], "data_dir": "resources/demo/benchmarks/mmlu"},
            "benchmarks.bad.tasks: mmlu_study runs alone in its benchmark",
        ),
        (
            {"tasks": ["mmlu_study"], "data_dir": "resources/nowhere"},
            "benchmarks.bad.data_dir: 'resources/nowhere' has no test/ folder",
        ),
    ],
)
def test_bad_mmlu_study_config_is_one_line(workdir, bench, expected):
    from snakemake_run import write_config

    extra = write_config(workdir, "bad_mmlu.yaml", {"benchmarks": {"bad": bench}})
    out = dry_run(workdir, "--configfile", "config/config.yaml", extra)
    assert f"config error: {expected}" in out, out[-2000:]


@pytest.mark.workflow
def test_paper_plans_both_mmlus_and_demo_the_studys(workdir):
    paper = dry_run(workdir, "--configfile", "config/paper.yaml")
    study = [line for line in paper.splitlines() if "--task mmlu_study" in line]
    assert study and all(
        "--dtype float32" in line and "--data-dir resources/benchmarks/mmlu" in line
        for line in study
    )
    assert any("--task mmlu --num-fewshot 5" in line for line in paper.splitlines())
    assert "--mmlu-dir resources/benchmarks/mmlu" in paper  # prefetch_benchmarks unpacks it
    external = [line for line in study if "MM-LLaMA-7B-ft" in line]
    assert external and "--allow-pickle-weights" in external[0]
    demo = dry_run(workdir)
    assert "--task mmlu_study --num-fewshot 5 --data-dir resources/demo/benchmarks/mmlu" in demo
