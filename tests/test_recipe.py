"""The study's recipe, checked numerically on the tiny backbone.

- `max_grad_norm: 0` (the study) leaves the gradient of a step unclipped;
- `loss_averaging: micro_batch` (transformers 4.31, the study) gives the gradient of the
  mean of per-micro-batch means; `token` the gradient of one mean over the step's tokens;
- the study's sample order is the Trainer's seeded shuffle (no length grouping);
- `global_batch_size` derives the accumulation steps from the processes.

Each expected value is computed here independently, with the plain model in float32.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, TrainerCallback

from sbt.common import InputError
from sbt.tokenize_chat import load_tokenizer, tokenize_records
from sbt.training import gradient_accumulation, parse_hparams, train

pytestmark = pytest.mark.slow

EXACT = {
    "per_device_train_batch_size": 1,
    "gradient_accumulation_steps": 2,
    "max_steps": 1,
    "learning_rate": 1e-4,
    "warmup_ratio": 0.0,
    "lr_scheduler_type": "constant",
    "gradient_checkpointing": False,
    "bf16": False,
    "tf32": False,
    "packing": False,
    "model_max_length": 128,
    "save_steps": 100,
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


class CaptureGradients(TrainerCallback):
    """The gradients the optimiser is about to apply (after any clipping)."""

    def __init__(self):
        self.gradients = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.gradients.append(
            {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        )


def _examples(backbone, records):
    tokenizer, _ = load_tokenizer(str(backbone), "v1", EXACT["model_max_length"])
    examples, _ = tokenize_records(records, tokenizer, "v1", EXACT["model_max_length"])
    return examples


def _losses(model, example):
    """(sum of the token losses, number of trained tokens) of one example."""
    ids = torch.tensor([example["input_ids"]])
    labels = torch.tensor([example["labels"]])
    logits = model(input_ids=ids).logits[0, :-1]
    targets = labels[0, 1:]
    loss = torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100, reduction="sum")
    return loss, int((targets != -100).sum())


def _expected_gradients(backbone, examples, averaging):
    model = AutoModelForCausalLM.from_pretrained(backbone, dtype=torch.float32)
    parts = [_losses(model, ex) for ex in examples]
    if averaging == "micro_batch":  # one example per micro-batch here
        loss = sum(total / count for total, count in parts) / len(parts)
    else:
        loss = sum(total for total, _ in parts) / sum(count for _, count in parts)
    loss.backward()
    return {n: p.grad for n, p in model.named_parameters()}


def _norm(gradients):
    return torch.sqrt(sum(g.double().pow(2).sum() for g in gradients.values())).item()


def _two_unequal_records(tiny_records, backbone):
    """Two records whose trained token counts differ (so the averagings differ)."""
    examples = _examples(backbone, tiny_records[:40])
    by_count = sorted(examples, key=lambda ex: sum(t != -100 for t in ex["labels"]))
    short, long = by_count[0], by_count[-1]
    assert sum(t != -100 for t in short["labels"]) < sum(t != -100 for t in long["labels"])
    wanted = {short["id"], long["id"]}
    return [r for r in tiny_records[:40] if r["id"] in wanted]


@pytest.mark.parametrize("averaging", ["micro_batch", "token"])
def test_loss_averaging_and_unclipped_gradient(tiny_backbone, tiny_records, tmp_path, averaging):
    records = _two_unequal_records(tiny_records, tiny_backbone)
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records))
    capture = CaptureGradients()
    hp = EXACT | {"loss_averaging": averaging, "max_grad_norm": 0}
    train(str(tiny_backbone), "v1", "full", data, tmp_path / "out", hp, extra_callbacks=[capture])
    (got,) = capture.gradients
    expected = _expected_gradients(tiny_backbone, _examples(tiny_backbone, records), averaging)
    assert _norm(got) > 0.01  # would be visibly clipped by any small max_grad_norm
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    other = "token" if averaging == "micro_batch" else "micro_batch"
    different = _expected_gradients(tiny_backbone, _examples(tiny_backbone, records), other)
    assert not all(torch.allclose(got[n], g, rtol=1e-3, atol=1e-6) for n, g in different.items())


def test_max_grad_norm_clips(tiny_backbone, tiny_records, tmp_path):
    data = tmp_path / "data.json"
    data.write_text(json.dumps(tiny_records[:2]))
    capture = CaptureGradients()
    hp = EXACT | {"max_grad_norm": 0.001}
    train(str(tiny_backbone), "v1", "full", data, tmp_path / "out", hp, extra_callbacks=[capture])
    assert _norm(capture.gradients[0]) == pytest.approx(0.001, rel=1e-3)


def test_sample_order_is_the_seeded_shuffle(tiny_backbone, tiny_records, tmp_path):
    """With learning rate 0, step k's loss is the loss of the k-th sample drawn."""
    records = tiny_records[:8]
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records))
    hp = EXACT | {
        "gradient_accumulation_steps": 1,
        "max_steps": len(records),
        "learning_rate": 0.0,
        "logging_steps": 1,
        "seed": 42,
    }
    output = tmp_path / "out"
    train(str(tiny_backbone), "v1", "full", data, output, hp)
    with open(output / "loss.csv", encoding="utf-8") as fh:
        logged = [float(row["loss"]) for row in csv.DictReader(fh)]
    model = AutoModelForCausalLM.from_pretrained(tiny_backbone, dtype=torch.float32)
    with torch.no_grad():
        per_sample = [
            (total / count).item()
            for total, count in (_losses(model, ex) for ex in _examples(tiny_backbone, records))
        ]
    assert len(set(round(v, 4) for v in per_sample)) == len(records)  # losses tell samples apart
    order = [min(range(len(per_sample)), key=lambda i: abs(per_sample[i] - v)) for v in logged]
    for value, index in zip(logged, order, strict=True):
        assert value == pytest.approx(per_sample[index], rel=1e-5)
    expected = torch.randperm(len(records), generator=torch.Generator().manual_seed(42)).tolist()
    assert order == expected


def test_global_batch_size_derives_accumulation():
    hp = parse_hparams('{"global_batch_size": 32, "per_device_train_batch_size": 4}')
    assert [gradient_accumulation(hp, world) for world in (1, 2, 4, 8)] == [8, 4, 2, 1]
    with pytest.raises(InputError, match="global_batch_size 32 is not a multiple of .* 4 x 3"):
        gradient_accumulation(hp, 3)
    assert gradient_accumulation(parse_hparams("{}"), 4) == 2  # not set: as given


def test_recipe_defaults_are_the_study():
    hp = parse_hparams("{}")
    assert hp["max_grad_norm"] == 0 and hp["loss_averaging"] == "micro_batch"
    assert hp["group_by_length"] is False and hp["seed"] == 42 and hp["num_gpus"] == 4
    with pytest.raises(InputError, match="'loss_averaging' must be one of micro_batch, token"):
        parse_hparams('{"loss_averaging": "sample"}')
