"""The GPU check's report: one block per training case, and the summary table with the
MFU targets as PASS/FAIL (`python -m sbt.gpu_check --summarize DIR`)."""

from __future__ import annotations

import json
from pathlib import Path

# The cases scripts/gpu_check.sh runs, in order: name -> (method, shape, sharding).
CASES = {
    "full-1b-zero2": ("full", "1b", "zero2"),
    "lora-7b-zero2": ("lora", "7b", "zero2"),
    "full-1b-fsdp": ("full", "1b", "fsdp"),
    "eval-1b-bf16": ("eval", "1b", "none"),
}
# MFU targets on an H100/H200: case -> lowest MFU that passes.
MFU_TARGETS = {"lora-7b-zero2": 0.45, "full-1b-zero2": 0.35}
TARGET_GPUS = ("H100", "H200", "GH200")


def _gib(value: float | None) -> str:
    return f"{value:.1f} GiB" if value is not None else "n/a"


def _percent(value: float | None) -> str:
    return f"{100 * value:.1f}%" if value is not None else "n/a"


def print_training(r: dict) -> None:
    lines = [
        f"== {r['case']}: {r['method']} {r['shape']}, {r['params']:,} parameters "
        f"({r['trainable_params']:,} trained), {r['weights_dtype']} weights, "
        f"sharding {r['sharding']} (accelerate: {r['distributed']})",
        f"   batch {r['batch_size']} x {r['seq_len']} tokens; median step "
        f"{r['step_seconds_median']:.3f} s over {len(r['step_seconds'])} steps "
        f"(after {r['warmup_steps']} warm-up)",
        f"   {r['tokens_per_second']:,.0f} tokens/s; peak GPU memory {_gib(r['peak_memory_gib'])}",
        f"   MFU {_percent(r['mfu'])}: {r['flops_formula']} = {r['flops_per_token'] / 1e9:.4g} "
        f"GFLOP/token over {r['peak_bf16_tflops'] or '?'} TFLOP/s bf16 peak",
        f"   loss {r['first_loss']:.3f} -> {r['last_loss']:.3f} "
        f"({'falling' if r['loss_falling'] else 'NOT falling'}); build "
        f"{r['build_seconds']:.0f} s, train() {r['train_seconds']:.0f} s",
    ]
    print("\n".join(lines), flush=True)


def print_eval(r: dict) -> None:
    print(
        f"== eval {r['shape']} ({r['weights_dtype']}, lm-eval {', '.join(r['tasks'])}): "
        f"{r['documents']} documents in {r['eval_seconds']:.1f} s; peak GPU memory "
        f"{_gib(r['peak_memory_gib'])}; metrics "
        + ", ".join(f"{k} {v:.3f}" for k, v in r["metrics"].items()),
        flush=True,
    )


# ------------------------------------------------------------------ the table


def target_verdict(case: str, result: dict | None) -> str:
    """PASS/FAIL against the MFU target of a case, or why there is none."""
    if case not in MFU_TARGETS:
        return "-"
    target = MFU_TARGETS[case]
    if result is None:
        return f">= {target:.0%}: FAIL (no result)"
    device = (result.get("environment") or {}).get("device", "cpu")
    if result.get("mfu") is None:
        return f">= {target:.0%}: n/a (no MFU on {device})"
    verdict = "PASS" if result["mfu"] >= target else "FAIL"
    if not any(name in device for name in TARGET_GPUS):
        verdict += f" (target is for H100/H200, this is {device})"
    return f">= {target:.0%}: {verdict}"


def summary_rows(out_dir: Path, cases: dict = CASES) -> list[dict]:
    """One row per case from DIR/<case>.json (a missing file: the case failed)."""
    rows = []
    for case, (method, _, sharding) in cases.items():
        path = out_dir / f"{case}.json"
        result = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        row = {"case": case, "ok": result is not None, "target": target_verdict(case, result)}
        if result is None:
            status_file = out_dir / f"{case}.status"
            status = status_file.read_text().strip() if status_file.is_file() else "?"
            row |= {"sharding": sharding, "status": f"FAILED (exit {status}, see {case}.log)"}
        elif method == "eval":
            row |= {
                "sharding": "-",
                "step": f"{result['eval_seconds']:.1f} s total",
                "speed": f"{result['documents_per_second']:.1f} docs/s",
                "memory": _gib(result["peak_memory_gib"]),
                "mfu": "-",
                "loss": "metrics finite" if result["metrics_finite"] else "metrics NOT finite",
                "status": "ok" if result["metrics_finite"] else "FAILED",
            }
            row["ok"] = result["metrics_finite"]
        else:
            good = result["loss_finite"] and result["loss_falling"]
            sharded = result["sharding"]
            if sharded != result["requested_sharding"]:
                sharded = f"{result['requested_sharding']}->{sharded}"
            row |= {
                "sharding": sharded,
                "step": f"{result['step_seconds_median']:.3f} s",
                "speed": f"{result['tokens_per_second']:,.0f} tok/s",
                "memory": _gib(result["peak_memory_gib"]),
                "mfu": _percent(result["mfu"]),
                "loss": f"{result['first_loss']:.2f}->{result['last_loss']:.2f} "
                + ("falling" if result["loss_falling"] else "NOT falling")
                + ("" if result["loss_finite"] else ", NOT finite"),
                "status": "ok" if good else "FAILED",
            }
            row["ok"] = good
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    columns = ("case", "sharding", "step", "speed", "memory", "mfu", "loss", "target", "status")
    heads = {"step": "step time", "speed": "throughput", "memory": "peak memory",
             "mfu": "MFU", "target": "MFU target"}  # fmt: skip
    cells = [[row.get(col, "") for col in columns] for row in rows]
    names = [heads.get(col, col) for col in columns]
    widths = [max(len(names[i]), *(len(c[i]) for c in cells)) for i in range(len(columns))]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)) for cell in cells]
    return "\n".join(line.rstrip() for line in lines)


def summarize(out_dir: Path) -> int:
    """Print the table; 0 when every case ran with a finite (and falling) loss, else 1."""
    rows = summary_rows(out_dir)
    print(format_table(rows), flush=True)
    return 0 if all(row["ok"] for row in rows) else 1
