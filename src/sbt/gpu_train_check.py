"""The GPU check's training cases (sbt.gpu_check --method full|lora): build a random
backbone of a shape, train it for a few steps through `sbt.training.train` on records that
each fill the sequence, and measure step time, tokens/s, peak memory, MFU and the loss.
Sharding: DeepSpeed ZeRO-2/3 (config/deepspeed/), FSDP full_shard per decoder layer, or
none (`resolve_sharding`)."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

from sbt.common import input_error
from sbt.demo import CHECKOUT
from sbt.demo.llava import filler_records
from sbt.gpu_report import print_training
from sbt.perf import (
    SHAPES,
    flops_per_token,
    lora_param_count,
    matmul_params,
    mfu,
    peak_for_mfu,
)
from sbt.random_backbone import build_backbone

SHARDINGS = ("zero2", "zero3", "fsdp", "none")
DEEPSPEED_CONFIGS = {
    "zero2": CHECKOUT / "config" / "deepspeed" / "zero2.json",
    "zero3": CHECKOUT / "config" / "deepspeed" / "zero3.json",
}
LEARNING_RATE = {"full": 1e-4, "lora": 1e-3}  # the check's: a few steps show the loss fall
TEMPLATE = "llava_llama_2"  # the study's template for its LLaMA-2 backbones


def deepspeed_available() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def resolve_sharding(method: str, requested: str, cpu: bool = False) -> tuple[str, str | None]:
    """The sharding this process will use, and a line saying why if it differs.

    On a GPU a missing DeepSpeed or torchrun is an error (the check would measure something
    else); on a CPU (--allow-cpu) the case falls back, so the flow can still be tried.
    """
    if method == "eval" or requested == "none":
        return "none", None
    distributed = "LOCAL_RANK" in os.environ
    problem = None
    if requested in DEEPSPEED_CONFIGS and not deepspeed_available():
        problem = "deepspeed is not installed (pip install -r requirements-gpu.txt)"
    elif not distributed:
        problem = f"{requested} needs a torchrun launch (scripts/gpu_check.sh does it)"
    if problem is None:
        return requested, None
    if not cpu:
        raise input_error("--sharding", f"{requested}: {problem}")
    if requested in DEEPSPEED_CONFIGS and distributed:
        return "ddp", f"{problem}: running plain data parallel instead"
    return "none", f"{problem}: running without sharding"


def _timer_callback():
    import torch
    from transformers import TrainerCallback

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    class StepTimer(TrainerCallback):
        """Wall time of every optimiser step; peak GPU memory from the start of training."""

        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.trainable: int | None = None
            self._start = 0.0

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if model is not None:
                self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()

        def on_step_begin(self, args, state, control, **kwargs):
            sync()
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            self.seconds.append(time.perf_counter() - self._start)

    return StepTimer()


def loss_trend(losses: list[float]) -> dict:
    """Whether the losses are finite and fall: the mean of the last third below the first's."""
    finite = bool(losses) and all(math.isfinite(x) for x in losses)
    third = max(1, len(losses) // 3)
    first, last = losses[:third], losses[-third:]
    falling = finite and len(losses) >= 2 and statistics.fmean(last) < statistics.fmean(first)
    return {
        "losses": losses,
        "loss_finite": finite,
        "loss_falling": falling,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
    }


def training_hparams(args: argparse.Namespace, sharding: str, dtype: str) -> dict:
    """train()'s hparams: the paper's recipe (config/paper.yaml) where it matters for speed."""
    hparams = {
        "max_steps": args.warmup_steps + args.steps,
        "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": 1,
        "model_max_length": args.seq_len,
        "learning_rate": LEARNING_RATE[args.method],
        "warmup_ratio": 0.0,
        "bf16": True,
        "tf32": True,
        "gradient_checkpointing": True,
        "dtype": dtype,
        "logging_steps": 1,
        "save_steps": 10**6,  # no checkpoint inside the timed steps
        "max_skipped_fraction": 0.0,
        "lora": {"r": args.lora_r},
        "resume": "never",
    }
    if sharding == "fsdp":
        hparams["fsdp"] = "full_shard auto_wrap"
    elif sharding in DEEPSPEED_CONFIGS:
        hparams["deepspeed"] = str(DEEPSPEED_CONFIGS[sharding])
    return hparams | args.extra_hparams


def run_training(args: argparse.Namespace, workdir: Path, env: dict) -> dict:
    """Build, train, measure one training case; returns the measurements."""
    import torch

    from sbt.training import train

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size != 1:
        raise input_error("WORLD_SIZE", "this check runs on one GPU: torchrun --nproc_per_node=1")
    sharding, note = resolve_sharding(args.method, args.sharding, cpu=env["device"] == "cpu")
    if note:
        print(f"note: {note}", file=sys.stderr, flush=True)
    dtype = "float32" if args.method == "full" else "bfloat16"
    backbone = workdir / f"backbone-{args.shape}"
    started = time.perf_counter()
    base_params = build_backbone(args.shape, dtype, backbone)
    build_seconds = time.perf_counter() - started

    data = workdir / "data.json"
    count = (args.warmup_steps + args.steps) * args.batch_size
    records = filler_records(count, words_per_answer=args.seq_len, id_prefix="gpu-check")
    data.write_text(json.dumps(records), encoding="utf-8")
    hparams = training_hparams(args, sharding, dtype)
    timer = _timer_callback()
    started = time.perf_counter()
    run = workdir / "run"
    info = train(str(backbone), TEMPLATE, args.method, data, run, hparams, extra_callbacks=[timer])
    train_seconds = time.perf_counter() - started
    if info["truncated"] != info["examples"]:  # then a step would hold fewer tokens
        raise RuntimeError("not every sample filled --seq-len: the token count would be wrong")
    with open(run / "loss.csv", newline="", encoding="utf-8") as fh:
        trend = loss_trend([float(row["loss"]) for row in csv.DictReader(fh)])

    timed = timer.seconds[args.warmup_steps :]
    step_seconds = statistics.median(timed)
    tokens_per_step = args.batch_size * args.seq_len * world_size
    tokens_per_second = tokens_per_step / step_seconds
    shape = SHAPES[args.shape]
    adapter = 0
    if args.method == "lora":  # as counted on the model the Trainer got, else the formula
        adapter = timer.trainable or lora_param_count(shape, args.lora_r)
        if adapter != lora_param_count(shape, args.lora_r):
            print(f"note: {adapter} trainable parameters, formula says "
                  f"{lora_param_count(shape, args.lora_r)}", file=sys.stderr)  # fmt: skip
    flops = flops_per_token(
        matmul_params(shape),
        shape["num_hidden_layers"],
        shape["hidden_size"],
        attention_span=args.seq_len,  # every sample fills the sequence
        adapter_params=adapter,
        lora=args.method == "lora",
    )
    peak = peak_for_mfu(env["device"], env.get("sm_count"), given=args.peak_tflops)
    result = {
        "case": args.case,
        "method": args.method,
        "shape": args.shape,
        "config": shape,
        "params": base_params + adapter,
        "trainable_params": adapter if args.method == "lora" else base_params,
        "weights_dtype": dtype,
        "requested_sharding": args.sharding,
        "sharding": sharding,
        "sharding_note": note,
        "distributed": info["effective"].get("distributed"),
        "effective": info["effective"],
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "tokens_per_step": tokens_per_step,
        "warmup_steps": args.warmup_steps,
        "step_seconds": timed,
        "step_seconds_median": step_seconds,
        "tokens_per_second": tokens_per_second,
        "flops_per_token": flops,
        "flops_formula": "4N + 6N_lora + 12LdT" if args.method == "lora" else "6N + 12LdT",
        "peak_bf16_tflops": peak,
        "mfu": mfu(flops, tokens_per_second, peak, world_size) if peak else None,
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
        ),
        "final_loss": info["final_loss"],
        **trend,
        "build_seconds": build_seconds,
        "train_seconds": train_seconds,
        "environment": env,
    }
    print_training(result)
    if not trend["loss_finite"]:
        raise RuntimeError(f"the loss is not finite: {trend['losses']}")
    return result
