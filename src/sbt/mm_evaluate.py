#!/usr/bin/env python
"""POPE, VQAv2, captions or MME of a multimodal (LLaVA) model, as the study generated and
scored them.

    python -m sbt.mm_evaluate --model LLAVA_DIR --task pope|vqav2|caption|mme --questions FILE \\
        --images DIR --mode study|clean [--image real|constant] [--prompt study|training] \\
        [--samples N] [--demonstrations FILE] --output RESULT_JSON

LLAVA_DIR is a directory written by sbt.mm_model.save_llava. Generation runs through
lm-eval's `hf-multimodal` model on this package's tasks (src/sbt/lmeval_tasks_mm/): the
question file is checked and turned into prepared documents (the study's prompt, the image
path), bound to the task YAML as its local data file. The study (llava/eval/mmoverall/,
eval_scripts/eval_pope.sh, eval_vqav2.sh, eval_mscoco.sh, eval_flickr30.sh) used
conversation `v0` with the image as `<im_start><image><im_end>\\n` before the question, POPE
and MME zero-shot, VQAv2 and captions with 3 text-only demonstrations, and sampled (top-k 50,
temperature 0.2, at most 10 new tokens, seed 42).

- VQAv2 `--samples N`: the study's subset, N questions and a pool of 2048 for the
  demonstrations drawn together with np.random.choice (it evaluated 5000); without it every
  question of the file, its demonstrations drawn from the others.
- Captions: `--questions` is the study's caption file (a list of {"image_name",
  "captions"}; mscoco_test.json, flickr30k_test.json), `--demonstrations` the file whose
  captions the demonstrations come from (its mscoco_train.json, flickr30k_train.json).
  Scoring needs a Java runtime (pycocoevalcap's PTB tokenizer and METEOR).
- MME: `--questions` and `--images` are both the MME folder (a folder per task, as the
  study read it); the result adds `mme_tasks`, each task's acc, acc+ and score.

- `--mode study`: that sampling, and sbt.mm_metrics' study scoring (the study's scripts'
  quirks). `--mode clean`: greedy decoding (deterministic, so a small set's score does not
  move with the seed) and the official scoring.
- `--image constant`: every image replaced by one mid-grey image of its size, the control:
  the gap to `real` is what the image contributes.
- `--prompt training`: the same turns in the template the run was trained with (read from
  the model's training_info.json) instead of the study's v0, which its v1 and LLaMA-2
  runs were never trained on.

The result JSON has the shape of the text benchmarks' (sbt.lmeval_bench.result_document):
`metrics` {"<benchmark>/accuracy", ...} as fractions (the benchmark name defaults to the
task, with `_clean` / `_constant` for those choices), `run` (--run-info), `config`,
`provenance`, and `task`, `mode`, `image`, `n_samples`. Bad input (unknown task, missing
field, missing image) is one error line before any model loads.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from sbt.common import (
    atomic_path,
    cli,
    input_error,
    int_at_least,
    provenance,
    quiet_progress_bars,
    read_json_file,
    use_offline_hub,
    write_json,
)
from sbt.lmeval_tasks_mm.utils import CAPTION_METRICS, MME_METRICS, POPE_METRICS
from sbt.mm_metrics import mme_scores, require_java
from sbt.mm_questions import (
    MAX_NEW_TOKENS,
    VQA_DEMONSTRATIONS,
    add_prompts,
    default_annotations,
    read_captions,
    read_mme,
    read_pope,
    read_vqa,
    study_vqa_draw,
)
from sbt.templates import Template, as_template

TASK_DIR = Path(__file__).resolve().parent / "lmeval_tasks_mm"
TASKS = {"pope": "sbt_pope", "vqav2": "sbt_vqav2", "caption": "sbt_caption", "mme": "sbt_mme"}
ZERO_SHOT = ("pope", "mme")
MODES = ("study", "clean")
IMAGE_SETTINGS = ("real", "constant")
PROMPTS = ("study", "training")


# --------------------------------------------------------------------------- evaluation
def task_yaml(task: str, data_file: Path, mode: str) -> str:
    """A private task YAML: the package's task bound to the prepared documents."""
    lines = [
        f"include: {json.dumps(str(TASK_DIR / (TASKS[task] + '.yaml')))}",
        f"task: {TASKS[task]}",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {json.dumps(str(data_file))}",
    ]
    if mode == "clean":  # greedy: the same text on every run, whatever the seed
        lines += [
            "generation_kwargs:",
            "  until: []",
            "  do_sample: false",
            "  max_gen_toks: 10",
            "  min_new_tokens: 1",
        ]
    return "\n".join(lines) + "\n"


def load_task(task: str, docs: list[dict], folder: Path):
    """The lm-eval Task object over `docs`, loaded by path (no bundled index built)."""
    from lm_eval.tasks import TaskManager

    data_file = folder / "docs.jsonl"
    with open(data_file, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(doc) + "\n" for doc in docs)
    path = folder / f"{TASKS[task]}.yaml"
    path.write_text(task_yaml(task, data_file, docs[0]["mode"]), encoding="utf-8")
    return TaskManager(include_defaults=False).load(str(path))["tasks"][TASKS[task]]


def context_length(model_dir: Path, docs: list[dict]) -> int:
    """The length lm-eval may use: the model's positions, or more if a prompt needs more.

    lm-eval cuts a longer context on the left without a word (and with LLaVA's config it
    falls back to the tokenizer's `model_max_length`); the study never cut its prompts, so
    every prompt plus the 10 new tokens must fit.
    """
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(str(model_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    positions = config.text_config.max_position_embeddings
    image_tokens = config.image_seq_length
    longest = max(len(tokenizer(doc["prompt"]).input_ids) for doc in docs) + image_tokens
    needed = longest + MAX_NEW_TOKENS
    if needed > positions:
        print(
            f"[mm_evaluate] warning: the longest prompt needs {needed} positions, the model "
            f"has {positions}; it is evaluated uncut",
            file=sys.stderr,
        )
    return max(positions, needed)


def run_lm_eval(args: argparse.Namespace, docs: list[dict], device: str) -> tuple[dict, list]:
    """lm-eval's results and its per-document samples."""
    from lm_eval import evaluator
    from lm_eval.models.hf_vlms import HFMultimodalLM

    # fp32 as the study's scripts (--precision fp32); batch size 1 by default, as theirs.
    model = HFMultimodalLM(
        pretrained=str(args.model),
        dtype="float32",
        batch_size=args.batch_size,
        device=device,
        max_length=context_length(args.model, docs),
    )
    with tempfile.TemporaryDirectory(prefix="sbt_mm_") as folder:
        task = load_task(args.task, docs, Path(folder))
        results = evaluator.simple_evaluate(
            model=model,
            tasks=[task],
            limit=None,  # --limit already cut the documents
            bootstrap_iters=0,  # whole-set scores: no per-document stderr to bootstrap
            log_samples=True,
            random_seed=args.seed,
            numpy_random_seed=args.seed,
            torch_random_seed=args.seed,
            fewshot_random_seed=args.seed,
        )
    return results, results["samples"][TASKS[args.task]]


def finite(value: float) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def benchmark_name(args: argparse.Namespace) -> str:
    """--benchmark, or the task with the mode and image setting when not the defaults.

    The name is the task part of the metric keys ("pope_clean_constant/accuracy"): the
    tables merge a run's result files by metric key, so every evaluation of one run (POPE's
    three files, both modes, both image settings) needs its own name.
    """
    if args.benchmark:
        return args.benchmark
    suffixes = [args.mode] if args.mode != "study" else []
    suffixes += [args.image] if args.image != "real" else []
    suffixes += ["training_prompt"] if args.prompt != "study" else []
    return "_".join([args.task, *suffixes])


def task_metrics(task: str, benchmark: str, task_result: dict) -> dict[str, float | None]:
    names = {"pope": POPE_METRICS, "caption": CAPTION_METRICS, "mme": MME_METRICS}.get(
        task, ("accuracy",)
    )
    metrics = {f"{benchmark}/{name}": finite(task_result.get(f"{name},none")) for name in names}
    if task == "mme":  # a type none of whose tasks the folder has (the demo's Cognition)
        metrics = {key: value for key, value in metrics.items() if value is not None}
    return metrics


def sample_records(samples: list, docs: list[dict]) -> list[dict]:
    """One line per document: its question, the raw generation and the text scored."""
    from sbt.lmeval_tasks_mm.utils import generated

    records = []
    for sample in sorted(samples, key=lambda s: s["doc_id"]):
        doc = docs[sample["doc_id"]]
        raw = sample["resps"][0][0]
        records.append(
            {
                "doc_id": sample["doc_id"],
                "question_id": doc["question_id"],
                "image": doc["image"],
                "image_setting": doc["image_setting"],
                "mode": doc["mode"],
                "prompt": doc["prompt"],
                "raw_generation": raw,
                "generation": generated(raw),
                **({"label": doc["target"]} if "target" in doc else {}),
                **{key: doc[key] for key in ("answers", "captions", "mme_task") if key in doc},
            }
        )
    return records


def write_jsonl(path: str | Path, records: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


# --------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="directory of save_llava")
    # Any string: an unknown task is one InputError line (the @cli pattern), not a usage page.
    parser.add_argument("--task", required=True, help="pope, vqav2, caption or mme")
    parser.add_argument(
        "--questions",
        required=True,
        type=Path,
        help="POPE or VQAv2 questions, captions, or the MME folder",
    )
    parser.add_argument(
        "--annotations",
        type=Path,
        help="vqav2: the annotation file (default: the question file's name with "
        "'questions' replaced by 'annotations')",
    )
    parser.add_argument(
        "--demonstrations",
        type=Path,
        help="caption: the caption file the demonstrations come from (the study's train split)",
    )
    parser.add_argument(
        "--samples",
        type=int_at_least(1),
        help="vqav2: N questions drawn as the study drew its 5000 (with a pool of 2048 for "
        "the demonstrations); default: every question",
    )
    parser.add_argument("--images", required=True, type=Path, help="directory of the images")
    parser.add_argument("--mode", required=True, choices=MODES)
    parser.add_argument("--image", choices=IMAGE_SETTINGS, default="real")
    parser.add_argument(
        "--prompt",
        choices=PROMPTS,
        default="study",
        help="study = conversation v0 as the study prompted; training = the run's own "
        "training template (from its training_info.json)",
    )
    parser.add_argument("--output", required=True, type=Path, help="result JSON to write")
    parser.add_argument(
        "--benchmark",
        help="benchmark name, the task part of the metric keys (default: the task, then "
        "_clean and _constant when chosen)",
    )
    parser.add_argument("--seed", type=int, default=42, help="sampling and demonstrations")
    parser.add_argument("--batch-size", type=int_at_least(1), default=1)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--limit", type=int_at_least(1), help="only the first N questions")
    parser.add_argument("--log-samples", type=Path, help="also write per-question JSONL")
    parser.add_argument(
        "--run-info",
        default="{}",
        metavar="JSON",
        help='JSON object describing the run, e.g. {"backbone": ..., "data": ..., "method": ...}',
    )
    return parser.parse_args(argv)


def plan_docs(args: argparse.Namespace) -> list[dict]:
    """The checked, prompted documents; every input error is raised here."""
    if args.task not in TASKS:
        expected = ", ".join(TASKS)
        raise input_error("--task", f"unknown task {args.task!r}; expected one of {expected}")
    if (args.task == "caption") != (args.demonstrations is not None):
        raise input_error("--demonstrations", "needed with --task caption, and only with it")
    if args.samples and args.task != "vqav2":
        raise input_error("--samples", "only --task vqav2 draws the study's subset")
    if not (args.model / "config.json").is_file():
        raise input_error(args.model, "no config.json: not a directory written by save_llava")
    if not args.images.is_dir():
        raise input_error(args.images, "image directory not found")
    pool = None
    if args.task == "pope":
        docs = read_pope(args.questions, args.images)
    elif args.task == "mme":
        docs = read_mme(args.questions, args.images)
    elif args.task == "caption":
        require_java()  # before any GPU time: the scores need it
        docs = read_captions(args.questions, args.images)
        pool = read_captions(args.demonstrations)
    else:
        annotations = args.annotations or default_annotations(args.questions)
        docs = read_vqa(args.questions, annotations, args.images)
        if args.samples:
            docs, pool = study_vqa_draw(docs, args.samples, args.seed, args.questions)
    docs = docs[: args.limit] if args.limit else docs
    template = prompt_template(args)
    add_prompts(args.task, docs, args.seed, template, pool)
    template_name = template.name if template else "v0"
    for doc in docs:
        doc.update(mode=args.mode, image_setting=args.image, template=template_name)
    return docs


def prompt_template(args: argparse.Namespace) -> Template | None:
    """--prompt training: the template named in the model's training_info.json."""
    if args.prompt == "study":
        return None
    info_file = args.model / "training_info.json"
    info = read_json_file(info_file) if info_file.is_file() else {}
    name = info.get("template") if isinstance(info, dict) else None
    if not isinstance(name, str):
        raise input_error(info_file, "no training template recorded", field="template")
    template = as_template(name)
    if template.segments is None:  # chat_template renders with the run's tokenizer
        raise input_error("--prompt", f"training prompts need a built-in template, not {name!r}")
    return template


def result_document(args, docs, results, samples, device: str, seconds: float) -> dict:
    from sbt.lmeval_tasks import json_safe

    name = TASKS[args.task]
    task_result = results["results"][name]
    benchmark = benchmark_name(args)
    return {
        "benchmark": benchmark,
        "tasks": [benchmark],
        "task": args.task,
        "num_fewshot": 0 if args.task in ZERO_SHOT else VQA_DEMONSTRATIONS,
        "metrics": task_metrics(args.task, benchmark, task_result),
        "results": json_safe({benchmark: task_result}),
        "versions": {benchmark: results.get("versions", {}).get(name)},
        "n_samples": {benchmark: {"original": len(docs), "effective": len(samples)}},
        "mode": args.mode,
        "image": args.image,
        "config": {
            "model": str(args.model),
            "task": args.task,
            "mode": args.mode,
            "image": args.image,
            "prompt": args.prompt,
            "template": docs[0]["template"],
            "decoding": "greedy" if args.mode == "clean" else "sample top_k=50 temperature=0.2",
            "max_new_tokens": MAX_NEW_TOKENS,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "limit": args.limit,
            "device": device,
            "dtype": "float32",
            "data_files": {"test": str(args.questions)},
            "annotations": str(args.annotations) if args.annotations else None,
            "demonstrations": str(args.demonstrations) if args.demonstrations else None,
            "samples": args.samples,
            "images": str(args.images),
        },
        "run": args.run_info,
        "provenance": provenance(
            stage="mm_evaluate",
            lm_eval_task_sources={args.task: f"src/sbt/lmeval_tasks_mm/{name}.yaml"},
            seconds=round(seconds, 1),
        ),
    }


@cli
def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    use_offline_hub()
    quiet_progress_bars()
    try:
        args.run_info = json.loads(args.run_info)
    except json.JSONDecodeError as exc:
        raise input_error("--run-info", f"invalid JSON: {exc}") from None
    if not isinstance(args.run_info, dict):
        raise input_error("--run-info", "must be a JSON object")
    docs = plan_docs(args)

    from sbt.lmeval_tasks import resolve_device

    device = resolve_device(args.device)
    results, samples = run_lm_eval(args, docs, device)
    seconds = time.perf_counter() - started
    document = result_document(args, docs, results, samples, device, seconds)
    records = sample_records(samples, docs)
    if args.task == "mme":  # each task's acc, acc+ and score, beside the two sums
        columns = [[r[k] for r in records] for k in ("generation", "label", "mme_task", "image")]
        document["mme_tasks"] = mme_scores(*columns, args.mode)["tasks"]
    if args.log_samples:
        write_jsonl(args.log_samples, records)
    write_json(args.output, document)
    for key, value in document["metrics"].items():
        shown = "n/a" if value is None else f"{value:.4f}"
        print(f"[mm_evaluate] {key} = {shown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
