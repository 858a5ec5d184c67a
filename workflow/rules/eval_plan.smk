"""The evaluation unit (evaluation.group) and what the grid's evaluation costs.

group: run (default): one job per run evaluates every benchmark of that run in one process
(sbt.evaluate_run): its inputs, params and resources are the union and sum of the
per-benchmark ones in eval_benchmark.smk. It writes one record per benchmark under
results/lm_eval/<run>/, and a local step per benchmark (sbt.collect_result) turns each into
the usual results/eval/<run>/<benchmark>.json. group: benchmark: one job per run x
benchmark (sbt.evaluate), as before. docs/evaluation.md.
"""

import os

from snakemake.logging import logger

from sbt import runs
from sbt.eval_cost import BenchmarkCost, RunCost, mm_summary, summary

EVAL_GROUP = config["evaluation"]["group"]
LM_EVAL = "lm_eval"  # path part of the per-run records, logs, benchmarks and caches


def records_dir(run):
    return f"{RESULTS}/{LM_EVAL}/{run}"


def run_records(run_pattern):
    """Output of a per-run job: one record per benchmark (wildcards of the run kept)."""
    return expand(
        f"{RESULTS}/{LM_EVAL}/{run_pattern}/{{benchmark}}.json",
        benchmark=list(config["benchmarks"]),
        allow_missing=True,
    )


def eval_cache_dir(run, bench=None):
    """lm-eval's request cache: one folder per run (per run x benchmark when jobs are per
    benchmark, so no two jobs write one SQLite file), one file per model setting."""
    return os.path.join(RESULTS, "cache", LM_EVAL, run, *([bench] if bench else []))


def run_eval_inputs(wildcards):
    """The model and every benchmark file of the run (edits to any rerun the run's job)."""
    run = run_of(wildcards)
    inputs = {}
    files = set()
    for bench in config["benchmarks"]:
        one = benchmark_inputs(run, bench)
        files.update(one.pop("data_files"))
        inputs.update(one)
    inputs["data_files"] = sorted(files)
    return inputs


def run_eval_args(wildcards):
    """evaluate_run.py's `--each <sbt.evaluate options>` for every benchmark, in config order.
    A params, so changing any benchmark's settings reruns the run's job (whose request
    cache then answers every benchmark that did not change)."""
    run = run_of(wildcards)
    args = []
    for bench in config["benchmarks"]:
        args += ["--each", *benchmark_args(run, bench)]
    return args


def run_eval_runtime(wildcards, attempt):
    """The per-benchmark runtimes summed (an upper bound: it counts one load per benchmark)."""
    return len(config["benchmarks"]) * eval_runtime(wildcards, attempt)


# ---------------------------------------------------------------- cost


def model_setting(bench_name):
    """What makes benchmarks of one run load the model separately: dtype, batch size and
    the study's MMLU (its own BOS and max_length)."""
    bench = benchmark(bench_name)
    dtype = bench.get("dtype") or config["evaluation"].get("dtype")
    batch = bench.get("batch_size", config["evaluation"]["batch_size"])
    return (dtype, batch, bench["tasks"] == [MMLU_STUDY])


def evaluation_estimate():
    """Jobs, model loads and GPU-hours of the grid's evaluation (sbt.eval_cost)."""
    names = list(config["benchmarks"])
    per_run_loads = len({model_setting(name) for name in names})
    loads = per_run_loads if EVAL_GROUP == "run" else len(names)
    benches = [
        BenchmarkCost(b["tasks"], b.get("limit"), b.get("dtype"))
        for b in map(benchmark, names)
    ]
    study_dtype = config["evaluation"].get("dtype")
    costs = []
    for path in all_runs():
        run = runs.resolve_run(config, runs.wildcards_of(path))
        # "checkpoint" (or unset): the checkpoint's dtype, i.e. the configured one
        dtype = run.dtype if study_dtype in (None, "checkpoint") else study_dtype
        costs.append(RunCost(run.size_b, run.gpus, loads, benches, dtype))
    return summary(costs, group=EVAL_GROUP, loads_per_run=per_run_loads)


def mm_evaluation_estimate():
    """The same for evaluate_mm: one job and one model load per mm run and mm benchmark."""
    costs = []
    for path in mm_runs():
        run = runs.resolve_run(config, runs.wildcards_of(path))
        for bench in config["mm_benchmarks"].values():
            limit = bench["limit"] or bench["samples"]
            cost = BenchmarkCost([bench["task"]], limit, "float32")
            costs.append(RunCost(run.size_b, run.gpus, 1, [cost], "float32"))
    return mm_summary(costs)


if workflow.is_main_process:
    logger.info(evaluation_estimate())
    if mm_runs() and config["mm_benchmarks"]:
        logger.info(mm_evaluation_estimate())
