"""The evaluation unit (evaluation.group) and what the grid's evaluation costs.

group: run (default): one job per run evaluates every benchmark of that run in one process
(scripts/evaluate_run.py): its inputs, params and resources are the union and sum of the
per-benchmark ones in common.smk. It writes one record per benchmark under
results/lm_eval/<run>/, and a local step per benchmark (collect_result.py) turns each into
the usual results/eval/<run>/<benchmark>.json. group: benchmark: one job per run x
benchmark (scripts/evaluate.py), as before. docs/evaluation.md.
"""

from types import SimpleNamespace

from sbt.eval_cost import BenchmarkCost, RunCost, summary

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


def with_benchmark(wildcards, bench):
    """A run's wildcards plus one benchmark, for the per-benchmark functions."""
    values = {name: getattr(wildcards, name) for name in wildcards.keys()}
    return SimpleNamespace(**values, benchmark=bench)


def run_eval_inputs(wildcards):
    """The model and every benchmark file of the run (edits to any rerun the run's job)."""
    inputs = {}
    files = set()
    for bench in config["benchmarks"]:
        one = eval_inputs(with_benchmark(wildcards, bench))
        files.update(one.pop("data_files"))
        inputs.update(one)
    inputs["data_files"] = sorted(files)
    return inputs


def run_eval_args(wildcards):
    """evaluate_run.py's `--each <evaluate.py options>` for every benchmark, in config order.
    A params, so changing any benchmark's settings reruns the run's job (whose request
    cache then answers every benchmark that did not change)."""
    args = []
    for bench in config["benchmarks"]:
        args += ["--each", *eval_args(with_benchmark(wildcards, bench))]
    return args


def run_eval_mem_mb(wildcards, attempt):
    """One model in memory at a time: a benchmark's memory, not the sum."""
    return eval_mem_mb(wildcards, attempt)


def run_eval_runtime(wildcards, attempt):
    """The per-benchmark runtimes summed (an upper bound: it counts one load per benchmark)."""
    return len(config["benchmarks"]) * eval_runtime(wildcards, attempt)


# ---------------------------------------------------------------- cost


def run_wildcards(run):
    """The wildcards of the evaluate job of one of all_runs()."""
    parts = run.split("/")
    if parts[0] == EXTERNAL:
        return SimpleNamespace(checkpoint=parts[1])
    if len(parts) == 2:
        return SimpleNamespace(backbone=parts[0])
    return SimpleNamespace(backbone=parts[0], data=parts[1], method=parts[2])


def model_setting(bench_name):
    """What makes benchmarks of one run load the model separately: dtype, batch size and
    the study's MMLU (its own BOS and max_length)."""
    bench = benchmark(bench_name)
    dtype = bench.get("dtype") or config["evaluation"].get("dtype")
    batch = bench.get("batch_size", config["evaluation"]["batch_size"])
    return (dtype, batch, bench["tasks"] == [MMLU_STUDY])


def evaluation_estimate():
    """Jobs, model loads and GPU-hours of the grid's evaluation (sbt/eval_cost.py)."""
    names = list(config["benchmarks"])
    per_run_loads = len({model_setting(name) for name in names})
    costs = []
    for run in all_runs():
        wildcards = run_wildcards(run)
        _, _, dtype, size = eval_model(wildcards)
        benches = [
            BenchmarkCost(b["tasks"], b.get("limit"), b.get("dtype"))
            for b in map(benchmark, names)
        ]
        loads = per_run_loads if EVAL_GROUP == "run" else len(names)
        run_dtype = config["evaluation"].get("dtype")
        if run_dtype in (
            None,
            "checkpoint",
        ):  # the checkpoint's dtype: the configured one
            run_dtype = dtype
        costs.append(RunCost(size, eval_gpus(wildcards), loads, benches, run_dtype))
    return summary(costs, group=EVAL_GROUP, loads_per_run=per_run_loads)


if workflow.is_main_process:
    logger.info(evaluation_estimate())
