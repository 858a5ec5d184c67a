"""The study's fine-tuning recipe (full or LoRA) as one function, `train`.

What it does, in order: take the settings (a `sbt.train_config.TrainConfig`: the study's
defaults, checked and typed) and the template (looked up once, the object passed down); set up the tokenizer as the study did; check what the machine and launch give and build
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

import csv
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from sbt.common import input_error, provenance, write_json
from sbt.settings import SettingError
from sbt.templates import as_template
from sbt.tokenize_chat import load_tokenizer
from sbt.train_config import TrainConfig
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
            if hp.save_dtype != "auto":
                cast_saved_weights(final, hp.save_dtype)
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


def train(
    model: str,
    template: str,
    method: str,
    data: str | Path,
    output: str | Path,
    hparams: TrainConfig | dict | None = None,
    *,
    extra_callbacks: Sequence = (),
) -> dict:
    """Fine-tune `model` on `data` and write the result to `output`; return training_info.

    `hparams`: a TrainConfig, or overrides of its defaults. `extra_callbacks` are added to
    the Trainer's.
    Raises InputError for bad input and NonFiniteLossError when the loss diverges.
    """
    from transformers.utils import logging as hf_logging

    if method not in METHODS:
        raise input_error("--method", f"must be one of {', '.join(METHODS)}")
    hp = as_config(hparams)  # every setting, typed (sbt.train_config)
    spec = as_template(template)  # looked up once; the object goes down to the labels
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
    runtime = machine_settings(hp, model)
    accumulation = gradient_accumulation(hp, int(os.environ.get("WORLD_SIZE", "1")))
    args = training_arguments(hp, work, runtime, accumulation)
    examples = prepare_train_data(
        args,
        data,
        data_sha256,
        tokenizer,
        spec,
        hp.model_max_length,
        cache_dir=hp.tokenized_cache_dir or work,
        max_skipped_fraction=hp.max_skipped_fraction,
    )
    for message in runtime["messages"]:  # once the data is known to be good
        print(message, file=sys.stderr)
    own = hp.params(method)  # recorded
    signature = {
        "model": str(model),
        "template": spec.name,
        "method": method,
        "data_sha256": data_sha256,
        "hparams": hp.signature(method),
    }
    resume_from = _prepare_checkpoints(args, work, signature, hp.resume, examples.path)

    network = load_backbone(
        model, hp, runtime["attn_implementation"], len(tokenizer) if added_tokens else None
    )
    collator = choose_batches(network, hp, args, runtime, tokenizer.pad_token_id)
    if method == "lora":
        network = wrap_lora(network, hp.lora, hp.gradient_checkpointing)
    trainer = _run_trainer(
        network, args, examples.dataset, collator, extra_callbacks, hp, resume_from, work
    )

    info = provenance(
        base_model=str(model),
        template=spec.name,
        method=method,
        data=str(data),
        data_sha256=data_sha256,
        hparams=own,
        effective=runtime["effective"]
        | {
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "global_batch_size": hp.per_device_train_batch_size
            * args.gradient_accumulation_steps
            * args.world_size,
            "tokenized_cache": {"path": str(examples.path), "hit": examples.hit},
            "world_size": args.world_size,
            "distributed": trainer.accelerator.distributed_type.value,
            "fsdp_config": runtime["fsdp_config"],
            "padding_fraction": padding_fraction(collator.batches),
        },
        seed=hp.seed,
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
