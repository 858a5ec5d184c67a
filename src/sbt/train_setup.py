"""The steps `sbt.training.train` sets a run up with, each on its own.

`machine_settings`: what the machine and launch give (device, precision, attention,
DeepSpeed and FSDP, optional kernels); `training_arguments`: the Trainer's arguments for
the recipe; `load_backbone`: the model, safetensors unless pickled weights are allowed;
`choose_batches`: packed or padded batches (sbt.packing) and the sample order;
`wrap_lora`: PEFT's LoRA adapters; `cast_saved_weights`: a full run's weights in
`save_dtype`. transformers, torch and peft are imported lazily.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

from sbt.common import input_error
from sbt.packing import (
    PackCollator,
    PadCollator,
    choose_attention,
    decide_packing,
    optional_features,
)
from sbt.scale import fsdp_config_for
from sbt.train_config import LoraSettings, TrainConfig


def machine_settings(hp: TrainConfig, model: str) -> dict:
    """What this machine and launch give: device, precision, attention, FSDP, speed-ups.

    Returns {"effective": recorded in training_info.json, "attn_implementation",
    "fsdp_config", "messages": lines for the log}. DeepSpeed and FSDP problems are
    InputErrors, found before any loading.
    """
    import torch
    from transformers.utils import is_torch_tf32_available

    if hp.deepspeed and not Path(hp.deepspeed).is_file():
        raise input_error(hp.deepspeed, "DeepSpeed config file not found", field="deepspeed")
    if hp.deepspeed and importlib.util.find_spec("deepspeed") is None:
        raise input_error(
            hp.deepspeed, "needs DeepSpeed (pip install deepspeed)", field="deepspeed"
        )
    fsdp_config = None
    if hp.fsdp:
        fsdp_config = fsdp_config_for(
            model,
            gradient_checkpointing=hp.gradient_checkpointing,
            trust_remote_code=hp.trust_remote_code,
        )
    cuda = torch.cuda.is_available()
    attn_implementation, attn_message = choose_attention(hp.attn_implementation, cuda)
    speedups, feature_messages = optional_features(hp, cuda)
    effective = {
        "device": "cuda" if cuda else "cpu",
        "bf16": hp.bf16 and cuda and torch.cuda.is_bf16_supported(),
        "tf32": hp.tf32 and cuda and is_torch_tf32_available(),
        **speedups,
        "attn_implementation": attn_implementation,
    }
    unavailable = [key for key in ("bf16", "tf32") if getattr(hp, key) and not effective[key]]
    messages = [
        *(f"{key} is not available on this machine: training without it" for key in unavailable),
        *filter(None, [attn_message, *feature_messages]),
    ]
    return {
        "effective": effective,
        "attn_implementation": attn_implementation,
        "fsdp_config": fsdp_config,
        "messages": messages,
    }


def training_arguments(hp: TrainConfig, work: Path, runtime: dict, accumulation: int):
    """The Trainer's arguments for the study's recipe as resolved in `hp`."""
    from transformers import TrainingArguments

    effective, fsdp_config = runtime["effective"], runtime["fsdp_config"]
    args = TrainingArguments(
        output_dir=str(work),
        per_device_train_batch_size=hp.per_device_train_batch_size,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=hp.num_train_epochs,
        max_steps=hp.max_steps,
        learning_rate=hp.learning_rate,
        lr_scheduler_type=hp.lr_scheduler_type,
        warmup_steps=hp.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm,  # DeepSpeed's "auto" gradient_clipping takes it too
        average_tokens_across_devices=hp.loss_averaging == "token",
        bf16=effective["bf16"],
        tf32=True if effective["tf32"] else None,
        activation_checkpointing=hp.gradient_checkpointing and not fsdp_config,  # FSDP does it
        seed=hp.seed,
        logging_steps=hp.logging_steps,
        logging_nan_inf_filter=False,  # a NaN loss must be seen, not averaged away
        save_strategy="steps",
        save_steps=hp.save_steps,
        save_total_limit=hp.save_total_limit,
        deepspeed=hp.deepspeed,
        fsdp=hp.fsdp,
        fsdp_config=dict(fsdp_config) if fsdp_config else None,
        torch_compile=effective["torch_compile"],
        use_liger_kernel=effective["use_liger_kernel"],
        use_cpu=effective["device"] == "cpu",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=True,
        use_cache=False,
    )
    if fsdp_config and args.parallel_mode.value != "distributed":  # the Trainer would crash later
        raise input_error(
            "--hparams", "needs a distributed launch: torchrun --nproc_per_node=N", field="fsdp"
        )
    return args


def _load_model(
    model_path: str,
    dtype: str,
    trust_remote_code: bool,
    attn_implementation: str,
    allow_pickle_weights: bool = False,
):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {
        "dtype": "auto" if dtype == "auto" else getattr(torch, dtype),
        "trust_remote_code": trust_remote_code,
        "attn_implementation": attn_implementation,
    }
    try:
        return AutoModelForCausalLM.from_pretrained(model_path, use_safetensors=True, **kwargs)
    except OSError as exc:
        # Pickled (.bin) weights can run code when loaded: only where the config says so.
        if not allow_pickle_weights:
            raise input_error(
                model_path,
                f"cannot load safetensors weights ({exc}); if this model only ships pickled"
                " .bin weights and you trust it, set allow_pickle_weights: true for it",
            ) from None
    try:
        return AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    except OSError as exc:
        raise input_error(model_path, f"cannot load model: {exc}") from None


def load_backbone(model: str, hp: TrainConfig, attn_implementation: str, vocab_size: int | None):
    """The backbone for training (embeddings resized to `vocab_size` when tokens were added)."""
    import transformers

    transformers.set_seed(hp.seed)  # LoRA matrices are initialised randomly
    network = _load_model(
        model,
        hp.dtype,
        hp.trust_remote_code,
        attn_implementation,
        allow_pickle_weights=hp.allow_pickle_weights,
    )
    if vocab_size is not None:
        network.resize_token_embeddings(vocab_size)  # new rows: mean of the old ones
    network.config.use_cache = False
    return network


def choose_batches(network, hp: TrainConfig, args, runtime: dict, pad_token_id: int):
    """The collator (packed or padded, see sbt.packing) and the sample order; records both."""
    effective = runtime["effective"]
    decision = decide_packing(network, hp.packing, runtime["attn_implementation"])
    if decision["message"]:
        print(decision["message"], file=sys.stderr)
    packing = decision["packing"]
    group_by_length = hp.group_by_length
    if group_by_length == "auto":  # the fallback when packing was wanted but is not possible
        group_by_length = hp.packing == "auto" and not packing
    if group_by_length:
        args.train_sampling_strategy = "group_by_length"  # reads the dataset's length column
    # Output layer only where the loss needs it, unless Liger's fused loss does that itself.
    logits_only = decision["loss_logits_only"] and not effective["use_liger_kernel"]
    effective |= {
        "packing": packing,
        "packing_attention": decision["attention"],
        "loss_logits_only": packing and logits_only,
        "group_by_length": group_by_length,
    }
    return PackCollator(loss_logits_only=logits_only) if packing else PadCollator(pad_token_id)


def wrap_lora(network, lora: LoraSettings, gradient_checkpointing: bool):
    """`network` with LoRA adapters (PEFT) on `lora.target_modules`; the rest frozen."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        bias=lora.bias,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft still asks transformers' deprecated name
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
        network = get_peft_model(network, config)
    if gradient_checkpointing:
        network.enable_input_require_grads()
    return network


def padding_fraction(batches: list[tuple[int, int]]) -> float | None:
    """Share of computed positions that were padding, over the batches built this session."""
    positions = sum(p for _, p in batches)
    return round(1 - sum(t for t, _ in batches) / positions, 4) if positions else None


def cast_saved_weights(model_dir: Path, dtype: str) -> None:
    """Rewrite a saved model's floating-point weights in `dtype`, shard by shard.

    Training keeps float32 master weights (bf16 only autocasts the compute), so the Trainer
    saves float32; the study's checkpoints are bf16 (about 13.5 GB for 7B, half the size).
    """
    import torch
    from safetensors.torch import load_file, save_file

    target = getattr(torch, dtype)
    for shard in sorted(model_dir.glob("*.safetensors")):
        tensors = {
            name: t.to(target) if t.is_floating_point() else t
            for name, t in load_file(str(shard)).items()
        }
        save_file(tensors, str(shard), metadata={"format": "pt"})
