"""What the evaluation grid costs, before it runs: jobs, model loads, GPU-hours.

Printed by every `snakemake -n` (workflow/rules/eval_plan.smk) next to the disk estimate.
The numbers come from two small tables, both documented in docs/evaluation.md:

- TASK_COST: per lm-eval task, the documents of the split it scores (the full datasets),
  the requests per document (one per answer choice for multiple choice) and the tokens
  of one request's prompt at the study's shot count, plus tokens generated per request.
- THROUGHPUT: per model size, prompt tokens per second (loglikelihood and prefill) and
  generated tokens per second, in bf16 with lm-eval's `hf` model at batch size 8 on one
  A100-80GB class GPU; float32 runs at half that. An assumption, not a measurement of
  this cluster: scale it with one measured job (its benchmarks/ TSV).

GPU-seconds of a run = sum over its benchmarks of prompt tokens / prompt rate + generated
tokens / generation rate, plus LOAD_S(size) per model load. The multimodal benchmarks
(MM_TASK_COST) get a line of their own: one job and one load per run and benchmark, in
float32 as sbt.mm_evaluate runs them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskCost:
    docs: int  # documents in the scored split (test, else validation)
    per_doc: float  # requests per document (choices; 2 for squadv2: answer + "unanswerable")
    prompt: int  # tokens per request, few-shot examples included
    generated: int = 0  # tokens generated per request (generation tasks)
    subtasks: int = 1  # a `limit` applies to each subtask (MMLU: 57 subjects)


TASK_COST: dict[str, TaskCost] = {
    "truthfulqa_mc1": TaskCost(817, 5, 300),  # fixed 6-QA preamble; ~5 choices
    "truthfulqa_mc2": TaskCost(817, 7, 300),  # ~7 true/false answers per question
    "truthfulqa_gen": TaskCost(817, 1, 300, 25),  # study: stops at "."
    "ethics_cm": TaskCost(3885, 2, 150),
    "ethics_deontology": TaskCost(3596, 2, 50),
    "ethics_justice": TaskCost(2704, 2, 50),
    "ethics_utilitarianism": TaskCost(4808, 2, 60),
    "ethics_virtue": TaskCost(4975, 2, 40),
    "mmlu": TaskCost(14042, 4, 600, 0, 57),  # 5-shot
    "mmlu_study": TaskCost(14042, 1, 600, 2, 57),  # 5-shot, 2 greedy tokens
    "gsm8k": TaskCost(1319, 1, 900, 120),  # 8-shot; study stops at ":" / "Question"
    "mathqa": TaskCost(2985, 5, 400),  # 4-shot
    "boolq": TaskCost(3270, 2, 150),
    "squadv2": TaskCost(11873, 2, 200, 10),
}
UNKNOWN_TASK = TaskCost(1000, 2, 200)
# sbt.mm_evaluate's tasks: the conversation v0 system prompt and example exchange (about
# 300 tokens), the 256 image tokens of a 224-px CLIP ViT-L/14 image, the question, and for
# VQAv2 and captions 3 text demonstrations; 10 generated tokens. Documents: a POPE split's
# 3000 questions, the study's 5000 VQAv2 questions, 5000 COCO test captions, MME's 1574
# questions of its 12 scored tasks.
MM_TASK_COST: dict[str, TaskCost] = {
    "pope": TaskCost(3000, 1, 580, 10),
    "vqav2": TaskCost(5000, 1, 640, 10),
    "caption": TaskCost(5000, 1, 660, 10),
    "mme": TaskCost(1574, 1, 590, 10),
}

# size_b upper bound -> (prompt tokens/s, generated tokens/s); bf16, batch 8, one GPU.
THROUGHPUT: tuple[tuple[float, float, float], ...] = (
    (1.5, 20000.0, 900.0),
    (3.5, 10000.0, 500.0),
    (8.0, 5000.0, 270.0),
    (14.0, 2800.0, 160.0),
    (float("inf"), 1200.0, 70.0),
)
FLOAT32_SLOWDOWN = 2.0


def load_seconds(size_b: float) -> float:
    """Loading the weights once (from a shared file system) and moving them to the GPU."""
    return 10 + 15 * size_b


def throughput(size_b: float, dtype: str | None) -> tuple[float, float]:
    for bound, prompt, generated in THROUGHPUT:
        if size_b <= bound:
            slow = FLOAT32_SLOWDOWN if dtype == "float32" else 1.0
            return prompt / slow, generated / slow
    raise AssertionError("unreachable: the table ends with infinity")


@dataclass(frozen=True)
class BenchmarkCost:
    tasks: Sequence[str]
    limit: int | None = None
    dtype: str | None = None  # the benchmark's own dtype, where it sets one


@dataclass(frozen=True)
class RunCost:
    size_b: float
    gpus: int
    loads: int  # model loads of this run in the chosen evaluation unit
    benchmarks: Sequence[BenchmarkCost]
    dtype: str | None = None  # the run's evaluation dtype (None: the checkpoint's)


def tokens(bench: BenchmarkCost) -> tuple[float, float, list[str]]:
    """(prompt tokens, generated tokens, tasks not in the table) of one benchmark."""
    prompt = generated = 0.0
    unknown = []
    for task in bench.tasks:
        cost = TASK_COST.get(task) or MM_TASK_COST.get(task)
        if cost is None:
            unknown.append(task)
            cost = UNKNOWN_TASK
        docs = cost.docs if bench.limit is None else min(cost.docs, bench.limit * cost.subtasks)
        prompt += docs * cost.per_doc * cost.prompt
        generated += docs * cost.per_doc * cost.generated
    return prompt, generated, unknown


def gpu_seconds(run: RunCost) -> float:
    total = run.loads * load_seconds(run.size_b)
    for bench in run.benchmarks:
        prompt, generated, _ = tokens(bench)
        prompt_rate, generated_rate = throughput(run.size_b, bench.dtype or run.dtype)
        total += prompt / prompt_rate + generated / generated_rate
    return total * max(1, run.gpus)


def summary(runs: Iterable[RunCost], *, group: str, loads_per_run: int) -> str:
    """The dry-run line: jobs, model loads and GPU-hours, and the other unit's counts."""
    runs = list(runs)
    pairs = sum(len(run.benchmarks) for run in runs)
    per_run = (len(runs), len(runs) * loads_per_run)
    counts = {"run": per_run, "benchmark": (pairs, pairs)}
    jobs, loads = counts[group]
    other = "benchmark" if group == "run" else "run"
    steps = f" (+{pairs} local result steps)" if group == "run" else ""
    gpu_runs = [run for run in runs if run.gpus > 0]
    unknown = sorted({t for run in runs for b in run.benchmarks for t in tokens(b)[2]})
    text = (
        f"Evaluation estimate: {jobs} evaluation jobs{steps}, {loads} model loads"
        f" (evaluation.group: {group}; group: {other}: {counts[other][0]} jobs,"
        f" {counts[other][1]} loads)"
    )
    if gpu_runs:
        hours = sum(gpu_seconds(run) for run in gpu_runs) / 3600
        prompt = sum(tokens(b)[0] for run in gpu_runs for b in run.benchmarks)
        text += (
            f"; about {hours:.0f} GPU-hours for {prompt / 1e6:.0f}M prompt tokens"
            " (requests per task and tokens/s per model size: docs/evaluation.md)"
        )
    else:
        text += "; CPU only (no GPU-hours)"
    if unknown:
        text += f"; tasks without a cost entry, counted as {UNKNOWN_TASK.docs} documents:"
        text += f" {', '.join(unknown)}"
    return text + "."


def mm_summary(runs: Iterable[RunCost]) -> str:
    """The dry-run line of the multimodal benchmarks (evaluate_mm: one job per run and
    benchmark, each loading the model once)."""
    runs = list(runs)
    jobs = sum(len(run.benchmarks) for run in runs)
    text = f"Multimodal evaluation estimate: {jobs} evaluate_mm jobs, {jobs} model loads"
    gpu_runs = [run for run in runs if run.gpus > 0]
    if gpu_runs:
        hours = sum(gpu_seconds(run) for run in gpu_runs) / 3600
        text += f"; about {hours:.0f} GPU-hours (docs/evaluation.md)"
    else:
        text += "; CPU only (no GPU-hours)"
    return text + "."
