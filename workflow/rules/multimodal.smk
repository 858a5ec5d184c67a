"""The multimodal arm (docs/multimodal.md): the shapes demo and a tiny CLIP tower, stage 1
(projector pretraining) per backbone, stage 2 (mm_full / mm_lora) per backbone x data
variant with images, POPE / VQAv2 / captions / MME per multimodal run x mm benchmark, and
the downloads of the study's image data and released projectors. The text benchmarks
evaluate a multimodal run's extracted language model through the evaluate rules
(sbt.runs.resolve_run)."""

import os


rule shapes_demo:
    """The multimodal demo's data (sbt.demo.shapes): seeded images of coloured shapes,
    stage-1 captions, LLaVA instruction records, POPE, VQAv2, caption and MME files."""
    output:
        **SHAPES_FILES,
        images=directory(SHAPES_IMAGES),
        mme=directory(SHAPES_MME),
    log:
        "logs/shapes_demo.log",
    benchmark:
        "benchmarks/shapes_demo.tsv"
    conda:
        "../../envs/workflow.yaml"
    params:
        folder=lambda wildcards, output: os.path.dirname(output.images),
        sizes=" ".join(
            f"--{key} {value}" for key, value in sorted(config["shapes_demo"].items())
        ),
    shell:
        "python -m sbt.demo.shapes --output {params.folder:q} {params.sizes} 2> {log:q}"


rule build_tiny_tower:
    """A random CLIP vision tower for a demo backbone; its shape from multimodal.tiny_tower."""
    output:
        directory(f"{RESULTS}/towers/{{backbone}}"),
    log:
        "logs/build_tiny_tower/{backbone}.log",
    benchmark:
        "benchmarks/build_tiny_tower/{backbone}.tsv"
    conda:
        "../../envs/workflow.yaml"
    params:
        shape=lambda wildcards: " ".join(
            f"--{key.replace('_', '-')} {value}"
            for key, value in sorted(
                multimodal(wildcards.backbone).get("tiny_tower", {}).items()
            )
        ),
    shell:
        "python -m sbt.demo.tower --output {output:q} {params.shape} 2> {log:q}"


rule mm_pretrain:
    """Stage 1: the projector (and the <im_start>/<im_end> rows) on captions, tower and LLM
    frozen; writes a study-format mm_projector.bin."""
    input:
        unpack(pretrain_inputs),
    output:
        directory(f"{RESULTS}/models/{{backbone}}/{MM_PRETRAIN}"),
    log:
        f"logs/train/{{backbone}}/{MM_PRETRAIN}.log",
    benchmark:
        f"benchmarks/train/{{backbone}}/{MM_PRETRAIN}.tsv"
    conda:
        "../../envs/workflow.yaml"
    threads: threads_of(MM_PRETRAIN)
    resources:
        gpu=train_resource("gpu", MM_PRETRAIN),
        nodes=train_resource("nodes", MM_PRETRAIN),
        tasks=train_resource("tasks", MM_PRETRAIN),
        tasks_per_gpu=train_resource("tasks_per_gpu", MM_PRETRAIN),
        gres=train_resource("gres", MM_PRETRAIN),
        mpi=train_resource("mpi", MM_PRETRAIN),
        mem_mb=train_mem_mb,
        runtime=train_runtime,
    params:
        model=lambda wildcards: backbone_model(wildcards.backbone),
        tower=lambda wildcards: tower_of(wildcards.backbone),
        hparams=mm_hparams_json(MM_PRETRAIN),
        launcher=launcher_of(MM_PRETRAIN),
    shell:
        "{params.launcher} -m sbt.mm_train --stage pretrain --backbone {params.model:q}"
        " --tower {params.tower:q} --data {input.captions:q} --images {input.images:q}"
        " --output {output:q} --hparams {params.hparams:q} 2> {log:q}"


rule mm_finetune:
    """Stage 2 with images (mm_full / mm_lora) on a variant's raw records: a stock LLaVA
    directory (LoRA merged) with the extracted language model in language_model/."""
    input:
        unpack(finetune_inputs),
    output:
        directory(f"{RESULTS}/models/{{backbone}}/{{data}}/{{method}}"),
    log:
        "logs/train/{backbone}/{data}/{method}.log",
    benchmark:
        "benchmarks/train/{backbone}/{data}/{method}.tsv"
    wildcard_constraints:
        method=names_pattern(MM_METHODS),
    conda:
        "../../envs/workflow.yaml"
    threads: train_threads
    resources:
        gpu=train_resource("gpu"),
        nodes=train_resource("nodes"),
        tasks=train_resource("tasks"),
        tasks_per_gpu=train_resource("tasks_per_gpu"),
        gres=train_resource("gres"),
        mpi=train_resource("mpi"),
        mem_mb=train_mem_mb,
        runtime=train_runtime,
    params:
        model=lambda wildcards: backbone_model(wildcards.backbone),
        tower=lambda wildcards: tower_of(wildcards.backbone),
        template=lambda wildcards: config["backbones"][wildcards.backbone]["template"],
        method=lambda wildcards: MM_TRAIN_METHOD[wildcards.method],
        projector=lambda wildcards: projector_file(wildcards.backbone),
        hparams=mm_hparams_json(None),
        launcher=train_launcher,
    shell:
        "{params.launcher} -m sbt.mm_train --stage finetune --method {params.method}"
        " --backbone {params.model:q} --tower {params.tower:q} --template {params.template}"
        " --data {input.data:q} --images {input.images:q} --projector {params.projector:q}"
        " --output {output:q} --hparams {params.hparams:q} 2> {log:q}"


rule evaluate_mm:
    """One multimodal run x one mm benchmark (POPE / VQAv2 / captions / MME,
    sbt.mm_evaluate) -> its result JSON beside the run's text benchmarks, for sbt.aggregate.
    """
    input:
        unpack(mm_benchmark_inputs),
    output:
        f"{RESULTS}/eval/{{backbone}}/{{data}}/{{method}}/{{mm_benchmark}}.json",
    log:
        "logs/evaluate/{backbone}/{data}/{method}/{mm_benchmark}.log",
    benchmark:
        "benchmarks/evaluate/{backbone}/{data}/{method}/{mm_benchmark}.tsv"
    wildcard_constraints:
        method=names_pattern(MM_METHODS),
    conda:
        "../../envs/workflow.yaml"
    resources:
        gpu=eval_gpus,
        mem_mb=eval_mem_mb,
        runtime=eval_runtime,
    params:
        args=mm_eval_args,
    shell:
        "python -m sbt.mm_evaluate --model {input.model:q} --questions {input.questions:q}"
        " --images {input.images:q} --output {output:q} {params.args} 2> {log:q}"


rule karpathy_split:
    """A caption benchmark's file in the study's format ({image_name, captions}) from one
    split of Karpathy's caption dataset (sbt.caption_splits); seconds."""
    input:
        lambda wildcards: karpathy_source(wildcards.caption_split),
    output:
        "{caption_split}",
    log:
        "logs/karpathy_split/{caption_split}.log",
    wildcard_constraints:
        caption_split=KARPATHY_PATTERN,
    localrule: True
    conda:
        "../../envs/workflow.yaml"
    params:
        split=lambda wildcards: karpathy_parts(wildcards.caption_split)[2],
    shell:
        "python -m sbt.caption_splits --karpathy {input:q} --split {params.split}"
        " --output {output:q} 2> {log:q}"


rule prefetch_mm:
    """On a machine with network: one file of mm_downloads (a released projector,
    CC3M-595K's chat.json, a file inside a zip archive)."""
    output:
        "{mm_file}",
    log:
        "logs/prefetch_mm/{mm_file}.log",
    wildcard_constraints:
        mm_file=names_pattern(MM_FILES),
    localrule: True
    conda:
        "../../envs/workflow.yaml"
    params:
        url=lambda wildcards: MM_FILES[wildcards.mm_file],
        member=lambda wildcards: mm_member_args(wildcards.mm_file),
    shell:
        "python -m sbt.prefetch --url {params.url:q} --output {output:q} {params.member}"
        " 2> {log:q}"


rule prefetch_mm_archive:
    """On a machine with network: a zip of mm_downloads unpacked into its folder (CC3M-595K
    images.zip, COCO train2017.zip)."""
    output:
        directory("{mm_archive}"),
    log:
        "logs/prefetch_mm/{mm_archive}.log",
    wildcard_constraints:
        mm_archive=names_pattern(MM_ARCHIVES),
    localrule: True
    conda:
        "../../envs/workflow.yaml"
    params:
        url=lambda wildcards: MM_ARCHIVES[wildcards.mm_archive],
    shell:
        "python -m sbt.prefetch --unzip --url {params.url:q} --output {output:q} 2> {log:q}"


rule prefetch_multimodal:
    """Every mm_downloads entry: `snakemake prefetch_multimodal` on a machine with network."""
    input:
        list(config["mm_downloads"]),
    localrule: True
