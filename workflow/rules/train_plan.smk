"""Each train job from the config: its backbone's inputs, its settings (one TrainConfig per
run, checked here for every run of the grid), launch line and resources; and the disk the
grid's models take (said once per dry run)."""

import functools
import json
import os
from pathlib import Path

from snakemake.logging import logger

# The workflow's package (`make setup` installs it), imported here so the training
# settings are checked and merged by the very declarations (sbt.train_config) that
# sbt.train reads them with.
from sbt import runs
from sbt.launch import slurm_resources, train_launcher as launch_command
from sbt.settings import SettingError, settings_of
from sbt.train_config import TrainConfig

# The multi-node launch script, relative to the working directory (a recorded param).
NODE_SCRIPT = os.path.relpath(
    Path(workflow.basedir).parent / "scripts" / "torchrun_slurm.sh"
)


# ---------------------------------------------------------------- backbones


def is_tiny(backbone):
    return runs.is_tiny(config, backbone)


def backbone_model(backbone):
    """Where the base weights come from: the locally built demo model, or an id/path."""
    return runs.backbone_model(config, backbone)


def backbone_inputs(wildcards):
    """A built demo backbone is a rule output; hub ids and cluster paths are not."""
    if is_tiny(wildcards.backbone):
        return {"backbone": backbone_model(wildcards.backbone)}
    return {}


def tiny_corpus():
    """Text the demo tokenizers are trained on: the data variants' sources. (Not the
    benchmark files, so editing a benchmark never rebuilds and retrains the backbones.)
    """
    captions = {
        b["multimodal"]["pretrain"]["captions"]
        for b in config["backbones"].values()
        if "pretrain" in b.get("multimodal", {})
    }  # a tiny backbone of the multimodal arm must know the captions' words too
    return sorted({s for v in config["data"].values() for s in v["sources"]} | captions)


# ---------------------------------------------------------------- training


BACKBONE_SETTINGS = [f.name for f in settings_of(TrainConfig, "backbone")]


@functools.cache
def hparams(backbone, method):
    """The run's TrainConfig, merged once: its defaults (sbt.train_config) <-
    training.<method> <- backbones.<b>.training.<method> <- the backbone's own keys
    (trust_remote_code, tokenizer_legacy, allow_pickle_weights)."""
    settings = config["backbones"][backbone]
    layers = (
        config["training"].get(method, {}),
        settings.get("training", {}).get(method, {}),
        {key: settings[key] for key in BACKBONE_SETTINGS},
    )
    try:
        return TrainConfig.from_layers(*layers)
    except SettingError as exc:  # what the schema cannot say, e.g. max_steps 0
        key = f"training.{method}" + (f".{exc.key}" if exc.key else "")
        config_error(key, f"{exc} (backbone {backbone})")


def train_hparams_json(wildcards):
    """Every training setting, num_gpus included: it is a params, so editing any of them
    (the global batch follows the GPUs unless global_batch_size is set) reruns the job.
    """
    settings = hparams(wildcards.backbone, wildcards.method)
    return json.dumps(settings.params(wildcards.method), sort_keys=True)


def check_global_batch(backbone, method):
    """global_batch_size must split into per-device batches over the job's processes."""
    settings = hparams(backbone, method)
    processes = max(1, settings.num_gpus) * settings.nodes
    try:  # the rule train itself applies (sbt.train_config), said in config terms
        settings.accumulation_steps(processes)
    except SettingError:
        nodes = " x nodes" if settings.nodes > 1 else ""
        per_step = settings.per_device_train_batch_size * processes
        config_error(
            f"training.{method}.global_batch_size",
            f"{settings.global_batch_size} for backbone {backbone} is not a multiple of"
            f" per_device_train_batch_size x num_gpus{nodes} = {per_step}",
        )


for _backbone, _, _method in trained_runs():
    check_global_batch(_backbone, _method)
for _backbone in mm_backbones():  # stage 1, where the backbone trains its own projector
    if config["backbones"][_backbone]["multimodal"]["projector"] == "pretrain":
        check_global_batch(_backbone, MM_PRETRAIN)


def num_gpus(backbone, method):
    return hparams(backbone, method).num_gpus


def job_method(wildcards, method=None):
    """The settings' method of a train job: its wildcard, or fixed (mm_pretrain)."""
    return method or wildcards.method


def train_nodes(wildcards):
    return hparams(wildcards.backbone, wildcards.method).nodes


def train_resource(name, method=None):
    """One scheduler resource of a train job (sbt.launch.slurm_resources): `gpu` on one
    node; `nodes`, `tasks`, `gres`, `tasks_per_gpu`, `mpi` across several (None: unset).
    `method`: the settings of a rule without a method wildcard (mm_pretrain).
    """

    def value(wildcards):
        settings = hparams(wildcards.backbone, job_method(wildcards, method))
        return slurm_resources(settings.nodes, settings.num_gpus)[name]

    return value


def launcher_of(method):
    """train_launcher for a rule without a method wildcard (mm_pretrain)."""
    return lambda wildcards: train_launcher(wildcards, method)


def threads_of(method):
    """train_threads for a rule without a method wildcard (mm_pretrain)."""
    return lambda wildcards: train_threads(wildcards, method)


def train_launcher(wildcards, method=None):
    """One node: python, or torchrun with one process per GPU (FSDP and DeepSpeed need
    torchrun even on one GPU). Several nodes: srun starting one torchrun per node, which
    meet in a c10d rendezvous (sbt.launch, docs/slurm.md). From wildcards only, so the
    launch line is a recorded param."""
    settings = hparams(wildcards.backbone, job_method(wildcards, method))
    return launch_command(
        settings.nodes,
        settings.num_gpus,
        sharded=bool(settings.fsdp or settings.deepspeed),
        cpus_per_task=train_threads(wildcards, method),
        node_script=NODE_SCRIPT,
    )


def train_threads(wildcards, method=None):
    """CPU cores for data loading and the launcher: 8 per GPU, 1 on a CPU-only job."""
    return max(1, 8 * num_gpus(wildcards.backbone, job_method(wildcards, method)))


def deepspeed_config(wildcards, method=None):
    """The DeepSpeed JSON is an input, so editing it reruns the runs that use it."""
    path = hparams(wildcards.backbone, job_method(wildcards, method)).deepspeed
    return {"deepspeed": path} if path else {}


def size_b(backbone):
    return runs.backbone_size_b(config, backbone)


def train_mem_mb(wildcards, attempt):
    """Host memory grows with the model and with each retry after running out."""
    return int((8 + 16 * size_b(wildcards.backbone)) * 1024 * attempt)


def train_runtime(wildcards, attempt):
    return int(max(30, 90 * size_b(wildcards.backbone)) * attempt)


# ---------------------------------------------------------------- disk


BYTES_PER_PARAM = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 4}


def disk_estimate():
    """Rough disk the grid's model outputs need, so nobody finds out from a full quota.

    Full fine-tunes are saved in their save_dtype (auto: float32); a LoRA adapter is about 2% of its
    base at the study's r=64 on every linear layer; a resumable checkpoint (weights plus
    Adam state, float32) needs about 16 bytes per trained parameter while its job runs.
    A multimodal run (mm_full, mm_lora merged) is a whole model twice: its LLaVA directory
    and the extracted language model.
    """
    gb = 1e9
    models = mm_models = checkpoints = 0.0
    counts = {"full": 0, "lora": 0, "mm": 0}
    for backbone, _, method in trained_runs():
        params = size_b(backbone) * 1e9
        per_param = BYTES_PER_PARAM[hparams(backbone, method).save_dtype]
        if method in MM_METHODS:
            mm_models += 2 * params * per_param
            checkpoints = max(checkpoints, params * 16)
            counts["mm"] += 1
            continue
        trained = params if method == "full" else params * 0.02
        models += params * per_param if method == "full" else trained * 4
        checkpoints = max(checkpoints, trained * 16)
        counts[method] += 1
    multimodal = (
        f" Multimodal: {counts['mm']} models = {mm_models / gb:.1f} GB more."
        if counts["mm"]
        else ""
    )
    return (
        f"Disk estimate: {counts['full']} full models + {counts['lora']} LoRA adapters"
        f" = {models / gb:.1f} GB under {RESULTS}/models; up to {checkpoints / gb:.1f} GB"
        " more per training job while it runs (resumable checkpoint, deleted after success)."
        + multimodal
    )


if workflow.is_main_process:
    logger.info(disk_estimate())
