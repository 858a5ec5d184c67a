"""A config mistake stops `snakemake` with one line naming the key, before any job runs."""

from __future__ import annotations

import re

import pytest
from snakemake_run import copy_repo, output_of, snakemake, write_config

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_repo(tmp_path_factory.mktemp("config_checks"))


def dry_run(workdir, overrides):
    extra = write_config(workdir, "bad.yaml", overrides)
    return snakemake(workdir, "-n", "--configfile", "config/config.yaml", extra, timeout=120)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"backbones": {"tiny-llama2": {"template": "llama2"}}},
            "backbones.tiny-llama2.template: unknown template 'llama2'",
        ),
        ({"backbones": {"no-model": {"template": "v1"}}}, "'model' is a required property"),
        ({"backbones": {"tiny-llama2": {"methods": ["qlora"]}}}, "'qlora' is not one of"),
        ({"training": {"full": {"learning_rate": -1.0}}}, "-1.0 is less than or equal to"),
        ({"benchmarks": {"empty": {"num_fewshot": 0}}}, "'tasks' is a required property"),
        (
            {"data": {"missing": {"sources": ["resources/nowhere.json"]}}},
            "data.missing.sources[0]: file 'resources/nowhere.json' does not exist",
        ),
        ({"backbones": {"bad/name": {"model": "tiny", "template": "v1"}}}, "bad/name"),
        (
            {"training": {"full": {"learnig_rate": 0.1}}},
            "config error: training.full: unknown key 'learnig_rate' (did you mean"
            " 'learning_rate'?)",
        ),
        (
            {"data": {"outside": {"sources": ["../outside/llava.json"]}}},
            "data.outside.sources[0]: relative path '../outside/llava.json' leaves the working",
        ),
        (
            {"benchmarks": {"ethics_cm": {"data_files": {"test": "resources/none.jsonl"}}}},
            "benchmarks.ethics_cm.data_files.test: file 'resources/none.jsonl' does not exist",
        ),
        (
            {"training": {"full": {"global_batch_size": 6}}},
            "training.full.global_batch_size: 6 for backbone tiny-llama2 is not a multiple of"
            " per_device_train_batch_size x num_gpus = 4",
        ),
        (
            {"benchmark": {}},
            "config error: (top level): unknown key 'benchmark' (did you mean 'benchmarks'?)",
        ),
        (
            {"training": {"full": {"learning_rate": "2e-5"}}},
            "config error: training.full.learning_rate: '2e-5' is not of type 'number' (YAML"
            " reads 2e-5 as text; write it with a dot, e.g. 2.0e-5)",
        ),
        (
            {"backbones": {"tiny-vicuna": {"training": {"lora": {"max_steps": 0}}}}},
            "config error: training.lora.max_steps: 'max_steps' must be -1 (use epochs) or"
            " positive (backbone tiny-vicuna)",
        ),
        (
            {"training": {"full": {"dtype": "int8"}}},
            "config error: training.full.dtype: unknown dtype 'int8'; valid: float32,",
        ),
    ],
    ids=[
        "unknown-template",
        "backbone-without-model",
        "unknown-method",
        "negative-learning-rate",
        "benchmark-without-task",
        "missing-data-source",
        "name-with-slash",
        "misspelt-key",
        "path-escapes-workdir",
        "missing-benchmark-file",
        "indivisible-global-batch",
        "misspelt-top-level-key",
        "number-read-as-text",
        "zero-steps",
        "unknown-dtype",
    ],
)
def test_bad_config_stops_before_any_job(workdir, overrides, expected):
    proc = dry_run(workdir, overrides)
    text = output_of(proc)
    assert proc.returncode != 0
    assert expected in text, text[-3000:]
    assert text.count("config error:") == 1 and len(text.splitlines()) < 12, text[-3000:]
    assert "Job stats" not in text  # nothing was planned, let alone run
    assert not (workdir / "results").exists()


def test_demo_and_paper_configs_are_valid(workdir):
    for configfile in ("config/config.yaml", "config/paper.yaml"):
        proc = snakemake(workdir, "-n", "--configfile", configfile, timeout=120)
        assert proc.returncode == 0, output_of(proc)[-3000:]


def test_paper_dry_run_prints_the_disk_estimate_and_keeps_remote_code_off(workdir):
    proc = snakemake(workdir, "-n", "-p", "--configfile", "config/paper.yaml", timeout=120)
    text = output_of(proc)
    # 6 full fine-tunes in bf16 (4 x 7B + 2 x 3B) and 4 LoRA adapters
    assert "Disk estimate: 6 full models + 4 LoRA adapters = 69.6 GB" in text
    # and 10 multimodal runs (their LLaVA directory and language model, bf16)
    assert "Multimodal: 10 models = 216.0 GB more." in text
    # 36 runs (6 base, 10 trained, 10 multimodal, 10 released) x 13 benchmarks; two model
    # settings per run (mmlu_study's float32, BOS and max_length; the rest); GPU-hours from
    # docs/evaluation.md
    estimate = re.search(r"Evaluation estimate: .*", text)[0]
    assert estimate.startswith(
        "Evaluation estimate: 36 evaluation jobs (+468 local result steps), 72 model loads"
        " (evaluation.group: run; group: benchmark: 468 jobs, 468 loads); about "
    ), estimate
    assert re.search(r"about \d+ GPU-hours for \d+M prompt tokens", estimate), estimate
    # 10 multimodal runs x (3 POPE splits, VQAv2, COCO captions), each its own job and load
    mm_estimate = re.search(r"Multimodal evaluation estimate: .*", text)[0]
    assert re.fullmatch(
        r"Multimodal evaluation estimate: 50 evaluate_mm jobs, 50 model loads;"
        r" about \d+ GPU-hours \(docs/evaluation.md\)\.",
        mm_estimate,
    ), mm_estimate
    assert "--trust-remote-code" not in text
    assert '"trust_remote_code": false' in text


SHAPES = {"questions": "results/demo/shapes/pope.json", "images": "results/demo/shapes/images"}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"backbones": {"tiny-vicuna": {"data": ["textonly_demo"]}}},
            "backbones.tiny-vicuna.methods: mm_full needs a data variant with images;"
            " textonly_demo has none",
        ),
        (
            {"backbones": {"tiny-x": {"model": "tiny", "template": "v1", "methods": ["mm_full"]}}},
            "backbones.tiny-x.methods: mm_full needs a multimodal block",
        ),
        (
            {"backbones": {"tiny-vicuna": {"multimodal": {"projector": "no/mm_projector.bin"}}}},
            "backbones.tiny-vicuna.multimodal.projector: 'no/mm_projector.bin' does not exist",
        ),
        (
            {"mm_benchmarks": {"ethics_cm": {"task": "pope", **SHAPES}}},
            "mm_benchmarks.ethics_cm: also the name of a text benchmark",
        ),
        (
            {"mm_benchmarks": {"pope": {"task": "gqa", **SHAPES}}},
            "mm_benchmarks.pope.task: unknown task 'gqa'; valid: pope, vqav2, caption, mme",
        ),
        (
            {"mm_benchmarks": {"coco": {"task": "caption", **SHAPES}}},
            "mm_benchmarks.coco.demonstrations: needed by task caption, and only there",
        ),
        (
            {"mm_benchmarks": {"pope": {"task": "pope", "samples": 5000, **SHAPES}}},
            "mm_benchmarks.pope.samples: only task vqav2 draws samples",
        ),
    ],
    ids=[
        "mm-without-images",
        "mm-without-block",
        "missing-projector",
        "mm-benchmark-name-taken",
        "unknown-mm-task",
        "caption-without-demonstrations",
        "samples-not-vqav2",
    ],
)
def test_bad_multimodal_config_stops_before_any_job(workdir, overrides, expected):
    proc = dry_run(workdir, overrides)
    text = output_of(proc)
    assert proc.returncode != 0
    assert f"config error: {expected}" in text, text[-3000:]
    assert text.count("config error:") == 1 and len(text.splitlines()) < 12, text[-3000:]
    assert "Job stats" not in text
