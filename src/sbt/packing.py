"""Batches for training: padded (the study's way) or packed without padding.

Why packing: LLaVA conversations range from a few dozen to about 2,000 tokens, so a padded
batch of four spends much of its compute on padding. `PackCollator` concatenates the
samples of a batch into one row instead, and keeps them apart exactly:

- position ids restart at 0 for every sample;
- the first label of every sample is -100, so the last token of one sample is never
  trained to predict the first token of the next (labels are shifted per sample);
- the attention never crosses a boundary: with `sdpa` each sample runs through its own
  causal `scaled_dot_product_attention` call (`PER_SAMPLE_SDPA`, no N x N mask at all);
  with flash-attention the varlen kernel reads the boundaries from `cu_seq_lens_*`; with
  other implementations transformers builds a block-diagonal causal mask from the
  restarting position ids (only when no 2-D attention mask is passed and no KV cache is in
  use, which is why the packed batch carries no `attention_mask`).

The batch keeps the same samples (the Trainer's sampler is untouched), so steps per epoch,
the learning-rate schedule and the loss per trained token are those of padded training.
`check_packing` verifies on the loaded model itself that a packed sample cannot see its
neighbour and matches its unpacked run; `prepare_packing` switches packing on only when it
passes. transformers is imported lazily: importing this module stays light.
"""

from __future__ import annotations

import importlib.util
import inspect
import shutil
from collections.abc import Sequence
from itertools import pairwise

from sbt.tokenize_chat import IGNORE_INDEX

# Name under which the per-sample sdpa attention is registered with transformers.
PER_SAMPLE_SDPA = "sbt_sdpa_per_sample"


class PackingError(RuntimeError):
    """Packed samples are not kept apart by this model's attention."""


class PadCollator:
    """Right-pad a batch: input_ids with the pad id, labels with -100, attention mask 0.

    `batches` records (real tokens, positions computed) for every batch built, in order.
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
            input_ids[row, :n] = torch.tensor(feature["input_ids"], dtype=torch.long)
            labels[row, :n] = torch.tensor(feature["labels"], dtype=torch.long)
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


def sdpa_per_sample(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers' sdpa attention, run causally on each packed sample on its own.

    Used when the batch carries `cu_seq_lens_q` (one packed row); otherwise, and for
    sliding-window layers whose window is shorter than a sample, it is plain sdpa with the
    mask transformers built. Cost: the sum of the samples' squared lengths, not the square
    of their total.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.pop("cu_seq_lens_q", None)
    window = kwargs.get("sliding_window") or getattr(module, "sliding_window", None)
    if bounds is not None and query.shape[0] == 1:
        bounds = _as_list(bounds)
        longest = max(end - start for start, end in pairwise(bounds))
        if window is None or longest <= window:
            for name in ("cu_seq_lens_k", "max_length_q", "max_length_k", "is_causal"):
                kwargs.pop(name, None)
            pieces = [
                sdpa_attention_forward(
                    module,
                    query[:, :, start:end],
                    key[:, :, start:end],
                    value[:, :, start:end],
                    None,
                    dropout=dropout,
                    scaling=scaling,
                    is_causal=True,
                    **kwargs,
                )[0]
                for start, end in pairwise(bounds)
            ]
            return torch.cat(pieces, dim=1), None
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )


_last_bounds: list = [None, None]  # (tensor, its values): every layer gets the same tensor


def _as_list(bounds) -> list[int]:
    """The boundaries as Python ints, read from the GPU once per forward, not per layer."""
    if _last_bounds[0] is not bounds:
        _last_bounds[:] = [bounds, bounds.tolist()]
    return _last_bounds[1]


def register_per_sample_sdpa() -> None:
    """Make PER_SAMPLE_SDPA a valid attn_implementation (masks built as for sdpa)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PER_SAMPLE_SDPA, sdpa_per_sample)
    AttentionMaskInterface.register(PER_SAMPLE_SDPA, sdpa_mask)


def choose_attention(requested: str, cuda: bool) -> tuple[str | None, str | None]:
    """attn_implementation to load the model with, and a message when a request is not met.

    auto: flash_attention_2 on CUDA when the flash_attn package is installed, otherwise
    None (transformers' default: sdpa where the model supports it, else eager).
    """
    from transformers.utils import is_flash_attn_2_available

    flash = cuda and is_flash_attn_2_available()
    if requested == "auto":
        return ("flash_attention_2" if flash else None), None
    if requested == "flash_attention_2" and not flash:
        why = "no CUDA device" if not cuda else "the flash_attn package is not installed"
        return None, f"attn_implementation flash_attention_2 is not available ({why}): using sdpa"
    return requested, None


def _logits(model, batch: dict):
    import torch

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    device = next(model.parameters()).device
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    return model(**inputs, use_cache=False).logits.float()


def check_packing(model, collator=None, *, lengths: tuple[int, int] = (6, 9)) -> dict:
    """Measure on `model` whether packed samples stay apart; returns leak, drift and ok.

    leak: the largest change of sample B's logits when the sample packed before it is
    replaced (exactly 0 when no attention crosses the boundary). drift: the largest
    difference between B's logits packed and B run alone (rounding only when position ids
    restart). Both are judged relative to the logits' scale, drift with a tolerance that
    suits the weights' dtype.
    """
    import torch

    collator = collator or PackCollator()
    low, high = 3, model.get_input_embeddings().weight.shape[0]
    generator = torch.Generator().manual_seed(0)

    def sample(n: int) -> dict:
        ids = torch.randint(low, high, (n,), generator=generator).tolist()
        return {"input_ids": ids, "labels": ids}

    first, other_first, second = sample(lengths[0]), sample(lengths[0]), sample(lengths[1])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            packed = _logits(model, collator([first, second]))[0, lengths[0] :]
            replaced = _logits(model, collator([other_first, second]))[0, lengths[0] :]
            alone = _logits(model, PadCollator(0)([second]))[0]
    finally:
        model.train(was_training)
    scale = max(1.0, alone.abs().max().item())
    leak = (packed - replaced).abs().max().item()
    drift = (packed - alone).abs().max().item()
    half = next(model.parameters()).dtype in (torch.float16, torch.bfloat16)
    ok = leak <= 1e-4 * scale and drift <= (3e-2 if half else 1e-4) * scale
    return {"leak": leak, "drift": drift, "ok": ok}


def prepare_packing(model, mode: bool | str) -> dict:
    """Decide whether to pack for `model` (mode auto/True/False); set its attention for it.

    Returns {"packing": bool, "attention": how boundaries are kept or None, "check": the
    check_packing result or why it was skipped, "loss_logits_only": whether the model takes
    `logits_to_keep` (see PackCollator), "message": a line for the log or None}.
    Raises PackingError when mode is True and the check fails.
    """
    off = {"packing": False, "attention": None, "check": None, "loss_logits_only": False}
    if mode is False:
        return off | {"message": None}
    loaded = model.config._attn_implementation
    if loaded == "sdpa":
        register_per_sample_sdpa()
        try:
            model.set_attn_implementation(PER_SAMPLE_SDPA)
            attention = "sdpa per sample"
        except (ValueError, ImportError, NotImplementedError):  # takes no custom attention
            attention = "block-diagonal mask (sdpa)"
    elif loaded.startswith("flash_attention"):
        attention = f"{loaded} varlen"
    else:
        attention = f"block-diagonal mask ({loaded})"

    skip = _check_impossible(model, loaded)
    check = skip or check_packing(model)
    if skip or check["ok"]:
        logits_only = "logits_to_keep" in inspect.signature(model.forward).parameters
        return {
            "packing": True,
            "attention": attention,
            "check": check,
            "loss_logits_only": logits_only,
            "message": None,
        }
    if model.config._attn_implementation != loaded:
        model.set_attn_implementation(loaded)
    problem = (
        f"packed samples are not kept apart by this model's {loaded} attention "
        f"(leak {check['leak']:.3g}, drift {check['drift']:.3g})"
    )
    if mode is True:
        raise PackingError(f"{problem}; set packing to false or auto")
    return off | {
        "check": check,
        "message": f"{problem}: training with padded batches instead",
    }


def _check_impossible(model, loaded: str) -> str | None:
    """Why check_packing cannot run on this model as loaded, or None."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        return "skipped: weights are partitioned by DeepSpeed ZeRO-3"
    device = next(model.parameters()).device
    if device.type == "meta":
        return "skipped: the weights are not loaded in this process"
    if loaded.startswith("flash_attention") and device.type != "cuda":
        return "skipped: flash-attention runs on the GPU only (transformers' varlen path)"
    return None


def optional_features(hp: dict, cuda: bool) -> tuple[dict, list[str]]:
    """Which of use_liger_kernel and torch_compile can be used here, and messages why not."""
    effective, messages = {}, []
    liger = hp["use_liger_kernel"]
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
    compile_ = hp["torch_compile"]
    if compile_ and not cuda and not (shutil.which("c++") or shutil.which("g++")):
        messages.append("torch_compile: no C++ compiler for the CPU backend: training without it")
        compile_ = False
    effective["torch_compile"] = compile_
    return effective, messages
