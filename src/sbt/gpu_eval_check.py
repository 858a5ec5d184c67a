"""The GPU check's evaluation case (sbt.gpu_check --method eval): lm-eval through
sbt.evaluate, in this process, bf16 on the GPU, on the demo's local TruthfulQA-MC file."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from sbt.demo import DEMO_DIR
from sbt.gpu_report import print_eval
from sbt.random_backbone import build_backbone

EVAL_TASKS = ("truthfulqa_mc1", "truthfulqa_mc2")
EVAL_DATA = DEMO_DIR / "benchmarks" / "truthfulqa_mc.jsonl"


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
