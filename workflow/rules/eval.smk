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
        script=script("evaluate.py"),
        args=eval_args,
    shell:
        "python {params.script} {params.args:q} --output {output:q} 2> {log:q}"


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
