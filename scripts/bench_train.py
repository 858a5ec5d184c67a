#!/usr/bin/env python
"""Measure training throughput: the study's padded batches against our default (packing).

Both runs train the same freshly built LLaMA-architecture model on the same LLaVA-like
data for the same number of optimiser steps with the same batch size, through the real
training code (`sbt.training.train`: tokenizer set-up, labels, collator, Trainer):
(a) the study's recipe: batches padded to their longest sample, random order;
(b) our default: `packing: auto` (padding-free rows, each sample attending only to itself,
the output layer only where a token is trained).
Each run is a separate process, so peak memory is its own. Printed per run: effective
(non-padding) tokens per second, padding share, peak memory (GPU: allocated; CPU: the
process's peak resident set), on a GPU also MFU; the last line is `ratio: X`, (b)'s
tokens/s over (a)'s. Each recipe runs `--repeats` times, alternating, and its fastest run
counts (machines shared with other work are noisy).

`--measure data` measures the training data path's memory instead (scripts/bench_data.py):
the peak resident set that tokenizing and holding the examples adds to a process, for the
old in-memory Python lists (before) and the memory-mapped Arrow cache (after), on
`--records` records (default 80,000). Last lines: `data path ratio (...): after / before`.

Data: conversations built from the demo generator's sentences with a LLaVA-like length
distribution (log-normal, median about 300 tokens, about 5% above 1,000, capped at 2,048,
the study's maximum length, which every shape uses), template v1, about 60% of the tokens
trained (assistant turns). The first `--warmup-steps` steps are not timed. Models are
built locally with random weights (no model hub); the tokenizer is trained on the bench
text, so its vocabulary is smaller than LLaMA's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_train_variant import MAX_LENGTH, TEMPLATE, VARIANTS, run_variant

from sbt.common import OFFLINE_ENV, cli, input_error, use_offline_hub
from sbt.demo.llava import generate_records, length_mix_records, sample_lengths
from sbt.perf import SHAPES, flops_per_token, peak_for_mfu
from sbt.perf import mfu as mfu_of

# Model shapes (LLaMA architecture, random weights): sbt.perf.SHAPES (tiny: the demo's;
# 1b: TinyLlama-1.1B's; 7b: LLaMA-2-7B's). The tokenizer is trained on the bench data, so
# the vocabulary is smaller than LLaMA's 32,000.
SHAPE_NAMES = tuple(SHAPES)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--measure",
        choices=("throughput", "data"),
        default="throughput",
        help="training throughput (default), or the data path's peak memory",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model-shape", choices=SHAPE_NAMES, default="tiny")
    parser.add_argument("--method", choices=("full", "lora"), default="full")
    parser.add_argument("--steps", type=int, default=40, help="timed optimiser steps")
    parser.add_argument("--batch-size", type=int, default=4, help="samples per step (study 4)")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs of each recipe, alternating; the best counts"
    )
    parser.add_argument(
        "--records",
        type=int,
        default=None,
        help="default: enough for all steps (--measure data: 80000)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peak-tflops", type=float, default=None, help="GPU peak, for MFU")
    parser.add_argument("--workdir", default=None, help="keep the model and data here")
    parser.add_argument("--variant", choices=tuple(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "repeats"):
        if getattr(args, name) < 1:
            raise input_error(f"--{name.replace('_', '-')}", "must be at least 1")
    if args.warmup_steps < 0:
        raise input_error("--warmup-steps", "must be 0 or more")
    return args


def system_text() -> str:
    """The template's text around one round, so the bench tokenizer learns it as well."""
    from sbt.templates import render

    probe = [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]
    return render(TEMPLATE, probe).text


def llava_like_records(count: int, tokenizer, seed: int) -> list[dict]:
    """Text-only LLaVA records of the demo generator's rounds, cut to sampled lengths."""

    def n_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    lengths = sample_lengths(count, random.Random(seed), maximum=MAX_LENGTH)
    overhead = n_tokens(system_text()) - 2  # system text and role tags
    return length_mix_records(lengths, n_tokens, overhead, seed, id_prefix="bench")


def prepare(args: argparse.Namespace, workdir: Path) -> dict:
    """Build the model and the data once; both runs read them."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from sbt.demo.backbone import build_tiny_backbone

    hf_logging.disable_progress_bar()

    model = workdir / f"model-{args.model_shape}"
    data = workdir / "data.json"
    records = args.records or (args.steps + args.warmup_steps) * args.batch_size
    shape = SHAPES[args.model_shape]
    if not (model / "config.json").is_file():
        corpus = workdir / "corpus.json"
        texts = [*generate_records(400, args.seed), system_text()]
        corpus.write_text(json.dumps(texts), encoding="utf-8")
        build_tiny_backbone(
            [corpus],
            model,
            vocab_size=32000,
            max_position_embeddings=MAX_LENGTH,
            seed=args.seed,
            dtype="bfloat16" if args.model_shape == "7b" else "float32",
            hidden_size=shape["hidden_size"],
            num_layers=shape["num_hidden_layers"],
            num_heads=shape["num_attention_heads"],
            num_kv_heads=shape["num_key_value_heads"],
            intermediate_size=shape["intermediate_size"],
        )
    tokenizer = AutoTokenizer.from_pretrained(model)
    data.write_text(json.dumps(llava_like_records(records, tokenizer, args.seed)), encoding="utf-8")
    return {"model": str(model), "data": str(data)}


def mfu(result: dict, method: str, peak_tflops: float | None) -> str:
    """Model FLOPs utilisation (sbt.perf: 6N + 12 L d T per token; LoRA 4N + 6N_lora)."""
    if not peak_tflops:
        return "n/a (unknown GPU peak: pass --peak-tflops)"
    lora = method == "lora"
    adapter = result["trainable_params"] if lora else 0
    per_token = flops_per_token(
        result["matmul_params"] - adapter,  # the base model's N; the adapter counts apart
        result["layers"],
        result["hidden"],
        attention_span=result["lengths"]["sq_over_sum"],  # each sample attends to itself
        adapter_params=adapter,
        lora=lora,
    )
    return f"{mfu_of(per_token, result['tokens'] / result['seconds'], peak_tflops):.1%}"


def report(args: argparse.Namespace, results: dict) -> float:
    a, b = results["a"], results["b"]
    lengths = a["lengths"]
    print(
        f"bench_train: device {args.device} ({a['device_name']}), shape {args.model_shape} "
        f"({a['params'] / 1e6:.1f}M parameters, {a['layers']} layers, hidden {a['hidden']}), "
        f"method {args.method}, batch {args.batch_size} samples per step, "
        f"{a['steps']} timed steps after {args.warmup_steps} warm-up, best of {args.repeats}"
    )
    print(
        f"data: {lengths['count']} LLaVA-like samples, tokens per sample median "
        f"{lengths['median']:.0f}, p90 {lengths['p90']:.0f}, max {lengths['max']:.0f}"
    )
    peak = (
        peak_for_mfu(a["device_name"], a.get("sm_count"), given=args.peak_tflops)
        if args.device == "cuda"
        else None
    )
    for key in ("a", "b"):
        result = results[key]
        effective = result["effective"]
        how = (
            f"packed ({effective['packing_attention']})"
            if effective["packing"]
            else "padded" + (", length-grouped" if effective["group_by_length"] else "")
        )
        line = (
            f"({key}) {VARIANTS[key][0]}: {how}, attention {effective['attn_implementation']}: "
            f"{result['tokens'] / result['seconds']:.0f} tokens/s "
            f"({result['tokens']} tokens in {result['seconds']:.2f} s), "
            f"padding {1 - result['tokens'] / result['positions']:.1%}, "
            f"peak memory {result['peak_memory'] / 2**20:.0f} MiB ({result['memory_kind']})"
        )
        if args.device == "cuda":
            line += f", MFU {mfu(result, args.method, peak)}"
        print(line)
    if a["tokens"] != b["tokens"]:
        print(f"warning: the runs saw different token counts ({a['tokens']} vs {b['tokens']})")
    ratio = (b["tokens"] / b["seconds"]) / (a["tokens"] / a["seconds"])
    print(f"ratio: {ratio:.2f}")
    return ratio


def child_command(args: argparse.Namespace, workdir: Path, variant: str) -> list[str]:
    command = [sys.executable, __file__, "--variant", variant, "--workdir", str(workdir)]
    for name in ("device", "model_shape", "method", "steps", "batch_size", "warmup_steps"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return command + ["--seed", str(args.seed)]


def bench(args: argparse.Namespace, workdir: Path) -> float:
    setup = prepare(args, workdir)
    (workdir / "setup.json").write_text(json.dumps(setup), encoding="utf-8")
    env = dict(os.environ, **OFFLINE_ENV)
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    best: dict[str, dict] = {}
    for _ in range(args.repeats):  # alternate, so a slow spell on a shared machine hits both
        for variant in VARIANTS:
            log = workdir / f"variant-{variant}.log"
            result_file = workdir / f"result-{variant}.json"
            result_file.unlink(missing_ok=True)
            with open(log, "w", encoding="utf-8") as fh:
                done = subprocess.run(
                    child_command(args, workdir, variant),
                    stdout=fh,
                    stderr=fh,
                    env=env,
                    check=False,
                )
            if done.returncode or not result_file.is_file():
                tail = log.read_text(encoding="utf-8").splitlines()[-15:]
                raise RuntimeError(f"variant {variant} failed:\n" + "\n".join(tail))
            result = json.loads(result_file.read_text(encoding="utf-8"))
            if variant not in best or result["seconds"] < best[variant]["seconds"]:
                best[variant] = result
    return report(args, best)


def bench_data_path(args: argparse.Namespace, workdir: Path) -> None:
    """--measure data: the data path's peak memory, before and after (scripts/bench_data.py)."""
    import bench_data

    args.records = args.records or 80000
    setup = prepare(args, workdir)
    (workdir / "setup.json").write_text(json.dumps(setup), encoding="utf-8")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    bench_data.report(bench_data.measure(workdir, env), args.records)


@cli
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_offline_hub()
    if args.variant:  # child: one measured run
        workdir = Path(args.workdir)
        setup = json.loads((workdir / "setup.json").read_text(encoding="utf-8"))
        result = run_variant(args, setup)
        (workdir / f"result-{args.variant}.json").write_text(json.dumps(result), "utf-8")
        return 0
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise input_error("--device", "cuda requested but no CUDA device is available")
    run = bench_data_path if args.measure == "data" else bench
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        run(args, Path(args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="bench_train.") as tmp:
            run(args, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
