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
import json
import shutil
import sys
import tempfile
from pathlib import Path

from sbt.common import cli, package_versions, use_offline_hub, write_json
from sbt.gpu_eval_check import run_eval
from sbt.gpu_report import summarize
from sbt.gpu_train_check import SHARDINGS, run_training
from sbt.perf import SHAPES, peak_for_mfu

METHODS = ("full", "lora", "eval")
DEFAULT_SHAPE = {"full": "1b", "lora": "7b", "eval": "1b"}
NO_CUDA_EXIT = 3


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
    peak = peak_for_mfu(env["device"], env.get("sm_count"), given=args.peak_tflops)
    print(
        f"torch {env['torch']} (CUDA {env['cuda']}, cuDNN {env['cudnn']}), "
        + ", ".join(f"{k} {v}" for k, v in env["packages"].items())
        + f"; device {env['device']}"
        + (f" ({env['memory_gib']} GiB, sm_{env['capability']}, {env['sm_count']} SMs, "
           f"bf16 peak {peak or '?'} TFLOP/s)" if "capability" in env else ""),
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
