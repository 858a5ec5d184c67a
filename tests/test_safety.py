"""Safe defaults: safetensors only unless allowed, no secrets in logs or outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SECRET = "hf_sentinelSECRETdoNotPrint0123456789"
ONE_STEP = (
    '{"max_steps": 1, "bf16": false, "gradient_checkpointing": false, "model_max_length": 256'
)


@pytest.fixture(scope="module")
def pickled_backbone(tiny_backbone, tmp_path_factory) -> Path:
    """The tiny backbone saved the old way: pickled pytorch_model.bin, no safetensors."""
    path = tmp_path_factory.mktemp("pickled")
    model = AutoModelForCausalLM.from_pretrained(tiny_backbone)
    model.config.save_pretrained(path)
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    AutoTokenizer.from_pretrained(tiny_backbone).save_pretrained(path)
    assert not list(path.glob("*.safetensors"))
    return path


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_TOKEN=SECRET, HUGGING_FACE_HUB_TOKEN=SECRET)
    return subprocess.run(
        [sys.executable, "-m", f"sbt.{name}", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def train_args(model: Path, data: Path, output: Path, extra: str = "") -> list[str]:
    hparams = ONE_STEP + extra + "}"
    return ["--model", str(model), "--template", "v1", "--method", "full"] + [
        "--data",
        str(data),
        "--output",
        str(output),
        "--hparams",
        hparams,
    ]


def test_training_refuses_pickled_weights_unless_allowed(pickled_backbone, tiny_corpus, tmp_path):
    refused = run_script("train", *train_args(pickled_backbone, tiny_corpus, tmp_path / "no"))
    assert refused.returncode == 2
    error = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "allow_pickle_weights" in error[0], refused.stderr[-2000:]
    assert not (tmp_path / "no").exists()

    allowed = run_script(
        "train",
        *train_args(
            pickled_backbone, tiny_corpus, tmp_path / "yes", ', "allow_pickle_weights": true'
        ),
    )
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert list((tmp_path / "yes").glob("*.safetensors"))  # what we write is safetensors
    assert SECRET not in allowed.stdout + allowed.stderr


def test_evaluation_refuses_pickled_weights_unless_allowed(pickled_backbone, tmp_path):
    bench = REPO / "resources/demo/benchmarks/ethics_cm.jsonl"
    common = ["--model", str(pickled_backbone), "--task", "ethics_cm", "--device", "cpu"]
    common += ["--data-files", f"test={bench}", "--limit", "4"]
    refused = run_script("evaluate", *common, "--output", str(tmp_path / "no.json"))
    assert refused.returncode == 2
    error = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "allow_pickle_weights" in error[0], refused.stderr[-2000:]
    assert not (tmp_path / "no.json").exists()
    allowed = run_script(
        "evaluate", *common, "--allow-pickle-weights", "--output", str(tmp_path / "yes.json")
    )
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    written = (tmp_path / "yes.json").read_text()
    assert '"allow_pickle_weights": true' in written
    assert SECRET not in written + allowed.stdout + allowed.stderr


def test_no_secret_in_training_outputs(tiny_backbone, tiny_corpus, tmp_path):
    proc = run_script("train", *train_args(tiny_backbone, tiny_corpus, tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert SECRET not in proc.stdout + proc.stderr
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file() and path.suffix in {".json", ".csv", ".txt", ".jinja"}:
            assert SECRET not in path.read_text(errors="replace"), path
