"""Preemption, incomplete outputs and determinism, on real snakemake runs of the demo.

Each test works on its own copy of the complete demo run (`demo_run`, shared with
test_workflow.py), so what it breaks stays local.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from snakemake_run import (
    REPO,
    copy_repo,
    output_of,
    planned_jobs,
    snakemake,
    start_snakemake,
)

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

FULL = "results/models/tiny-llama2/textonly_demo/full"
LORA_RESULT = "results/eval/tiny-llama2/textonly_demo/lora/truthfulqa_mc.json"


def clone_run(demo_run: Path, dest: Path) -> Path:
    shutil.copytree(demo_run, dest, symlinks=True)
    return dest


def weights(model_dir: Path) -> dict:
    return load_file(str(model_dir / "model.safetensors"))


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail("snakemake ended before the moment to kill it")
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the moment to kill")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_training_killed_after_a_checkpoint_resumes_to_the_same_weights(demo_run, tmp_path):
    workdir = clone_run(demo_run, tmp_path / "run")
    reference = weights(workdir / FULL)
    checkpoints = workdir / f"{FULL}.checkpoints"

    proc = start_snakemake(
        workdir,
        *("--cores", "1", "--forcerun", "train", "--", FULL),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # so the kill below reaches the job too, like a preemption
    )
    kill_when(proc, lambda: (checkpoints / "checkpoint-10" / "trainer_state.json").exists())
    assert not (workdir / FULL).exists()  # no half-written model is ever taken as done
    assert snakemake(workdir, "--unlock").returncode == 0  # a killed run leaves its lock

    dry = snakemake(workdir, "-n", FULL)
    assert planned_jobs(dry) == {"train": 1}, output_of(dry)

    rerun = snakemake(workdir, "--cores", "1", FULL)
    assert rerun.returncode == 0, output_of(rerun)[-5000:]
    info = json.loads((workdir / FULL / "training_info.json").read_text())
    assert info["resumed_from"] == "checkpoint-10"
    assert not checkpoints.exists()  # intermediate checkpoints cleaned after success
    resumed = weights(workdir / FULL)
    assert resumed.keys() == reference.keys()
    for name, tensor in reference.items():
        assert (resumed[name] - tensor).abs().max().item() <= 1e-6, name


def test_evaluation_killed_mid_run_leaves_no_result(tiny_backbone, tmp_path):
    output = tmp_path / "result.json"
    bench = REPO / "resources/demo/benchmarks/truthfulqa_mc.jsonl"
    cmd = [sys.executable, "-m", "sbt.evaluate", "--model", str(tiny_backbone)]
    cmd += ["--task", "truthfulqa_mc1", "--task", "truthfulqa_mc2", "--device", "cpu"]
    cmd += ["--data-files", f"validation={bench}", "--output", str(output)]
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1")
    )
    for line in proc.stderr:
        if "data files:" in line:  # lm-eval is about to run
            proc.kill()
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert list(tmp_path.iterdir()) == []  # neither the result nor a temporary file


def test_a_second_run_from_scratch_gives_identical_results(demo_run, tmp_path):
    workdir = copy_repo(tmp_path / "again")
    proc = snakemake(workdir, "--cores", "2", LORA_RESULT)
    assert proc.returncode == 0, output_of(proc)[-5000:]
    first = json.loads((demo_run / LORA_RESULT).read_text())
    second = json.loads((workdir / LORA_RESULT).read_text())
    assert second["metrics"] == first["metrics"]
    assert second["results"] == first["results"]
    adapter = "results/models/tiny-llama2/textonly_demo/lora/adapter_model.safetensors"
    a, b = load_file(str(demo_run / adapter)), load_file(str(workdir / adapter))
    assert all((a[k] == b[k]).all() for k in a)


def test_a_failing_benchmark_loses_nothing_else_and_a_rerun_redoes_only_it(demo_run, tmp_path):
    workdir = clone_run(demo_run, tmp_path / "run")
    broken = workdir / "resources/demo/benchmarks/ethics_justice.jsonl"
    good = broken.read_text()
    broken.write_text('{"label": 1, "scenario": "cut off mid-rec\n')
    before = {p: p.stat().st_mtime for p in (workdir / "results/eval").rglob("*.json")}

    proc = snakemake(workdir, "--cores", "2", "--keep-going", "--forcerun", "evaluate_base")
    assert proc.returncode != 0  # the broken benchmark's jobs failed ...
    for backbone in ("tiny-llama2", "tiny-vicuna"):
        base = workdir / f"results/eval/{backbone}/base"
        assert not (base / "ethics_justice.json").exists()  # ... and left nothing behind
        for other in ("truthfulqa_mc", "ethics_cm", "ethics_virtue"):
            result = base / f"{other}.json"  # ... while the others were redone and kept
            assert result.stat().st_mtime > before[result]
    assert (
        "ethics_justice"
        in (workdir / "logs/evaluate/tiny-llama2/base/ethics_justice.log").read_text()
    )
    # The end of the run lists each failed job with its log and the log's last lines.
    text = output_of(proc)
    summary = text[text.index("failed job(s):") :]
    assert "ethics_justice.json" in summary
    assert "log: logs/evaluate/" in summary and "ethics_justice.log" in summary
    assert "| error: " in summary
    assert "ethics_cm.json" not in summary

    # Each failed benchmark's record is set aside, so the run's job is planned again.
    assert (workdir / "results/lm_eval/tiny-llama2/base/ethics_justice.json.failed").exists()

    broken.write_text(good)
    dry = snakemake(workdir, "-n")
    # Each run's evaluation job (evaluation.group: run), whose request cache answers every
    # request already answered, then every result step of those runs, then the tables
    # (the runs: full, lora and the multimodal arm's mm_full, per backbone).
    assert planned_jobs(dry) == {
        "evaluate_base": 2,
        "evaluate_run": 6,
        "result_base": 14,
        "result_run": 42,
        "aggregate": 1,
    }
    rerun = snakemake(workdir, "--cores", "2")
    assert rerun.returncode == 0, output_of(rerun)[-5000:]
    for record in (workdir / "results/lm_eval").rglob("*.json"):
        # The restored file is the one the demo run evaluated: nothing reaches a model.
        requests = json.loads(record.read_text())["result"]["provenance"]["evaluation"]["requests"]
        assert requests["model"] == 0 and requests["from_cache"] == requests["total"], record
    assert (workdir / "results/eval/tiny-llama2/base/ethics_justice.json").exists()
