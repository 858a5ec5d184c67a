"""The GPU check without a GPU: the shared performance module (sbt.perf: shapes, peak
table, FLOP and MFU formula), sbt.gpu_check's arguments and table, failing fast, and the
whole gpu_check.sh flow on the tiny shape on a CPU (what a GPU runs at 1B and 7B)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sbt import gpu_check, gpu_train_check
from sbt.common import InputError
from sbt.gpu_check import parse_args
from sbt.gpu_report import CASES, format_table, summary_rows
from sbt.gpu_train_check import loss_trend, resolve_sharding
from sbt.perf import (
    SHAPES,
    flops_per_token,
    llama_param_count,
    lora_param_count,
    matmul_params,
    mfu,
    peak_bf16_tflops,
)
from sbt.random_backbone import llama_config

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
# Published parameter counts of the checkpoints whose shapes the check uses.
TINYLLAMA_1B_PARAMS = 1_100_048_384
LLAMA2_7B_PARAMS = 6_738_415_616
LLAMA2_7B_LORA_R64_PARAMS = 159_907_840  # q,k,v,o,gate,up,down in 32 layers


def test_arguments_default_to_the_paper_cases():
    probe = parse_args([])
    assert probe.method is None  # versions and device only
    full = parse_args(["--method", "full"])
    assert (full.shape, full.sharding, full.batch_size, full.seq_len) == ("1b", "zero2", 4, 2048)
    lora = parse_args(["--method", "lora", "--hparams", '{"packing": false}'])
    assert (lora.shape, lora.lora_r, lora.extra_hparams) == ("7b", 64, {"packing": False})
    assert parse_args(["--method", "eval"]).shape == "1b"
    assert CASES == {
        "full-1b-zero2": ("full", "1b", "zero2"),
        "lora-7b-zero2": ("lora", "7b", "zero2"),
        "full-1b-fsdp": ("full", "1b", "fsdp"),
        "eval-1b-bf16": ("eval", "1b", "none"),
    }


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
    one_b, seven_b = SHAPES["1b"], SHAPES["7b"]
    assert (one_b["hidden_size"], one_b["num_hidden_layers"], one_b["intermediate_size"]) == (
        2048,
        22,
        5632,
    )
    assert (one_b["num_attention_heads"], one_b["num_key_value_heads"]) == (32, 4)
    assert (seven_b["hidden_size"], seven_b["num_hidden_layers"]) == (4096, 32)
    assert (seven_b["intermediate_size"], seven_b["num_key_value_heads"]) == (11008, 32)
    assert one_b["vocab_size"] == seven_b["vocab_size"] == 32000
    assert llama_param_count(one_b) == TINYLLAMA_1B_PARAMS
    assert llama_param_count(seven_b) == LLAMA2_7B_PARAMS
    assert lora_param_count(seven_b, r=64) == LLAMA2_7B_LORA_R64_PARAMS
    assert matmul_params(seven_b) == LLAMA2_7B_PARAMS - 32000 * 4096  # no input embedding


def test_both_scripts_use_the_one_shape_table():
    import bench_train

    assert bench_train.SHAPE_NAMES == tuple(SHAPES)
    assert gpu_check.SHAPES is SHAPES
    assert not hasattr(bench_train, "PEAK_FLOPS") and not hasattr(gpu_check, "PEAK_BF16_TFLOPS")


@pytest.mark.parametrize("shape", ["tiny", "1b", "7b"])
def test_param_formula_matches_the_model_transformers_builds(shape):
    from transformers import LlamaForCausalLM

    with torch.device("meta"):  # shapes only, no memory
        model = LlamaForCausalLM(llama_config(shape))
    assert sum(p.numel() for p in model.parameters()) == llama_param_count(SHAPES[shape])
    embedding = model.get_input_embeddings().weight.numel()
    assert sum(p.numel() for p in model.parameters()) - embedding == matmul_params(SHAPES[shape])


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")
def test_lora_formula_matches_peft():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = get_peft_model(
            LlamaForCausalLM(llama_config("tiny")),
            LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM"),
        )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == lora_param_count(SHAPES["tiny"], r=8)


def test_flops_formula_on_known_numbers():
    # 7B full fine-tuning at 2048 tokens: 6N + 12 L d T with N = 6,738,415,616 - 131,072,000
    n = matmul_params(SHAPES["7b"])
    assert n == 6_607_343_616
    full = flops_per_token(n, layers=32, hidden=4096, attention_span=2048)
    assert full == 6 * 6_607_343_616 + 12 * 32 * 4096 * 2048 == 42_865_287_168
    # LoRA r=64: frozen weights get no weight gradient, the adapter does (4N + 6N_lora).
    lora = flops_per_token(n, 32, 4096, 2048, adapter_params=LLAMA2_7B_LORA_R64_PARAMS, lora=True)
    assert lora == 4 * n + 6 * LLAMA2_7B_LORA_R64_PARAMS + 12 * 32 * 4096 * 2048
    # 3000 tokens/s of a 7B full fine-tune on one H100 SXM (989.4 TFLOP/s): 13.0% MFU.
    assert mfu(full, 3000, 989.4) == pytest.approx(0.129973, abs=1e-6)
    assert mfu(full, 3000 * 4, 989.4, gpus=4) == pytest.approx(mfu(full, 3000, 989.4))
    # nanoGPT/PaLM: GPT-2 124M at T=1024 is 6N + 12 L d T with L=12, d=768.
    assert flops_per_token(85_000_000, 12, 768, 1024) == 6 * 85e6 + 12 * 12 * 768 * 1024


@pytest.mark.parametrize(
    ("name", "sm_count", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 132, 989.4),  # SXM5
        ("NVIDIA H100 PCIe", 114, 756.0),
        ("NVIDIA H100", 114, 756.0),  # a bare name: the SM count tells the PCIe board
        ("NVIDIA H100", 132, 989.4),
        ("NVIDIA H100 NVL", 132, 835.0),
        ("NVIDIA H200", 132, 989.4),
        ("NVIDIA H200 NVL", 132, 835.0),
        ("NVIDIA GH200 480GB", 132, 989.4),
        ("NVIDIA H800 PCIe", 114, 756.0),
        ("NVIDIA A100-SXM4-80GB", 108, 312.0),
        ("NVIDIA A100 80GB PCIe", 108, 312.0),
        ("NVIDIA A100-PCIE-40GB", 108, 312.0),
        ("NVIDIA B200", 148, 2250.0),
        ("NVIDIA L40S", 142, 362.05),
        ("NVIDIA L40", 142, 181.05),
        ("NVIDIA L4", 58, 121.0),
        ("NVIDIA A10G", 80, 70.0),
        ("NVIDIA A10", 72, 125.0),
        ("Tesla T4", 40, None),  # no bf16 tensor cores
        ("Tesla V100-SXM2-32GB", 80, None),
    ],
)
def test_peak_by_device_name(name, sm_count, tflops):
    assert peak_bf16_tflops(name, sm_count) == tflops


def test_sharding_on_a_gpu_refuses_to_measure_something_else(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_sharding("lora", "none") == ("none", None)
    assert resolve_sharding("eval", "zero2") == ("none", None)
    with pytest.raises(InputError, match="needs a torchrun launch"):
        resolve_sharding("full", "fsdp")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert resolve_sharding("full", "fsdp") == ("fsdp", None)
    monkeypatch.setattr(gpu_train_check, "deepspeed_available", lambda: True)
    assert resolve_sharding("lora", "zero2") == ("zero2", None)
    monkeypatch.setattr(gpu_train_check, "deepspeed_available", lambda: False)
    with pytest.raises(InputError, match="deepspeed is not installed"):
        resolve_sharding("full", "zero2")
    # On a CPU (--allow-cpu) the flow falls back and says so.
    sharding, note = resolve_sharding("full", "zero2", cpu=True)
    assert sharding == "ddp" and "deepspeed is not installed" in note


def test_loss_trend():
    assert loss_trend([10.4, 10.2, 9.9, 9.5, 9.0, 8.8])["loss_falling"]
    rising = loss_trend([9.0, 9.1, 9.2])
    assert rising["loss_finite"] and not rising["loss_falling"]
    broken = loss_trend([10.0, float("nan"), 8.0])
    assert not broken["loss_finite"] and not broken["loss_falling"]
    assert not loss_trend([])["loss_finite"]


def _training_result(case, mfu_value, device="NVIDIA H100 80GB HBM3", losses=(10.4, 9.0)):
    return {
        "case": case, "requested_sharding": "zero2", "sharding": "zero2",
        "step_seconds_median": 0.5, "tokens_per_second": 16384.0, "peak_memory_gib": 40.0,
        "mfu": mfu_value, **loss_trend(list(losses)), "environment": {"device": device},
    }  # fmt: skip


def test_table_reports_targets_and_failed_cases(tmp_path):
    (tmp_path / "full-1b-zero2.json").write_text(json.dumps(_training_result("f", 0.36)))
    (tmp_path / "lora-7b-zero2.json").write_text(json.dumps(_training_result("l", 0.41)))
    (tmp_path / "full-1b-fsdp.json").write_text(
        json.dumps(_training_result("s", 0.2, losses=(9.0, 9.5)))
    )
    (tmp_path / "eval-1b-bf16.status").write_text("124\n")  # timed out: no JSON
    rows = {row["case"]: row for row in summary_rows(tmp_path)}
    assert rows["full-1b-zero2"]["target"] == ">= 35%: PASS"
    assert rows["full-1b-zero2"]["mfu"] == "36.0%" and rows["full-1b-zero2"]["ok"]
    assert rows["lora-7b-zero2"]["target"] == ">= 45%: FAIL"
    assert rows["lora-7b-zero2"]["ok"]  # it ran: the target is reported, not enforced
    assert rows["full-1b-fsdp"]["target"] == "-" and not rows["full-1b-fsdp"]["ok"]
    assert "NOT falling" in rows["full-1b-fsdp"]["loss"]
    assert rows["eval-1b-bf16"]["status"] == "FAILED (exit 124, see eval-1b-bf16.log)"
    table = format_table(list(rows.values()))
    assert table.splitlines()[0].split()[:3] == ["case", "sharding", "step"]
    assert len(table.splitlines()) == 1 + len(CASES)
    assert gpu_check.main(["--summarize", str(tmp_path)]) == 1
    # The target is an H100/H200 figure: elsewhere the verdict says so.
    a100 = _training_result("f", 0.5, device="NVIDIA A100-SXM4-80GB")
    (tmp_path / "full-1b-zero2.json").write_text(json.dumps(a100))
    (row, *_) = summary_rows(tmp_path)
    assert row["target"] == ">= 35%: PASS (target is for H100/H200, this is NVIDIA A100-SXM4-80GB)"


def test_dry_run_lists_the_cases_within_the_bound(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_OUT=str(tmp_path / "out"))
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--steps", "3"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"gpu check: {len(CASES)} cases within 450 s in all")
    limits = []
    for line, (name, (method, shape, sharding)) in zip(lines[1:], CASES.items(), strict=True):
        assert line.startswith(f"{name} (at most ")
        limits.append(int(line.split("(at most ")[1].split()[0]))
        assert f"--method {method} --shape {shape}" in line and line.endswith("--steps 3")
        assert ("torch.distributed.run" in line) == (method != "eval")
        if method != "eval":
            assert f"--sharding {sharding}" in line
    assert sum(limits) <= 450  # the whole check fits in under 8 minutes with the start-up
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible here")
def test_without_cuda_the_check_stops_at_once(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_OUT=str(tmp_path / "out"))
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == gpu_check.NO_CUDA_EXIT
    assert proc.stderr.strip().startswith("error: no CUDA GPU visible (torch ")
    assert not (tmp_path / "out").exists()  # nothing was built or trained
    assert time.monotonic() - start < 30


@pytest.mark.slow
def test_whole_script_on_cpu(tmp_path):
    """gpu_check.sh as on a GPU machine (torchrun for training, python for lm-eval), with the
    tiny shape; without DeepSpeed the ZeRO-2 cases fall back to plain data parallel."""
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_OUT=str(out), OMP_NUM_THREADS="1")
    env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU flow, also on a machine with a GPU
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--allow-cpu", "--shape", "tiny", "--steps", "3",
         "--warmup-steps", "1", "--batch-size", "2", "--seq-len", "256", "--lora-r", "4",
         "--hparams", '{"learning_rate": 0.01}'],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    full = json.loads((out / "full-1b-fsdp.json").read_text())
    assert full["sharding"] == "fsdp" and full["weights_dtype"] == "float32"
    assert full["effective"]["fsdp_config"]["transformer_layer_cls_to_wrap"] == [
        "LlamaDecoderLayer"
    ]
    # accelerate shards with FSDP on GPUs only; on CPUs the same launch is plain DDP.
    assert full["distributed"] == "MULTI_CPU" and full["effective"]["world_size"] == 1
    shape = SHAPES["tiny"]
    assert full["flops_per_token"] == flops_per_token(
        matmul_params(shape), shape["num_hidden_layers"], shape["hidden_size"], 256
    )
    zero2 = json.loads((out / "full-1b-zero2.json").read_text())
    assert (zero2["requested_sharding"], zero2["sharding"]) == ("zero2", "ddp")
    lora = json.loads((out / "lora-7b-zero2.json").read_text())
    assert lora["weights_dtype"] == "bfloat16"
    assert lora["trainable_params"] == lora_param_count(shape, 4)
    for result in (full, zero2, lora):
        assert result["mfu"] is None and result["peak_memory_gib"] is None  # no GPU
        assert result["loss_finite"] and result["loss_falling"], result["losses"]
        assert len(result["step_seconds"]) == 3 and len(result["losses"]) == 4
    evaluation = json.loads((out / "eval-1b-bf16.json").read_text())
    assert evaluation["documents"] > 0 and evaluation["metrics_finite"]
    assert set(evaluation["metrics"]) == {"truthfulqa_mc1/acc", "truthfulqa_mc2/acc"}
    # The closing table: one row per case, all ran.
    table = proc.stdout[proc.stdout.index("case  ") :].splitlines()
    assert [line.split()[0] for line in table[1:]] == list(CASES)
    assert all(line.rstrip().endswith("ok") for line in table[1:])
    assert "zero2->ddp" in table[1] and ">= 35%: n/a (no MFU on cpu)" in table[1]
    assert all(math.isfinite(x) for x in lora["losses"])
