#!/usr/bin/env python
"""The demo grid's evaluations both ways, measured: `evaluation.group: run` vs `benchmark`.

    python scripts/bench_eval.py [--cores 2] [--keep DIR]      (or: make bench-eval)

In a temporary copy of the repository the demo's models are built and trained once
(snakemake up to the evaluation jobs); that copy is then copied twice and each copy's
evaluations run with one unit, one after the other, each with a cold Hugging Face datasets
cache and an empty request cache. Printed per unit: evaluation jobs, model loads (the
"[evaluate] loading" lines of the job logs), the summed job wall time from the TSVs that
Snakemake's `benchmark:` directive writes, and snakemake's own wall time; then the ratio.
Every result JSON must hold the same numbers both ways, or the script fails.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sbt.demo import copy_checkout

EVAL_RULES = ("evaluate_base", "evaluate_run", "evaluate_external")
SAME = ("metrics", "results", "n_samples", "n_shot", "versions", "config")
TARGET = 0.40  # the per-run unit's summed evaluation time, as a share of the per-benchmark one


def log(message: str) -> None:
    print(f"[bench_eval] {message}", file=sys.stderr, flush=True)


def snakemake(workdir: Path, *args: str, env: dict | None = None) -> float:
    """Run snakemake from this Python; its wall time in seconds (it must succeed)."""
    full_env = dict(os.environ)
    full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env['PATH']}"
    for key, value in {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
        full_env.setdefault(key, value)
    full_env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})})
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        env=full_env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"snakemake {' '.join(args)} failed in {workdir}:\n{proc.stderr[-5000:]}")
    return time.perf_counter() - started


def tsv_seconds(paths: list[Path]) -> float:
    total = 0.0
    for path in paths:
        with open(path, newline="") as fh:
            total += sum(float(row["s"]) for row in csv.DictReader(fh, delimiter="\t"))
    return total


def measure(workdir: Path, group: str, cores: str, hf_cache: Path) -> dict:
    config = workdir / "config" / f"bench_{group}.yaml"
    config.write_text(json.dumps({"evaluation": {"group": group}}))
    wall = snakemake(
        workdir,
        *("--cores", cores, "--configfile", "config/config.yaml", str(config.relative_to(workdir))),
        env={"HF_DATASETS_CACHE": str(hf_cache)},
    )
    heavy = "lm_eval" if group == "run" else "evaluate"
    jobs = sorted((workdir / "benchmarks" / heavy).rglob("*.tsv"))
    steps = sorted((workdir / "benchmarks" / "evaluate").rglob("*.tsv")) if group == "run" else []
    logs = sorted((workdir / "logs" / heavy).rglob("*.log"))
    loads = sum(path.read_text(errors="replace").count("[evaluate] loading ") for path in logs)
    return {
        "group": group,
        "jobs": len(jobs),
        "steps": len(steps),
        "loads": loads,
        "job_s": tsv_seconds(jobs),
        "step_s": tsv_seconds(steps),
        "wall_s": wall,
    }


def assert_same_numbers(run_dir: Path, benchmark_dir: Path) -> int:
    results = sorted((run_dir / "results" / "eval").rglob("*.json"))
    if not results:
        sys.exit("no result JSONs were written")
    for path in results:
        other = benchmark_dir / path.relative_to(run_dir)
        a, b = json.loads(path.read_text()), json.loads(other.read_text())
        for key in SAME:
            if a[key] != b[key]:
                sys.exit(f"{path.relative_to(run_dir)}: {key} differs between the two units")
    return len(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", default="2", help="snakemake --cores for every run")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sbt-bench-eval-") as tmp:
        root = args.keep or Path(tmp)
        base = copy_checkout(root / "trained")
        log(f"building and training the demo models in {base}")
        omit = ("--omit-from", *EVAL_RULES)
        snakemake(base, "--cores", args.cores, *omit, env={"HF_DATASETS_CACHE": str(root / "hf")})
        measured = {}
        for group in ("benchmark", "run"):
            workdir = root / group
            shutil.copytree(base, workdir, symlinks=True)
            log(f"evaluating with evaluation.group: {group}")
            measured[group] = measure(workdir, group, args.cores, root / f"hf-{group}")
        checked = assert_same_numbers(root / "run", root / "benchmark")
    print(f"{'evaluation.group':<17} {'jobs':>5} {'model loads':>12} {'summed job s':>13}"
          f" {'+ result steps s':>17} {'snakemake wall s':>17}")  # fmt: skip
    for m in measured.values():
        steps = f"{m['step_s']:.1f} ({m['steps']})" if m["steps"] else "-"
        print(f"{m['group']:<17} {m['jobs']:>5} {m['loads']:>12} {m['job_s']:>13.1f}"
              f" {steps:>17} {m['wall_s']:>17.1f}")  # fmt: skip
    run, bench = measured["run"], measured["benchmark"]
    ratio = (run["job_s"] + run["step_s"]) / bench["job_s"]
    wall_ratio = run["wall_s"] / bench["wall_s"]
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(
        f"run / benchmark: summed evaluation time {ratio:.2f} (target <= {TARGET:.2f}: {verdict}),"
        f" snakemake wall time {wall_ratio:.2f}; model loads {run['loads']} vs {bench['loads']};"
        f" {checked} result JSONs with identical numbers"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
