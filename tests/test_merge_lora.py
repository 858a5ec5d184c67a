"""merge_lora.py: base + trained adapter -> one model with the same outputs, in the same dtype."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from sbt.merge_lora import main as merge_cli
from sbt.merge_lora import merge
from sbt.training import train

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning"),  # peft
]

INPUT_IDS = torch.tensor([[1, 300, 301, 302, 303, 2], [1, 5, 400, 401, 402, 403]])


@pytest.fixture(scope="module")
def adapter(tiny_backbone, tiny_corpus, tmp_path_factory):
    """A LoRA adapter trained for a few real steps (large learning rate: B moves off zero)."""
    torch.set_num_threads(1)
    output = tmp_path_factory.mktemp("merge_lora") / "adapter"
    hparams = {
        "max_steps": 3,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-2,
        "bf16": False,
        "gradient_checkpointing": False,
        "model_max_length": 256,
        "lora": {"r": 4, "alpha": 16},
    }
    train(str(tiny_backbone), "v1", "lora", tiny_corpus, output, hparams)
    return output


@pytest.fixture(scope="module")
def bf16_backbone(tiny_backbone, tmp_path_factory):
    """The tiny backbone stored in bfloat16, as the study's 7B checkpoints are."""
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("backbones") / "tiny_bf16"
    model = AutoModelForCausalLM.from_pretrained(tiny_backbone, dtype=torch.bfloat16)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_backbone).save_pretrained(path)
    return path


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(INPUT_IDS).logits.float()


def test_merged_model_gives_the_logits_of_base_plus_adapter(tiny_backbone, adapter, tmp_path):
    from peft import PeftModel

    merged_dir = tmp_path / "merged"
    merge(str(tiny_backbone), str(adapter), str(merged_dir), dtype="float32")

    base = AutoModelForCausalLM.from_pretrained(tiny_backbone)
    plain = logits(base)
    with_adapter = logits(PeftModel.from_pretrained(base, adapter).eval())
    merged = logits(AutoModelForCausalLM.from_pretrained(merged_dir).eval())
    assert not torch.allclose(with_adapter, plain, atol=1e-3)  # the adapter does something
    torch.testing.assert_close(merged, with_adapter, atol=1e-5, rtol=0)

    saved = load_file(merged_dir / "model.safetensors")
    assert not any("lora" in name for name in saved)  # an ordinary model, no adapter left
    info = json.loads((merged_dir / "merge_info.json").read_text())
    assert info["adapter"] == str(adapter) and info["dtype"] == "torch.float32"
    assert (merged_dir / "tokenizer.json").exists()


@pytest.mark.parametrize("dtype", ["auto", "bfloat16"])
def test_bfloat16_backbone_stays_bfloat16(bf16_backbone, adapter, tmp_path, dtype):
    from peft import PeftModel

    merged_dir = tmp_path / "merged"
    merge(str(bf16_backbone), str(adapter), str(merged_dir), dtype=dtype)

    config = json.loads((merged_dir / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    saved = load_file(merged_dir / "model.safetensors")
    assert {tensor.dtype for tensor in saved.values()} == {torch.bfloat16}  # not upcast
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype="auto")
    assert merged.dtype == torch.bfloat16

    # Same outputs as base + adapter in bfloat16, up to bfloat16 rounding of the merged sum.
    base = AutoModelForCausalLM.from_pretrained(bf16_backbone, dtype=torch.bfloat16)
    expected = logits(PeftModel.from_pretrained(base, adapter).eval())
    torch.testing.assert_close(logits(merged.eval()), expected, atol=0.02, rtol=0)


def test_not_an_adapter_is_one_line_and_no_output(tiny_backbone, tmp_path, capsys):
    output = tmp_path / "merged"
    argv = ["--model", str(tiny_backbone), "--adapter", str(tiny_backbone), "--output", str(output)]
    assert merge_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {tiny_backbone}: field 'adapter_config.json': not a PEFT adapter directory"
    )
    assert not output.exists()
