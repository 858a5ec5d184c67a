"""lm-eval on local benchmark files: one job per run x benchmark."""


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
        args=eval_args,
    shell:
        "python -m sbt.evaluate {params.args:q} --output {output:q} 2> {log:q}"


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
