"""The study's fine-tuning recipe (full or LoRA) as one function, `train`.

What it does, in order: resolve the hyperparameters (study defaults, see HPARAM_DEFAULTS);
set up the tokenizer as the study did; check what the machine and launch give and build
the TrainingArguments; prepare the data (`sbt.train_data`: assistant-only labels by
`sbt.tokenize_chat`, tokenized once into a memory-mapped Arrow cache that every rank
reads), refusing to go on if more than `max_skipped_fraction` of the records had to be
skipped; make the checkpoint directory ready; load the backbone (safetensors where
possible); decide how batches are built (`sbt.packing`: each batch's samples packed into
one padding-free row where transformers keeps them apart, else padded); wrap it in LoRA
for `method="lora"`; run transformers' Trainer; save.

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

import copy
import csv
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from sbt.common import input_error, provenance, write_json
from sbt.packing import ATTN_IMPLEMENTATIONS
from sbt.tokenize_chat import load_tokenizer
from sbt.train_data import (
    file_sha256,
    prepare_train_data,
    tokenized_cache_key,  # noqa: F401  (re-exported; tests use it)
)
from sbt.train_setup import (
    cast_saved_weights,
    choose_batches,
    load_backbone,
    machine_settings,
    padding_fraction,
    training_arguments,
    wrap_lora,
)

METHODS = ("full", "lora")
RESUME_MODES = ("auto", "never")
DTYPES = ("float32", "bfloat16", "float16", "auto")
LOSS_AVERAGING = ("micro_batch", "token")

# The study's text-only training settings (per device; the study used 4 GPUs).
LORA_DEFAULTS = {
    "r": 64,
    "alpha": 16,
    "dropout": 0.05,
    "bias": "none",
    "target_modules": "all-linear",  # every linear layer except lm_head
}
HPARAM_DEFAULTS = {
    "learning_rate": 2e-5,
    "num_train_epochs": 1,
    "max_steps": -1,  # -1: train for num_train_epochs
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 2,
    # Samples per optimiser step over all processes; when set, gradient_accumulation_steps
    # is derived from it and the world size (so the science does not follow the hardware).
    "global_batch_size": None,
    # GPUs a workflow train job asks for (a launch setting: the study used every GPU of a
    # 4-GPU node, 4 x 4 x 2 = LLaVA's 32). Recorded with the run; 0 means CPU.
    "num_gpus": 4,
    # Nodes a workflow train job spans (a launch setting): num_gpus GPUs on each, one
    # torchrun per node started by srun (docs/slurm.md, "Training on several nodes").
    "nodes": 1,
    "warmup_ratio": 0.03,
    "lr_scheduler_type": "cosine",
    "weight_decay": 0.0,
    "max_grad_norm": 0.0,  # 0: no clipping (the study's zero2.json sets none; DeepSpeed's default)
    # micro_batch: each micro-batch's mean over its trained tokens, averaged over accumulation
    # steps and processes (transformers 4.31, the study); token: one mean over every trained
    # token of the optimiser step (transformers 5's default).
    "loss_averaging": "micro_batch",
    "model_max_length": 2048,
    "bf16": True,
    "tf32": True,
    "gradient_checkpointing": True,
    "seed": 42,
    "dtype": "float32",  # weights stay float32; bf16 is mixed precision on top
    "logging_steps": 1,
    "save_steps": 500,
    "save_total_limit": 1,
    # auto: continue from <output>.checkpoints/ when it holds this run's checkpoints, and
    # move another run's aside; never: always start afresh.
    "resume": "auto",
    "max_skipped_fraction": 0.01,
    "trust_remote_code": False,
    # LLaMA tokenizers: legacy SentencePiece behaviour (text after a special token gets the
    # "▁" word-start prefix) or not; "auto": as transformers 4.31 chose for the checkout
    # (legacy unless its tokenizer_config.json says "legacy": false), i.e. the study's.
    "tokenizer_legacy": "auto",
    "allow_pickle_weights": False,  # only safetensors unless a backbone's config allows .bin
    "lora": LORA_DEFAULTS,
    "deepspeed": None,  # path of a DeepSpeed JSON config
    "fsdp": None,  # e.g. "full_shard auto_wrap"
    # Throughput only (docs/training.md, "Throughput"): the same samples per optimiser step.
    "packing": "auto",  # one padding-free row per batch where the model keeps samples apart
    # Sample order: false keeps the study's seeded shuffle; "auto" groups by length when
    # packing=auto had to fall back to padding (faster, but another order).
    "group_by_length": False,
    "attn_implementation": "auto",  # flash_attention_2 on CUDA when installed, else sdpa
    "use_liger_kernel": False,
    "torch_compile": False,
    "tokenized_cache_dir": None,  # None: inside the checkpoint directory (kept for reruns)
    "save_dtype": "auto",  # dtype of a full run's saved weights; auto: as trained
}
# Keys that do not change the trained weights; a resumed run may differ in them.
_RESUME_INSENSITIVE = (
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "max_skipped_fraction",
    "tokenized_cache_dir",
    "resume",
)

_NUMBER = (int, float)
_HPARAM_TYPES = {
    "learning_rate": _NUMBER,
    "num_train_epochs": _NUMBER,
    "max_steps": int,
    "per_device_train_batch_size": int,
    "gradient_accumulation_steps": int,
    "global_batch_size": (int, type(None)),
    "num_gpus": int,
    "nodes": int,
    "warmup_ratio": _NUMBER,
    "lr_scheduler_type": str,
    "weight_decay": _NUMBER,
    "max_grad_norm": _NUMBER,
    "loss_averaging": str,
    "model_max_length": int,
    "bf16": bool,
    "tf32": bool,
    "gradient_checkpointing": bool,
    "seed": int,
    "dtype": str,
    "logging_steps": int,
    "save_steps": int,
    "save_total_limit": (int, type(None)),
    "resume": str,
    "max_skipped_fraction": _NUMBER,
    "trust_remote_code": bool,
    "tokenizer_legacy": (bool, str),
    "allow_pickle_weights": bool,
    "lora": dict,
    "deepspeed": (str, type(None)),
    "fsdp": (str, type(None)),
    "packing": (bool, str),
    "group_by_length": (bool, str),
    "attn_implementation": str,
    "use_liger_kernel": bool,
    "torch_compile": bool,
    "tokenized_cache_dir": (str, type(None)),
    "save_dtype": str,
}
_LORA_TYPES = {
    "r": int,
    "alpha": _NUMBER,
    "dropout": _NUMBER,
    "bias": str,
    "target_modules": (str, list),
}
_POSITIVE = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "model_max_length",
    "logging_steps",
    "save_steps",
)

CHECKPOINTS_SUFFIX = ".checkpoints"
RUN_SIGNATURE = "run.json"
TRAINING_INFO = "training_info.json"
LOSS_CSV = "loss.csv"


class NonFiniteLossError(RuntimeError):
    """Training diverged: the logged loss is NaN or infinite."""


def _check_types(values: dict, types: dict, where: str) -> None:
    for key, value in values.items():
        if key not in types:
            raise input_error(
                "--hparams", f"unknown key {where}{key!r}; valid keys: {', '.join(types)}"
            )
        expected = types[key]
        wrong_bool = isinstance(value, bool) and expected in (int, _NUMBER)
        if wrong_bool or not isinstance(value, expected):
            names = (
                expected.__name__
                if isinstance(expected, type)
                else "/".join(t.__name__ for t in expected)
            )
            raise input_error(
                "--hparams", f"{where}{key!r} must be {names}, got {json.dumps(value)}"
            )


def resolve_hparams(given: dict | None) -> dict:
    """Study defaults overridden by `given`; unknown keys and wrong types are InputErrors."""
    given = dict(given or {})
    _check_types(given, _HPARAM_TYPES, "")
    lora = given.pop("lora", {})
    _check_types(lora, _LORA_TYPES, "lora.")
    hparams = copy.deepcopy(HPARAM_DEFAULTS)
    hparams.update(given)
    hparams["lora"].update(lora)

    def bad(message: str) -> Exception:
        return input_error("--hparams", message)

    for key in _POSITIVE:
        if hparams[key] < 1:
            raise bad(f"{key!r} must be at least 1")
    if hparams["max_steps"] == 0 or hparams["max_steps"] < -1:
        raise bad("'max_steps' must be -1 (use epochs) or positive")
    if hparams["num_gpus"] < 0:
        raise bad("'num_gpus' must be 0 (CPU) or more")
    if hparams["nodes"] < 1:
        raise bad("'nodes' must be at least 1")
    if hparams["global_batch_size"] is not None and hparams["global_batch_size"] < 1:
        raise bad("'global_batch_size' must be at least 1 (or null)")
    if hparams["max_grad_norm"] < 0:
        raise bad("'max_grad_norm' must be 0 (no clipping) or positive")
    if hparams["loss_averaging"] not in LOSS_AVERAGING:
        raise bad(f"'loss_averaging' must be one of {', '.join(LOSS_AVERAGING)}")
    if not 0 <= hparams["warmup_ratio"] < 1:
        raise bad("'warmup_ratio' must be in [0, 1)")
    if not 0 <= hparams["max_skipped_fraction"] <= 1:
        raise bad("'max_skipped_fraction' must be in [0, 1]")
    if hparams["dtype"] not in DTYPES:
        raise bad(f"'dtype' must be one of {', '.join(DTYPES)}")
    if hparams["save_dtype"] not in DTYPES:
        raise bad(f"'save_dtype' must be one of {', '.join(DTYPES)}")
    if isinstance(hparams["tokenizer_legacy"], str) and hparams["tokenizer_legacy"] != "auto":
        raise bad("'tokenizer_legacy' must be true, false or \"auto\"")
    if hparams["resume"] not in RESUME_MODES:
        raise bad(f"'resume' must be one of {', '.join(RESUME_MODES)}")
    if hparams["lora"]["bias"] not in ("none", "all", "lora_only"):
        raise bad("'lora.bias' must be none, all or lora_only")
    for key in ("packing", "group_by_length"):
        if isinstance(hparams[key], str) and hparams[key] != "auto":
            raise bad(f'{key!r} must be true, false or "auto"')
    if hparams["attn_implementation"] not in ATTN_IMPLEMENTATIONS:
        raise bad(f"'attn_implementation' must be one of {', '.join(ATTN_IMPLEMENTATIONS)}")
    target = hparams["lora"]["target_modules"]
    if isinstance(target, list) and not all(isinstance(name, str) for name in target):
        raise bad("'lora.target_modules' must be 'all-linear' or a list of module names")
    return hparams


def gradient_accumulation(hp: dict, world_size: int) -> int:
    """Accumulation steps: given, or derived from `global_batch_size` and the world size."""
    if hp["global_batch_size"] is None:
        return hp["gradient_accumulation_steps"]
    per_step = hp["per_device_train_batch_size"] * world_size
    if hp["global_batch_size"] % per_step:
        raise input_error(
            "--hparams",
            f"global_batch_size {hp['global_batch_size']} is not a multiple of "
            f"per_device_train_batch_size x processes = {hp['per_device_train_batch_size']} x "
            f"{world_size}",
            field="global_batch_size",
        )
    return hp["global_batch_size"] // per_step


def parse_hparams(text: str) -> dict:
    """`--hparams` JSON text -> resolved hparams."""
    try:
        given = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise input_error("--hparams", f"invalid JSON: {exc}") from None
    if not isinstance(given, dict):
        raise input_error("--hparams", "must be a JSON object")
    return resolve_hparams(given)


def checkpoints_dir(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + CHECKPOINTS_SUFFIX)


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


def _move_aside(work: Path, why: str, keep: Path) -> None:
    """Keep another run's checkpoints (nothing is lost) out of this run's way."""
    stale = work.with_name(f"{work.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(work, stale)
    work.mkdir()
    if keep.parent == work and (stale / keep.name).exists():  # this run's tokenized data
        os.replace(stale / keep.name, keep)
    print(
        f"moved checkpoints of a different run ({why}) aside to {stale}; delete it when it is "
        "no longer needed",
        file=sys.stderr,
    )


def _prepare_work_dir(work: Path, signature: dict, resume: str, keep: Path) -> Path | None:
    """Make the checkpoint directory ready; return the checkpoint to resume from, if any.

    `keep` (this run's tokenized data, when it lies in `work`) survives a fresh start.
    """
    signature_file = work / RUN_SIGNATURE
    if work.exists() and resume == "auto" and signature_file.is_file():
        previous = json.loads(signature_file.read_text(encoding="utf-8"))
        if previous == signature:
            checkpoints = _complete_checkpoints(work)
            for path in work.iterdir():  # half-written checkpoints and a half-saved result
                if path.is_dir() and path not in checkpoints and path != keep:
                    shutil.rmtree(path)
            return checkpoints[-1] if checkpoints else None
        _move_aside(work, signature_changes(previous, signature), keep)  # then start afresh
    work.mkdir(parents=True, exist_ok=True)
    for path in work.iterdir():
        if path == keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    write_json(signature_file, signature)
    return None


def _prepare_checkpoints(args, work: Path, signature: dict, resume: str, keep: Path):
    """The checkpoint directory made ready; the checkpoint to resume from, or None."""
    # Global rank 0 first, on every node (local=False): the checkpoint directory is on the
    # shared file system, and another node must not read it while rank 0 moves it aside.
    with args.main_process_first(local=False, desc="checkpoint directory"):
        if args.process_index == 0:
            resume_from = _prepare_work_dir(work, signature, resume, keep)
        else:
            checkpoints = _complete_checkpoints(work)
            resume_from = checkpoints[-1] if checkpoints and resume == "auto" else None
    if resume_from:
        print(f"resuming from {resume_from}", file=sys.stderr)
    return resume_from


def _run_trainer(network, args, dataset, collator, callbacks, hp: dict, resume_from, work):
    """Train; a diverged run's checkpoints are deleted (a rerun then starts afresh)."""
    from transformers import PrinterCallback, Trainer

    trainer = Trainer(
        model=network,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        callbacks=[*_callbacks(), *callbacks],
    )
    trainer.remove_callback(PrinterCallback)
    if hp["loss_averaging"] == "micro_batch":
        # transformers 4.31's loss: the model's mean over each micro-batch's trained tokens,
        # divided by the accumulation steps (and averaged over processes by DDP/DeepSpeed).
        # A Trainer that believes the model takes no loss kwargs does exactly that instead of
        # dividing by the step's trained tokens (tests/test_recipe.py pins this).
        trainer.model_accepts_loss_kwargs = False
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except NonFiniteLossError:
        # Resuming a diverged run would only diverge again: let a rerun start afresh.
        if args.process_index == 0:
            shutil.rmtree(work, ignore_errors=True)
        raise
    return trainer


def _loss_rows(log_history: list[dict]) -> list[dict]:
    return [
        {"step": e["step"], "loss": e["loss"], "learning_rate": e.get("learning_rate")}
        for e in log_history
        if "loss" in e
    ]


def _save_outputs(trainer, network, tokenizer, info: dict, hp: dict, work: Path, output: Path):
    """Rank 0: the finished model (or adapter) with training_info.json and loss.csv moved
    into place as `output`, then the checkpoints deleted. The others wait for it."""
    final = work / "final"
    trainer.save_model(str(final))
    if trainer.args.process_index == 0:
        (final / "training_args.bin").unlink(missing_ok=True)  # pickled; the JSON says it all
        if info["method"] == "full":
            network.config.use_cache = True
            if hp["save_dtype"] != "auto":
                cast_saved_weights(final, hp["save_dtype"])
                network.config.dtype = hp["save_dtype"]
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


def train(
    model: str,
    template: str,
    method: str,
    data: str | Path,
    output: str | Path,
    hparams: dict | None = None,
    *,
    extra_callbacks: Sequence = (),
) -> dict:
    """Fine-tune `model` on `data` and write the result to `output`; return training_info.

    `hparams` are overrides of HPARAM_DEFAULTS. `extra_callbacks` are added to the Trainer's.
    Raises InputError for bad input and NonFiniteLossError when the loss diverges.
    """
    from transformers.utils import logging as hf_logging

    if method not in METHODS:
        raise input_error("--method", f"must be one of {', '.join(METHODS)}")
    hp = resolve_hparams(hparams)
    output = Path(output)
    work = checkpoints_dir(output)
    hf_logging.disable_progress_bar()

    # Tokenizer and data first: bad data should fail before a 7B model is loaded.
    tokenizer, added_tokens = load_tokenizer(
        model,
        template,
        hp["model_max_length"],
        trust_remote_code=hp["trust_remote_code"],
        legacy=hp["tokenizer_legacy"],
    )
    data_sha256 = file_sha256(data)
    runtime = machine_settings(hp, model)
    accumulation = gradient_accumulation(hp, int(os.environ.get("WORLD_SIZE", "1")))
    args = training_arguments(hp, work, runtime, accumulation)
    examples = prepare_train_data(
        args,
        data,
        data_sha256,
        tokenizer,
        template,
        hp["model_max_length"],
        cache_dir=hp["tokenized_cache_dir"] or work,
        max_skipped_fraction=hp["max_skipped_fraction"],
    )
    for message in runtime["messages"]:  # once the data is known to be good
        print(message, file=sys.stderr)
    own = hp if method == "lora" else {k: v for k, v in hp.items() if k != "lora"}  # recorded
    signature = {
        "model": str(model),
        "template": template,
        "method": method,
        "data_sha256": data_sha256,
        "hparams": {k: v for k, v in own.items() if k not in _RESUME_INSENSITIVE},
    }
    resume_from = _prepare_checkpoints(args, work, signature, hp["resume"], examples.path)

    network = load_backbone(
        model, hp, runtime["attn_implementation"], len(tokenizer) if added_tokens else None
    )
    collator = choose_batches(network, hp, args, runtime, tokenizer.pad_token_id)
    if method == "lora":
        network = wrap_lora(network, hp["lora"], hp["gradient_checkpointing"])
    trainer = _run_trainer(
        network, args, examples.dataset, collator, extra_callbacks, hp, resume_from, work
    )

    info = provenance(
        base_model=str(model),
        template=template,
        method=method,
        data=str(data),
        data_sha256=data_sha256,
        hparams=own,
        effective=runtime["effective"]
        | {
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "global_batch_size": hp["per_device_train_batch_size"]
            * args.gradient_accumulation_steps
            * args.world_size,
            "tokenized_cache": {"path": str(examples.path), "hit": examples.hit},
            "world_size": args.world_size,
            "distributed": trainer.accelerator.distributed_type.value,
            "fsdp_config": runtime["fsdp_config"],
            "padding_fraction": padding_fraction(collator.batches),
        },
        seed=hp["seed"],
        records=examples.records,
        examples=examples.examples,
        skipped=examples.skips,
        truncated=examples.truncated,
        trained_tokens=examples.trained_tokens,
        global_step=trainer.state.global_step,
        epoch=trainer.state.epoch,
        final_loss=next(
            (row["loss"] for row in reversed(_loss_rows(trainer.state.log_history))), None
        ),
        resumed_from=resume_from.name if resume_from else None,
    )
    _save_outputs(trainer, network, tokenizer, info, hp, work, output)
    return info
