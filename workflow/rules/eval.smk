"""lm-eval on local benchmark files, in the unit evaluation.group names (eval_plan.smk).

group: run: evaluate_base/_run/_external are one job per run (every benchmark, one process,
sbt.evaluate_run) writing a record per benchmark; result_base/_run/_external turn
each record into its result JSON, or fail that benchmark alone. group: benchmark:
evaluate_base/_run/_external are one job per run x benchmark (sbt.evaluate).
Either way the result JSONs, samples and per-benchmark logs have the same paths.
"""

import os

if EVAL_GROUP == "run":

    rule evaluate_base:
        input:
            unpack(run_eval_inputs),
        output:
            run_records("{backbone}/base"),
        log:
            f"logs/{LM_EVAL}/{{backbone}}/base.log",
        benchmark:
            f"benchmarks/{LM_EVAL}/{{backbone}}/base.tsv"
        conda:
            "../../envs/workflow.yaml"
        resources:
            gpu=eval_gpus,
            mem_mb=eval_mem_mb,  # one model in memory at a time: a benchmark's, not the sum
            runtime=run_eval_runtime,
        params:
            records=lambda wildcards: records_dir(run_of(wildcards).path),
            cache=lambda wildcards: eval_cache_dir(run_of(wildcards).path),
            args=run_eval_args,
        shell:
            "python -m sbt.evaluate_run --records {params.records:q} --cache-dir {params.cache:q}"
            " {params.args:q} 2> {log:q}"

    use rule evaluate_base as evaluate_run with:
        output:
            run_records("{backbone}/{data}/{method}"),
        log:
            f"logs/{LM_EVAL}/{{backbone}}/{{data}}/{{method}}.log",
        benchmark:
            f"benchmarks/{LM_EVAL}/{{backbone}}/{{data}}/{{method}}.tsv"

    use rule evaluate_base as evaluate_external with:
        output:
            run_records(f"{EXTERNAL}/{{checkpoint}}"),
        log:
            f"logs/{LM_EVAL}/{EXTERNAL}/{{checkpoint}}.log",
        benchmark:
            f"benchmarks/{LM_EVAL}/{EXTERNAL}/{{checkpoint}}.tsv"

    rule result_base:
        input:
            record=f"{RESULTS}/{LM_EVAL}/{{backbone}}/base/{{benchmark}}.json",
        output:
            f"{RESULTS}/eval/{{backbone}}/base/{{benchmark}}.json",
        log:
            "logs/evaluate/{backbone}/base/{benchmark}.log",
        benchmark:
            "benchmarks/evaluate/{backbone}/base/{benchmark}.tsv"
        conda:
            "../../envs/workflow.yaml"
        params:
            run_log=lambda wildcards: f"logs/{LM_EVAL}/{run_of(wildcards).path}.log",
        shell:
            "python -m sbt.collect_result --record {input.record:q} --output {output:q}"
            " --run-log {params.run_log:q} 2> {log:q}"

    use rule result_base as result_run with:
        input:
            record=f"{RESULTS}/{LM_EVAL}/{{backbone}}/{{data}}/{{method}}/{{benchmark}}.json",
        output:
            f"{RESULTS}/eval/{{backbone}}/{{data}}/{{method}}/{{benchmark}}.json",
        log:
            "logs/evaluate/{backbone}/{data}/{method}/{benchmark}.log",
        benchmark:
            "benchmarks/evaluate/{backbone}/{data}/{method}/{benchmark}.tsv"

    use rule result_base as result_external with:
        input:
            record=f"{RESULTS}/{LM_EVAL}/{EXTERNAL}/{{checkpoint}}/{{benchmark}}.json",
        output:
            f"{RESULTS}/eval/{EXTERNAL}/{{checkpoint}}/{{benchmark}}.json",
        log:
            f"logs/evaluate/{EXTERNAL}/{{checkpoint}}/{{benchmark}}.log",
        benchmark:
            f"benchmarks/evaluate/{EXTERNAL}/{{checkpoint}}/{{benchmark}}.tsv"

    # On the submit host: each reads one small record. (A rule's `localrule: True` is not
    # carried over by `use rule ... with`, so the three are named here.)
    localrules:
        result_base,
        result_run,
        result_external,

else:

    rule evaluate_base:
        input:
            unpack(eval_inputs),
        output:
            f"{RESULTS}/eval/{{backbone}}/base/{{benchmark}}.json",
        log:
            "logs/evaluate/{backbone}/base/{benchmark}.log",
        benchmark:
            "benchmarks/evaluate/{backbone}/base/{benchmark}.tsv"
        conda:
            "../../envs/workflow.yaml"
        resources:
            gpu=eval_gpus,
            mem_mb=eval_mem_mb,
            runtime=eval_runtime,
        params:
            cache=lambda wildcards: eval_cache_dir(
                run_of(wildcards).path, wildcards.benchmark
            ),
            args=eval_args,
        shell:
            "python -m sbt.evaluate {params.args:q} --cache-dir {params.cache:q}"
            " --output {output:q} 2> {log:q}"

    use rule evaluate_base as evaluate_run with:
        output:
            f"{RESULTS}/eval/{{backbone}}/{{data}}/{{method}}/{{benchmark}}.json",
        log:
            "logs/evaluate/{backbone}/{data}/{method}/{benchmark}.log",
        benchmark:
            "benchmarks/evaluate/{backbone}/{data}/{method}/{benchmark}.tsv"

    use rule evaluate_base as evaluate_external with:
        output:
            f"{RESULTS}/eval/{EXTERNAL}/{{checkpoint}}/{{benchmark}}.json",
        log:
            f"logs/evaluate/{EXTERNAL}/{{checkpoint}}/{{benchmark}}.log",
        benchmark:
            f"benchmarks/evaluate/{EXTERNAL}/{{checkpoint}}/{{benchmark}}.tsv"


rule prefetch_benchmarks:
    """On a machine with network: ETHICS as local files, MMLU's data.tar CSVs (mmlu_study),
    other benchmarks into the HF cache."""
    output:
        ethics=PREFETCHED_ETHICS,
        mmlu=directory(PREFETCHED_MMLU),
        manifest=PREFETCH_MANIFEST,
    log:
        "logs/prefetch_benchmarks.log",
    benchmark:
        "benchmarks/prefetch_benchmarks.tsv"
    localrule: True
    conda:
        "../../envs/workflow.yaml"
    params:
        ethics_dir=lambda wildcards, output: os.path.dirname(output.ethics[0]),
        hub_tasks=hub_benchmark_tasks(),
    shell:
        "HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 python -m sbt.prefetch_benchmarks"
        " --ethics-dir {params.ethics_dir:q} --mmlu-dir {output.mmlu:q}"
        " --hub-tasks {params.hub_tasks}"
        " --manifest {output.manifest:q} 2> {log:q}"
