"""evaluate.py: lm-eval (the library) on the demo's local benchmark files, offline.

The numbers it reports must be lm-eval's own: one test runs lm_eval.simple_evaluate
directly, with a task YAML written here by hand, and compares.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import sbt.evaluate as evaluate_cli
from sbt.common import InputError
from sbt.lmeval_tasks import metric_key, plan_local_tasks, primary_metrics, select_metrics

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "resources" / "demo" / "benchmarks"
TRUTHFULQA = BENCHMARKS / "truthfulqa_mc.jsonl"
SEED = 1234
LIMIT = 8
OUTPUT_KEYS = {
    "benchmark",
    "tasks",
    "num_fewshot",
    "metrics",
    "results",
    "versions",
    "n_shot",
    "n_samples",
    "config",
    "run",
    "provenance",
}


def run_cli(*args: str) -> int:
    return evaluate_cli.main([*map(str, args)])


@pytest.fixture(scope="module")
def lora_adapter(tmp_path_factory, tiny_backbone):
    """A PEFT LoRA adapter on the tiny backbone with random (non-zero) B matrices."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_backbone)
    model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator))
    path = tmp_path_factory.mktemp("adapters") / "lora"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def truthfulqa_result(tmp_path_factory, tiny_backbone):
    """evaluate.py on truthfulqa_mc1 + truthfulqa_mc2 (one call, one file), first 8 items."""
    output = tmp_path_factory.mktemp("eval") / "truthfulqa_mc.json"
    run_info = {"backbone": "tiny", "data": "", "method": "base"}
    code = run_cli(
        "--model", tiny_backbone,
        "--task", "truthfulqa_mc1",
        "--task", "truthfulqa_mc2",
        "--num-fewshot", "0",
        "--data-files", f"validation={TRUTHFULQA}",
        "--benchmark", "truthfulqa_mc",
        "--limit", LIMIT,
        "--device", "cpu",
        "--seed", SEED,
        "--run-info", json.dumps(run_info),
        "--output", output,
    )  # fmt: skip
    assert code == 0
    return json.loads(output.read_text())


@pytest.mark.slow
def test_truthfulqa_output_has_every_key(truthfulqa_result, tiny_backbone):
    doc = truthfulqa_result
    assert set(doc) == OUTPUT_KEYS
    assert doc["benchmark"] == "truthfulqa_mc"
    assert doc["tasks"] == ["truthfulqa_mc1", "truthfulqa_mc2"]
    assert set(doc["metrics"]) == {"truthfulqa_mc1/acc", "truthfulqa_mc2/acc"}
    for value in doc["metrics"].values():
        assert 0.0 <= value <= 1.0
    assert doc["results"]["truthfulqa_mc2"]["acc,none"] == doc["metrics"]["truthfulqa_mc2/acc"]
    assert doc["versions"] == {"truthfulqa_mc1": 2.0, "truthfulqa_mc2": 3.0}
    assert doc["n_samples"]["truthfulqa_mc1"] == {"original": 32, "effective": LIMIT}
    assert doc["run"] == {"backbone": "tiny", "data": "", "method": "base"}
    config = doc["config"]
    assert config["model"] == str(tiny_backbone) and config["adapter"] is None
    assert (config["batch_size"], config["seed"], config["limit"]) == (8, SEED, LIMIT)
    assert config["data_files"] == {"validation": str(TRUTHFULQA)}
    assert doc["provenance"]["packages"]["lm_eval"]
    assert doc["provenance"]["lm_eval_task_sources"]["truthfulqa_mc2"] == (
        "truthfulqa/truthfulqa_mc2.yaml"
    )


@pytest.mark.slow
def test_numbers_are_lm_evals_own(truthfulqa_result, tiny_backbone, tmp_path):
    """simple_evaluate called here, on a YAML written by hand, gives the same numbers."""
    import lm_eval
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    stock = Path(lm_eval.__file__).parent / "tasks" / "truthfulqa"
    for task in ("truthfulqa_mc1", "truthfulqa_mc2"):
        (tmp_path / f"{task}.yaml").write_text(
            f"include: {stock / (task + '.yaml')}\n"
            f"task: direct_{task}\n"
            "dataset_path: json\n"
            "dataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    validation: {TRUTHFULQA}\n"
        )
    results = simple_evaluate(
        model="hf",
        model_args={"pretrained": str(tiny_backbone), "dtype": "float32"},
        tasks=["direct_truthfulqa_mc1", "direct_truthfulqa_mc2"],
        num_fewshot=0,
        batch_size=8,
        device="cpu",
        limit=LIMIT,
        log_samples=False,
        task_manager=TaskManager(include_path=str(tmp_path)),
        random_seed=SEED,
        numpy_random_seed=SEED,
        torch_random_seed=SEED,
        fewshot_random_seed=SEED,
    )["results"]
    ours = truthfulqa_result["metrics"]
    assert ours["truthfulqa_mc1/acc"] == results["direct_truthfulqa_mc1"]["acc,none"]
    assert ours["truthfulqa_mc2/acc"] == results["direct_truthfulqa_mc2"]["acc,none"]


@pytest.mark.slow
def test_ethics_subset_with_few_shot_examples_from_train_split(tiny_backbone, tmp_path):
    output, samples = tmp_path / "ethics_cm.json", tmp_path / "samples.jsonl"
    code = run_cli(
        "--model", tiny_backbone,
        "--task", "ethics_cm",
        "--num-fewshot", "2",
        "--data-files", f"test={BENCHMARKS / 'ethics_cm.jsonl'}",
        f"train={BENCHMARKS / 'ethics_cm_train.jsonl'}",
        "--limit", "4",
        "--device", "cpu",
        "--log-samples", samples,
        "--output", output,
    )  # fmt: skip
    assert code == 0
    doc = json.loads(output.read_text())
    assert set(doc) == OUTPUT_KEYS
    assert list(doc["metrics"]) == ["ethics_cm/acc"]
    assert 0.0 <= doc["metrics"]["ethics_cm/acc"] <= 1.0
    assert doc["n_shot"] == {"ethics_cm": 2}
    train_inputs = [
        json.loads(line)["input"]
        for line in (BENCHMARKS / "ethics_cm_train.jsonl").read_text().splitlines()
    ]
    records = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(records) == 4
    for record in records:
        prompt = record["arguments"][0][0]  # (context, continuation) of the first choice
        assert prompt.count("Question: Is this wrong?") == 3  # two examples + the question
        assert sum(text in prompt for text in train_inputs) == 2
        assert prompt.endswith(record["doc"]["input"] + "\nQuestion: Is this wrong?\nAnswer:")


@pytest.mark.slow
def test_adapter_is_applied(truthfulqa_result, tiny_backbone, lora_adapter, tmp_path):
    output = tmp_path / "lora.json"
    code = run_cli(
        "--model", tiny_backbone,
        "--adapter", lora_adapter,
        "--task", "truthfulqa_mc2",
        "--data-files", f"validation={TRUTHFULQA}",
        "--limit", LIMIT,
        "--device", "cpu",
        "--output", output,
    )  # fmt: skip
    assert code == 0
    doc = json.loads(output.read_text())
    assert doc["config"]["adapter"] == str(lora_adapter)
    with_adapter = doc["metrics"]["truthfulqa_mc2/acc"]
    assert 0.0 <= with_adapter <= 1.0
    assert with_adapter != truthfulqa_result["metrics"]["truthfulqa_mc2/acc"]


def test_unknown_task_is_one_line_with_near_matches(tiny_backbone, tmp_path):
    output = tmp_path / "out.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sbt.evaluate",
            "--model",
            str(tiny_backbone),
            "--task",
            "truthfulqa_mc3",
        ]
        + ["--data-files", f"validation={TRUTHFULQA}", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: --task: unknown lm-eval task 'truthfulqa_mc3'")
    assert "truthfulqa_mc1" in lines[0] and "truthfulqa_mc2" in lines[0]
    assert not output.exists()


def test_missing_data_file_names_the_file(tiny_backbone, tmp_path, capsys):
    output, missing = tmp_path / "out.json", tmp_path / "absent.jsonl"
    code = run_cli(
        "--model", tiny_backbone, "--task", "ethics_cm",
        "--data-files", f"test={missing}", "--output", output,
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {missing}: benchmark data file not found (--data-files test={missing})"]
    assert not output.exists() and not list(tmp_path.glob(".out.json*"))


@pytest.mark.parametrize(
    ("tasks", "files", "shots", "message"),
    [
        (["ethics_cm"], {"validation": "ethics_cm.jsonl"}, 0, "evaluates on split 'test'"),
        (["ethics_cm"], {"test": "ethics_cm.jsonl"}, 2, "needs a split to draw examples from"),
        (
            ["truthfulqa_mc1"],
            {"validation": "truthfulqa_mc.jsonl", "train": "ethics_cm_train.jsonl"},
            0,
            "split 'train' is not read by truthfulqa_mc1",
        ),
    ],
)
def test_split_mismatches_are_input_errors(tasks, files, shots, message):
    data_files = {split: BENCHMARKS / name for split, name in files.items()}
    with pytest.raises(InputError, match=message):
        plan_local_tasks(tasks, data_files, shots)


def test_local_task_keeps_the_stock_task_and_switches_off_absent_splits():
    (task,) = plan_local_tasks(["ethics_cm"], {"test": BENCHMARKS / "ethics_cm.jsonl"}, 0)
    assert task.overrides["include"].endswith("hendrycks_ethics/commonsense.yaml")
    assert task.overrides["task"] == "ethics_cm"
    assert task.overrides["dataset_path"] == "json" and task.overrides["dataset_name"] is None
    assert task.overrides["training_split"] is None  # the stock task lists a train split
    assert task.config["doc_to_text"] == "{{input}}\nQuestion: Is this wrong?\nAnswer:"


def test_metric_selection():
    assert metric_key("acc,none") == "acc"
    assert metric_key("acc_stderr,none") is None and metric_key("alias") is None
    assert metric_key("exact_match,strict-match") == "exact_match,strict-match"
    gsm = primary_metrics(
        {
            "alias": "gsm8k",
            "exact_match,strict-match": 0.25,
            "exact_match_stderr,strict-match": 0.1,
            "exact_match,flexible-extract": 0.5,
        }
    )
    assert gsm == {"exact_match,strict-match": 0.25, "exact_match,flexible-extract": 0.5}
    assert select_metrics("gsm8k", gsm, ["exact_match"]) == gsm
    assert select_metrics("gsm8k", gsm, ["exact_match,flexible-extract"]) == {
        "exact_match,flexible-extract": 0.5
    }
    assert primary_metrics({"acc,none": float("nan")}) == {"acc": None}
    with pytest.raises(InputError, match="reports no metric 'f1'"):
        select_metrics("boolq", {"acc": 0.5}, ["f1"])
