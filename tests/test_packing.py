"""Packing keeps the study's semantics: same loss per token, same tokens, same steps.

Also the packing check on a model that leaks across samples, the tokenized cache, and the
throughput hparams.
"""

from __future__ import annotations

import csv

import pytest
import torch
from transformers import AttentionInterface, AutoModelForCausalLM

from sbt.common import InputError
from sbt.packing import (
    PER_SAMPLE_SDPA,
    PackCollator,
    PackingError,
    PadCollator,
    check_packing,
    optional_features,
    prepare_packing,
)
from sbt.tokenize_chat import IGNORE_INDEX, count_trained_tokens, load_tokenizer, tokenize_records
from sbt.training import (
    load_tokenized,
    parse_hparams,
    save_tokenized,
    tokenized_cache_key,
    tokenized_cache_path,
    train,
)

FAST = {
    "max_steps": 3,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 2,
    "learning_rate": 1e-3,
    "gradient_checkpointing": False,
    "bf16": False,
    "model_max_length": 256,
    "save_steps": 100,
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def examples(tiny_backbone, tiny_records):
    tokenizer, _ = load_tokenizer(str(tiny_backbone), "v1", 256)
    found, _ = tokenize_records(tiny_records[:40], tokenizer, "v1", 256)
    return found


def load(path, attn="sdpa"):
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn)
    model.config.use_cache = False
    return model


def loss_and_grads(model, batch):
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def trained_positions(batch) -> int:
    """Tokens that contribute to the loss: labels after the causal shift."""
    return int((batch["labels"][..., 1:] != IGNORE_INDEX).sum())


@pytest.mark.parametrize(
    "attn, per_sample, logits_only",
    [("sdpa", True, True), ("sdpa", True, False), ("sdpa", False, False), ("eager", False, True)],
    ids=["sdpa-per-sample", "sdpa-per-sample-all-logits", "sdpa-block-mask", "eager-block-mask"],
)
def test_packed_loss_and_gradients_equal_padded(
    tiny_backbone, examples, attn, per_sample, logits_only
):
    model = load(tiny_backbone, attn)
    if per_sample:
        info = prepare_packing(model, True)
        assert info["attention"] == "sdpa per sample"
        assert model.config._attn_implementation == PER_SAMPLE_SDPA
    features = [dict(ex) for ex in examples[:4]]
    # A trained label on a sample's first token: predicting it would need the previous
    # sample's last token, so packing must drop it exactly as a padded row never sees it.
    features[1]["labels"] = [features[1]["input_ids"][0], *features[1]["labels"][1:]]
    padded = PadCollator(0)(features)
    packed = PackCollator(loss_logits_only=logits_only)(features)
    assert packed["input_ids"].shape == (1, sum(len(f["input_ids"]) for f in features))
    assert "attention_mask" not in packed
    assert trained_positions(packed) == trained_positions(padded) > 0
    if logits_only:  # the output layer runs only where a trained token is predicted
        assert packed["logits_to_keep"].numel() == packed["shift_labels"].numel()
        assert packed["logits_to_keep"].numel() == trained_positions(padded)
        assert packed["logits_to_keep"].numel() < packed["input_ids"].numel()

    padded_loss, padded_grads = loss_and_grads(model, padded)
    packed_loss, packed_grads = loss_and_grads(model, packed)
    assert abs(packed_loss - padded_loss) < 1e-5
    for name, grad in padded_grads.items():
        assert torch.allclose(packed_grads[name], grad, atol=1e-6, rtol=1e-4), name


def test_packing_trains_the_same_tokens(examples):
    pad, pack = PadCollator(0), PackCollator()
    padded = packed = 0
    for start in range(0, len(examples), 4):
        batch = examples[start : start + 4]
        padded += trained_positions(pad(batch))
        packed += trained_positions(pack(batch))
    assert padded == packed == count_trained_tokens(examples)
    real = sum(len(ex["input_ids"]) for ex in examples)
    assert sum(t for t, _ in pack.batches) == sum(t for t, _ in pad.batches) == real
    assert sum(p for _, p in pack.batches) == real < sum(p for _, p in pad.batches)


def leaky_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **_):
    """One causal attention over the whole row, as a model that ignores boundaries has."""
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, is_causal=True, scale=scaling
    )
    return out.transpose(1, 2).contiguous(), None


def test_check_catches_attention_across_samples(tiny_backbone):
    good = load(tiny_backbone, "sdpa")
    assert check_packing(good) == {"leak": 0.0, "drift": pytest.approx(0, abs=1e-5), "ok": True}

    AttentionInterface.register("test_leaky", leaky_attention)
    leaky = load(tiny_backbone, "test_leaky")
    result = check_packing(leaky)
    assert not result["ok"] and result["leak"] > 1e-3
    fallback = prepare_packing(leaky, "auto")
    assert fallback["packing"] is False and "padded batches" in fallback["message"]
    with pytest.raises(PackingError, match="not kept apart .* set packing to false"):
        prepare_packing(leaky, True)

    def no_restart(features):  # concatenation with positions running on: drift
        ids = torch.tensor([[t for f in features for t in f["input_ids"]]])
        return {"input_ids": ids}

    assert not check_packing(good, no_restart)["ok"]


def losses(path) -> list[float]:
    with open(path / "loss.csv", newline="") as fh:
        return [float(row["loss"]) for row in csv.DictReader(fh)]


@pytest.mark.parametrize("method", ["full", "lora"])
def test_trainer_packed_matches_padded_step_by_step(tiny_backbone, tiny_corpus, tmp_path, method):
    hparams = FAST | {"lora": {"r": 4, "dropout": 0.0}}  # dropout masks depend on the shape
    padded = train(str(tiny_backbone), "v1", method, tiny_corpus, tmp_path / "padded",
                   hparams | {"packing": False})  # fmt: skip
    packed = train(str(tiny_backbone), "v1", method, tiny_corpus, tmp_path / "packed", hparams)
    assert padded["effective"]["packing"] is False
    assert padded["effective"]["group_by_length"] is False  # the study's order
    assert padded["effective"]["padding_fraction"] > 0
    assert packed["effective"]["packing"] is True  # "auto" on this CPU
    assert packed["effective"]["packing_attention"] == "sdpa per sample"
    assert packed["effective"]["loss_logits_only"] is True
    assert packed["effective"]["padding_fraction"] == 0
    assert packed["global_step"] == padded["global_step"] == 3
    assert packed["effective"]["global_batch_size"] == padded["effective"]["global_batch_size"] == 8
    assert packed["trained_tokens"] == padded["trained_tokens"]
    assert losses(tmp_path / "packed") == pytest.approx(losses(tmp_path / "padded"), abs=1e-5)
    from safetensors.torch import load_file

    name = "model.safetensors" if method == "full" else "adapter_model.safetensors"
    a, b = load_file(tmp_path / "padded" / name), load_file(tmp_path / "packed" / name)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    config = next((tmp_path / "packed").glob("*config.json")).read_text()
    assert PER_SAMPLE_SDPA not in config  # the saved model loads anywhere


def test_length_grouped_batches_when_asked(tiny_backbone, tiny_corpus, tmp_path):
    info = train(str(tiny_backbone), "v1", "lora", tiny_corpus, tmp_path / "grouped",
                 FAST | {"packing": False, "group_by_length": True, "max_steps": 2,
                         "lora": {"r": 4}})  # fmt: skip
    assert info["effective"]["group_by_length"] is True and info["global_step"] == 2


def test_tokenized_cache_is_reused_and_keyed(tiny_backbone, tiny_corpus, examples, tmp_path):
    tokenizer, _ = load_tokenizer(str(tiny_backbone), "v1", 256)
    key = tokenized_cache_key("d" * 64, tokenizer, "v1", 256)
    assert key == tokenized_cache_key("d" * 64, tokenizer, "v1", 256)
    assert key != tokenized_cache_key("d" * 64, tokenizer, "v1", 128)
    assert key != tokenized_cache_key("d" * 64, tokenizer, "llama_2", 256)
    assert key != tokenized_cache_key("e" * 64, tokenizer, "v1", 256)
    path = tokenized_cache_path(tmp_path, key)
    save_tokenized(path, examples, 41, {"empty_message": 1})
    assert load_tokenized(path) == (examples, 41, {"empty_message": 1})

    cache = tmp_path / "cache"
    hparams = FAST | {"max_steps": 1, "tokenized_cache_dir": str(cache)}
    first = train(str(tiny_backbone), "v1", "full", tiny_corpus, tmp_path / "a", hparams)
    second = train(str(tiny_backbone), "v1", "full", tiny_corpus, tmp_path / "b", hparams)
    assert first["effective"]["tokenized_cache"]["hit"] is False
    assert second["effective"]["tokenized_cache"]["hit"] is True
    assert len(list(cache.glob("tokenized-*.npz"))) == 1
    assert second["trained_tokens"] == first["trained_tokens"]
    assert losses(tmp_path / "b") == losses(tmp_path / "a")


def test_throughput_hparams(capsys):
    hp = parse_hparams("{}")
    assert (hp["packing"], hp["group_by_length"], hp["attn_implementation"]) == (
        "auto",
        False,
        "auto",
    )
    assert not hp["use_liger_kernel"] and not hp["torch_compile"]
    with pytest.raises(InputError, match="'packing' must be true, false or \"auto\""):
        parse_hparams('{"packing": "yes"}')
    with pytest.raises(InputError, match="'attn_implementation' must be one of auto, sdpa"):
        parse_hparams('{"attn_implementation": "flash"}')
    effective, messages = optional_features(hp | {"use_liger_kernel": True}, cuda=False)
    assert effective["use_liger_kernel"] is False
    assert len(messages) == 1 and messages[0].startswith("use_liger_kernel: ")


def test_bench_llava_like_lengths(tiny_backbone):
    import random

    from bench_train import llava_like_records, sample_lengths
    from transformers import AutoTokenizer

    lengths = sample_lengths(2000, random.Random(0))
    assert min(lengths) >= 40 and max(lengths) <= 2048
    assert 250 < sorted(lengths)[1000] < 350  # median about 300
    assert 0.02 < sum(n > 1000 for n in lengths) / 2000 < 0.1
    records = llava_like_records(30, AutoTokenizer.from_pretrained(tiny_backbone), seed=1)
    assert len(records) == 30
    for record in records:
        turns = record["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert all(t["value"] and "<image>" not in t["value"] for t in turns)


@pytest.mark.slow
def test_bench_runs_both_recipes_and_prints_the_ratio(tmp_path, capsys):
    from bench_train import main as bench_main

    argv = ["--steps", "2", "--warmup-steps", "1", "--batch-size", "2", "--repeats", "1",
            "--workdir", str(tmp_path)]  # fmt: skip
    assert bench_main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[2].startswith("(a) study: padded batches: padded, attention sdpa: ")
    assert lines[3].startswith("(b) default: packing auto: packed (sdpa per sample)")
    assert "padding 0.0%" in lines[3] and "MFU" not in lines[3]
    assert lines[-1].startswith("ratio: ") and float(lines[-1].split()[1]) > 0
