"""One measured run of scripts/bench_train.py: a recipe (a variant) trained in its own
process through `sbt.training.train`, with its tokens, time, padding and peak memory.

bench_train.py starts `bench_train.py --variant a|b` once per run and reads the result;
the variants and the settings both share are here.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

MAX_LENGTH = 2048  # the study's; the tiny model too, so the lengths need no scaling
TEMPLATE = "v1"
VARIANTS = {
    "a": ("study: padded batches", {"packing": False, "group_by_length": False}),
    "b": ("default: packing auto", {}),
}


def hparams_for(args: argparse.Namespace, setup: dict, variant: str) -> dict:
    cuda = args.device == "cuda"
    big = args.model_shape != "tiny"
    return {
        "max_steps": args.warmup_steps + args.steps,
        "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-5 if big else 1e-3,
        "model_max_length": MAX_LENGTH,
        "bf16": cuda,
        "tf32": cuda,
        "gradient_checkpointing": big,  # the study's setting; the tiny demo model needs none
        "dtype": "bfloat16" if args.model_shape == "7b" else "float32",
        "logging_steps": 10**6,
        "save_steps": 10**6,
        "lora": {} if big else {"r": 8},
        "tokenized_cache_dir": str(Path(setup["data"]).parent / "tokenized"),
        **VARIANTS[variant][1],
    }


def run_variant(args: argparse.Namespace, setup: dict) -> dict:
    """Train one variant in this process and measure it (called in a child process)."""
    import numpy as np
    import torch
    from transformers import TrainerCallback

    from sbt.train_data import load_tokenized
    from sbt.training import train

    cuda = args.device == "cuda"
    warmup = args.warmup_steps

    class Clock(TrainerCallback):
        """Wall time at each step's end (step 0: the first step's start), batch sizes, model."""

        def __init__(self):
            self.times, self.collator, self.model = {}, None, None

        def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kw):
            self.collator, self.model = train_dataloader.collate_fn, model
            if cuda:
                torch.cuda.reset_peak_memory_stats()

        def on_step_begin(self, args, state, control, **kwargs):
            self.times.setdefault(state.global_step, time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            self.times[state.global_step] = time.perf_counter()

    clock = Clock()
    with tempfile.TemporaryDirectory(dir=Path(setup["data"]).parent) as tmp:
        info = train(
            setup["model"],
            TEMPLATE,
            args.method,
            setup["data"],
            Path(tmp) / "out",
            hparams_for(args, setup, args.variant) | {"resume": "never"},
            extra_callbacks=[clock],
        )
    steps = info["global_step"]
    batches = clock.collator.batches[warmup:steps]  # one batch per step (no accumulation)
    params = sum(p.numel() for p in clock.model.parameters())
    embedding = clock.model.get_input_embeddings().weight.numel()
    trainable = sum(p.numel() for p in clock.model.parameters() if p.requires_grad)
    config = clock.model.config
    cache = load_tokenized(Path(info["effective"]["tokenized_cache"]["path"]))
    lengths = np.asarray(cache.dataset["length"], dtype=np.float64)
    if cuda:
        peak, memory_kind = torch.cuda.max_memory_allocated(), "GPU allocated"
    else:
        peak, memory_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "RSS"
    return {
        "variant": args.variant,
        "seconds": clock.times[steps] - clock.times[warmup],
        "tokens": sum(t for t, _ in batches),
        "positions": sum(p for _, p in batches),
        "steps": steps - warmup,
        "peak_memory": peak,
        "memory_kind": memory_kind,
        "effective": info["effective"],
        "matmul_params": params - embedding,
        "trainable_params": trainable,
        "params": params,
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "lengths": {
            "count": len(lengths),
            "median": float(np.median(lengths)),
            "p90": float(np.percentile(lengths, 90)),
            "max": float(lengths.max()),
            "sq_over_sum": float((lengths**2).sum() / lengths.sum()),
        },
        "device_name": torch.cuda.get_device_name() if cuda else "cpu",
        "sm_count": torch.cuda.get_device_properties(0).multi_processor_count if cuda else None,
    }
