"""Check the GPU training paths on one NVIDIA GPU, offline: step time, tokens/s, memory, MFU.

Builds a randomly initialised LLaMA-shaped backbone from its config (no download) and
trains it for a few real steps with the workflow's own training code (`sbt.training.train`,
the study's template and settings), on synthetic records that each fill the whole sequence:

  --method full  (default shape 1b, TinyLlama's: hidden 2048, 22 layers, 32 heads, 4 KV
                 heads, intermediate 5632): float32 weights with bf16 autocast, sharded with
                 FSDP full_shard per decoder layer (launch with torchrun, one process per GPU)
                 or DeepSpeed ZeRO-3 where deepspeed is installed.
  --method lora  (default shape 7b, LLaMA-2-7B's: hidden 4096, 32 layers, 32 heads,
                 intermediate 11008): bfloat16 base weights, LoRA r=64 on every linear layer
                 but lm_head, gradient checkpointing.

MFU = model FLOPs per token x tokens/s / the GPU's dense bf16 peak. Model FLOPs per token:
full fine-tuning 6N (forward 2N, backward 4N); LoRA 4N + 2N_lora (forward 2N; backward 2N
for the activation gradients, frozen weights need no weight gradient, plus 2N_lora for the
adapter's weight gradients). N counts every parameter. Attention's sequence-length term
and the recomputation of gradient checkpointing are not counted (so MFU, not HFU).
`scripts/gpu_check.sh` (`make gpu-check`) runs both cases.
"""

from __future__ import annotations

import argparse
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

from sbt.common import cli, input_error, package_versions, write_json

METHODS = ("full", "lora")
SHARDINGS = ("fsdp", "zero3", "none")
DEFAULT_SHAPE = {"full": "1b", "lora": "7b"}
TEMPLATE = "llama_2"  # the study's template for its LLaMA-2 backbones
ZERO3_CONFIG = Path(__file__).resolve().parents[1] / "config" / "deepspeed" / "zero3.json"
NO_CUDA_EXIT = 3

# Shapes of real checkpoints (their config.json), random weights here.
SHAPES = {
    "1b": {  # TinyLlama-1.1B: 1,100,048,384 parameters
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 22,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "vocab_size": 32000,
        "max_position_embeddings": 2048,
    },
    "7b": {  # LLaMA-2-7B: 6,738,415,616 parameters
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
    },
    "tiny": {  # for trying the script's flow on a CPU (--allow-cpu)
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 1000,
        "max_position_embeddings": 512,
    },
}

# Dense (no sparsity) bf16 tensor-core peak per GPU, TFLOP/s, from the vendor's data sheets.
# The first name contained in the device name wins, so specific names come first.
PEAK_BF16_TFLOPS = (
    ("GH200", 989.4),
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H800", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.1),
    ("L40", 181.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("L4", 121.0),
)

WORDS = (
    "the a picture shows man woman dog cat bus train kite pizza horse boat table park river "
    "street beach red blue green white black yellow brown is on in near at with and of "
    "standing sitting running flying parked holding next to under behind small large old "
    "young bright dark sunny cloudy day evening people group two three many some"
).split()


def llama_config(shape: str):
    """The LlamaConfig of a shape in SHAPES (untied embeddings, as LLaMA's)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        **SHAPES[shape],
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        use_cache=False,
    )


def llama_param_count(config) -> int:
    """Parameters of LlamaForCausalLM(config): embeddings, layers, final norm, lm_head."""
    hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    q_out = config.num_attention_heads * head_dim
    kv_out = config.num_key_value_heads * head_dim
    attention = hidden * q_out + 2 * hidden * kv_out + q_out * hidden
    mlp = 3 * hidden * inter
    per_layer = attention + mlp + 2 * hidden  # two RMSNorm weights
    embeddings = config.vocab_size * hidden * (1 if config.tie_word_embeddings else 2)
    return embeddings + layers * per_layer + hidden


def lora_param_count(config, r: int) -> int:
    """LoRA parameters (A: r x in, B: out x r) on the 7 linear layers of every decoder layer."""
    hidden, inter = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    q_out = config.num_attention_heads * head_dim
    kv_out = config.num_key_value_heads * head_dim
    shapes = [
        (hidden, q_out),
        (hidden, kv_out),
        (hidden, kv_out),
        (q_out, hidden),
        (hidden, inter),
        (hidden, inter),
        (inter, hidden),
    ]
    return config.num_hidden_layers * sum(r * (fan_in + fan_out) for fan_in, fan_out in shapes)


def flops_per_token(method: str, params: int, trainable: int | None = None) -> float:
    """Model FLOPs per trained token: 6N for full fine-tuning, 4N + 2N_lora for LoRA."""
    if method == "full":
        return 6.0 * params
    if method == "lora":
        return 4.0 * params + 2.0 * (trainable or 0)
    raise ValueError(f"unknown method {method!r}")


def peak_bf16_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU by its name; None when the name is not in the table."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def mfu(flops_token: float, tokens_per_second: float, peak_tflops: float, gpus: int = 1) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak of all GPUs used."""
    return flops_token * tokens_per_second / (peak_tflops * 1e12 * gpus)


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
    parser.add_argument("--method", choices=METHODS, help="what to train (omit: only probe)")
    parser.add_argument("--shape", choices=tuple(SHAPES), help="default: 1b (full), 7b (lora)")
    parser.add_argument("--sharding", choices=SHARDINGS, default="fsdp", help="full only")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=4, help="per GPU (default 4)")
    parser.add_argument("--seq-len", type=int, default=2048, help="tokens per sample")
    parser.add_argument("--lora-r", type=int, default=64)
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak of one GPU")
    parser.add_argument("--hparams", default="{}", help="JSON overrides for train.py's hparams")
    parser.add_argument("--workdir", help="where the backbone and run go (default: temporary)")
    parser.add_argument("--output", help="write the measurements to this JSON file")
    parser.add_argument(
        "--allow-cpu", action="store_true", help="run without CUDA (tiny shape only; no MFU)"
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
    return args


def environment() -> dict:
    """Versions and the device, as printed at the start and stored with the results."""
    import torch

    env = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "packages": package_versions(("transformers", "peft", "accelerate", "deepspeed")),
        "device": "cpu",
        "device_count": torch.cuda.device_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env |= {
            "device": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }
    return env


def deepspeed_available() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def resolve_sharding(method: str, requested: str) -> tuple[str, str | None]:
    """The sharding this process can do, and a line saying why if it differs from the request."""
    if method != "full" or requested == "none":
        return "none", None
    distributed = "LOCAL_RANK" in os.environ
    if requested == "zero3":
        if deepspeed_available():
            return "zero3", None
        if distributed:
            return "fsdp", "deepspeed is not installed: using FSDP full_shard instead of ZeRO-3"
        return "none", "deepspeed is not installed and no torchrun: running without sharding"
    if distributed:
        return "fsdp", None
    return "none", "FSDP needs a torchrun launch (scripts/gpu_check.sh does it): no sharding"


def build_backbone(shape: str, dtype: str, output: Path) -> int:
    """Random-initialised LlamaForCausalLM of `shape` plus a LLaMA-style tokenizer; params."""
    import torch
    from build_tiny_backbone import train_tokenizer
    from sbt.templates import SYS_LLAMA_2
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    config = llama_config(shape)
    corpus = [" ".join(WORDS), SYS_LLAMA_2, "What does picture 0 show? [INST] <<SYS>> [/INST]"]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(corpus * 20, min(2000, config.vocab_size)),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):  # initialising 7B on the GPU takes seconds, not minutes
        model = LlamaForCausalLM._from_config(config, dtype=getattr(torch, dtype))
    params = sum(p.numel() for p in model.parameters())
    if params != llama_param_count(config):
        raise RuntimeError(
            f"{shape}: {params} parameters, formula says {llama_param_count(config)}"
        )
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
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


def run_check(args: argparse.Namespace, workdir: Path, env: dict) -> dict:
    """Build, train, measure; returns the measurements (also printed)."""
    import torch
    from sbt.training import train

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size != 1:
        raise input_error("WORLD_SIZE", "this check runs on one GPU: torchrun --nproc_per_node=1")
    sharding, note = resolve_sharding(args.method, args.sharding)
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
    hparams = {
        "max_steps": total_steps,
        "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": 1,
        "model_max_length": args.seq_len,
        "warmup_ratio": 0.0,
        "dtype": dtype,
        "save_steps": 10**6,  # no checkpoint inside the timed steps
        "max_skipped_fraction": 0.0,
        "lora": {"r": args.lora_r},
    }
    if sharding == "fsdp":
        hparams["fsdp"] = "full_shard auto_wrap"
    elif sharding == "zero3":
        hparams["deepspeed"] = str(ZERO3_CONFIG)
    hparams |= args.extra_hparams
    timer = _timer_callback()
    started = time.perf_counter()
    info = train(str(backbone), TEMPLATE, args.method, data, workdir / "run", hparams,
                 resume="never", extra_callbacks=[timer])  # fmt: skip
    train_seconds = time.perf_counter() - started
    if info["truncated"] != info["examples"]:  # then a step would hold fewer tokens
        raise RuntimeError("not every sample filled --seq-len: the token count would be wrong")
    if not math.isfinite(info["final_loss"]):
        raise RuntimeError(f"the loss is not finite: {info['final_loss']}")

    timed = timer.seconds[args.warmup_steps :]
    step_seconds = statistics.median(timed)
    tokens_per_step = args.batch_size * args.seq_len * world_size
    tokens_per_second = tokens_per_step / step_seconds
    config = llama_config(args.shape)
    trainable = base_params
    if args.method == "lora":  # as counted on the model the Trainer got, else the formula
        trainable = timer.trainable or lora_param_count(config, args.lora_r)
    params = base_params + (trainable if args.method == "lora" else 0)  # N: every parameter
    if args.method == "lora" and trainable != lora_param_count(config, args.lora_r):
        print(f"note: {trainable} trainable parameters, formula says "
              f"{lora_param_count(config, args.lora_r)}", file=sys.stderr)  # fmt: skip
    flops = flops_per_token(args.method, params, trainable)
    peak = args.peak_tflops or (peak_bf16_tflops(env["device"]) if env["device"] != "cpu" else None)
    result = {
        "method": args.method,
        "shape": args.shape,
        "config": SHAPES[args.shape],
        "params": params,
        "trainable_params": trainable,
        "weights_dtype": dtype,
        "sharding": sharding,
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
        "flops_formula": "6N" if args.method == "full" else "4N + 2N_lora",
        "peak_bf16_tflops": peak,
        "mfu": mfu(flops, tokens_per_second, peak, world_size) if peak else None,
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
        ),
        "final_loss": info["final_loss"],
        "build_seconds": build_seconds,
        "train_seconds": train_seconds,
        "environment": env,
    }
    print_result(result)
    return result


def print_result(r: dict) -> None:
    mfu_text = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a (unknown peak)"
    memory = f"{r['peak_memory_gib']:.1f} GiB" if r["peak_memory_gib"] is not None else "n/a"
    lines = [
        f"== {r['method']} {r['shape']}: {r['params']:,} parameters "
        f"({r['trainable_params']:,} trained), {r['weights_dtype']} weights, "
        f"sharding {r['sharding']} (accelerate: {r['distributed']})",
        f"   batch {r['batch_size']} x {r['seq_len']} tokens; median step "
        f"{r['step_seconds_median']:.3f} s over {len(r['step_seconds'])} steps "
        f"(after {r['warmup_steps']} warm-up)",
        f"   {r['tokens_per_second']:,.0f} tokens/s; peak GPU memory {memory}",
        f"   MFU {mfu_text}: {r['flops_formula']} = {r['flops_per_token'] / 1e9:.4g} GFLOP/token "
        f"over {r['peak_bf16_tflops'] or '?'} TFLOP/s bf16 peak",
        f"   final loss {r['final_loss']:.3f}; build {r['build_seconds']:.0f} s, "
        f"train() {r['train_seconds']:.0f} s",
    ]
    print("\n".join(lines), flush=True)


@cli
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
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
        + (f" ({env['memory_gib']} GiB, sm_{env['capability']})" if "capability" in env else ""),
        flush=True,
    )
    if args.method is None:
        return 0
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="gpu_check."))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run_check(args, workdir, env)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.output:
        write_json(args.output, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
