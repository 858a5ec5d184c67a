"""Check the paper's GPU paths on one NVIDIA GPU, offline: step time, tokens/s, memory, MFU.

Builds randomly initialised LLaMA-shaped backbones from their config (no download; shapes
from `sbt.perf.SHAPES`) and runs each case for a few real steps through the workflow's own
code, on synthetic records that each fill the whole sequence:

  --method full  (default shape 1b, TinyLlama's): float32 weights, bf16, gradient
                 checkpointing, sharded with DeepSpeed ZeRO-2 (--sharding zero2, the
                 paper's setting, config/deepspeed/zero2.json) or FSDP full_shard per
                 decoder layer (--sharding fsdp); launch with torchrun, one process.
  --method lora  (default shape 7b, LLaMA-2-7B's): LoRA r=64 on every linear layer but
                 lm_head, gradient checkpointing, ZeRO-2 as the paper; the frozen base
                 weights are loaded in bfloat16 (what DeepSpeed's bf16 mode makes of the
                 paper's float32 load anyway, at half the disk and load time).
  --method eval  (default shape 1b): sbt.evaluate (lm-eval) in bf16 on the GPU on
                 the demo's local TruthfulQA-MC file.

MFU = model FLOPs per token x tokens/s / the GPU's dense bf16 peak, both from sbt.perf
(6N + 12 L d T per trained token, PaLM's convention; LoRA: 4N + 6N_lora + 12 L d T). The
learning rate is the check's, not the study's (1e-4 full, 1e-3 LoRA), so that a few steps
show the loss falling. `--summarize DIR` prints one table of the JSON results in DIR, with
the issue's MFU targets on an H100/H200 (7B LoRA >= 45%, 1B full >= 35%) as PASS/FAIL.
`scripts/gpu_check.sh` (`make gpu-check`) runs every case within a fixed time bound.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sbt.common import cli, input_error, package_versions, use_offline_hub, write_json
from sbt.gpu_report import print_eval, print_training, summarize
from sbt.perf import (
    SHAPES,
    flops_per_token,
    llama_param_count,
    lora_param_count,
    matmul_params,
    mfu,
    peak_bf16_tflops,
)

REPO = Path(__file__).resolve().parents[2]  # the checkout (configs, demo files)
METHODS = ("full", "lora", "eval")
SHARDINGS = ("zero2", "zero3", "fsdp", "none")
DEFAULT_SHAPE = {"full": "1b", "lora": "7b", "eval": "1b"}
LEARNING_RATE = {"full": 1e-4, "lora": 1e-3}
TEMPLATE = "llava_llama_2"  # the study's template for its LLaMA-2 backbones
DEEPSPEED_CONFIGS = {
    "zero2": REPO / "config" / "deepspeed" / "zero2.json",
    "zero3": REPO / "config" / "deepspeed" / "zero3.json",
}
EVAL_TASKS = ("truthfulqa_mc1", "truthfulqa_mc2")
EVAL_DATA = REPO / "resources" / "demo" / "benchmarks" / "truthfulqa_mc.jsonl"
NO_CUDA_EXIT = 3

WORDS = (
    "the a picture shows man woman dog cat bus train kite pizza horse boat table park river "
    "street beach red blue green white black yellow brown is on in near at with and of "
    "standing sitting running flying parked holding next to under behind small large old "
    "young bright dark sunny cloudy day evening people group two three many some"
).split()


def llama_config(shape: str):
    """The LlamaConfig of a shape in sbt.perf.SHAPES (untied embeddings, as LLaMA's)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        **SHAPES[shape],
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        use_cache=False,
    )


def synthetic_records(count: int, words_per_answer: int, seed: int = 0) -> list[dict]:
    """LLaVA-format records whose answers are long enough to fill any sequence length."""
    rng = random.Random(seed)
    records = []
    for i in range(count):
        answer = " ".join(rng.choice(WORDS) for _ in range(words_per_answer))
        question = f"What does picture {i} show?"
        records.append(
            {
                "id": f"gpu-check-{i}",
                "conversations": [
                    {"from": "human", "value": question},
                    {"from": "gpt", "value": answer},
                ],
            }
        )
    return records


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--method", choices=METHODS, help="what to run (omit: only probe)")
    parser.add_argument("--shape", choices=tuple(SHAPES), help="default: 1b (full, eval), 7b")
    parser.add_argument("--sharding", choices=SHARDINGS, default="zero2", help="training")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=4, help="per GPU (default 4)")
    parser.add_argument("--seq-len", type=int, default=2048, help="tokens per sample")
    parser.add_argument("--lora-r", type=int, default=64)
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak of one GPU")
    parser.add_argument("--hparams", default="{}", help="JSON overrides for train.py's hparams")
    parser.add_argument("--case", help="name recorded in the result (gpu_check.sh sets it)")
    parser.add_argument("--workdir", help="where the backbone and run go (default: temporary)")
    parser.add_argument("--output", help="write the measurements to this JSON file")
    parser.add_argument(
        "--allow-cpu", action="store_true", help="run without CUDA (tiny shape only; no MFU)"
    )
    parser.add_argument(
        "--summarize", metavar="DIR", help="print the table of the results in DIR and exit"
    )
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "seq_len", "lora_r"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup_steps < 0:
        parser.error("--warmup-steps must be at least 0")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        parser.error("--peak-tflops must be positive")
    if args.method and args.shape is None:
        args.shape = DEFAULT_SHAPE[args.method]
    if args.allow_cpu and args.shape not in (None, "tiny"):
        parser.error("--allow-cpu runs only --shape tiny (a 1B model on a CPU takes hours)")
    if args.shape and args.seq_len > SHAPES[args.shape]["max_position_embeddings"]:
        parser.error(f"--seq-len is longer than the {args.shape} shape's positions")
    try:
        extra = json.loads(args.hparams)
    except json.JSONDecodeError as exc:
        parser.error(f"--hparams: invalid JSON: {exc}")
    if not isinstance(extra, dict):
        parser.error("--hparams must be a JSON object")
    args.extra_hparams = extra
    args.case = args.case or (f"{args.method}-{args.shape}" if args.method else None)
    return args


def environment() -> dict:
    """Versions and the device, as printed at the start and stored with the results."""
    import torch

    env = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "packages": package_versions(
            ("transformers", "peft", "accelerate", "deepspeed", "lm_eval", "flash_attn")
        ),
        "device": "cpu",
        "device_count": torch.cuda.device_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env |= {
            "device": props.name,
            "sm_count": props.multi_processor_count,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }
    return env


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


def build_backbone(shape: str, dtype: str, output: Path) -> int:
    """Random-initialised LlamaForCausalLM of `shape` plus a LLaMA-style tokenizer; params."""
    import torch
    from transformers import LlamaForCausalLM

    from sbt.demo.backbone import train_sentencepiece, write_tokenizer
    from sbt.templates import SYS_LLAMA_2

    config = llama_config(shape)
    corpus = [" ".join(WORDS), SYS_LLAMA_2, "What does picture 0 show? [INST] <<SYS>> [/INST]"]
    tokenizer_model = train_sentencepiece(corpus * 20, min(2000, config.vocab_size))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):  # initialising 7B on the GPU takes seconds, not minutes
        model = LlamaForCausalLM._from_config(config, dtype=getattr(torch, dtype))
    params = sum(p.numel() for p in model.parameters())
    if params != llama_param_count(SHAPES[shape]):
        raise RuntimeError(
            f"{shape}: {params} parameters, formula says {llama_param_count(SHAPES[shape])}"
        )
    model.save_pretrained(output)
    # The tokenizer files a LLaMA checkout has (the demo backbones' builder writes them).
    write_tokenizer(tokenizer_model, output, model_max_length=config.max_position_embeddings)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return params


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


def device_peak(args: argparse.Namespace, env: dict) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    if env["device"] == "cpu":
        return None
    return peak_bf16_tflops(env["device"], env.get("sm_count"))


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

    total_steps = args.warmup_steps + args.steps
    data = workdir / "data.json"
    records = synthetic_records(total_steps * args.batch_size, words_per_answer=args.seq_len)
    data.write_text(json.dumps(records), encoding="utf-8")
    hparams = {  # the paper's recipe (config/paper.yaml) where it matters for speed
        "max_steps": total_steps,
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
    hparams |= args.extra_hparams
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
    peak = device_peak(args, env)
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


def run_eval(args: argparse.Namespace, workdir: Path, env: dict) -> dict:
    """lm-eval through sbt.evaluate, in this process, bf16 on the GPU."""
    import torch

    cuda = env["device"] != "cpu"
    dtype = "bfloat16"
    backbone = workdir / f"backbone-{args.shape}"
    started = time.perf_counter()
    build_backbone(args.shape, dtype, backbone)
    build_seconds = time.perf_counter() - started
    from sbt import evaluate

    output = workdir / "eval.json"
    argv = ["--model", str(backbone), "--data-files", f"validation={EVAL_DATA}",
            "--output", str(output), "--dtype", dtype, "--device", "cuda" if cuda else "cpu",
            "--batch-size", str(args.batch_size * 4), "--bootstrap-iters", "0"]  # fmt: skip
    for task in EVAL_TASKS:
        argv += ["--task", task]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    status = evaluate.main(argv)
    seconds = time.perf_counter() - started
    if status:
        raise RuntimeError(f"sbt.evaluate exited with {status}")
    report = json.loads(output.read_text(encoding="utf-8"))
    metrics = report["metrics"]
    n_samples = report.get("n_samples") or {}
    documents = sum((n_samples.get(t) or {}).get("effective", 0) for t in EVAL_TASKS)
    finite = bool(metrics) and all(
        isinstance(v, int | float) and math.isfinite(v) for v in metrics.values()
    )
    result = {
        "case": args.case,
        "method": "eval",
        "shape": args.shape,
        "weights_dtype": dtype,
        "tasks": list(EVAL_TASKS),
        "metrics": metrics,
        "metrics_finite": finite,
        "documents": documents,
        "eval_seconds": seconds,
        "documents_per_second": documents / seconds if seconds else None,
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
        ),
        "build_seconds": build_seconds,
        "environment": env,
    }
    print_eval(result)
    if not finite:
        raise RuntimeError(f"evaluation gave non-finite metrics: {metrics}")
    return result


@cli
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summarize:
        return summarize(Path(args.summarize))
    use_offline_hub()
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print(
            f"error: no CUDA GPU visible (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda or 'none'}): this check needs an NVIDIA GPU and a CUDA "
            "build of torch",
            file=sys.stderr,
        )
        return NO_CUDA_EXIT
    env = environment()
    print(
        f"torch {env['torch']} (CUDA {env['cuda']}, cuDNN {env['cudnn']}), "
        + ", ".join(f"{k} {v}" for k, v in env["packages"].items())
        + f"; device {env['device']}"
        + (f" ({env['memory_gib']} GiB, sm_{env['capability']}, {env['sm_count']} SMs, "
           f"bf16 peak {device_peak(args, env) or '?'} TFLOP/s)" if "capability" in env else ""),
        flush=True,
    )  # fmt: skip
    if args.method is None:
        return 0
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="gpu_check."))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if args.method == "eval":
            result = run_eval(args, workdir, env)
        else:
            result = run_training(args, workdir, env)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.output:
        write_json(args.output, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
