"""The study mode of evaluate.py reproduces the study's harness (lm-eval v0.3, b011af9).

tests/golden/eval_v03.json holds what that harness (`hf-causal-experimental`, the study's
num_fewshot) reported for the tiny model tests/golden/eval_model/ on the small benchmark
files tests/golden/benchmarks/ (made by scripts/golden/make_eval_golden.py in the study's
stack; nothing here needs that stack, a network or the harness). Here src/sbt/evaluate.py
(real lm-eval 0.4.13, real model and tokenizer) runs the same tasks in the study mode:
loglikelihood metrics must agree to 1e-4, generation metrics exactly, and every generation
prompt (few-shot draw included) and answer must be the harness's. With lm-eval 0.4's own
settings (BOS added, stock tasks, 0.4's few-shot draw) the numbers differ.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

import sbt.evaluate as evaluate_cli

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
MODEL = GOLDEN / "eval_model"
BENCHMARKS = GOLDEN / "benchmarks"
STUDY = ["--add-bos-token", "false", "--task-config", "study", "--fewshot-sampler", "v0.3"]
STUDY += ["--dtype", "checkpoint"]
LM_EVAL = ["--add-bos-token", "default", "--task-config", "lm_eval"]
LM_EVAL += ["--fewshot-sampler", "lm_eval", "--dtype", "float32"]

# benchmark -> (evaluate.py tasks, num_fewshot, batch size, data files); batch sizes as in
# the golden runs (generation with 1: v0.3 and 0.4 pad generation batches differently).
BENCHES = {
    "truthfulqa_mc": (["truthfulqa_mc1", "truthfulqa_mc2"], 0, 8, {"validation": "truthfulqa_mc"}),
    "ethics_cm": (["ethics_cm"], 0, 8, {"test": "ethics_cm"}),
    "ethics_justice": (["ethics_justice"], 0, 8, {"test": "ethics_justice"}),
    "ethics_virtue": (["ethics_virtue"], 0, 8, {"test": "ethics_virtue"}),
    "truthfulqa_gen": (["truthfulqa_gen"], 0, 1, {"validation": "truthfulqa_gen"}),
    "gsm8k": (["gsm8k"], 8, 1, {"train": "gsm8k_train", "test": "gsm8k_test"}),
}
GENERATION = {"truthfulqa_gen", "gsm8k"}


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((GOLDEN / "eval_v03.json").read_text(encoding="utf-8"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_golden_inputs_are_the_committed_files(golden):
    """The golden numbers belong to exactly these model and benchmark files."""
    for name, digest in golden["fixture"]["sha256"].items():
        assert _sha256(MODEL / name) == digest, name
    for name, digest in golden["benchmarks"]["sha256"].items():
        assert _sha256(BENCHMARKS / name) == digest, name
    assert golden["harness_commit"] == "b011af9"
    assert json.loads((MODEL / "config.json").read_text())["torch_dtype"] == "float32"


def test_golden_numbers_are_not_degenerate(golden):
    values = golden["expected"]
    assert len(set(values.values())) > len(values) // 2
    for key in ("gsm8k/acc", "ethics_justice/em", "ethics_virtue/em", "truthfulqa_gen/bleu_acc"):
        assert 0 < values[key] < 1, key


def _evaluate(tmp: Path, bench: str, mode: list[str]) -> tuple[dict, list[dict]]:
    tasks, shots, batch_size, files = BENCHES[bench]
    output, samples = tmp / f"{bench}.json", tmp / f"{bench}.samples.jsonl"
    argv = ["--model", str(MODEL), "--output", str(output), "--device", "cpu"]
    for task in tasks:
        argv += ["--task", task]
    argv += ["--num-fewshot", str(shots), "--batch-size", str(batch_size)]
    argv += ["--data-files", *(f"{s}={BENCHMARKS / f}.jsonl" for s, f in files.items())]
    argv += ["--log-samples", str(samples), *mode]
    assert evaluate_cli.main(argv) == 0
    records = [json.loads(line) for line in samples.read_text().splitlines() if line]
    return json.loads(output.read_text()), records


@pytest.fixture(scope="module")
def study_runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("golden-study")
    return {bench: _evaluate(tmp, bench, STUDY) for bench in BENCHES}


def _expected_for(golden: dict, bench: str) -> dict[str, float]:
    tasks = BENCHES[bench][0]
    return {k: v for k, v in golden["expected"].items() if k.partition("/")[0] in tasks}


@pytest.mark.parametrize("bench", list(BENCHES))
def test_study_mode_gives_the_harness_numbers(golden, study_runs, bench):
    document, _ = study_runs[bench]
    expected = _expected_for(golden, bench)
    assert expected, bench
    metrics = document["metrics"]
    assert set(expected) <= set(metrics), sorted(set(expected) - set(metrics))
    for key, value in expected.items():
        if bench in GENERATION:  # exact: the same generations, the same scoring code
            assert metrics[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
        else:
            assert math.isclose(metrics[key], value, abs_tol=1e-4), (key, metrics[key], value)
    assert document["config"]["dtype"] == "float32"  # the checkpoint's torch_dtype
    assert document["config"]["task_config"] == "study"


@pytest.mark.parametrize("bench", sorted(GENERATION))
def test_study_mode_prompts_and_generations_are_the_harness_ones(golden, study_runs, bench):
    """Every prompt (few-shot examples and their order included) and every answer."""
    tasks = BENCHES[bench][0]
    run = next(r for r in golden["runs"] if r["tasks"] == [t.removesuffix("1") for t in tasks])
    want = {g["context"]: g["response"] for g in run["generations"]}
    _, records = study_runs[bench]
    got = {r["arguments"][0][0]: r["resps"][0][0] for r in records}
    assert len(want) == len(records)
    assert set(got) == set(want)  # the prompts
    assert got == want  # the generations


def test_lm_eval_mode_differs(golden, tmp_path):
    """The switch is real: 0.4's defaults (BOS on, stock tasks, 0.4's draw) move numbers."""
    changed = []
    for bench in ("truthfulqa_mc", "ethics_justice", "gsm8k"):
        document, records = _evaluate(tmp_path, bench, LM_EVAL)
        for key, value in _expected_for(golden, bench).items():
            got = document["metrics"].get(key)
            if got is None or not math.isclose(got, value, abs_tol=1e-4):
                changed.append(key)
        if bench == "gsm8k":  # a different few-shot draw: other prompts
            run = next(r for r in golden["runs"] if r["tasks"] == ["gsm8k"])
            want = {g["context"] for g in run["generations"]}
            assert {r["arguments"][0][0] for r in records} != want
            assert "gsm8k/acc" not in document["metrics"]  # stock metric: exact_match
    assert "truthfulqa_mc2/acc" in changed  # BOS alone changes the loglikelihoods
    assert "ethics_justice/em" in changed  # the stock task has no em
    assert "gsm8k/acc" in changed
