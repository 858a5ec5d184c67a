"""Packing keeps the study's semantics: same loss per token, same tokens, same steps.

Also that a packed sample cannot see its neighbour with each attention implementation
transformers keeps packed samples apart for (the guarantee `packing: auto` relies on; a
leaking attention fails the same measurement), when packing is on, the tokenized cache,
and the throughput hparams.
"""

from __future__ import annotations

import csv

import pytest
import torch
from transformers import AttentionInterface, AutoModelForCausalLM, LlamaForCausalLM
from transformers.utils import is_flash_attn_2_available

from sbt.common import InputError
from sbt.packing import PackCollator, PadCollator, decide_packing, optional_features
from sbt.tokenize_chat import IGNORE_INDEX, count_trained_tokens, load_tokenizer, tokenize_records
from sbt.train_data import build_tokenized, load_tokenized, tokenized_cache_path
from sbt.training import config_from_json, parse_hparams, tokenized_cache_key, train

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
    "attn, logits_only",
    [("sdpa", True), ("sdpa", False), ("eager", True), ("eager", False)],
    ids=["sdpa", "sdpa-all-logits", "eager", "eager-all-logits"],
)
def test_packed_loss_and_gradients_equal_padded(tiny_backbone, examples, attn, logits_only):
    model = load(tiny_backbone, attn)
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


def leak_and_drift(model, collator=None, lengths=(6, 9)) -> tuple[float, float]:
    """Of sample B packed after sample A, relative to the logits' scale: `leak`, the largest
    change of B's logits when A is replaced (0 when no attention crosses the boundary), and
    `drift`, the largest difference between B packed and B run alone (rounding only)."""
    collator = collator or PackCollator()
    generator = torch.Generator().manual_seed(0)
    vocab = model.get_input_embeddings().weight.shape[0]

    def sample(n: int) -> dict:
        ids = torch.randint(3, vocab, (n,), generator=generator).tolist()
        return {"input_ids": ids, "labels": ids}

    def logits(batch: dict) -> torch.Tensor:
        device = next(model.parameters()).device
        inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        return model(**{k: v for k, v in inputs.items() if k != "labels"}).logits.float()

    first, other_first, second = sample(lengths[0]), sample(lengths[0]), sample(lengths[1])
    model.eval()
    with torch.no_grad():
        packed = logits(collator([first, second]))[0, lengths[0] :]
        replaced = logits(collator([other_first, second]))[0, lengths[0] :]
        alone = logits(PadCollator(0)([second]))[0]
    scale = max(1.0, alone.abs().max().item())
    leak = (packed - replaced).abs().max().item()
    drift = (packed - alone).abs().max().item()
    return leak / scale, drift / scale


ATTENTION = [
    "sdpa",
    "eager",
    pytest.param(
        "flash_attention_2",
        marks=pytest.mark.skipif(
            not (torch.cuda.is_available() and is_flash_attn_2_available()),
            reason="flash-attention needs CUDA and the flash_attn package",
        ),
    ),
]


@pytest.mark.parametrize("attn", ATTENTION)
def test_packed_sample_cannot_see_its_neighbour(tiny_backbone, attn):
    """What packing relies on: transformers keeps packed samples apart (no runtime check)."""
    model = load(tiny_backbone, attn)
    if attn.startswith("flash"):
        model = model.to("cuda", torch.bfloat16)
    leak, drift = leak_and_drift(model)
    if attn.startswith("flash"):  # bf16 on the GPU: a leak would be of order 0.1
        assert leak <= 1e-3 and drift <= 2e-2
    else:
        assert leak == 0.0 and drift <= 1e-5


def test_the_neighbour_test_catches_leaks(tiny_backbone):
    """The same measurement fails where attention crosses the boundary."""
    AttentionInterface.register("test_leaky", leaky_attention)
    leak, _ = leak_and_drift(load(tiny_backbone, "test_leaky"))
    assert leak > 1e-3
    model = load(tiny_backbone, "sdpa")

    def with_mask(features):  # an attention mask of ones: no block-diagonal mask is built
        batch = PackCollator()(features)
        return batch | {"attention_mask": torch.ones_like(batch["input_ids"])}

    assert leak_and_drift(model, with_mask)[0] > 1e-3

    def no_restart(features):  # concatenation with positions running on: drift
        ids = torch.tensor([[t for f in features for t in f["input_ids"]]])
        return {"input_ids": ids}

    assert leak_and_drift(model, no_restart)[1] > 1e-3


class RemoteCodeLlama(LlamaForCausalLM):
    """Stands in for a checkpoint's own modelling code (trust_remote_code)."""


def test_when_packing_is_on(tiny_backbone, capsys):
    model = load(tiny_backbone, "sdpa")
    auto = decide_packing(model, "auto", "sdpa")
    assert auto == {
        "packing": True,
        "attention": "block-diagonal mask",
        "loss_logits_only": True,
        "message": None,
    }
    assert decide_packing(model, "auto", "flash_attention_2")["attention"] == "varlen (cu_seq_lens)"
    assert decide_packing(model, False, "sdpa")["packing"] is False
    remote = RemoteCodeLlama(model.config)
    fallback = decide_packing(remote, "auto", "sdpa")
    assert fallback["packing"] is False
    assert fallback["message"] == (
        "packing: RemoteCodeLlama is not one of transformers' own models (remote code): "
        "training with padded batches"
    )
    forced = decide_packing(remote, True, "sdpa")
    assert forced["packing"] is True and "make sure its attention" in forced["message"]


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
    assert packed["effective"]["packing_attention"] == "block-diagonal mask"
    assert packed["effective"]["attn_implementation"] == "sdpa"
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


def test_length_grouped_batches_when_asked(tiny_backbone, tiny_corpus, tmp_path):
    info = train(str(tiny_backbone), "v1", "lora", tiny_corpus, tmp_path / "grouped",
                 FAST | {"packing": False, "group_by_length": True, "max_steps": 2,
                         "lora": {"r": 4}})  # fmt: skip
    assert info["effective"]["group_by_length"] is True and info["global_step"] == 2


def test_tokenized_cache_is_reused_and_keyed(tiny_backbone, tiny_corpus, tiny_records, tmp_path):
    tokenizer, _ = load_tokenizer(str(tiny_backbone), "v1", 256)
    key = tokenized_cache_key("d" * 64, tokenizer, "v1", 256)
    assert key == tokenized_cache_key("d" * 64, tokenizer, "v1", 256)
    assert key != tokenized_cache_key("d" * 64, tokenizer, "v1", 128)
    assert key != tokenized_cache_key("d" * 64, tokenizer, "llama_2", 256)
    assert key != tokenized_cache_key("e" * 64, tokenizer, "v1", 256)
    path = tokenized_cache_path(tmp_path, key)
    built = build_tokenized(path, tiny_corpus, tokenizer, "v1", 256, 0.01)
    loaded = load_tokenized(path)
    assert (built.hit, loaded.hit) == (False, True)
    expected, skips = tokenize_records(tiny_records, tokenizer, "v1", 256)
    rows = loaded.dataset[:]
    assert [ids.tolist() for ids in rows["input_ids"]] == [ex["input_ids"] for ex in expected]
    assert [labels.tolist() for labels in rows["labels"]] == [ex["labels"] for ex in expected]
    assert (loaded.records, loaded.skips, loaded.examples) == (300, skips, len(expected))
    assert loaded.trained_tokens == count_trained_tokens(expected)

    cache = tmp_path / "cache"
    hparams = FAST | {"max_steps": 1, "tokenized_cache_dir": str(cache)}
    first = train(str(tiny_backbone), "v1", "full", tiny_corpus, tmp_path / "a", hparams)
    second = train(str(tiny_backbone), "v1", "full", tiny_corpus, tmp_path / "b", hparams)
    assert first["effective"]["tokenized_cache"]["hit"] is False
    assert second["effective"]["tokenized_cache"]["hit"] is True
    (entry,) = cache.iterdir()  # one complete cache, nothing half-written beside it
    assert entry.name.startswith("tokenized-") and (entry / "meta.json").is_file()
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
    effective, messages = optional_features(
        config_from_json('{"use_liger_kernel": true}'), cuda=False
    )
    assert effective["use_liger_kernel"] is False
    assert len(messages) == 1 and messages[0].startswith("use_liger_kernel: ")


def test_bench_llava_like_lengths(tiny_backbone):
    import random

    from bench_train import llava_like_records
    from transformers import AutoTokenizer

    from sbt.demo.llava import sample_lengths

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
    assert lines[3].startswith("(b) default: packing auto: packed (block-diagonal mask), ")
    assert "padding 0.0%" in lines[3] and "MFU" not in lines[3]
    assert lines[-1].startswith("ratio: ") and float(lines[-1].split()[1]) > 0
