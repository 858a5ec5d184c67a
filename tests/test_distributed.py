"""Real data-parallel training: train.py under `torchrun --standalone --nproc_per_node=2` on CPU.

Two processes (gloo) with a per-process batch of 2 see the same global batch of 4 as one
process with a batch of 4, so after the same steps both must hold the same weights. That
checks what matters on a cluster: the data is split between the processes (an epoch takes
half the steps), gradients are averaged over them, and only rank 0 writes the result.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sbt.common import OFFLINE_ENV
from sbt.training import train

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        torch.cuda.is_available(), reason="compares CPU runs (gloo); GPUs: scripts/gpu_check.sh"
    ),
]

WORLD_SIZE = 2
RECORDS = 24  # one epoch: 24 / (2 processes x 2) = 6 steps; 12 if the data were not split
STEPS = 6
HPARAMS = {
    "num_train_epochs": 1,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "learning_rate": 1e-3,
    "bf16": False,
    "gradient_checkpointing": True,
    "model_max_length": 512,
    "save_steps": 1000,
    "lora": {"r": 4, "dropout": 0.0},  # no dropout: both runs draw the same (no) noise
    # One mean over the step's tokens, whichever process holds them: then 2 x 2 samples
    # train exactly like 4 in one process. (The study's micro_batch averaging weighs each
    # process's mean equally; tests/test_recipe.py checks that rule.)
    "loss_averaging": "token",
}


def torchrun_command() -> list[str]:
    """The `torchrun` of this environment (its console script, else the same module)."""
    script = Path(sys.executable).parent / "torchrun"
    return [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]


def run_torchrun(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.update(OFFLINE_ENV)
    command = [*torchrun_command(), "--standalone", f"--nproc_per_node={WORLD_SIZE}"]
    start = time.monotonic()
    proc = subprocess.run(
        [*command, "-m", "sbt.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return proc, time.monotonic() - start


def weights(path: Path) -> dict[str, torch.Tensor]:
    adapter = path / "adapter_model.safetensors"
    return load_file(adapter if adapter.exists() else path / "model.safetensors")


def losses(path: Path) -> list[float]:
    with open(path / "loss.csv", newline="") as fh:
        return [float(row["loss"]) for row in csv.DictReader(fh)]


@pytest.mark.parametrize(("method", "template"), [("full", "v1"), ("lora", "llama_2")])
def test_two_processes_train_like_one_with_the_global_batch(
    tiny_backbone, tiny_records, tmp_path, method, template
):
    torch.set_num_threads(1)
    data = tmp_path / "data.json"
    data.write_text(json.dumps(tiny_records[:RECORDS]), encoding="utf-8")
    run_dir = tmp_path / "torchrun"
    run_dir.mkdir()
    output = run_dir / method
    proc, seconds = run_torchrun(
        ["--model", str(tiny_backbone), "--template", template, "--method", method,
         "--data", str(data), "--output", str(output), "--hparams", json.dumps(HPARAMS)],
        cwd=run_dir,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    print(f"torchrun {method}: {seconds:.1f} s")

    # One result, written once: no checkpoints or temporary directories left beside it.
    assert [p.name for p in run_dir.iterdir()] == [method]
    assert proc.stderr.count(f"wrote {output}: {STEPS} steps") == 1
    assert proc.stderr.count(f"step {STEPS}/{STEPS} loss ") == 1  # progress from rank 0 only
    info = json.loads((output / "training_info.json").read_text())
    assert info["effective"]["world_size"] == WORLD_SIZE
    assert info["effective"]["distributed"] == "MULTI_CPU"  # torch.distributed with gloo
    assert info["global_step"] == STEPS and info["examples"] == RECORDS
    assert math.isfinite(info["final_loss"])
    assert len(losses(output)) == STEPS and all(math.isfinite(x) for x in losses(output))
    if method == "lora":
        assert (output / "adapter_config.json").exists()
        assert not (output / "model.safetensors").exists()

    # The same global batch in one process: the same losses and weights.
    reference = tmp_path / "reference"
    single = train(str(tiny_backbone), template, method, data, reference,
                   HPARAMS | {"per_device_train_batch_size": 4})  # fmt: skip
    assert single["effective"]["world_size"] == 1 and single["global_step"] == STEPS
    assert losses(output) == pytest.approx(losses(reference), abs=1e-5)
    expected, got = weights(reference), weights(output)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-5, rtol=0), name
    start = weights(tiny_backbone)
    trained = [
        n for n in got if "lora_B" in n or (n in start and not torch.equal(got[n], start[n]))
    ]
    assert trained  # the runs did learn (LoRA's B matrices start at zero)
