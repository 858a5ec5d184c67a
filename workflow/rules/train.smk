"""Demo backbones, full and LoRA fine-tuning, optional LoRA merge."""


rule build_tiny_backbone:
    """A small random LLaMA-architecture model + a SentencePiece tokenizer trained on the
    demo corpus; every key of the backbone's `tiny` section (shape, seed, tokenizer_layout)
    becomes an option of the script."""
    input:
        tiny_corpus(),
    output:
        directory(f"{RESULTS}/backbones/{{backbone}}"),
    log:
        "logs/build_tiny_backbone/{backbone}.log",
    benchmark:
        "benchmarks/build_tiny_backbone/{backbone}.tsv"
    conda:
        "../../envs/workflow.yaml"
    params:
        shape=lambda wildcards: " ".join(
            f"--{key.replace('_', '-')} {value}"
            for key, value in sorted(
                config["backbones"][wildcards.backbone].get("tiny", {}).items()
            )
        ),
    shell:
        "python -m sbt.demo.backbone --corpus {input:q} --output {output:q}"
        " {params.shape} 2> {log:q}"


rule train:
    """Fine-tune one backbone on one data variant with one method (full or lora)."""
    input:
        unpack(backbone_inputs),
        unpack(deepspeed_config),
        data=f"{RESULTS}/data/{{data}}.json",
    output:
        directory(f"{RESULTS}/models/{{backbone}}/{{data}}/{{method}}"),
    log:
        "logs/train/{backbone}/{data}/{method}.log",
    benchmark:
        "benchmarks/train/{backbone}/{data}/{method}.tsv"
    wildcard_constraints:
        method=names_pattern(METHODS),  # mm_full / mm_lora: rule mm_finetune
    conda:
        "../../envs/workflow.yaml"
    threads: train_threads
    resources:
        gpu=train_resource("gpu"),
        # training.<method>.nodes > 1: N nodes with num_gpus GPUs each, one task per node,
        # launched by the rule's own srun (the mpi resource stops the executor adding one)
        nodes=train_resource("nodes"),
        tasks=train_resource("tasks"),
        tasks_per_gpu=train_resource("tasks_per_gpu"),
        gres=train_resource("gres"),
        mpi=train_resource("mpi"),
        mem_mb=train_mem_mb,
        runtime=train_runtime,
    params:
        model=lambda wildcards: backbone_model(wildcards.backbone),
        template=lambda wildcards: config["backbones"][wildcards.backbone]["template"],
        hparams=train_hparams_json,
        launcher=train_launcher,
    shell:
        "{params.launcher} -m sbt.train --model {params.model:q}"
        " --template {params.template} --method {wildcards.method}"
        " --data {input.data:q} --output {output:q} --hparams {params.hparams:q} 2> {log:q}"


rule merge_lora:
    """Base + adapter -> one model directory, in the backbone's dtype (evaluation.merged_lora)."""
    input:
        unpack(backbone_inputs),
        adapter=f"{RESULTS}/models/{{backbone}}/{{data}}/lora",
    output:
        directory(f"{RESULTS}/models/{{backbone}}/{{data}}/lora.merged"),
    log:
        "logs/merge_lora/{backbone}/{data}.log",
    benchmark:
        "benchmarks/merge_lora/{backbone}/{data}.tsv"
    conda:
        "../../envs/workflow.yaml"
    resources:
        mem_mb=train_mem_mb,
    params:
        model=lambda wildcards: backbone_model(wildcards.backbone),
        dtype=lambda wildcards: config["backbones"][wildcards.backbone]["dtype"],
    shell:
        "python -m sbt.merge_lora --model {params.model:q} --adapter {input.adapter:q}"
        " --dtype {params.dtype} --output {output:q} 2> {log:q}"
