"""The study's fine-tuning recipe (full or LoRA) as one function, `train`.

What it does, in order: take the settings (a `sbt.train_config.TrainConfig`: the study's
defaults, checked and typed) and the template (looked up once, the object passed down); set up the tokenizer as the study did; check what the machine and launch give and build
the TrainingArguments; prepare the data (`sbt.train_data`: assistant-only labels by
`sbt.tokenize_chat`, tokenized once into a memory-mapped Arrow cache that every rank
reads), refusing to go on if more than `max_skipped_fraction` of the records had to be
skipped; make the checkpoint directory ready (`sbt.train_resume`); load the backbone (safetensors where
possible); decide how batches are built (`sbt.packing`: each batch's samples packed into
one padding-free row where transformers keeps them apart, else padded); wrap it in LoRA
for `method="lora"`; run transformers' Trainer (`sbt.train_loop`); save.

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
import os
import shutil
import sys
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
from sbt.train_loop import run_trainer
from sbt.train_resume import checkpoints_dir, prepare_checkpoints
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

TRAINING_INFO = "training_info.json"
LOSS_CSV = "loss.csv"


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


def _loss_rows(log_history: list[dict]) -> list[dict]:
    return [
        {"step": e["step"], "loss": e["loss"], "learning_rate": e.get("learning_rate")}
        for e in log_history
        if "loss" in e
    ]


def _save_outputs(
    trainer, network, tokenizer, info: dict, hp: TrainConfig, work: Path, output: Path
):
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
    resume_from = prepare_checkpoints(args, work, signature, hp.resume, examples.path)

    network = load_backbone(
        model, hp, runtime["attn_implementation"], len(tokenizer) if added_tokens else None
    )
    collator = choose_batches(network, hp, args, runtime, tokenizer.pad_token_id)
    if method == "lora":
        network = wrap_lora(network, hp.lora, hp.gradient_checkpointing)
    trainer = run_trainer(
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
