"""gpu_check.py without a GPU: arguments, shapes, FLOP and MFU arithmetic, failing fast, and
the whole flow on the tiny shape on a CPU (what the GPU runs at 1B and 7B)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import gpu_check
import pytest
import torch
from gpu_check import (
    flops_per_token,
    llama_config,
    llama_param_count,
    lora_param_count,
    mfu,
    parse_args,
    peak_bf16_tflops,
    resolve_sharding,
)

REPO = Path(__file__).resolve().parents[1]
# Published parameter counts of the checkpoints whose shapes the check uses.
TINYLLAMA_1B_PARAMS = 1_100_048_384
LLAMA2_7B_PARAMS = 6_738_415_616
LLAMA2_7B_LORA_R64_PARAMS = 159_907_840  # q,k,v,o,gate,up,down in 32 layers


def test_arguments_default_to_the_study_cases():
    probe = parse_args([])
    assert probe.method is None  # versions and device only
    full = parse_args(["--method", "full"])
    assert (full.shape, full.sharding, full.batch_size, full.seq_len) == ("1b", "fsdp", 4, 2048)
    lora = parse_args(["--method", "lora", "--hparams", '{"packing": false}'])
    assert (lora.shape, lora.lora_r, lora.extra_hparams) == ("7b", 64, {"packing": False})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "lora", "--allow-cpu"], "--allow-cpu runs only --shape tiny"),
        (["--method", "full", "--steps", "0"], "--steps must be at least 1"),
        (["--method", "full", "--seq-len", "4096"], "longer than the 1b shape's positions"),
        (["--method", "full", "--hparams", "{bad"], "--hparams: invalid JSON"),
        (["--method", "full", "--peak-tflops", "0"], "--peak-tflops must be positive"),
        (["--method", "qlora"], "invalid choice: 'qlora'"),
    ],
)
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_shapes_are_the_real_checkpoints():
    one_b, seven_b = llama_config("1b"), llama_config("7b")
    assert (one_b.hidden_size, one_b.num_hidden_layers, one_b.intermediate_size) == (2048, 22, 5632)
    assert (one_b.num_attention_heads, one_b.num_key_value_heads) == (32, 4)
    assert (seven_b.hidden_size, seven_b.num_hidden_layers, seven_b.intermediate_size) == (
        4096,
        32,
        11008,
    )
    assert (seven_b.num_attention_heads, seven_b.num_key_value_heads) == (32, 32)
    assert one_b.vocab_size == seven_b.vocab_size == 32000
    assert llama_param_count(one_b) == TINYLLAMA_1B_PARAMS
    assert llama_param_count(seven_b) == LLAMA2_7B_PARAMS
    assert lora_param_count(seven_b, r=64) == LLAMA2_7B_LORA_R64_PARAMS


@pytest.mark.parametrize("shape", ["tiny", "1b", "7b"])
def test_param_formula_matches_the_model_transformers_builds(shape):
    from transformers import LlamaForCausalLM

    with torch.device("meta"):  # shapes only, no memory
        model = LlamaForCausalLM(llama_config(shape))
    assert sum(p.numel() for p in model.parameters()) == llama_param_count(llama_config(shape))


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")
def test_lora_formula_matches_peft():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    config = llama_config("tiny")
    with torch.device("meta"):
        model = get_peft_model(
            LlamaForCausalLM(config),
            LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM"),
        )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == lora_param_count(config, r=8)


def test_flops_and_mfu():
    n = LLAMA2_7B_PARAMS
    assert flops_per_token("full", n) == 6 * n
    lora = LLAMA2_7B_LORA_R64_PARAMS
    assert flops_per_token("lora", n + lora, lora) == 4 * (n + lora) + 2 * lora
    with pytest.raises(ValueError, match="unknown method"):
        flops_per_token("qlora", n)
    # 3000 tokens/s of a 7B full fine-tune on one H100 SXM: 6 * 6.74e9 * 3000 / 989.4e12
    assert mfu(6 * n, 3000, 989.4) == pytest.approx(0.12259, abs=1e-5)
    assert mfu(6 * n, 3000 * 4, 989.4, gpus=4) == pytest.approx(mfu(6 * n, 3000, 989.4))


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.4),
        ("NVIDIA GH200 480GB", 989.4),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L40S", 362.1),
        ("NVIDIA L4", 121.0),
        ("Tesla T4", None),
    ],
)
def test_peak_by_device_name(name, tflops):
    assert peak_bf16_tflops(name) == tflops


def test_sharding_falls_back_with_a_reason(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_sharding("lora", "fsdp") == ("none", None)
    sharding, note = resolve_sharding("full", "fsdp")
    assert sharding == "none" and "needs a torchrun launch" in note
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert resolve_sharding("full", "fsdp") == ("fsdp", None)
    monkeypatch.setattr(gpu_check, "deepspeed_available", lambda: False)
    sharding, note = resolve_sharding("full", "zero3")
    assert sharding == "fsdp" and "deepspeed is not installed" in note


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible here")
def test_without_cuda_the_check_stops_at_once(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_OUT=str(tmp_path / "out"))
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == gpu_check.NO_CUDA_EXIT
    assert proc.stderr.strip().startswith("error: no CUDA GPU visible (torch ")
    assert not (tmp_path / "out").exists()  # nothing was built or trained
    assert time.monotonic() - start < 30


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")
def test_lora_flow_on_cpu(tmp_path, capsys):
    torch.set_num_threads(1)
    output = tmp_path / "lora.json"
    argv = ["--allow-cpu", "--method", "lora", "--shape", "tiny", "--steps", "2",
            "--warmup-steps", "1", "--batch-size", "2", "--seq-len", "256", "--lora-r", "8",
            "--peak-tflops", "1.0", "--workdir", str(tmp_path / "work"),
            "--output", str(output)]  # fmt: skip
    assert gpu_check.main(argv) == 0
    printed = capsys.readouterr().out
    assert "tokens/s" in printed and "MFU" in printed
    result = json.loads(output.read_text())
    config = llama_config("tiny")
    assert result["params"] == llama_param_count(config) + lora_param_count(config, 8)
    assert result["trainable_params"] == lora_param_count(config, 8)
    assert result["weights_dtype"] == "bfloat16" and result["sharding"] == "none"
    assert len(result["step_seconds"]) == 2 and result["tokens_per_step"] == 2 * 256
    assert result["tokens_per_second"] == pytest.approx(512 / result["step_seconds_median"])
    assert result["mfu"] == pytest.approx(
        mfu(result["flops_per_token"], result["tokens_per_second"], 1.0)
    )
    assert math.isfinite(result["final_loss"])
    assert result["environment"]["torch"] == torch.__version__


@pytest.mark.slow
def test_whole_script_on_cpu(tmp_path):
    """gpu_check.sh as on a GPU machine (torchrun for full, python for LoRA), tiny shape."""
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_OUT=str(out), OMP_NUM_THREADS="1")
    env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU flow, also on a machine with a GPU
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--allow-cpu", "--shape", "tiny",
         "--steps", "2", "--warmup-steps", "1", "--batch-size", "2", "--seq-len", "256",
         "--lora-r", "4"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "failed" not in proc.stderr
    full = json.loads((out / "full-1b.json").read_text())
    assert full["sharding"] == "fsdp" and full["weights_dtype"] == "float32"
    assert full["effective"]["fsdp_config"]["transformer_layer_cls_to_wrap"] == [
        "LlamaDecoderLayer"
    ]
    assert full["effective"]["world_size"] == 1
    # accelerate shards with FSDP on GPUs only; on CPUs the same launch is plain DDP.
    assert full["distributed"] == "MULTI_CPU"
    assert full["flops_per_token"] == 6 * full["params"]
    lora = json.loads((out / "lora-7b.json").read_text())
    assert lora["sharding"] == "none" and lora["weights_dtype"] == "bfloat16"
    assert lora["trainable_params"] == lora_param_count(llama_config("tiny"), 4)
    for result in (full, lora):
        assert result["mfu"] is None and result["peak_memory_gib"] is None  # no GPU
        assert math.isfinite(result["final_loss"]) and len(result["step_seconds"]) == 2
    assert proc.stdout.count("tokens/s; peak GPU memory n/a") == 2
    assert "sharding fsdp (accelerate: MULTI_CPU)" in proc.stdout
