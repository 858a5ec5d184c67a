"""The training settings, declared once: `TrainConfig` (and its `LoraSettings`).

Each field is one hyperparameter: its type, its default (the study's value), its help text
and its allowed values. Everything else is derived from these declarations:

- `TrainConfig.from_dict` checks a JSON object of settings (unknown keys, types, ranges)
  and fills in the defaults; `python -m sbt.train --hparams` and `sbt.training.train` use it;
- `TrainConfig.from_layers` merges the workflow config's layers (training.<method>, then
  backbones.<name>.training.<method>, then the backbone's own keys) in
  `workflow/rules/train_plan.smk`;
- `TrainConfig.params` is what a run records: the train rule's params JSON (so editing
  any setting reruns that training) and `hparams` in training_info.json;
- `scripts/gen_config_docs.py` writes the schema's `$defs/hparams` and `$defs/lora`
  (workflow/schemas/config.schema.yaml) and the hyperparameter table of config/README.md.

The field metadata (`help`, `choices`, bounds, `schema`, `launch`, `resume_safe`, `level`)
is explained in `sbt.settings`, which also checks it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass

from sbt.common import TORCH_DTYPES
from sbt.settings import BOOL_OR_AUTO, SettingError, check_types, check_values, setting

DTYPES = (*TORCH_DTYPES, "auto")
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")
LR_SCHEDULERS = (
    "cosine",
    "linear",
    "constant",
    "constant_with_warmup",
    "cosine_with_restarts",
    "polynomial",
)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter settings (peft `LoraConfig`); used by `lora` runs only."""

    r: int = setting(64, "Rank of the update matrices.", schema={"minimum": 1})
    alpha: float = setting(16, "Scaling numerator `lora_alpha`.", schema={"exclusiveMinimum": 0})
    dropout: float = setting(0.05, "Dropout on the LoRA path.", schema={"minimum": 0, "maximum": 1})
    bias: str = setting(
        "none",
        "Which biases are trained.",
        choices=("none", "all", "lora_only"),
        rule="none, all or lora_only",
    )
    target_modules: str | list[str] = setting(
        "all-linear",
        'Modules that get adapters: `"all-linear"` (every linear layer but `lm_head`, the '
        "study's choice) or a list of module names such as `[q_proj, v_proj]`.",
        rule="'all-linear' or a list of module names",
        schema={
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
            ]
        },
    )


@dataclass(frozen=True)
class TrainConfig:
    """The study's text-only training settings (per device; the study used 4 GPUs)."""

    learning_rate: float = setting(2e-5, "Peak learning rate.", schema={"exclusiveMinimum": 0})
    num_train_epochs: float = setting(
        1, "Epochs over the data variant.", schema={"exclusiveMinimum": 0}
    )
    max_steps: int = setting(
        -1,
        "Optimiser steps; `-1` trains for `num_train_epochs` instead.",
        minimum=1,
        special=-1,
        rule="-1 (use epochs) or positive",
    )
    per_device_train_batch_size: int = setting(
        4, "Sequences per GPU (per process) in each micro-batch.", minimum=1
    )
    gradient_accumulation_steps: int = setting(
        2,
        "Micro-batches per optimiser step; derived instead when `global_batch_size` is set.",
        minimum=1,
    )
    global_batch_size: int | None = setting(
        None,
        "Samples per optimiser step over all GPUs (the study's 32). When set, accumulation ="
        " `global_batch_size` / (`per_device_train_batch_size` x GPUs), so the recipe does not"
        " change with the hardware; a value that does not divide is a config error. `null`:"
        " batch x accumulation x GPUs, whatever that gives.",
        minimum=1,
        rule="at least 1 (or null)",
    )
    num_gpus: int = setting(
        4,
        "GPUs per training job, per node when `nodes` > 1 (requested from the scheduler; more"
        " than one launches `torchrun` with one process per GPU inside the job; `0` trains on"
        " the CPU). The study used every GPU of its node; 4 (LLaVA's global 32 = 4 x 2 x 4) is"
        " an assumption.",
        minimum=0,
        rule="0 (CPU) or more",
        launch=True,
    )
    nodes: int = setting(
        1,
        "Nodes per training job (the study: 1). More than one asks SLURM for `nodes` nodes"
        " with `num_gpus` GPUs each and starts one `torchrun` per node through `srun`, joined"
        " by a c10d rendezvous on the first node; `global_batch_size` stays the global batch"
        " (accumulation derived from nodes x GPUs). SLURM executor only; see `docs/slurm.md`,"
        ' "Training on several nodes".',
        minimum=1,
        launch=True,
    )
    warmup_ratio: float = setting(
        0.03, "Fraction of the steps with linear warm-up.", minimum=0, below=1
    )
    lr_scheduler_type: str = setting(
        "cosine", "Learning-rate schedule.", schema={"enum": list(LR_SCHEDULERS)}
    )
    weight_decay: float = setting(0.0, "AdamW weight decay.", schema={"minimum": 0})
    max_grad_norm: float = setting(
        0.0,
        "Gradient clipping to this global norm; `0`: none, as in the study (its `zero2.json`"
        " sets no `gradient_clipping`; DeepSpeed's default). Also fills DeepSpeed's"
        ' `"auto"` gradient clipping.',
        minimum=0,
        rule="0 (no clipping) or positive",
    )
    loss_averaging: str = setting(
        "micro_batch",
        "`micro_batch`: each micro-batch's mean over its trained tokens, averaged over"
        " accumulation steps and GPUs (transformers 4.31, the study); `token`: one mean over"
        " all trained tokens of the optimiser step, so long answers weigh more (transformers"
        " 5's default).",
        choices=("micro_batch", "token"),
    )
    model_max_length: int = setting(
        2048,
        "Truncation length in tokens (a longer sequence keeps its first tokens).",
        minimum=1,
        schema={"minimum": 8},
    )
    bf16: bool = setting(True, "Mixed precision bf16 (GPUs only).")
    tf32: bool = setting(True, "Allow TF32 matmuls on Ampere and newer GPUs.")
    gradient_checkpointing: bool = setting(True, "Recompute activations to save memory.")
    seed: int = setting(
        42, "Seed of the data order (the Trainer's seeded shuffle) and the LoRA initialisation."
    )
    dtype: str = setting(
        "float32",
        "Dtype the backbone's weights are loaded in for training (float32 master weights;"
        " `bf16` autocasts the compute).",
        choices=DTYPES,
    )
    logging_steps: int = setting(
        1, "Steps between loss lines (the log and `loss.csv`).", minimum=1, resume_safe=True
    )
    save_steps: int = setting(
        500,
        "Steps between resumable checkpoints (deleted after success).",
        minimum=1,
        resume_safe=True,
    )
    save_total_limit: int | None = setting(
        1,
        "Checkpoints kept while training runs.",
        resume_safe=True,
        schema={"type": "integer", "minimum": 1},
    )
    resume: str = setting(
        "auto",
        "`auto`: a train job continues from the checkpoints a killed job of the same run left"
        " behind; checkpoints of a run with other settings are moved aside to"
        " `<output>.checkpoints.stale-<time>/` with one line naming the settings that"
        " differ. `never`: always start afresh.",
        choices=("auto", "never"),
        resume_safe=True,
    )
    max_skipped_fraction: float = setting(
        0.01,
        "Records that cannot be trained on (an empty message, no trained token left after"
        " truncation) are skipped and counted; above this fraction of the records the job"
        " fails instead.",
        minimum=0,
        maximum=1,
        resume_safe=True,
    )
    trust_remote_code: bool = setting(
        False, "Allow code shipped with the model to run (off unless needed).", level="backbone"
    )
    tokenizer_legacy: bool | str = setting(
        "auto",
        "LLaMA (SentencePiece) tokenizers: true for the legacy behaviour (text after a special"
        ' token gets the "▁" word-start prefix, as transformers 4.31\'s slow LlamaTokenizer'
        " did), false for the newer one. auto (default, the study): what transformers 4.31"
        " chose for the checkout, legacy unless its tokenizer_config.json says"
        ' "legacy": false. Checked when the tokenizer is loaded, with or without'
        " tokenizer.json.",
        choices=BOOL_OR_AUTO,
        level="backbone",
    )
    allow_pickle_weights: bool = setting(
        False,
        "Also load pickled .bin weights, which can run code when loaded (default: safetensors"
        " only). Set it for a trusted model that ships no safetensors.",
        level="backbone",
    )
    lora: LoraSettings = setting(LoraSettings(), "LoRA settings (`lora` runs only).")
    deepspeed: str | None = setting(
        None,
        "DeepSpeed JSON config: `config/deepspeed/zero2.json` (the study's, both methods) or"
        " `config/deepspeed/zero3.json`; `null`: none.",
    )
    fsdp: str | None = setting(
        None,
        'FSDP options for the Trainer, e.g. `"full_shard auto_wrap"`; an alternative to'
        " DeepSpeed, not the study's. `null`: none.",
    )
    packing: bool | str = setting(
        "auto",
        "Padding-free batches: the samples of each batch concatenated into one row, each"
        " attending only to itself (position ids restart per sample, labels shifted per"
        " sample); the same samples per micro-batch, in the same order, with the same loss"
        ' per trained token as padding. `"auto"`: packs for transformers\' own model classes'
        " (sdpa and eager attention mask packed samples block-diagonally, flash_attention_2"
        " runs them varlen), pads for a checkpoint's remote code; `true`: always packs"
        " (remote code: only if its attention honours the restarting position ids);"
        " `false`: pad every batch to its longest sample, as the study did (see"
        ' `docs/training.md`, "Throughput").',
        choices=BOOL_OR_AUTO,
    )
    group_by_length: bool | str = setting(
        False,
        "`false`: the study's seeded shuffle; `true`: padded batches of similar lengths (the"
        ' Trainer\'s length-grouped sampler, another sample order); `"auto"`: only when'
        " `packing: auto` could not pack.",
        choices=BOOL_OR_AUTO,
    )
    attn_implementation: str = setting(
        "auto",
        "Attention kernel. `auto`: flash_attention_2 on a CUDA GPU when the `flash_attn`"
        " package is installed, otherwise sdpa. A request that cannot be met falls back to"
        " sdpa with a message in the log.",
        choices=ATTN_IMPLEMENTATIONS,
    )
    use_liger_kernel: bool = setting(
        False,
        "Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy);"
        " CUDA and the `liger-kernel` package only, otherwise training goes on without them"
        " and says so.",
    )
    torch_compile: bool = setting(
        False, "Compile the model with `torch.compile` (slow first steps)."
    )
    tokenized_cache_dir: str | None = setting(
        None,
        "Directory of tokenized examples, one memory-mapped Arrow dataset per sha256 of"
        " data, tokenizer, template, `model_max_length` and labelling code, built once by"
        " global rank 0, read by every rank and reused by every later run that agrees on"
        " them (full and LoRA share it; e.g. `results/cache/tokenized`). `null`: inside the"
        " run's checkpoint directory, so only reruns of the same output reuse it.",
        resume_safe=True,
    )
    save_dtype: str = setting(
        "auto",
        "Dtype of a full run's saved weights; `auto`: as trained (float32 master weights)."
        " The study's checkpoints are `bfloat16` (about 13.5 GB for 7B).",
        choices=DTYPES,
    )

    @classmethod
    def from_dict(cls, given: Mapping | None = None) -> TrainConfig:
        """The defaults overridden by `given`; SettingError for unknown keys, wrong types
        and values out of range (all settings checked, the defaults included)."""
        given = dict(given or {})
        check_types(cls, given, "")
        lora = given.pop("lora", {})
        check_types(LoraSettings, lora, "lora.")
        config = cls(**given, lora=LoraSettings(**lora))
        check_values(config, "")
        return config

    @classmethod
    def from_layers(cls, *layers: Mapping) -> TrainConfig:
        """Later layers override earlier ones key by key; `lora` is merged key by key too."""
        merged, lora = {}, {}
        for layer in layers:
            merged.update({k: v for k, v in layer.items() if k != "lora"})
            lora.update(layer.get("lora", {}))
        return cls.from_dict(merged | {"lora": lora})

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """`--hparams` JSON text (empty: the defaults)."""
        try:
            given = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise SettingError(f"invalid JSON: {exc}") from None
        if not isinstance(given, dict):
            raise SettingError("must be a JSON object")
        return cls.from_dict(given)

    def to_dict(self) -> dict:
        """Every setting, `lora` as a dict."""
        return dataclasses.asdict(self)

    def params(self, method: str) -> dict:
        """What a run of `method` records (and the train rule's params JSON holds): every
        setting, launch settings included; `lora` only for method lora."""
        values = self.to_dict()
        if method != "lora":
            del values["lora"]
        return values

    def signature(self, method: str) -> dict:
        """`params` without the resume-safe settings: what a resumed run must agree on."""
        safe = {f.name for f in dataclasses.fields(self) if f.metadata.get("resume_safe")}
        return {k: v for k, v in self.params(method).items() if k not in safe}

    def accumulation_steps(self, world_size: int) -> int:
        """Given, or derived from `global_batch_size` and the number of processes."""
        if self.global_batch_size is None:
            return self.gradient_accumulation_steps
        per_step = self.per_device_train_batch_size * world_size
        if self.global_batch_size % per_step:
            raise SettingError(
                f"global_batch_size {self.global_batch_size} is not a multiple of "
                f"per_device_train_batch_size x processes = {self.per_device_train_batch_size}"
                f" x {world_size}"
            )
        return self.global_batch_size // per_step
