"""One run x one benchmark: the files it reads, its sbt.evaluate arguments and its
resources. eval_plan.smk puts them together per run (evaluation.group: run)."""

import json
from pathlib import Path


def benchmark(name):
    return config["benchmarks"][name]


def eval_inputs(wildcards):
    return benchmark_inputs(run_of(wildcards), wildcards.benchmark)


def benchmark_inputs(run, name):
    """Model directories (demo backbones and our own runs) and files one benchmark reads."""
    inputs = {}
    if run.model.startswith(f"{RESULTS}/"):
        inputs["model"] = (
            run.model_input
        )  # an mm run's LLaVA dir holds its language model
    if run.adapter and run.adapter.startswith(f"{RESULTS}/"):
        inputs["adapter"] = run.adapter
    bench = benchmark(name)
    data_files = bench.get("data_files")
    # Without local files the job reads the HF cache that prefetch_benchmarks filled.
    inputs["data_files"] = (
        list(data_files.values()) if data_files else [PREFETCH_MANIFEST]
    )
    # mmlu_study: every CSV (so edits rerun it), or the folder prefetch_benchmarks writes.
    if bench.get("data_dir"):
        inputs["data_files"] = mmlu_files(bench["data_dir"])
    return inputs


def mmlu_files(data_dir):
    if data_dir == PREFETCHED_MMLU:
        return [PREFETCHED_MMLU]
    return sorted(
        str(p) for split in ("dev", "test") for p in Path(data_dir, split).glob("*.csv")
    )


def hub_benchmark_tasks():
    """lm-eval tasks of the benchmarks that have no local files (cached by prefetch)."""
    return sorted(
        {
            task
            for bench in config["benchmarks"].values()
            if not bench.get("data_files") and not bench.get("data_dir")
            for task in bench["tasks"]
        }
    )


def eval_args(wildcards):
    """Only wildcards in, no `output` argument: Snakemake does not record params computed
    from outputs, and the params trigger must see every argument."""
    return benchmark_args(run_of(wildcards), wildcards.benchmark)


def benchmark_args(run, name):
    """Command-line arguments of sbt.evaluate for one run x benchmark."""
    bench = benchmark(name)
    study = config["evaluation"]  # the study-mode keys (see sbt/lmeval_study.py)
    # A benchmark's own dtype (mmlu_study: the study's MMLU script ran float32) wins over
    # evaluation.dtype ("checkpoint": the model's own torch_dtype), which wins over the run's.
    dtype = bench.get("dtype") or study.get("dtype") or run.dtype
    args = ["--model", run.model, "--dtype", dtype, "--benchmark", name]
    if run.adapter:
        args += ["--adapter", run.adapter]
    for task in bench["tasks"]:
        args += ["--task", task]
    args += ["--num-fewshot", str(bench["num_fewshot"])]
    if bench.get("data_files"):
        args += ["--data-files"] + [f"{s}={p}" for s, p in bench["data_files"].items()]
    if bench.get("data_dir"):
        args += ["--data-dir", bench["data_dir"]]
    if bench.get("metrics"):
        args += ["--metrics", *bench["metrics"]]
    if bench.get("limit"):
        args += ["--limit", str(bench["limit"])]
    if bench["log_samples"]:  # every prompt and answer, beside the result JSON
        result = eval_result(run.path, name)
        samples = result.removesuffix(".json") + ".samples.jsonl"
        args += ["--log-samples", samples]
    batch_size = bench.get("batch_size", config["evaluation"]["batch_size"])
    args += ["--batch-size", str(batch_size)]
    args += ["--seed", str(config["evaluation"]["seed"])]
    args += ["--device", config["evaluation"]["device"]]
    bos = {None: "default", True: "true", False: "false"}[study.get("add_bos_token")]
    args += ["--add-bos-token", bos]
    args += ["--fewshot-sampler", study.get("fewshot_sampler", "lm_eval")]
    args += ["--task-config", study.get("task_config", "lm_eval")]
    if run.settings.get("trust_remote_code"):
        args.append("--trust-remote-code")
    if run.settings["allow_pickle_weights"]:
        args.append("--allow-pickle-weights")
    args += ["--run-info", json.dumps(run.info, sort_keys=True)]
    return args


def eval_gpus(wildcards):
    return run_of(wildcards).gpus


def eval_mem_mb(wildcards, attempt):
    return int((6 + 4 * run_of(wildcards).size_b) * 1024 * attempt)


def eval_runtime(wildcards, attempt):
    return int((20 + 15 * run_of(wildcards).size_b) * attempt)
