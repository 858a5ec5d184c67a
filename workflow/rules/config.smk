"""The config, checked before any job is scheduled: schema validation (which also fills in
the schema's defaults), the cross-checks JSON Schema cannot express, the paths the rules
share, and the wildcard constraints. The training settings of each run are checked where
they are merged (train_plan.smk)."""

import difflib
import re
from pathlib import Path

import jsonschema
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from sbt import runs
from sbt.prefetch_benchmarks import ETHICS_SPLITS, ETHICS_SUBSETS, ethics_file_name
from sbt.runs import MM_METHODS
from sbt.training import METHODS

RESULTS = runs.RESULTS
# What the local rule prefetch_benchmarks writes (on a machine with network).
PREFETCH_DIR = "resources/benchmarks"
PREFETCH_MANIFEST = f"{PREFETCH_DIR}/manifest.json"
PREFETCHED_ETHICS = [
    f"{PREFETCH_DIR}/ethics/{ethics_file_name(subset, split)}"
    for subset in ETHICS_SUBSETS
    for split in ETHICS_SPLITS
]
PREFETCHED_MMLU = f"{PREFETCH_DIR}/mmlu"  # data.tar's dev/ and test/ CSVs (mmlu_study)
# The study's own MMLU script, as a task (sbt.mmlu_study).
MMLU_STUDY = "mmlu_study"
EXTERNAL = runs.EXTERNAL
# The multimodal demo's files, written by rule shapes_demo (sbt.demo.shapes).
SHAPES_DIR = f"{RESULTS}/demo/shapes"
SHAPES_FILES = {
    name: f"{SHAPES_DIR}/{name}"
    for name in (
        "pretrain_chat.json",
        "instruct.json",
        "pope.json",
        "vqa_questions.json",
        "vqa_annotations.json",
        "caption_test.json",
        "caption_train.json",
    )
}
SHAPES_IMAGES = f"{SHAPES_DIR}/images"
SHAPES_MME = f"{SHAPES_DIR}/mme"
MM_PRETRAIN = "mm_pretrain"  # results/models/<backbone>/mm_pretrain/: stage 1
# An mm benchmark's optional input files (rule inputs and sbt.mm_evaluate options when set).
MM_BENCHMARK_FILES = ("annotations", "demonstrations")


def config_error(key, message):
    """One line naming the config key, raised before any job is scheduled."""
    raise WorkflowError(f"config error: {key}: {message}")


def schema_error_line(error):
    """(key, message) of a JSON Schema error, short enough for one line.

    Snakemake's own message repeats the whole schema (hundreds of lines); the path of the
    offending key, what is wrong with it and a hint at the likely fix is what helps.
    """
    key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in known]
        hints = []
        for name in unknown:
            near = difflib.get_close_matches(name, known, n=1)
            hints.append(
                f"{name!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
            )
        return key, f"unknown key {', '.join(hints)}; valid keys: {', '.join(known)}"
    message = error.message
    path = list(error.absolute_path)
    if error.validator == "enum" and path and isinstance(path[-1], str):
        # a named key (template, dtype, ...) whose value is not in its list
        valid = ", ".join(
            "null" if v is None else str(v) for v in error.validator_value
        )
        message = f"unknown {path[-1]} {error.instance!r}; valid: {valid}"
    if len(message) > 300:
        message = message[:300] + " ..."
    if error.validator == "type" and isinstance(error.instance, str):
        try:
            float(error.instance)
        except ValueError:
            pass
        else:  # YAML 1.1 reads 2e-5 as a string: a float needs a dot
            message += f" (YAML reads {error.instance} as text; write it with a dot, e.g. 2.0e-5)"
    return key, message


def validate_config():
    """Snakemake's schema validation (which also fills in the schema's defaults), with a
    one-line error naming the key instead of the schema dump."""
    try:
        validate(config, schema="../schemas/config.schema.yaml")
    except WorkflowError as exc:
        error = exc.__context__
        if not isinstance(error, jsonschema.ValidationError):
            raise
        config_error(*schema_error_line(error))


validate_config()


def check_path(key, path):
    """Relative paths stay inside the working directory; leaving it takes an absolute path."""
    if not Path(path).is_absolute() and ".." in Path(path).parts:
        config_error(
            key,
            f"relative path {path!r} leaves the working directory; use an absolute path if intended",
        )


def check_mmlu_study(name, bench):
    """data_dir goes with task mmlu_study, alone in its benchmark, and must exist."""
    data_dir = bench.get("data_dir")
    if MMLU_STUDY not in bench["tasks"] and not data_dir:
        return
    if bench["tasks"] != [MMLU_STUDY]:
        config_error(
            f"benchmarks.{name}.tasks",
            f"{MMLU_STUDY} runs alone in its benchmark (data_dir is for it only)",
        )
    if not data_dir:
        config_error(
            f"benchmarks.{name}.data_dir",
            f"{MMLU_STUDY} reads data.tar's CSV files: set data_dir (e.g. {PREFETCHED_MMLU})",
        )
    if bench.get("data_files"):
        config_error(
            f"benchmarks.{name}.data_files",
            f"{MMLU_STUDY} takes data_dir, not data_files",
        )
    check_path(f"benchmarks.{name}.data_dir", data_dir)
    if data_dir != PREFETCHED_MMLU and not Path(data_dir, "test").is_dir():
        config_error(
            f"benchmarks.{name}.data_dir",
            f"{data_dir!r} has no test/ folder (nor is it written by prefetch_benchmarks)",
        )


def check_config():
    """Checks JSON Schema cannot express: names that refer to each other, files that must exist.
    (Template names are the schema's enum, written from sbt.templates' registry.)"""
    for name, variant in config["data"].items():
        if variant["url"] and len(variant["sources"]) != 1:
            config_error(f"data.{name}.url", "a url needs exactly one file in sources")
        for i, source in enumerate(variant["sources"]):
            check_path(f"data.{name}.sources[{i}]", source)
            made = source in SHAPES_FILES.values() or source in config["mm_downloads"]
            if not Path(source).exists() and not variant.get("url") and not made:
                config_error(
                    f"data.{name}.sources[{i}]",
                    f"file {source!r} does not exist (and no url to prefetch it from)",
                )
    for name, backbone in config["backbones"].items():
        check_path(f"backbones.{name}.model", backbone["model"])
        for variant in backbone.get("data", []):
            if variant not in config["data"]:
                config_error(
                    f"backbones.{name}.data", f"unknown data variant {variant!r}"
                )
        for method in backbone["methods"]:
            if method not in config["training"]:
                config_error(
                    f"backbones.{name}.methods",
                    f"method {method!r} has no settings under training.{method}",
                )
    for name, bench in config["benchmarks"].items():
        check_mmlu_study(name, bench)
        for split, path in bench.get("data_files", {}).items():
            check_path(f"benchmarks.{name}.data_files.{split}", path)
            if not Path(path).exists() and path not in PREFETCHED_ETHICS:
                config_error(
                    f"benchmarks.{name}.data_files.{split}",
                    f"file {path!r} does not exist (nor is it written by prefetch_benchmarks)",
                )
    for name, checkpoint in config["external"].items():
        check_path(f"external.{name}.model", checkpoint["model"])
        group = checkpoint.get("backbone")
        if group is not None and group not in config["backbones"]:
            config_error(f"external.{name}.backbone", f"unknown backbone {group!r}")
    if EXTERNAL in config["backbones"]:
        config_error(
            f"backbones.{EXTERNAL}", "this name is reserved for external checkpoints"
        )
    check_multimodal()


# A split of Karpathy's caption datasets in the study's caption format (rule
# karpathy_split, sbt.caption_splits): FOLDER/coco_test.json from FOLDER/dataset_coco.json.
# (No named groups: the pattern is also the rule's wildcard constraint.)
KARPATHY_PATTERN = r"(.*/)?(coco|flickr30k|flickr8k)_(train|val|test)\.json"


def karpathy_parts(path):
    """(folder, dataset, split) of a caption split's path, or None if it is not one."""
    match = re.fullmatch(KARPATHY_PATTERN, path)
    return (match[1] or "", match[2], match[3]) if match else None


def karpathy_source(path):
    """The Karpathy file a caption split is made from, or None if `path` is not one."""
    parts = karpathy_parts(path)
    return f"{parts[0]}dataset_{parts[1]}.json" if parts else None


def check_made(key, path):
    """A multimodal input: an existing path, or one a rule writes (the shapes demo,
    mm_downloads, karpathy_split from one of those)."""
    check_path(key, path)
    made = {*SHAPES_FILES.values(), SHAPES_IMAGES, SHAPES_MME, *config["mm_downloads"]}
    source = karpathy_source(path)
    if source and (Path(source).exists() or source in made):
        made.add(path)
    if not Path(path).exists() and path not in made:
        config_error(
            key,
            f"{path!r} does not exist (nor is it written by shapes_demo, mm_downloads or"
            " karpathy_split)",
        )


def check_multimodal():
    """The multimodal arm: what its runs need is configured, and where it comes from."""
    if MM_PRETRAIN in config["data"]:
        config_error(
            f"data.{MM_PRETRAIN}", "this name is reserved for stage 1's output"
        )
    for name, variant in config["data"].items():
        if variant["images"]:
            check_made(f"data.{name}.images", variant["images"])
    for name, backbone in config["backbones"].items():
        mm = [m for m in backbone["methods"] if m in MM_METHODS]
        if not mm:
            continue
        key = f"backbones.{name}"
        if "multimodal" not in backbone:
            config_error(f"{key}.methods", f"{mm[0]} needs a multimodal block")
        variants = backbone.get("data") or list(config["data"])
        with_images = [v for v in variants if config["data"][v]["images"]]
        if not with_images:
            config_error(
                f"{key}.methods",
                f"{mm[0]} needs a data variant with images; {', '.join(variants)} has none",
            )
        for variant in with_images:
            if len(config["data"][variant]["sources"]) != 1:
                config_error(
                    f"data.{variant}.sources",
                    "a variant with images takes one source file",
                )
        block = backbone["multimodal"]
        if block["projector"] == "pretrain":
            if MM_PRETRAIN not in config["training"]:
                config_error(
                    f"{key}.multimodal.projector",
                    f"pretrain needs settings under training.{MM_PRETRAIN}",
                )
            if "pretrain" not in block:
                config_error(
                    f"{key}.multimodal.pretrain",
                    "projector pretrain needs captions and images",
                )
            for field in ("captions", "images"):
                check_made(
                    f"{key}.multimodal.pretrain.{field}", block["pretrain"][field]
                )
        else:
            check_made(f"{key}.multimodal.projector", block["projector"])
        if block["tower"] != "tiny":
            check_path(f"{key}.multimodal.tower", block["tower"])
    for path, download in config["mm_downloads"].items():
        if download["unzip"] and download["member"]:
            config_error(
                f"mm_downloads.{path}", "unzip (a folder) or member (a file), not both"
            )
    for name, bench in config["mm_benchmarks"].items():
        if name in config["benchmarks"]:
            config_error(f"mm_benchmarks.{name}", "also the name of a text benchmark")
        for field in ("questions", "images", *MM_BENCHMARK_FILES):
            if bench[field]:
                check_made(f"mm_benchmarks.{name}.{field}", bench[field])
        if (bench["task"] == "caption") != bool(bench["demonstrations"]):
            config_error(
                f"mm_benchmarks.{name}.demonstrations",
                "needed by task caption, and only there",
            )
        if bench["samples"] and bench["task"] != "vqav2":
            config_error(
                f"mm_benchmarks.{name}.samples", "only task vqav2 draws samples"
            )


check_config()


def names_pattern(names):
    """Regex that matches exactly one of the configured names (none: matches nothing)."""
    escaped = sorted((re.escape(n) for n in names), key=len, reverse=True)
    return "|".join(escaped) or "(?!)"


wildcard_constraints:
    data=names_pattern(config["data"]),
    backbone=names_pattern(config["backbones"]),
    method=names_pattern(METHODS + MM_METHODS),
    mm_benchmark=names_pattern(config["mm_benchmarks"]),
    benchmark=names_pattern(config["benchmarks"]),
    checkpoint=names_pattern(config["external"]),
