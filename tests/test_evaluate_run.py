"""evaluate_run.py: every benchmark of a run in one process (`evaluation.group: run`).

The same documents as evaluate.py one benchmark at a time; lm-eval's request cache answers
every unchanged request on a rerun, which the model's own methods (counted here, below
lm-eval's cache) never see; a bad benchmark fails alone, also when the shared lm-eval call
is what failed. collect_result.py turns records into result JSONs, or into one failure.
"""

from __future__ import annotations

import contextlib
import json
from argparse import Namespace
from collections import Counter
from pathlib import Path

import pytest

import sbt.evaluate as evaluate_cli
from sbt import collect_result, evaluate_run
from sbt.common import InputError
from sbt.eval_cost import TASK_COST, BenchmarkCost, RunCost, gpu_seconds, summary, tokens
from sbt.lmeval_bench import Benchmark
from sbt.lmeval_run import plan_calls

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "resources" / "demo" / "benchmarks"
STUDY = ["--add-bos-token", "false", "--task-config", "study", "--fewshot-sampler", "v0.3"]
COMMON = ["--device", "cpu", "--batch-size", "8", "--seed", "1234", "--dtype", "checkpoint"]
BENCHES = {
    "truthfulqa_mc": ["--task", "truthfulqa_mc1", "--task", "truthfulqa_mc2"]
    + ["--data-files", f"validation={DEMO / 'truthfulqa_mc.jsonl'}", "--metrics", "acc"],
    "ethics_cm": ["--task", "ethics_cm", "--num-fewshot", "1", "--data-files"]
    + [f"test={DEMO / 'ethics_cm.jsonl'}", f"train={DEMO / 'ethics_cm_train.jsonl'}"],
    "ethics_justice": ["--task", "ethics_justice", "--metrics", "acc", "em"]
    + ["--data-files", f"test={DEMO / 'ethics_justice.jsonl'}"],
    "mmlu_study": ["--task", "mmlu_study", "--num-fewshot", "5", "--data-dir", str(DEMO / "mmlu")],
}
SAME = ("metrics", "results", "n_samples", "n_shot", "versions", "config", "tasks")


def bench_args(model: Path, name: str, *extra: str) -> list[str]:
    return ["--model", str(model), "--benchmark", name, *COMMON, *STUDY, *BENCHES[name], *extra]


def run_all(model: Path, records: Path, cache: Path | None = None, **edits: list[str]) -> dict:
    argv = ["--records", str(records)] + (["--cache-dir", str(cache)] if cache else [])
    for name in BENCHES:
        argv += ["--each", *bench_args(model, name, *edits.get(name, []))]
    assert evaluate_run.main(argv) == 0
    return {name: json.loads((records / f"{name}.json").read_text()) for name in BENCHES}


@pytest.fixture(scope="module")
def first(tiny_backbone, tmp_path_factory):
    """Every benchmark in one process, the request cache filled on the way."""
    tmp = tmp_path_factory.mktemp("run")
    return tmp, run_all(tiny_backbone, tmp / "records", tmp / "cache")


class ModelCalls:
    """What reaches lm-eval's `hf` model itself, below its request cache."""

    def __init__(self, monkeypatch) -> None:
        from lm_eval.models.huggingface import HFLM

        self.loads = 0
        self.requests: Counter[str] = Counter()
        init, loglikelihood, generate = HFLM.__init__, HFLM.loglikelihood, HFLM.generate_until

        def counted_init(model, *args, **kwargs):
            self.loads += 1
            init(model, *args, **kwargs)

        def counted(kind, method):
            def wrapper(model, requests, *args, **kwargs):
                self.requests.update(f"{kind}:{req.task_name}" for req in requests)
                return method(model, requests, *args, **kwargs)

            return wrapper

        monkeypatch.setattr(HFLM, "__init__", counted_init)
        monkeypatch.setattr(HFLM, "loglikelihood", counted("loglikelihood", loglikelihood))
        monkeypatch.setattr(HFLM, "generate_until", counted("generate_until", generate))


@pytest.mark.slow
def test_one_process_gives_every_benchmark_the_document_evaluate_py_writes(
    first, tiny_backbone, tmp_path
):
    _, records = first
    for name, record in records.items():
        assert record["status"] == "ok" and record["error"] is None, record
        output = tmp_path / f"{name}.json"
        assert evaluate_cli.main([*bench_args(tiny_backbone, name), "--output", str(output)]) == 0
        alone = json.loads(output.read_text())
        for key in SAME:
            assert record["result"][key] == alone[key], (name, key)
        assert record["log"] and all(
            line.startswith(f"[evaluate] {name}: ") for line in record["log"]
        )
    evaluation = {name: r["result"]["provenance"]["evaluation"] for name, r in records.items()}
    # One lm-eval call for the three that share a model setting, mmlu_study on its own
    # (BOS and max_length of the study's MMLU script): two models loaded in all.
    assert evaluation["ethics_cm"]["call"] == ["truthfulqa_mc", "ethics_cm", "ethics_justice"]
    assert evaluation["mmlu_study"]["call"] == ["mmlu_study"]
    assert {e["model_loads"] for e in evaluation.values()} == {1}
    for e in evaluation.values():
        assert e["unit"] == "run" and e["requests"]["model"] == e["requests"]["total"] > 0


@pytest.mark.slow
def test_a_rerun_asks_the_model_only_for_the_changed_benchmark(
    first, tiny_backbone, tmp_path, monkeypatch
):
    tmp, before = first
    calls = ModelCalls(monkeypatch)
    # ethics_cm with 2 examples per prompt instead of 1: only its prompts are new.
    after = run_all(
        tiny_backbone, tmp_path / "records", tmp / "cache", ethics_cm=["--num-fewshot", "2"]
    )
    changed = after["ethics_cm"]["result"]
    assert changed["n_shot"] == {"ethics_cm": 2}
    n_requests = changed["provenance"]["evaluation"]["requests"]["total"]
    assert calls.requests == {"loglikelihood:ethics_cm": n_requests}  # nothing else ran
    assert calls.loads == 1  # mmlu_study's model setting was never loaded
    for name in ("truthfulqa_mc", "ethics_justice", "mmlu_study"):
        assert after[name]["result"]["metrics"] == before[name]["result"]["metrics"], name
        requests = after[name]["result"]["provenance"]["evaluation"]["requests"]
        assert requests["model"] == 0 and requests["from_cache"] == requests["total"] > 0
    # The same edit again: every request is in the cache, no model is loaded at all.
    calls.requests.clear()
    again = run_all(
        tiny_backbone, tmp_path / "again", tmp / "cache", ethics_cm=["--num-fewshot", "2"]
    )
    assert calls.loads == 1 and not calls.requests
    assert again["ethics_cm"]["result"]["metrics"] == changed["metrics"]


@pytest.mark.slow
def test_a_bad_file_fails_its_benchmark_alone_and_collect_fails_only_it(
    first, tiny_backbone, tmp_path, capsys
):
    _, good = first
    broken = tmp_path / "ethics_justice.jsonl"
    broken.write_text('{"label": 1, "scenario": "cut off mid-rec\n')
    records = run_all(
        tiny_backbone,
        tmp_path / "records",
        ethics_justice=["--data-files", f"test={broken}"],  # the later option wins
    )
    bad = records["ethics_justice"]
    assert bad["status"] == "error" and bad["result"] is None
    assert bad["error"].startswith(f"{broken}: invalid JSON on line 1")
    for name in ("truthfulqa_mc", "ethics_cm", "mmlu_study"):
        assert records[name]["result"]["metrics"] == good[name]["result"]["metrics"]
    capsys.readouterr()

    record = tmp_path / "records" / "ethics_justice.json"
    output = tmp_path / "eval" / "ethics_justice.json"
    assert collect_result.main(["--record", str(record), "--output", str(output)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"error: ethics_justice: {bad['error']}"
    assert not output.exists() and not record.exists()  # the next snakemake run redoes it
    assert collect_result.main(["--record", str(record), "--output", str(output)]) == 1  # a retry
    ok = tmp_path / "records" / "ethics_cm.json"
    assert collect_result.main(["--record", str(ok), "--output", str(output)]) == 0
    assert json.loads(output.read_text()) == records["ethics_cm"]["result"]


@pytest.mark.slow
def test_a_shared_call_that_fails_is_redone_one_benchmark_at_a_time(
    first, tiny_backbone, tmp_path, monkeypatch
):
    """lm-eval's label warning comes after the shared call: the blame must land on the one
    benchmark it is about, and the retries are answered from the cache."""
    import sbt.benchmark_files

    tmp, good = first

    @contextlib.contextmanager
    def labels_must_fit_the_choices(what):
        yield
        if "ethics_justice" in what.split(", "):
            raise InputError(f"{what}: a document's label is not one of its choices")

    monkeypatch.setattr(
        sbt.benchmark_files, "labels_must_fit_the_choices", labels_must_fit_the_choices
    )
    records = run_all(tiny_backbone, tmp_path / "records", tmp / "cache")
    assert records["ethics_justice"]["error"].startswith("ethics_justice: a document's label")
    for name in ("truthfulqa_mc", "ethics_cm"):
        result = records[name]["result"]
        assert result["metrics"] == good[name]["result"]["metrics"]
        assert result["provenance"]["evaluation"]["call"] == [name]
        assert result["provenance"]["evaluation"]["requests"]["model"] == 0


def _bench(name: str, tasks: list[str], **args) -> Benchmark:
    defaults = {"limit": None, "seed": 1234, "bootstrap_iters": 1000, "batch_size": 8}
    return Benchmark(
        args=Namespace(**(defaults | args)),
        name=name,
        tasks=tasks,
        run_info={},
        data_files={},
        local_tasks=None,
        sources={},
        mmlu_study=False,
        device="cpu",
        started=0.0,
        model_args={"pretrained": "m", "dtype": "float32"},
    )


def test_calls_share_settings_and_never_a_task_name():
    a, b = _bench("a", ["boolq"]), _bench("b", ["boolq"])  # the same task: two calls
    c, d = _bench("c", ["mathqa"]), _bench("d", ["gsm8k"], limit=5)  # another limit: its own
    assert [[x.name for x in call] for call in plan_calls([a, b, c, d])] == [
        ["a", "c"],
        ["b"],
        ["d"],
    ]


def test_cost_estimate_from_the_request_table():
    mmlu = TASK_COST["mmlu"]
    prompt, generated, unknown = tokens(BenchmarkCost(["mmlu"], limit=10))
    assert prompt == 10 * mmlu.subtasks * mmlu.per_doc * mmlu.prompt and generated == 0
    assert tokens(BenchmarkCost(["not_a_task"]))[2] == ["not_a_task"]
    run = RunCost(7, 1, 2, [BenchmarkCost(["boolq"])], "bfloat16")
    boolq = TASK_COST["boolq"]
    expected = 2 * (10 + 15 * 7) + boolq.docs * boolq.per_doc * boolq.prompt / 5000
    assert gpu_seconds(run) == pytest.approx(expected)
    line = summary([run, run], group="run", loads_per_run=2)
    assert line.startswith("Evaluation estimate: 2 evaluation jobs (+2 local result steps),")
    assert "4 model loads" in line and "group: benchmark: 2 jobs, 2 loads" in line
    assert "GPU-hours" in line
