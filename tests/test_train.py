"""Real training runs on the tiny backbone: full, LoRA, resume after a crash, divergence."""

from __future__ import annotations

import csv
import json
import math
import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

import sbt.train as train_cli
from sbt.common import InputError
from sbt.train_loop import NonFiniteLossError
from sbt.train_resume import checkpoints_dir
from sbt.training import parse_hparams, train

pytestmark = pytest.mark.slow

# Small and fast on one CPU thread; real optimisation steps nonetheless.
FAST = {
    "max_steps": 4,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "learning_rate": 1e-3,
    "gradient_checkpointing": False,
    "bf16": False,
    "model_max_length": 256,
    "save_steps": 2,
    "lora": {"r": 4},
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def state_dict(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    name = (
        "adapter_model.safetensors"
        if (path / "adapter_config.json").exists()
        else "model.safetensors"
    )
    return load_file(path / name)


def test_hparams_defaults_and_errors():
    hp = parse_hparams('{"max_steps": 3, "lora": {"r": 8}}')
    assert hp["max_steps"] == 3 and hp["learning_rate"] == 2e-5
    assert hp["lora"] == {
        "r": 8,
        "alpha": 16,
        "dropout": 0.05,
        "bias": "none",
        "target_modules": "all-linear",
    }
    assert (hp["per_device_train_batch_size"], hp["gradient_accumulation_steps"]) == (4, 2)
    assert (hp["lr_scheduler_type"], hp["warmup_ratio"], hp["model_max_length"]) == (
        "cosine",
        0.03,
        2048,
    )
    with pytest.raises(InputError, match="unknown key 'learning_rat'; valid keys: learning_rate"):
        parse_hparams('{"learning_rat": 1}')
    with pytest.raises(InputError, match="unknown key lora.'rank'"):
        parse_hparams('{"lora": {"rank": 1}}')
    with pytest.raises(InputError, match="'bf16' must be bool"):
        parse_hparams('{"bf16": 1}')
    with pytest.raises(InputError, match="invalid JSON"):
        parse_hparams("{max_steps: 1}")


def test_full_fine_tuning(tiny_backbone, tiny_records, tmp_path):
    data = tmp_path / "data.json"
    no_answer = {"id": "e", "conversations": [{"from": "human", "value": "Anyone there?"}]}
    data.write_text(json.dumps([*tiny_records[:99], no_answer]))
    output = tmp_path / "full"
    info = train(
        str(tiny_backbone), "v1", "full", data, output, FAST | {"max_skipped_fraction": 0.05}
    )

    assert not checkpoints_dir(output).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json", "full"]
    assert math.isfinite(info["final_loss"])
    assert info["global_step"] == 4 and info["examples"] == 99
    assert info["skipped"]["no_assistant_message"] == 1
    assert info["trained_tokens"] > 0
    saved = json.loads((output / "training_info.json").read_text())
    assert saved["hparams"]["learning_rate"] == 1e-3 and saved["template"] == "v1"
    assert saved["packages"]["transformers"]
    assert "lora" not in saved["hparams"]  # only the method's own settings
    assert saved["git_revision"] and isinstance(saved["git_dirty"], bool)
    assert (saved["git_diff_sha256"] is not None) == saved["git_dirty"]
    with open(output / "loss.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(math.isfinite(float(r["loss"])) for r in rows)

    model = AutoModelForCausalLM.from_pretrained(output)
    assert model.config.use_cache
    base = AutoModelForCausalLM.from_pretrained(tiny_backbone)
    trained, start = model.state_dict(), base.state_dict()
    changed = [name for name in start if not torch.equal(trained[name], start[name])]
    assert "model.embed_tokens.weight" in changed and "lm_head.weight" in changed
    tokenizer = AutoTokenizer.from_pretrained(output)
    assert tokenizer.pad_token == "<unk>" and tokenizer.model_max_length == 256
    assert not (output / "training_args.bin").exists()


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")
def test_lora_saves_only_the_adapter(tiny_backbone, tiny_corpus, tmp_path):
    from peft import PeftModel

    output = tmp_path / "lora"
    info = train(
        str(tiny_backbone),
        "llava_llama_2",
        "lora",
        tiny_corpus,
        output,
        FAST | {"model_max_length": 512},
    )
    assert math.isfinite(info["final_loss"])
    assert (output / "adapter_config.json").exists()
    assert not (output / "model.safetensors").exists()
    adapter = state_dict(output)
    lora_b = [w for name, w in adapter.items() if "lora_B" in name]
    assert lora_b and all(w.abs().sum() > 0 for w in lora_b)  # B starts at zero
    assert not any("lora" not in name for name in adapter)
    config = json.loads((output / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 16
    assert "lm_head" not in config["target_modules"]

    base = AutoModelForCausalLM.from_pretrained(tiny_backbone)
    model = PeftModel.from_pretrained(base, output)
    ids = torch.tensor([[1, 300, 301, 302]])
    with torch.no_grad():
        adapted = model(ids).logits
        with model.disable_adapter():
            plain = model(ids).logits
    assert not torch.allclose(adapted, plain)


def test_v0_adds_a_pad_token_and_resizes(tiny_backbone, tiny_corpus, tmp_path):
    output = tmp_path / "v0"
    train(str(tiny_backbone), "v0", "full", tiny_corpus, output, FAST | {"max_steps": 1})
    tokenizer = AutoTokenizer.from_pretrained(output)
    model = AutoModelForCausalLM.from_pretrained(output)
    assert tokenizer.pad_token == "[PAD]"
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)


def test_full_run_saves_in_save_dtype(tiny_backbone, tiny_corpus, tmp_path):
    """float32 master weights while training, bf16 on disk as the study's checkpoints."""
    trained32 = tmp_path / "f32"
    trained16 = tmp_path / "bf16"
    train(str(tiny_backbone), "v1", "full", tiny_corpus, trained32, FAST | {"max_steps": 1})
    hp = FAST | {"max_steps": 1, "save_dtype": "bfloat16"}
    train(str(tiny_backbone), "v1", "full", tiny_corpus, trained16, hp)
    full, half = state_dict(trained32), state_dict(trained16)
    assert {t.dtype for t in full.values()} == {torch.float32}
    assert {t.dtype for t in half.values()} == {torch.bfloat16}
    for name, tensor in full.items():  # the same run, only rounded
        assert torch.equal(tensor.to(torch.bfloat16), half[name]), name
    model = AutoModelForCausalLM.from_pretrained(trained16, dtype="auto")
    assert model.dtype == torch.bfloat16


class CrashAfterSave(TrainerCallback):
    """Stand-in for a job killed right after the checkpoint of `step` was written."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"killed after step {self.step}")


@pytest.mark.parametrize("method", ["full", "lora"])
def test_resume_after_a_crash_matches_an_uninterrupted_run(
    tiny_backbone, tiny_corpus, tmp_path, method
):
    hparams = FAST | {"max_steps": 6, "save_steps": 2, "lora": {"r": 4, "dropout": 0.1}}
    reference = tmp_path / "reference"
    train(str(tiny_backbone), "v1", method, tiny_corpus, reference, hparams)

    output = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(str(tiny_backbone), "v1", method, tiny_corpus, output, hparams,
              extra_callbacks=[CrashAfterSave(4)])  # fmt: skip
    assert not output.exists()
    assert (checkpoints_dir(output) / "checkpoint-4" / "trainer_state.json").exists()
    # A kill while writing the next checkpoint leaves it incomplete: it must be ignored.
    incomplete = checkpoints_dir(output) / "checkpoint-6"
    incomplete.mkdir()
    (incomplete / "model.safetensors").write_bytes(b"")

    info = train(str(tiny_backbone), "v1", method, tiny_corpus, output, hparams)
    assert info["resumed_from"] == "checkpoint-4"
    assert not checkpoints_dir(output).exists()
    expected, got = state_dict(reference), state_dict(output)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-6, rtol=0), name
    with open(output / "loss.csv", newline="") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4, 5, 6]


def test_resume_moves_another_runs_checkpoints_aside(tiny_backbone, tiny_corpus, tmp_path, capsys):
    output = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        train(str(tiny_backbone), "v1", "full", tiny_corpus, output, FAST,
              extra_callbacks=[CrashAfterSave(2)])  # fmt: skip
    stale = list(tmp_path.glob("out.checkpoints.stale-*"))
    assert not stale
    info = train(
        str(tiny_backbone), "v1", "full", tiny_corpus, output, FAST | {"learning_rate": 1e-4}
    )
    assert info["resumed_from"] is None and info["global_step"] == FAST["max_steps"]
    (stale,) = tmp_path.glob("out.checkpoints.stale-*")  # kept, out of the way
    assert (stale / "checkpoint-2" / "trainer_state.json").is_file()
    err = capsys.readouterr().err
    assert "moved checkpoints of a different run (hparams.learning_rate: 0.001 -> 0.0001)" in err
    assert f"aside to {stale}" in err


def test_resume_never_starts_afresh(tiny_backbone, tiny_corpus, tmp_path):
    output = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        train(str(tiny_backbone), "v1", "full", tiny_corpus, output, FAST,
              extra_callbacks=[CrashAfterSave(2)])  # fmt: skip
    info = train(str(tiny_backbone), "v1", "full", tiny_corpus, output, FAST | {"resume": "never"})
    assert info["resumed_from"] is None and info["global_step"] == FAST["max_steps"]
    assert not list(tmp_path.glob("out.checkpoints*"))


class PoisonWeights(TrainerCallback):
    """Turns the weights into NaN after step 1, as a diverging run would."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == 1:
            with torch.no_grad():
                model.get_input_embeddings().weight.fill_(float("nan"))


def test_nan_loss_stops_with_a_clear_message(tiny_backbone, tiny_corpus, tmp_path):
    output = tmp_path / "diverged"
    with pytest.raises(NonFiniteLossError, match=r"training diverged: loss is nan at step 2"):
        train(str(tiny_backbone), "v1", "full", tiny_corpus, output, FAST | {"save_steps": 1},
              extra_callbacks=[PoisonWeights()])  # fmt: skip
    assert not output.exists()
    assert not checkpoints_dir(output).exists()


def test_cli_rejects_too_many_skipped_records(tiny_backbone, tiny_records, tmp_path, capsys):
    data = tmp_path / "data.json"
    broken = {
        "id": "b",
        "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": ""}],
    }
    data.write_text(json.dumps([*tiny_records[:9], broken]))
    output = tmp_path / "out"
    argv = ["--model", str(tiny_backbone), "--template", "v1", "--method", "full",
            "--data", str(data), "--output", str(output), "--hparams", json.dumps(FAST)]  # fmt: skip
    assert train_cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {data}: 1 of 10 records skipped (empty_message: 1), "
        "more than max_skipped_fraction=0.01"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json"]


def test_cli_trains_and_reports_on_stderr(tiny_backbone, tiny_corpus, tmp_path, capsys):
    output = tmp_path / "out"
    argv = ["--model", str(tiny_backbone), "--template", "v1", "--method", "full",
            "--data", str(tiny_corpus), "--output", str(output),
            "--hparams", json.dumps(FAST | {"max_steps": 2})]  # fmt: skip
    assert train_cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "step 1/2 loss " in captured.err and "step 2/2 loss " in captured.err
    assert re.search(r"step 1/2 loss \S+ lr \S+ elapsed 0:00:\d\d eta 0:00:\d\d", captured.err)
    assert captured.out == ""
    assert (output / "model.safetensors").exists()
