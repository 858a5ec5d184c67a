"""Train the study's LLaVA: stage 1 (projector pretraining) or stage 2 (instruction tuning).

`--stage pretrain`: the tower and the LLM frozen, the projector and the `<im_start>` /
`<im_end>` input rows trained (`sbt.mm_model.freeze_for_stage1`) on caption records
(CC3M-595K `chat.json`); writes OUTPUT/mm_projector.bin in the study's format, which
stage 2 reads (`--projector`), as it reads a released study projector.
`--stage finetune --method full|lora`: the model built again from backbone and tower, the
projector file loaded, the tower frozen; full trains the LLM and the projector, lora adds
the study's LoRA (r/alpha/dropout from the `lora` hparams) with the projector, embeddings
and lm_head trained in full. Writes OUTPUT as a stock `LlavaForConditionalGeneration`
directory (a LoRA run merged into it) and OUTPUT/language_model/, the language model as a
plain `LlamaForCausalLM` directory for the text benchmarks.

`--hparams` is the same JSON of `sbt.train_config.TrainConfig` settings that `sbt.train`
takes (TrainingArguments, progress lines, divergence stop and resumable checkpoints in
`OUTPUT.checkpoints/` are the text arm's). Every record's schema and image file are
checked before a model is loaded. The output appears only complete, with
training_info.json and loss.csv.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import shutil
import sys
from pathlib import Path

from sbt.common import cli, input_error, provenance, read_json_file, use_offline_hub, write_json
from sbt.records import check_record
from sbt.runs import LANGUAGE_MODEL_DIR
from sbt.templates import TEMPLATE_NAMES, as_template
from sbt.train_config import TrainConfig
from sbt.train_data import check_skipped, file_sha256
from sbt.train_loop import exit_status, run_trainer
from sbt.train_resume import checkpoints_dir, prepare_checkpoints
from sbt.train_setup import machine_settings, training_arguments
from sbt.training import LOSS_CSV, TRAINING_INFO, config_from_json, gradient_accumulation

STAGES = ("pretrain", "finetune")
MM_METHODS = ("full", "lora")
PROJECTOR_FILE = "mm_projector.bin"


def check_records(data: str | Path, images: str | Path) -> list[dict]:
    """The records of `data`, each checked (sbt.records schema, an `image` file in `images`)
    before any model is loaded; the first problem is one InputError line."""
    records = read_json_file(data)
    if not isinstance(records, list):
        raise input_error(data, "expected a JSON list of records")
    folder = Path(images)
    if not folder.is_dir():
        raise input_error(folder, "image folder not found", field="images")
    for index, record in enumerate(records):
        check_record(record, index, data)
        image = record.get("image")
        where = {"index": index, "record_id": record.get("id"), "field": "image"}
        if not isinstance(image, str) or not image:
            raise input_error(data, "missing or not a file name", **where)
        if not (folder / image).is_file():
            raise input_error(data, f"image file {folder / image} not found", **where)
    return records


def _digest(path: str | Path | None) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None


def _features(stage: str, records, model, tokenizer, template, hp: TrainConfig, data):
    """Stage-1 or stage-2 features and skip counts (sbt.mm_data), checked like sbt.train's."""
    from sbt import mm_data
    from sbt.mm_model import num_image_tokens

    common = {
        "image_token_id": model.config.image_token_id,
        "num_image_tokens": num_image_tokens(model.config.vision_config),
        "source": data,
    }
    if stage == "pretrain":
        features, skips = mm_data.pretrain_records(
            records, tokenizer, hp.model_max_length, **common
        )
    else:
        features, skips = mm_data.instruct_records(
            records, tokenizer, template, hp.model_max_length, **common
        )
    meta = {"skips": skips, "records": len(records), "examples": len(features)}
    check_skipped(data, meta, hp.max_skipped_fraction)
    return features, skips


def _prepare_model(args, hp: TrainConfig, template):
    """The model for this stage, its processor, and the trained module (LoRA-wrapped)."""
    from sbt.mm_export import load_study_projector
    from sbt.mm_model import build_llava, freeze_for_stage1, wrap_lora

    model, processor = build_llava(
        args.backbone,
        args.tower,
        template,
        max_length=hp.model_max_length,
        legacy=hp.tokenizer_legacy,
        seed=hp.seed,
        dtype=None if hp.dtype == "auto" else hp.dtype,
    )
    model.config.use_cache = False
    if args.stage == "pretrain":
        freeze_for_stage1(model, processor.tokenizer)
        return model, processor, model
    if args.projector:
        load_study_projector(model, args.projector)
    model.model.vision_tower.requires_grad_(False)  # the study's tower stays frozen
    if args.method == "lora":
        lora = hp.lora
        return model, processor, wrap_lora(model, r=lora.r, alpha=lora.alpha, dropout=lora.dropout)
    return model, processor, model


def _save(args, hp: TrainConfig, trained, processor, info: dict, trainer, work: Path) -> None:
    """Rank 0: the stage's result with training_info.json and loss.csv, renamed into place."""
    from sbt.mm_export import extract_language_model, save_study_projector
    from sbt.mm_model import save_llava

    if trainer.args.process_index == 0:
        final = work / "final"
        shutil.rmtree(final, ignore_errors=True)
        final.mkdir()
        if args.stage == "pretrain":
            save_study_projector(trained, final / PROJECTOR_FILE)
        else:
            model = trained.merge_and_unload() if hasattr(trained, "merge_and_unload") else trained
            if hp.save_dtype != "auto":
                import torch

                model = model.to(getattr(torch, hp.save_dtype))
            model.config.use_cache = True
            save_llava(model, processor, final)
            extract_language_model(model, final / LANGUAGE_MODEL_DIR, processor.tokenizer)
        write_json(final / TRAINING_INFO, info)
        rows = [
            {"step": e["step"], "loss": e["loss"], "learning_rate": e.get("learning_rate")}
            for e in trainer.state.log_history
            if "loss" in e
        ]
        with open(final / LOSS_CSV, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["step", "loss", "learning_rate"])
            writer.writeheader()
            writer.writerows(rows)
        output = Path(args.output)
        if output.exists():
            shutil.rmtree(output)
        os.replace(final, output)
        shutil.rmtree(work)
    trainer.accelerator.wait_for_everyone()


def train_mm(args: argparse.Namespace, hp: TrainConfig) -> dict:
    """Run one stage as `args` says; return training_info (InputError for bad input)."""
    from transformers.utils import logging as hf_logging

    from sbt import mm_data

    if hp.fsdp:
        # sbt.scale wraps a LLaMA's decoder layers; the LLaVA model is not wired for it.
        raise input_error("--hparams", "FSDP is not supported here; use deepspeed", field="fsdp")
    if args.stage == "pretrain" and hp.weight_decay != 0:
        # freeze_for_stage1 masks gradients; weight decay would still shrink the frozen rows.
        raise input_error("--hparams", "stage 1 needs weight_decay 0", field="weight_decay")
    if args.stage == "finetune" and not args.template:
        raise input_error("--template", "required for --stage finetune")
    records = check_records(args.data, args.images)  # before any model is loaded
    template = as_template(args.template or "v1")  # stage 1 uses its own v0_plain
    hf_logging.disable_progress_bar()
    output = Path(args.output)
    work = checkpoints_dir(output)
    method = "full" if args.stage == "pretrain" else args.method
    runtime = machine_settings(hp, args.backbone)
    accumulation = gradient_accumulation(hp, int(os.environ.get("WORLD_SIZE", "1")))
    targs = training_arguments(hp, work, runtime, accumulation)
    model, processor, trained = _prepare_model(args, hp, template)
    features, skips = _features(
        args.stage, records, model, processor.tokenizer, template, hp, args.data
    )
    for message in runtime["messages"]:
        print(message, file=sys.stderr)
    data_sha256 = file_sha256(args.data)
    signature = {
        "stage": args.stage,
        "method": method,
        "backbone": str(args.backbone),
        "tower": str(args.tower),
        "template": template.name,
        "data_sha256": data_sha256,
        "projector_sha256": _digest(args.projector),
        "hparams": hp.signature(method),
    }
    resume_from = prepare_checkpoints(targs, work, signature, hp.resume, work / "final")
    dataset = mm_data.ImageDataset(features, args.images, processor.image_processor)
    collator = mm_data.ImageCollator(processor.tokenizer.pad_token_id)
    trainer = run_trainer(trained, targs, dataset, collator, [], hp, resume_from, work)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    info = provenance(
        stage=args.stage,
        method=method,
        base_model=str(args.backbone),
        vision_tower=str(args.tower),
        template=template.name if args.stage == "finetune" else "v0_plain",
        data=str(args.data),
        data_sha256=data_sha256,
        images=str(args.images),
        projector=str(args.projector) if args.projector else None,
        projector_sha256=signature["projector_sha256"],
        hparams=hp.params(method),
        effective=runtime["effective"]
        | {"gradient_accumulation_steps": targs.gradient_accumulation_steps},
        seed=hp.seed,
        records=len(records),
        examples=len(features),
        skipped=skips,
        global_step=trainer.state.global_step,
        epoch=trainer.state.epoch,
        final_loss=losses[-1] if losses else None,
        resumed_from=resume_from.name if resume_from else None,
    )
    _save(args, hp, trained, processor, info, trainer, work)
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--stage", required=True, choices=STAGES)
    parser.add_argument("--method", choices=MM_METHODS, default="full", help="finetune only")
    parser.add_argument("--backbone", required=True, help="LLaMA directory or HF id")
    parser.add_argument("--tower", required=True, help="CLIP vision tower directory or HF id")
    parser.add_argument("--template", choices=TEMPLATE_NAMES, help="finetune: text template")
    parser.add_argument("--data", required=True, help="LLaVA-format JSON with an image each")
    parser.add_argument("--images", required=True, help="folder the records' images are in")
    parser.add_argument("--output", required=True, help="directory to create")
    parser.add_argument("--projector", help="finetune: a study-format mm_projector.bin")
    parser.add_argument("--hparams", default="{}", help="JSON object of TrainConfig overrides")
    return parser.parse_args(argv)


@cli
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_offline_hub()
    hparams = config_from_json(args.hparams)
    if args.projector and not Path(args.projector).is_file():
        raise input_error(args.projector, "projector file not found", field="projector")
    return exit_status(args.output, lambda: train_mm(args, hparams))


if __name__ == "__main__":
    raise SystemExit(main())
