"""The study's fine-tuning recipe (full or LoRA) as one function, `train`.

What it does, in order: resolve the template (once; the `Template` object goes down to the
labels) and the hyperparameters (`sbt.train_config.TrainConfig`, the study's defaults); set
up the tokenizer as the study did; tokenize the data with assistant-only labels
(`sbt.tokenize_chat`, or the tokenized cache), refusing to go on if more than
`max_skipped_fraction` of the records had to be skipped; load the backbone (safetensors
where possible); decide how batches are built (`sbt.packing`: each batch's samples packed
into one padding-free row where a check shows the model keeps them apart, else padded);
wrap it in LoRA for `method="lora"`; run transformers' Trainer; save.

Outputs: the finished model directory appears only complete. Checkpoints go to the
sibling `<output>.checkpoints/`; a killed job started again with the same arguments
resumes from its last complete checkpoint (hparam `resume: auto`); checkpoints written by
a run with other settings are never mixed in: they are moved aside to
`<output>.checkpoints.stale-<time>/` with one line saying which settings differ. The
checkpoints are deleted after success, and after a divergence (a NaN or infinite loss
stops training). The result holds `training_info.json` (what was trained, how, on what,
with which packages, and how it went) and `loss.csv` (step, loss, learning_rate).
A `full` run saves the model (safetensors) and the tokenizer; a `lora` run saves only the
adapter (PEFT format), to be loaded on top of the unchanged base model.

Precision: `bf16` and `tf32` are GPU features; on a machine without CUDA they are switched
off (said on stderr and recorded under `effective` in training_info.json).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sbt.common import atomic_path, input_error, provenance, write_json
from sbt.packing import (
    PackCollator,
    PackingError,
    PadCollator,
    choose_attention,
    optional_features,
    prepare_packing,
)
from sbt.scale import fsdp_config_for
from sbt.settings import SettingError
from sbt.templates import Template, as_template
from sbt.tokenize_chat import (
    count_trained_tokens,
    load_records,
    load_tokenizer,
    skip_summary,
    tokenize_records,
)
from sbt.train_config import TrainConfig

METHODS = ("full", "lora")

CHECKPOINTS_SUFFIX = ".checkpoints"
RUN_SIGNATURE = "run.json"
TRAINING_INFO = "training_info.json"
LOSS_CSV = "loss.csv"


class NonFiniteLossError(RuntimeError):
    """Training diverged: the logged loss is NaN or infinite."""


def as_config(hparams: TrainConfig | Mapping | None) -> TrainConfig:
    """A TrainConfig as it is; overrides of the defaults (a dict) checked and resolved.

    Unknown keys, wrong types and values out of range are InputErrors naming `--hparams`.
    """
    if isinstance(hparams, TrainConfig):
        return hparams
    try:
        return TrainConfig.from_dict(hparams)
    except SettingError as exc:
        raise input_error("--hparams", str(exc)) from None


def config_from_json(text: str) -> TrainConfig:
    """`--hparams` JSON text (overrides of the defaults) -> TrainConfig; InputError if bad."""
    try:
        return TrainConfig.from_json(text)
    except SettingError as exc:
        raise input_error("--hparams", str(exc)) from None


def parse_hparams(text: str) -> dict:
    """`--hparams` JSON text -> every setting resolved, as a dict (`lora` included)."""
    return config_from_json(text).to_dict()


def gradient_accumulation(hp: TrainConfig | Mapping, world_size: int) -> int:
    """Accumulation steps: given, or derived from `global_batch_size` and the world size."""
    try:
        return as_config(hp).accumulation_steps(world_size)
    except SettingError as exc:
        raise input_error("--hparams", str(exc), field="global_batch_size") from None


def checkpoints_dir(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + CHECKPOINTS_SUFFIX)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


TOKENIZED_CACHE_VERSION = 1
_LABELLING_CODE = ("tokenize_chat.py", "templates.py")  # a change here invalidates caches


def tokenized_cache_key(
    data_sha256: str, tokenizer, template: Template | str, max_length: int
) -> str:
    """sha256 of everything the tokenized examples depend on.

    The data file, the tokenizer as set up (its full JSON, special tokens, chat template),
    the template (by name), the truncation length, and the source of the labelling code.
    """
    code = Path(__file__).parent
    parts = {
        "version": TOKENIZED_CACHE_VERSION,
        "data": data_sha256,
        "tokenizer": hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest(),
        "special": [str(t) for t in tokenizer.all_special_tokens] + [str(tokenizer.pad_token)],
        "chat_template": getattr(tokenizer, "chat_template", None),
        "template": as_template(template).name,
        "max_length": max_length,
        "code": [file_sha256(code / name) for name in _LABELLING_CODE],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def tokenized_cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / f"tokenized-{key}.npz"


def save_tokenized(path: Path, examples: list[dict], records: int, skips: dict) -> None:
    """Write examples as flat int32 arrays plus lengths (atomically: readers never see half)."""
    lengths = np.array([len(ex["input_ids"]) for ex in examples], dtype=np.int64)
    meta = {"ids": [ex["id"] for ex in examples], "records": records, "skips": skips}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            input_ids=np.fromiter(
                (t for ex in examples for t in ex["input_ids"]), np.int32, lengths.sum()
            ),
            labels=np.fromiter(
                (t for ex in examples for t in ex["labels"]), np.int32, lengths.sum()
            ),
            lengths=lengths,
            truncated=np.array([ex["truncated"] for ex in examples], dtype=bool),
            meta=np.array(json.dumps(meta)),
        )


def load_tokenized(path: Path) -> tuple[list[dict], int, dict]:
    """(examples, records, skips) as save_tokenized wrote them."""
    with np.load(path) as saved:
        meta = json.loads(str(saved["meta"]))
        bounds = np.concatenate([[0], np.cumsum(saved["lengths"])])
        input_ids, labels = saved["input_ids"], saved["labels"]
        examples = [
            {
                "id": record_id,
                "input_ids": input_ids[start:end].tolist(),
                "labels": labels[start:end].tolist(),
                "truncated": bool(truncated),
            }
            for record_id, start, end, truncated in zip(
                meta["ids"], bounds[:-1], bounds[1:], saved["truncated"], strict=True
            )
        ]
    return examples, meta["records"], meta["skips"]


class _Examples:
    """A map-style dataset over tokenized examples (only what the model consumes)."""

    def __init__(self, examples: list[dict]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        example = self.examples[index]
        return {"input_ids": example["input_ids"], "labels": example["labels"]}


def _clock(seconds: float | None) -> str:
    """h:mm:ss (or ? when not known yet)."""
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def _callbacks():
    """Trainer callbacks, built lazily so importing this module stays light."""
    from transformers import TrainerCallback

    class StopOnNonFiniteLoss(TrainerCallback):
        """Abort as soon as a logged loss is NaN or infinite (nothing useful comes after)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(loss):
                raise NonFiniteLossError(
                    f"training diverged: loss is {loss} at step {state.global_step}; "
                    "lower the learning rate or check the data and precision settings"
                )

    class StderrProgress(TrainerCallback):
        """One line per logging step on stderr: step, loss, learning rate, elapsed, ETA."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.started, self.first_step = time.monotonic(), state.global_step  # resumed: > 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            if "loss" in logs:
                elapsed = time.monotonic() - self.started
                done = state.global_step - self.first_step
                left = elapsed / done * (state.max_steps - state.global_step) if done else None
                print(
                    f"step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} "
                    f"lr {logs.get('learning_rate', float('nan')):.3g} "
                    f"elapsed {_clock(elapsed)} eta {_clock(left)}",
                    file=sys.stderr,
                    flush=True,
                )
            elif "train_runtime" in logs:
                print(
                    f"done: {state.global_step} steps in {logs['train_runtime']:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )

    return [StopOnNonFiniteLoss(), StderrProgress()]


def _load_model(
    model_path: str,
    dtype: str,
    trust_remote_code: bool,
    attn_implementation: str | None,
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


def _complete_checkpoints(work: Path) -> list[Path]:
    """Checkpoints whose trainer_state.json was written (the Trainer writes it last)."""
    found = []
    for path in work.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if step.isdigit() and (path / "trainer_state.json").is_file():
            found.append(path)
    return sorted(found, key=lambda p: int(p.name.removeprefix("checkpoint-")))


def signature_changes(previous: dict, current: dict) -> str:
    """`hparams.learning_rate: 2e-05 -> 0.001, data_sha256: ...`: what differs, value by value."""

    def flat(value: dict, prefix: str = "") -> dict:
        items = {}
        for key, item in value.items():
            if isinstance(item, dict):
                items |= flat(item, f"{prefix}{key}.")
            else:
                items[f"{prefix}{key}"] = item
        return items

    old, new = flat(previous), flat(current)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}" for k in changed)


def _move_aside(work: Path, why: str) -> None:
    """Keep another run's checkpoints (nothing is lost) out of this run's way."""
    stale = work.with_name(f"{work.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(work, stale)
    print(
        f"moved checkpoints of a different run ({why}) aside to {stale}; delete it when it is "
        "no longer needed",
        file=sys.stderr,
    )


def _prepare_work_dir(work: Path, signature: dict, resume: str) -> Path | None:
    """Make the checkpoint directory ready; return the checkpoint to resume from, if any."""
    signature_file = work / RUN_SIGNATURE
    if work.exists() and resume == "auto" and signature_file.is_file():
        previous = json.loads(signature_file.read_text(encoding="utf-8"))
        if previous == signature:
            checkpoints = _complete_checkpoints(work)
            for path in work.iterdir():  # half-written checkpoints and a half-saved result
                if path.is_dir() and path not in checkpoints:
                    shutil.rmtree(path)
            return checkpoints[-1] if checkpoints else None
        _move_aside(work, signature_changes(previous, signature))  # then start afresh
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    write_json(signature_file, signature)
    return None


def _load_cached(path: Path) -> tuple[list[dict], int, dict] | None:
    """A tokenized cache file's content, or None when there is none (or it is unreadable)."""
    if not path.is_file():
        return None
    try:
        return load_tokenized(path)
    except (OSError, ValueError, KeyError) as exc:
        print(f"ignoring unreadable tokenized cache {path}: {exc}", file=sys.stderr)
        return None


def _padding_fraction(batches: list[tuple[int, int]]) -> float | None:
    """Share of computed positions that were padding, over the batches built this session."""
    positions = sum(p for _, p in batches)
    return round(1 - sum(t for t, _ in batches) / positions, 4) if positions else None


def _cast_saved_weights(model_dir: Path, dtype: str) -> None:
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


def _loss_rows(log_history: list[dict]) -> list[dict]:
    return [
        {"step": e["step"], "loss": e["loss"], "learning_rate": e.get("learning_rate")}
        for e in log_history
        if "loss" in e
    ]


def train(
    model: str,
    template: Template | str,
    method: str,
    data: str | Path,
    output: str | Path,
    hparams: TrainConfig | Mapping | None = None,
    *,
    extra_callbacks: Sequence = (),
) -> dict:
    """Fine-tune `model` on `data` and write the result to `output`; return training_info.

    `template` is a Template or its name; `hparams` a TrainConfig or overrides of its defaults.
    `extra_callbacks` are added to the Trainer's. Raises InputError for bad input and
    NonFiniteLossError when the loss diverges.
    """
    import torch
    import transformers
    from transformers import PrinterCallback, Trainer, TrainingArguments
    from transformers.utils import is_torch_tf32_available
    from transformers.utils import logging as hf_logging

    if method not in METHODS:
        raise input_error("--method", f"must be one of {', '.join(METHODS)}")
    try:  # the one lookup: the Template object goes down to the labels
        spec = as_template(template)
    except ValueError as exc:
        raise input_error("--template", str(exc)) from None
    hp = as_config(hparams)
    resume = hp.resume
    output = Path(output)
    work = checkpoints_dir(output)
    hf_logging.disable_progress_bar()

    # Tokenizer and data first: bad data should fail before a 7B model is loaded.
    tokenizer, added_tokens = load_tokenizer(
        model,
        spec,
        hp.model_max_length,
        trust_remote_code=hp.trust_remote_code,
        legacy=hp.tokenizer_legacy,
    )
    data_sha256 = file_sha256(data)
    cache = tokenized_cache_path(
        hp.tokenized_cache_dir or work,
        tokenized_cache_key(data_sha256, tokenizer, spec, hp.model_max_length),
    )
    cached = _load_cached(cache)
    if cached:
        examples, n_records, skips = cached
        print(f"tokenized examples from {cache}", file=sys.stderr)
    else:
        records = load_records(data)
        examples, skips = tokenize_records(
            records, tokenizer, spec, hp.model_max_length, source=data
        )
        n_records = len(records)
        del records
    skipped = sum(skips.values())
    if not examples:
        raise input_error(data, f"no trainable record ({skip_summary(skips)})")
    if skipped > hp.max_skipped_fraction * n_records:
        raise input_error(
            data,
            f"{skipped} of {n_records} records skipped ({skip_summary(skips)}), more than "
            f"max_skipped_fraction={hp.max_skipped_fraction}",
        )
    if skipped:
        print(f"skipped {skipped} of {n_records} records: {skip_summary(skips)}", file=sys.stderr)

    if hp.deepspeed and not Path(hp.deepspeed).is_file():
        raise input_error(hp.deepspeed, "DeepSpeed config file not found", field="deepspeed")
    if hp.deepspeed and importlib.util.find_spec("deepspeed") is None:
        raise input_error(
            hp.deepspeed, "needs DeepSpeed (pip install deepspeed)", field="deepspeed"
        )
    fsdp_config = (
        fsdp_config_for(
            model,
            gradient_checkpointing=hp.gradient_checkpointing,
            trust_remote_code=hp.trust_remote_code,
        )
        if hp.fsdp
        else None
    )

    cuda = torch.cuda.is_available()
    attn_implementation, attn_message = choose_attention(hp.attn_implementation, cuda)
    speedups, messages = optional_features(hp.to_dict(), cuda)
    effective = {
        "device": "cuda" if cuda else "cpu",
        "bf16": hp.bf16 and cuda and torch.cuda.is_bf16_supported(),
        "tf32": hp.tf32 and cuda and is_torch_tf32_available(),
        **speedups,
    }
    for key in ("bf16", "tf32"):
        if getattr(hp, key) and not effective[key]:
            print(f"{key} is not available on this machine: training without it", file=sys.stderr)
    for message in (attn_message, *messages):
        if message:
            print(message, file=sys.stderr)

    accumulation = gradient_accumulation(hp, int(os.environ.get("WORLD_SIZE", "1")))
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
        use_cpu=not cuda,
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
    is_main = args.process_index == 0
    signature = {
        "model": str(model),
        "template": spec.name,
        "method": method,
        "data_sha256": data_sha256,
        "hparams": hp.signature(method),
    }
    # Global rank 0 first, on every node (local=False): the checkpoint directory is on the
    # shared file system, and another node must not read it while rank 0 moves it aside.
    with args.main_process_first(local=False, desc="checkpoint directory"):
        if is_main:
            resume_from = _prepare_work_dir(work, signature, resume)
        else:
            checkpoints = _complete_checkpoints(work)
            resume_from = checkpoints[-1] if checkpoints and resume == "auto" else None
    if resume_from:
        print(f"resuming from {resume_from}", file=sys.stderr)
    if is_main and not cache.is_file():  # also after resume "never" emptied the directory
        save_tokenized(cache, examples, n_records, skips)

    transformers.set_seed(hp.seed)  # LoRA matrices are initialised randomly
    network = _load_model(
        model,
        hp.dtype,
        hp.trust_remote_code,
        attn_implementation,
        allow_pickle_weights=hp.allow_pickle_weights,
    )
    if added_tokens:
        network.resize_token_embeddings(len(tokenizer))  # new rows: mean of the old ones
    network.config.use_cache = False
    # Packing: one padding-free row per batch of the same samples, where this model keeps
    # packed samples apart (checked on the model); otherwise padded batches.
    effective["attn_implementation"] = network.config._attn_implementation
    try:
        packing = prepare_packing(network, hp.packing)
    except PackingError as exc:
        raise input_error(model, str(exc), field="packing") from None
    if packing["message"]:
        print(packing["message"], file=sys.stderr)
    group_by_length = hp.group_by_length
    if group_by_length == "auto":  # the fallback when packing was wanted but is not possible
        group_by_length = hp.packing == "auto" and not packing["packing"]
    if group_by_length:
        args.train_sampling_strategy = "group_by_length"
    # Output layer only where the loss needs it, unless Liger's fused loss does that itself.
    logits_only = packing["loss_logits_only"] and not effective["use_liger_kernel"]
    collator = (
        PackCollator(loss_logits_only=logits_only)
        if packing["packing"]
        else PadCollator(tokenizer.pad_token_id)
    )
    effective |= {
        "packing": packing["packing"],
        "packing_attention": packing["attention"],
        "packing_check": packing["check"],
        "loss_logits_only": packing["packing"] and logits_only,
        "group_by_length": group_by_length,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "global_batch_size": hp.per_device_train_batch_size
        * args.gradient_accumulation_steps
        * args.world_size,
        "tokenized_cache": {"path": str(cache), "hit": bool(cached)},
    }
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = hp.lora
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
        if hp.gradient_checkpointing:
            network.enable_input_require_grads()

    trainer = Trainer(
        model=network,
        args=args,
        train_dataset=_Examples(examples),
        data_collator=collator,
        callbacks=[*_callbacks(), *extra_callbacks],
    )
    trainer.remove_callback(PrinterCallback)
    if hp.loss_averaging == "micro_batch":
        # transformers 4.31's loss: the model's mean over each micro-batch's trained tokens,
        # divided by the accumulation steps (and averaged over processes by DDP/DeepSpeed).
        # A Trainer that believes the model takes no loss kwargs does exactly that instead of
        # dividing by the step's trained tokens (tests/test_recipe.py pins this).
        trainer.model_accepts_loss_kwargs = False
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except NonFiniteLossError:
        # Resuming a diverged run would only diverge again: let a rerun start afresh.
        if is_main:
            shutil.rmtree(work, ignore_errors=True)
        raise

    final = work / "final"
    trainer.save_model(str(final))
    info = provenance(
        base_model=str(model),
        template=spec.name,
        method=method,
        data=str(data),
        data_sha256=signature["data_sha256"],
        hparams=hp.params(method),
        effective=effective
        | {
            "world_size": args.world_size,
            "distributed": trainer.accelerator.distributed_type.value,
            "fsdp_config": fsdp_config,
            "padding_fraction": _padding_fraction(collator.batches),
        },
        seed=hp.seed,
        records=n_records,
        examples=len(examples),
        skipped=skips,
        truncated=sum(ex["truncated"] for ex in examples),
        trained_tokens=count_trained_tokens(examples),
        global_step=trainer.state.global_step,
        epoch=trainer.state.epoch,
        final_loss=next(
            (row["loss"] for row in reversed(_loss_rows(trainer.state.log_history))), None
        ),
        resumed_from=resume_from.name if resume_from else None,
    )
    if is_main:
        (final / "training_args.bin").unlink(missing_ok=True)  # pickled; the JSON says it all
        if method == "full":
            network.config.use_cache = True
            if hp.save_dtype != "auto":
                _cast_saved_weights(final, hp.save_dtype)
                network.config.dtype = hp.save_dtype
            network.config.save_pretrained(final)
            tokenizer.save_pretrained(final)
        write_json(final / TRAINING_INFO, info)
        with open(final / LOSS_CSV, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["step", "loss", "learning_rate"])
            writer.writeheader()
            writer.writerows(_loss_rows(trainer.state.log_history))
        if output.exists():
            shutil.rmtree(output)
        os.replace(final, output)
        shutil.rmtree(work)
    trainer.accelerator.wait_for_everyone()
    return info
