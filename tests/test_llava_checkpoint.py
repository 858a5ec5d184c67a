"""The study's released checkpoints: LLaVA-1.x format, evaluated as their language model.

A synthetic checkpoint is saved here the way the study's LLaVA code (transformers 4.31)
saved `PahaII/MM-*`: config.json with model_type "llava", architectures
LlavaLlamaForCausalLM and the flat mm_* keys, and one pickled pytorch_model.bin holding
the LLaMA weights plus model.mm_projector.* and model.vision_tower.* tensors. Evaluated by
src/sbt/evaluate.py it must score exactly as its language model saved as a plain
LlamaForCausalLM (safetensors), alone and with a LoRA adapter on top; without
allow_pickle_weights it must stop with one line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import sbt.evaluate as evaluate_cli
from sbt.checkpoints import is_llava_checkpoint, llama_config

ROOT = Path(__file__).resolve().parent.parent
LANGUAGE_MODEL = ROOT / "tests" / "golden" / "mmlu_model"  # answers MMLU prompts with letters
BENCHMARKS = ROOT / "resources" / "demo" / "benchmarks"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")
# What llava/train/train.py adds to the config (values of a 7B run with CLIP ViT-L/14).
MM_CONFIG = {
    "mm_vision_tower": "openai/clip-vit-large-patch14",
    "mm_hidden_size": 1024,
    "mm_vision_select_layer": -2,
    "mm_vision_select_feature": "patch",
    "mm_use_im_start_end": True,
    "mm_use_im_patch_token": False,
    "use_mm_proj": True,
    "tune_mm_mlp_adapter": False,
    "freeze_mm_mlp_adapter": False,
    "image_aspect_ratio": "square",
    "image_grid_pinpoints": None,
}


def llava_config_431(model) -> dict:
    """config.json as transformers 4.31 wrote it for LlavaLlamaForCausalLM."""
    c = model.config
    return {
        "_name_or_path": "./checkpoints/llava-llama-2-7b-chat-finetune",
        "architectures": ["LlavaLlamaForCausalLM"],
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_id,
        "hidden_act": c.hidden_act,
        "hidden_size": c.hidden_size,
        "initializer_range": c.initializer_range,
        "intermediate_size": c.intermediate_size,
        "max_position_embeddings": c.max_position_embeddings,
        "model_type": "llava",
        "num_attention_heads": c.num_attention_heads,
        "num_hidden_layers": c.num_hidden_layers,
        "num_key_value_heads": c.num_key_value_heads,
        "pad_token_id": 0,
        "pretraining_tp": 1,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_scaling": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.31.0",
        "use_cache": True,
        "vocab_size": c.vocab_size,
        **MM_CONFIG,
    }


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{"plain": LlamaForCausalLM dir (safetensors), "llava": the same weights as LLaVA-1.x}."""
    import torch
    from transformers import LlamaForCausalLM

    root = tmp_path_factory.mktemp("llava")
    model = LlamaForCausalLM.from_pretrained(LANGUAGE_MODEL, dtype=torch.float32)
    plain, llava = root / "plain", root / "llava"
    model.save_pretrained(plain)
    llava.mkdir()
    generator = torch.Generator().manual_seed(0)
    hidden = model.config.hidden_size
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["model.mm_projector.weight"] = torch.randn(hidden, 1024, generator=generator)
    state["model.mm_projector.bias"] = torch.randn(hidden, generator=generator)
    patch = "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight"
    state[patch] = torch.randn(8, 3, 14, 14, generator=generator)
    torch.save(state, llava / "pytorch_model.bin")
    (llava / "config.json").write_text(json.dumps(llava_config_431(model), indent=2))
    (llava / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0})
    )
    (llava / "training_args.bin").write_bytes(b"not weights")  # the Trainer leaves one
    for name in TOKENIZER_FILES:
        for target in (plain, llava):
            shutil.copy(LANGUAGE_MODEL / name, target / name)
    return {"plain": plain, "llava": llava, "root": root}


@pytest.fixture(scope="module")
def adapter(checkpoints):
    """A LoRA adapter with random (non-zero) B matrices, saved as safetensors."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(checkpoints["plain"], dtype=torch.float32)
    model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=generator))
    path = checkpoints["root"] / "adapter"
    model.save_pretrained(path)
    return path


def evaluate(model: Path, out: Path, *extra: str, adapter: Path | None = None) -> dict:
    argv = ["--model", str(model), "--output", str(out), "--dtype", "float32"]
    argv += ["--device", "cpu", "--batch-size", "4", *extra]
    if adapter:
        argv += ["--adapter", str(adapter)]
    assert evaluate_cli.main(argv) == 0
    return json.loads(out.read_text())


TRUTHFULQA = (
    "--task",
    "truthfulqa_mc1",
    "--task",
    "truthfulqa_mc2",
    "--data-files",
    f"validation={BENCHMARKS / 'truthfulqa_mc.jsonl'}",
    "--limit",
    "8",
)
MMLU_STUDY = (
    "--task",
    "mmlu_study",
    "--num-fewshot",
    "5",
    "--data-dir",
    str(BENCHMARKS / "mmlu"),
    "--log-samples",
)


def test_detects_only_the_llava_1x_layout():
    assert is_llava_checkpoint({"model_type": "llava", "architectures": ["LlavaLlamaForCausalLM"]})
    assert not is_llava_checkpoint({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    native = {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"]}
    assert not is_llava_checkpoint({**native, "text_config": {}})
    converted, dropped = llama_config({"model_type": "llava", "hidden_size": 8, **MM_CONFIG})
    assert converted == {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 8,
    }
    assert set(dropped) == set(MM_CONFIG)


@pytest.mark.parametrize("with_adapter", [False, True], ids=["model", "model+lora"])
def test_llava_checkpoint_scores_as_its_language_model(
    checkpoints, adapter, tmp_path, capsys, with_adapter
):
    lora = adapter if with_adapter else None
    plain = evaluate(checkpoints["plain"], tmp_path / "plain.json", *TRUTHFULQA, adapter=lora)
    capsys.readouterr()
    llava = evaluate(
        checkpoints["llava"],
        tmp_path / "llava.json",
        *TRUTHFULQA,
        "--allow-pickle-weights",
        adapter=lora,
    )
    err = capsys.readouterr().err
    assert "LLaVA-1.x checkpoint (LlavaLlamaForCausalLM); evaluating its language model" in err
    assert llava["metrics"] == plain["metrics"]
    assert llava["metrics"]["truthfulqa_mc2/acc"] not in (0.0, 1.0)
    assert llava["config"]["checkpoint_format"]["loaded_as"] == "LlamaForCausalLM"
    assert plain["config"]["checkpoint_format"] is None
    assert llava["config"]["model"] == str(checkpoints["llava"])  # the original, not the view


def test_llava_checkpoint_on_the_studys_mmlu(checkpoints, tmp_path):
    """Generation too: the same answers, question by question (the study's MMLU path)."""
    results = {}
    for name, extra in (("plain", ()), ("llava", ("--allow-pickle-weights",))):
        samples = tmp_path / f"{name}.samples.jsonl"
        results[name] = evaluate(
            checkpoints[name], tmp_path / f"{name}.json", *MMLU_STUDY, str(samples), *extra
        )
        results[name]["answers"] = [
            json.loads(line)["resps"] for line in samples.read_text().splitlines()
        ]
    assert results["llava"]["answers"] == results["plain"]["answers"]
    assert results["llava"]["metrics"] == results["plain"]["metrics"]


def test_pickled_llava_checkpoint_needs_allow_pickle_weights(checkpoints, tmp_path, capsys):
    argv = ["--model", str(checkpoints["llava"]), "--output", str(tmp_path / "r.json")]
    assert evaluate_cli.main([*argv, "--device", "cpu", *TRUTHFULQA]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "pytorch_model.bin" in err[0] and "allow_pickle_weights: true" in err[0]
    assert "training_args.bin" not in err[0]
    assert not (tmp_path / "r.json").exists()


def test_pickled_adapter_needs_allow_pickle_weights(checkpoints, adapter, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "adapter_bin"
    shutil.copytree(adapter, pickled)
    weights = pickled / "adapter_model.safetensors"
    torch.save(load_file(weights), pickled / "adapter_model.bin")  # as peft 0.4 saved them
    weights.unlink()
    argv = ["--model", str(checkpoints["plain"]), "--adapter", str(pickled)]
    argv += ["--output", str(tmp_path / "r.json"), "--device", "cpu", *TRUTHFULQA]
    assert evaluate_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "adapter_model.bin" in err[0], err
