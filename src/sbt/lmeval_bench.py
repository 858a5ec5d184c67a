"""One benchmark of evaluate.py: its command line, its checks before any model loads, and
the result document made from lm-eval's results (shared by evaluate.py and evaluate_run.py).

Output JSON:
  benchmark, tasks, num_fewshot, metrics {"<task>/<metric>": value}, results (lm-eval's
  per-task results), versions, n_shot, n_samples, config, run (--run-info), provenance.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sbt.benchmark_files import check_benchmark_files
from sbt.checkpoints import check_adapter
from sbt.common import (
    TORCH_DTYPES,
    atomic_path,
    input_error,
    int_at_least,
    provenance,
    quiet_progress_bars,
    use_offline_hub,
)
from sbt.lmeval_study import (
    BOS_CHOICES,
    FEWSHOT_SAMPLERS,
    TASK_CONFIGS,
    StudyOptions,
    apply_overrides,
    plan_study_tasks,
)
from sbt.lmeval_tasks import (
    DEFAULT_BOOTSTRAP_ITERS,
    check_declared_metrics,
    check_task_names,
    json_safe,
    parse_data_files,
    plan_local_tasks,
    primary_metrics,
    resolve_device,
    samples_per_task,
    select_metrics,
)
from sbt.mmlu_study import TASK_NAME as MMLU_STUDY
from sbt.mmlu_study import TASK_SOURCE as MMLU_STUDY_SOURCE
from sbt.mmlu_study import plan_from_cli as plan_mmlu_study

# "checkpoint": the dtype in the model's config.json (float32 when it names none), what the
# study's harness loaded; "auto" is transformers' own choice.
DTYPES = ("checkpoint", "auto", *TORCH_DTYPES)


def add_arguments(parser: argparse.ArgumentParser, *, output_required: bool = True) -> None:
    """evaluate.py's options for one benchmark."""
    parser.add_argument("--model", required=True, help="model directory (or a cached HF id)")
    parser.add_argument("--adapter", help="PEFT (LoRA) adapter directory applied on --model")
    parser.add_argument("--tokenizer", help="tokenizer directory (default: the model's)")
    parser.add_argument(
        "--task",
        action="append",
        required=True,
        metavar="TASK",
        help="lm-eval task name; repeat for several tasks evaluated together",
    )
    parser.add_argument(
        "--num-fewshot",
        type=int_at_least(0),
        default=0,
        help="examples in each prompt (tasks whose config fixes 0 shots keep 0)",
    )
    parser.add_argument(
        "--data-files",
        nargs="+",
        metavar="SPLIT=PATH",
        help="local benchmark files per split, in the dataset's own schema (JSON/JSONL)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"task {MMLU_STUDY} (the study's MMLU): data.tar's data/ folder (dev/, test/ CSVs)",
    )
    parser.add_argument("--output", required=output_required, help="result JSON to write")
    parser.add_argument("--benchmark", help="benchmark name recorded in the output")
    parser.add_argument(
        "--metrics",
        nargs="+",
        metavar="METRIC",
        help="metrics to report (default: every metric lm-eval reports)",
    )
    parser.add_argument("--batch-size", type=int_at_least(1), default=8)
    parser.add_argument("--limit", type=int_at_least(1), help="only the first N documents per task")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    study = parser.add_argument_group(
        "study mode", "lm-eval v0.3 behaviour (the study's harness); see sbt/lmeval_study.py"
    )
    study.add_argument(
        "--add-bos-token",
        choices=BOS_CHOICES,
        default="default",
        help="prepend <s> to prompts: default = the tokenizer's choice (lm-eval 0.4); "
        "false = the study's harness",
    )
    study.add_argument(
        "--fewshot-sampler",
        choices=FEWSHOT_SAMPLERS,
        default="lm_eval",
        help="v0.3: the study harness's draw of few-shot examples; lm_eval: lm-eval 0.4's",
    )
    study.add_argument(
        "--task-config",
        choices=TASK_CONFIGS,
        default="lm_eval",
        help="study: v0.3 stop strings and metrics (ETHICS em, gsm8k acc, ...); "
        "lm_eval: the stock task YAMLs",
    )
    parser.add_argument("--seed", type=int, default=1234, help="every lm-eval random seed")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow model code from the model dir"
    )
    parser.add_argument(
        "--allow-pickle-weights",
        action="store_true",
        help="also load pickled .bin weights (default: safetensors only)",
    )
    parser.add_argument(
        "--bootstrap-iters",
        type=int_at_least(0),
        default=DEFAULT_BOOTSTRAP_ITERS,
        help=f"bootstrap resamples for stderr entries (default {DEFAULT_BOOTSTRAP_ITERS})",
    )
    parser.add_argument("--log-samples", metavar="PATH", help="also write per-document JSONL")
    parser.add_argument(
        "--run-info",
        default="{}",
        metavar="JSON",
        help='JSON object describing the run, e.g. {"backbone": ..., "data": ..., "method": ...}',
    )


@dataclass
class Benchmark:
    """One benchmark, planned and validated; then bound to its model (sbt.lmeval_run)."""

    args: argparse.Namespace
    name: str
    tasks: list[str]
    run_info: dict
    data_files: dict[str, Path]
    local_tasks: list | None
    sources: dict[str, str]
    mmlu_study: bool
    device: str
    started: float
    lines: list[str] = field(default_factory=list)  # this benchmark's log lines
    model_args: dict = field(default_factory=dict)
    dtype: str = ""
    checkpoint: str | None = None
    setup_s: float = 0.0

    def log(self, message: str) -> None:
        line = f"[evaluate] {self.name}: {message}"
        self.lines.append(line)
        print(line, file=sys.stderr, flush=True)

    @property
    def model_key(self) -> str:
        """Benchmarks with the same key share one model object."""
        key = {"args": self.model_args, "batch": self.args.batch_size, "device": self.device}
        return json.dumps(key, sort_keys=True, default=str)

    @property
    def call_key(self) -> tuple:
        """Benchmarks with the same key can share one simple_evaluate call."""
        args = self.args
        return (self.model_key, args.limit, args.seed, args.bootstrap_iters)


def benchmark_name(args: argparse.Namespace) -> str:
    return args.benchmark or "+".join(dict.fromkeys(args.task))


def parse_run_info(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise input_error("--run-info", f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise input_error("--run-info", "must be a JSON object")
    return value


def check_local_path(value: str, option: str) -> None:
    """A value that looks like a path must exist (hub ids such as org/name pass through)."""
    path = Path(value)
    if path.exists():
        return
    if value.startswith((".", "/", "~")) or len(path.parts) > 2:
        raise input_error(path, f"{option} directory not found")


def plan_benchmark(args: argparse.Namespace) -> Benchmark:
    """Validate one benchmark's arguments and plan its tasks; no model is loaded."""
    started = time.perf_counter()
    use_offline_hub()
    quiet_progress_bars()  # job logs are read in editors and `tail`, not terminals
    run_info = parse_run_info(args.run_info)
    tasks = list(dict.fromkeys(args.task))
    check_local_path(args.model, "--model")
    if args.adapter:
        check_local_path(args.adapter, "--adapter")
    data_files = parse_data_files(args.data_files)
    # Bad rows fail here, in one line, before lm-eval or any model sees them.
    check_benchmark_files((task, data_files) for task in tasks)
    study = StudyOptions(task_config=args.task_config, fewshot_sampler=args.fewshot_sampler)
    mmlu_study = plan_mmlu_study(tasks, args.data_dir, data_files)
    if mmlu_study:  # the study's own MMLU script as a task (sbt/mmlu_study.py)
        local_tasks = mmlu_study
        check_declared_metrics(local_tasks, args.metrics)
        sources = {MMLU_STUDY: MMLU_STUDY_SOURCE}
    elif data_files:
        local_tasks = plan_local_tasks(tasks, data_files, args.num_fewshot)
        for task in local_tasks:
            apply_overrides(task, study, args.num_fewshot)
        check_declared_metrics(local_tasks, args.metrics)
        sources = {t.name: t.stock_source for t in local_tasks}
    else:
        check_task_names(tasks)
        local_tasks = plan_study_tasks(tasks, study, args.num_fewshot) or None
        check_declared_metrics(local_tasks or [], args.metrics)
        sources = {t.name: t.stock_source for t in local_tasks or []}
    device = resolve_device(args.device)
    if args.adapter:
        check_adapter(args.adapter, allow_pickle_weights=args.allow_pickle_weights)
    return Benchmark(
        args=args,
        name=benchmark_name(args),
        tasks=tasks,
        run_info=run_info,
        data_files=data_files,
        local_tasks=local_tasks,
        sources=sources,
        mmlu_study=bool(mmlu_study),
        device=device,
        started=started,
    )


def result_document(bench: Benchmark, results: dict, evaluation: dict) -> dict:
    """The result JSON of one benchmark from lm-eval's results (of its call)."""
    args, tasks = bench.args, bench.tasks
    metrics: dict[str, float | None] = {}
    for task in tasks:
        if task not in results["results"]:
            raise input_error("--task", f"lm-eval returned no results for {task}")
        available = primary_metrics(results["results"][task])
        for name, value in select_metrics(task, available, args.metrics).items():
            metrics[f"{task}/{name}"] = value
            bench.log(f"{task}/{name} = {'n/a' if value is None else f'{value:.4f}'}")
    elapsed = time.perf_counter() - bench.started
    bench.log(f"done in {elapsed:.1f} s (setup {bench.setup_s:.1f} s)")
    return {
        "benchmark": bench.name,
        "tasks": tasks,
        "num_fewshot": args.num_fewshot,
        "metrics": metrics,
        "results": json_safe({task: results["results"][task] for task in tasks}),
        "versions": {task: results.get("versions", {}).get(task) for task in tasks},
        "n_shot": {task: results.get("n-shot", {}).get(task) for task in tasks},
        "n_samples": {task: samples_per_task(results, task) for task in tasks},
        "config": {
            "model": args.model,
            "adapter": args.adapter,
            "tokenizer": args.tokenizer,
            "dtype": bench.dtype,
            "dtype_option": args.dtype,
            "add_bos_token": args.add_bos_token,
            "fewshot_sampler": args.fewshot_sampler,
            "task_config": args.task_config,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "limit": args.limit,
            "device": bench.device,
            "trust_remote_code": args.trust_remote_code,
            "allow_pickle_weights": args.allow_pickle_weights,
            "bootstrap_iters": args.bootstrap_iters,
            "data_files": dict(zip(bench.data_files, _given_paths(args.data_files), strict=True)),
            "data_dir": args.data_dir,
            "checkpoint_format": bench.checkpoint,
        },
        "run": bench.run_info,
        "provenance": provenance(
            stage="evaluate",
            lm_eval_task_sources=bench.sources,
            seconds=round(elapsed, 1),
            evaluation=evaluation,
        ),
    }


def _given_paths(specs: list[str] | None) -> list[str]:
    """The paths as the user gave them (relative paths stay relative: portable records)."""
    return [spec.partition("=")[2] for spec in specs or ()]


def write_samples(path: str | Path, samples: dict) -> None:
    """Per-document records, one JSON object a line, written atomically."""
    from lm_eval.utils import handle_non_serializable

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for task in sorted(samples):
            for sample in samples[task]:
                record = {"task": task, **sample}
                fh.write(json.dumps(record, default=handle_non_serializable) + "\n")
