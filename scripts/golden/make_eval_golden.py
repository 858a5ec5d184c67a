#!/usr/bin/env python
"""Golden evaluation numbers from the study's own harness (lm-eval v0.3, commit b011af9).

Runs that harness's evaluator (`lm_eval.evaluator.simple_evaluate`, model
`hf-causal-experimental`, `no_cache`, the study's num_fewshot per task) on the tiny model
tests/golden/eval_model/ and the small benchmark files tests/golden/benchmarks/ (each in
its dataset's own schema), and writes tests/golden/eval_v03.json: the numbers, package
versions, and the sha256 of the model and benchmark files. tests/test_golden_eval.py then
checks that src/sbt/evaluate.py (lm-eval 0.4 in the study mode) gives the same numbers.

Run it in the side environment with the study's stack (scripts/golden/side_env.sh), with
an export of the harness at b011af9 (nothing of it is copied into this project):

  git -C HARNESS_REPO archive b011af9 | tar -x -C /tmp/harness-b011af9
  .golden-venv/bin/python scripts/golden/make_eval_golden.py --harness /tmp/harness-b011af9

What this script changes in the harness, at run time only:
- each task's `download` reads the local JSON Lines files instead of the hub (the v0.3
  tasks download their datasets; ETHICS through a dataset script whose output schema the
  local files already have);
- truthfulqa_gen skips BLEURT (it needs the `bleurt` package and a model download); its
  bleurt_* metrics are left out of the golden file, the BLEU/ROUGE ones are kept;
- an empty `lm_eval/datasets/bigbench_resources` folder is created when the export lacks
  it (the task registry lists it at import time; no bigbench task is run).

Batch sizes are fixed (the study used `auto`, which only changes padding): 8 for the
loglikelihood tasks (right padding, no effect on the numbers) and 1 for the generation
tasks (v0.3 left-pads generation batches in a different order than 0.4 does).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "tests" / "golden" / "benchmarks"
DEFAULT_MODEL = ROOT / "tests" / "golden" / "eval_model"
DEFAULT_OUTPUT = ROOT / "tests" / "golden" / "eval_v03.json"

# v0.3 task -> (split -> file under tests/golden/benchmarks)
TASK_FILES = {
    "truthfulqa_mc": {"validation": "truthfulqa_mc.jsonl"},
    "truthfulqa_gen": {"validation": "truthfulqa_gen.jsonl"},
    "ethics_cm": {"test": "ethics_cm.jsonl"},
    "ethics_justice": {"test": "ethics_justice.jsonl"},
    "ethics_virtue": {"test": "ethics_virtue.jsonl"},
    "gsm8k": {"train": "gsm8k_train.jsonl", "test": "gsm8k_test.jsonl"},
}
# one simple_evaluate call per group: (tasks, num_fewshot as in eval_nlp.sh, batch size)
RUNS = [
    (["truthfulqa_mc", "ethics_cm", "ethics_justice", "ethics_virtue"], 0, 8),
    (["truthfulqa_gen"], 0, 1),
    (["gsm8k"], 8, 1),
]
# v0.3 (task, metric) -> our "<0.4 task>/<metric>"
RENAME = {
    ("truthfulqa_mc", "mc1"): "truthfulqa_mc1/acc",
    ("truthfulqa_mc", "mc2"): "truthfulqa_mc2/acc",
}


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sha256_dir(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def patch_harness(cache_dir: str) -> None:
    """Local files instead of the hub; no BLEURT (see the module docstring)."""
    import datasets
    import lm_eval.tasks as tasks

    for name, files in TASK_FILES.items():
        cls = tasks.TASK_REGISTRY[name]
        data_files = {split: str(BENCHMARKS / file) for split, file in files.items()}

        def download(self, data_dir=None, cache_dir_=None, download_mode=None, _f=data_files):
            self.dataset = datasets.load_dataset("json", data_files=_f, cache_dir=cache_dir)

        cls.download = download

    class NoBleurt:
        def compute(self, predictions, references):
            return {"scores": [0.0] * len(references)}

    gen = tasks.TASK_REGISTRY["truthfulqa_gen"]

    def init(self):
        tasks.truthfulqa.Task.__init__(self)
        self.bleurt = NoBleurt()

    gen.__init__ = init


def record_generations(store: dict) -> None:
    """Keep every generation request's context and answer (to compare prompts exactly)."""
    from lm_eval.models.huggingface import HuggingFaceAutoLM

    original = HuggingFaceAutoLM.greedy_until

    def greedy_until(self, requests):
        responses = original(self, requests)
        for (context, _), response in zip(requests, responses, strict=True):
            store[context] = response
        return responses

    HuggingFaceAutoLM.greedy_until = greedy_until


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--harness", required=True, help="export of lm-eval at b011af9")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT))
    args = parser.parse_args(argv)
    harness = Path(args.harness).resolve()
    (harness / "lm_eval" / "datasets" / "bigbench_resources").mkdir(exist_ok=True)
    sys.path.insert(0, str(harness))
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import datasets
    import tokenizers
    import torch
    import transformers
    from lm_eval import evaluator

    model = Path(args.model).resolve()
    runs = []
    expected: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="golden-eval-") as cache_dir:
        patch_harness(cache_dir)
        generations: dict[str, str] = {}
        record_generations(generations)
        for task_names, shots, batch_size in RUNS:
            generations.clear()
            out = evaluator.simple_evaluate(
                model="hf-causal-experimental",
                model_args=f"pretrained={model}",
                tasks=task_names,
                num_fewshot=shots,
                batch_size=batch_size,
                device="cpu",
                no_cache=True,
                bootstrap_iters=1000,
            )
            results = {}
            for task, metrics in out["results"].items():
                kept = {
                    m: float(v)
                    for m, v in metrics.items()
                    if not m.endswith("_stderr") and not m.startswith("bleurt")
                }
                results[task] = kept
                for metric, value in kept.items():
                    expected[RENAME.get((task, metric), f"{task}/{metric}")] = value
            runs.append(
                {
                    "tasks": task_names,
                    "num_fewshot": shots,
                    "batch_size": batch_size,
                    "results": results,
                    "versions": out["versions"],
                    # generation tasks: prompt -> generated answer (after the stop strings)
                    "generations": [
                        {"context": c, "response": r} for c, r in sorted(generations.items())
                    ],
                }
            )
            print(json.dumps(results, indent=1), flush=True)

    document = {
        "what": "lm-eval v0.3 (commit b011af9) hf-causal-experimental on the golden fixture",
        "harness_commit": "b011af9",
        "model": "hf-causal-experimental",
        "model_args": "pretrained=<fixture>",
        "no_cache": True,
        "bleurt": "left out (needs a model download)",
        "packages": {
            "python": platform.python_version(),
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "torch": torch.__version__,
            "datasets": datasets.__version__,
        },
        "fixture": {
            "model_dir": model.relative_to(ROOT).as_posix()
            if model.is_relative_to(ROOT)
            else model.name,
            "sha256": sha256_dir(model),
        },
        "benchmarks": {
            "dir": BENCHMARKS.relative_to(ROOT).as_posix(),
            "sha256": sha256_dir(BENCHMARKS),
            "task_files": TASK_FILES,
        },
        "runs": runs,
        "expected": dict(sorted(expected.items())),
    }
    output = Path(args.output)
    tmp = output.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(output)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
