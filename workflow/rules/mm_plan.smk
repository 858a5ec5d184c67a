"""The multimodal arm's jobs from the config (rules in multimodal.smk): the tower and
stage-1 projector of a backbone, each stage's settings (TrainConfig, as train_plan.smk),
stage 2's inputs, an mm benchmark's sbt.mm_evaluate arguments, the downloads."""

import json
import shlex

# What sbt.mm_train --method trains for each workflow method, and the TrainConfig method
# whose settings it records (params drops `lora` unless the method is lora).
MM_TRAIN_METHOD = {"mm_full": "full", "mm_lora": "lora", MM_PRETRAIN: "full"}
MM_FILES = {p: d["url"] for p, d in config["mm_downloads"].items() if not d["unzip"]}
MM_ARCHIVES = {p: d["url"] for p, d in config["mm_downloads"].items() if d["unzip"]}


def mm_member_args(path):
    """prefetch_mm's `--member NAME` for a file taken out of a zip archive, else nothing."""
    member = config["mm_downloads"][path]["member"]
    return f"--member {shlex.quote(member)}" if member else ""


def multimodal(backbone):
    return config["backbones"][backbone]["multimodal"]


def tower_of(backbone):
    """The vision tower: the built demo tower, or an id/path."""
    tower = multimodal(backbone)["tower"]
    return f"{RESULTS}/towers/{backbone}" if tower == "tiny" else tower


def mm_hparams_json(method):
    """Every setting of the job's stage (a params: an edit reruns exactly those jobs)."""

    def value(wildcards):
        name = method or wildcards.method
        settings = hparams(wildcards.backbone, name)
        return json.dumps(settings.params(MM_TRAIN_METHOD[name]), sort_keys=True)

    return value


def mm_inputs(wildcards):
    """The backbone and the tower where rules build them (the demo's), plus DeepSpeed."""
    inputs = backbone_inputs(wildcards)
    if multimodal(wildcards.backbone)["tower"] == "tiny":
        inputs["tower"] = tower_of(wildcards.backbone)
    return inputs


def pretrain_inputs(wildcards):
    block = multimodal(wildcards.backbone)["pretrain"]
    return {
        **mm_inputs(wildcards),
        **deepspeed_config(wildcards, MM_PRETRAIN),
        "captions": block["captions"],
        "images": block["images"],
    }


def stage1_output(backbone):
    """What stage 2 depends on: stage 1's directory, or the configured (released) file."""
    projector = multimodal(backbone)["projector"]
    if projector == "pretrain":
        return f"{RESULTS}/models/{backbone}/{MM_PRETRAIN}"
    return projector


def projector_file(backbone):
    """The study-format projector file stage 2 loads."""
    if multimodal(backbone)["projector"] == "pretrain":
        return f"{stage1_output(backbone)}/mm_projector.bin"
    return stage1_output(backbone)


def finetune_inputs(wildcards):
    variant = config["data"][wildcards.data]
    return {
        **mm_inputs(wildcards),
        **deepspeed_config(wildcards),
        "data": variant["sources"][0],  # raw LLaVA records, images kept (config.smk)
        "images": variant["images"],
        "stage1": stage1_output(wildcards.backbone),
    }


def mm_benchmark_inputs(wildcards):
    bench = config["mm_benchmarks"][wildcards.mm_benchmark]
    inputs = {
        "model": f"{RESULTS}/models/{wildcards.backbone}/{wildcards.data}/{wildcards.method}",
        "questions": bench["questions"],
        "images": bench["images"],
    }
    for field in MM_BENCHMARK_FILES:
        if bench[field]:
            inputs[field] = bench[field]
    return inputs


def mm_eval_args(wildcards):
    """sbt.mm_evaluate's arguments from the benchmark and the evaluation section (params)."""
    bench = config["mm_benchmarks"][wildcards.mm_benchmark]
    evaluation = config["evaluation"]
    args = ["--task", bench["task"], "--mode", bench["mode"], "--image", bench["image"]]
    args += ["--prompt", bench["prompt"]]
    args += ["--benchmark", wildcards.mm_benchmark, "--seed", str(bench["seed"])]
    if isinstance(evaluation["batch_size"], int):
        args += ["--batch-size", str(evaluation["batch_size"])]
    if evaluation["device"] in ("cpu", "cuda"):
        args += ["--device", evaluation["device"]]
    if bench["limit"]:
        args += ["--limit", str(bench["limit"])]
    for field in (*MM_BENCHMARK_FILES, "samples"):
        if bench[field]:
            args += [f"--{field}", str(bench[field])]
    args += ["--run-info", json.dumps(run_of(wildcards).info, sort_keys=True)]
    return " ".join(shlex.quote(arg) for arg in args)
