"""Batches for training: padded (the study's way) or packed without padding.

Why packing: LLaVA conversations range from a few dozen to about 2,000 tokens, so a padded
batch of four spends much of its compute on padding. `PackCollator` concatenates the
samples of a batch into one row instead, with transformers' padding-free collator
(`DataCollatorWithFlattening`), and keeps them apart with transformers' public means only:

- position ids restart at 0 for every sample;
- the first label of every sample is -100, so the last token of one sample is never
  trained to predict the first token of the next (labels are shifted per sample);
- the batch carries the boundaries as `cu_seq_lens_q/k` and `max_length_q/k`, which
  flash-attention's varlen kernel reads (transformers' documented padding-free path,
  docs "Padding-free training"), and no `attention_mask`: with `sdpa` and `eager`,
  transformers' causal-mask builder (`masking_utils.create_causal_mask` in 5.x) finds the
  restarting position ids when no 2-D attention mask is passed and no KV cache is in use,
  and masks attention block-diagonally (each sample sees only itself; the mask costs
  (sum of lengths)^2 positions where varlen flash-attention computes sum(length^2)).

The batch keeps the same samples (the Trainer's sampler is untouched), so steps per epoch,
the learning-rate schedule and the loss per trained token are those of padded training.
That a packed sample cannot see its neighbour and matches its unpacked run is a test
(tests/test_packing.py), not a check at run time; `decide_packing` only decides from
what was asked and which code and attention the model runs. transformers is imported
lazily: importing this module stays light.
"""

from __future__ import annotations

import importlib.util
import inspect
import shutil
from collections.abc import Sequence

from sbt.tokenize_chat import IGNORE_INDEX
from sbt.train_config import TrainConfig

# How transformers keeps packed samples apart, per attention implementation it supports
# padding-free batches with (see the module docstring).
PADDING_FREE = {
    "flash_attention_2": "varlen (cu_seq_lens)",
    "sdpa": "block-diagonal mask",
    "eager": "block-diagonal mask",
}


class PadCollator:
    """Right-pad a batch: input_ids with the pad id, labels with -100, attention mask 0.

    Features hold `input_ids` and `labels` as lists or arrays (a numpy-formatted Dataset
    row); other keys are ignored. `batches` records (real tokens, positions computed) for every batch built, in order.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id
        self.batches: list[tuple[int, int]] = []

    def __call__(self, features: Sequence[dict]) -> dict:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        shape = (len(features), longest)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros(shape, dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            input_ids[row, :n] = torch.as_tensor(feature["input_ids"])
            labels[row, :n] = torch.as_tensor(feature["labels"])
            attention_mask[row, :n] = 1
        self.batches.append((int(attention_mask.sum()), input_ids.numel()))
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


class PackCollator:
    """Concatenate a batch into one row without padding (transformers' flattening collator).

    Returns input_ids, labels (-100 at each sample's first token), position_ids restarting
    per sample, and the cumulative lengths `cu_seq_lens_q/k` with `max_length_q/k` that
    varlen attention reads. No attention_mask. `batches` as in PadCollator.

    With `loss_logits_only`, also `logits_to_keep` (the positions whose next token is
    trained) and `shift_labels` (those next tokens): the model then computes the output
    layer and the loss only where the loss needs them. Same loss, same gradients; less
    time and memory where the vocabulary is large or most tokens are prompt.
    """

    def __init__(self, *, loss_logits_only: bool = False) -> None:
        self.loss_logits_only = loss_logits_only
        self.batches: list[tuple[int, int]] = []
        self._flatten = None

    def __call__(self, features: Sequence[dict]) -> dict:
        if self._flatten is None:
            from transformers import DataCollatorWithFlattening

            self._flatten = DataCollatorWithFlattening(
                return_position_ids=True,
                separator_id=IGNORE_INDEX,
                return_flash_attn_kwargs=True,
            )
        batch = self._flatten(
            [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features]
        )
        tokens = batch["input_ids"].numel()
        self.batches.append((tokens, tokens))
        if self.loss_logits_only:
            following = batch["labels"][0, 1:]
            keep = (following != IGNORE_INDEX).nonzero().squeeze(1)
            batch["logits_to_keep"] = keep
            batch["shift_labels"] = following[keep].unsqueeze(0)
        return batch


def choose_attention(requested: str, cuda: bool) -> tuple[str, str | None]:
    """attn_implementation to load the model with, and a message when a request is not met.

    auto: flash_attention_2 on CUDA when the flash_attn package is installed, otherwise
    sdpa. A flash_attention_2 request that cannot be met uses sdpa.
    """
    from transformers.utils import is_flash_attn_2_available

    flash = cuda and is_flash_attn_2_available()
    if requested == "auto":
        return ("flash_attention_2" if flash else "sdpa"), None
    if requested == "flash_attention_2" and not flash:
        why = "no CUDA device" if not cuda else "the flash_attn package is not installed"
        return "sdpa", f"attn_implementation flash_attention_2 is not available ({why}): using sdpa"
    return requested, None


def decide_packing(model, mode: bool | str, attn_implementation: str) -> dict:
    """Pack or pad for `model`, loaded with `attn_implementation`, under hparam `packing`.

    auto: pack when the model runs transformers' own modelling code (a class from
    `transformers.models`, not a checkpoint's remote code) with one of PADDING_FREE's
    implementations, else pad (with one line why). True: pack (one line warns where
    transformers' support does not cover the model). False: pad.
    Returns {"packing": bool, "attention": how boundaries are kept or None,
    "loss_logits_only": whether the model takes `logits_to_keep` (see PackCollator),
    "message": a line for the log or None}.
    """
    off = {"packing": False, "attention": None, "loss_logits_only": False, "message": None}
    if mode is False:
        return off
    name = type(model).__name__
    own_code = type(model).__module__.startswith("transformers.models.")
    attention = PADDING_FREE.get(attn_implementation) if own_code else None
    why = None
    if not own_code:
        why = f"{name} is not one of transformers' own models (remote code)"
    elif attention is None:
        why = f"transformers has no padding-free path for {attn_implementation} attention"
    if why and mode == "auto":
        return off | {"message": f"packing: {why}: training with padded batches"}
    return {
        "packing": True,
        "attention": attention or "position ids (unverified)",
        "loss_logits_only": "logits_to_keep" in inspect.signature(model.forward).parameters,
        "message": (
            f"packing: true although {why}: make sure its attention keeps packed samples apart"
            if why
            else None
        ),
    }


def optional_features(hp: TrainConfig, cuda: bool) -> tuple[dict, list[str]]:
    """Which of use_liger_kernel and torch_compile can be used here, and messages why not."""
    effective, messages = {}, []
    liger = hp.use_liger_kernel
    if liger and importlib.util.find_spec("liger_kernel") is None:
        messages.append(
            "use_liger_kernel: the liger-kernel package is not installed "
            "(pip install liger-kernel): training without it"
        )
        liger = False
    elif liger and not cuda:
        messages.append("use_liger_kernel: Liger kernels need a CUDA GPU: training without them")
        liger = False
    effective["use_liger_kernel"] = liger
    compile_ = hp.torch_compile
    if compile_ and not cuda and not (shutil.which("c++") or shutil.which("g++")):
        messages.append("torch_compile: no C++ compiler for the CPU backend: training without it")
        compile_ = False
    effective["torch_compile"] = compile_
    return effective, messages
