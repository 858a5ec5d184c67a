"""The multimodal arm through real `snakemake`: one tiny backbone's mm_full run (shapes demo,
tiny tower, stage 1, stage 2) to the summary table, in a temporary copy of the repository.

The text benchmark reads the run's extracted language model (sbt.runs.resolve_run); the mm
benchmarks (POPE and VQAv2 on the shapes demo, sbt.mm_evaluate) read the LLaVA checkpoint.
The demo's VQAv2 and captions with the real images must beat the same questions with one
grey image: the trained model's answers depend on what the image shows.
"""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from snakemake_run import REPO, copy_repo, planned_jobs, run_ok, write_config

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

BACKBONE = "tiny-vicuna"
MM_BENCHMARK = "pope_shapes"
VQA_REAL, VQA_CONSTANT = "vqav2_shapes", "vqav2_shapes_constant"
CAPTION_REAL, CAPTION_CONSTANT = "caption_shapes", "caption_shapes_constant"
# Measured with the demo config (40 images, tiny-vicuna): VQAv2 accuracy 0.695 real vs 0.34
# constant; CIDEr 2.56 vs 0.87 (pycocoevalcap's scale, as the result files hold it).
MIN_IMAGE_GAP = 0.1
MIN_CIDER_GAP = 1.0


def mm_only_config() -> dict:
    """The demo config cut to one backbone's mm_full run and one text benchmark."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text(encoding="utf-8"))
    backbone = config["backbones"][BACKBONE]
    backbone.update(methods=["mm_full"], data=["shapes"])
    config["backbones"] = {BACKBONE: backbone}
    config["benchmarks"] = {"ethics_cm": config["benchmarks"]["ethics_cm"]}
    benchmarks = config["mm_benchmarks"]
    config["mm_benchmarks"] = {
        MM_BENCHMARK: {**benchmarks[MM_BENCHMARK], "limit": 8},
        VQA_REAL: benchmarks[VQA_REAL],
        VQA_CONSTANT: benchmarks[VQA_CONSTANT],
        CAPTION_REAL: benchmarks[CAPTION_REAL],
        CAPTION_CONSTANT: benchmarks[CAPTION_CONSTANT],
    }
    return config


@pytest.fixture(scope="module")
def mm_run(tmp_path_factory):
    workdir = copy_repo(tmp_path_factory.mktemp("mm_demo"))
    configfile = write_config(workdir, "mm_only.yaml", mm_only_config())
    dry = run_ok(workdir, "-n", "--configfile", configfile)
    jobs = planned_jobs(dry)
    run_ok(workdir, "--profile", "profiles/local", "--cores", "2", "--configfile", configfile)
    with open(workdir / "results/tables/summary.csv", newline="") as handle:
        return workdir, jobs, list(csv.DictReader(handle))


def test_mm_run_plans_both_stages_and_reaches_the_summary(mm_run):
    workdir, jobs, rows = mm_run
    for rule in ("shapes_demo", "build_tiny_tower", "mm_pretrain", "mm_finetune"):
        assert jobs[rule] == 1, jobs
    assert jobs["evaluate_mm"] == 5
    assert {(r["backbone"], r["data"], r["method"]) for r in rows} == {
        (BACKBONE, "-", "base"),  # the table shows no data variant as "-"
        (BACKBONE, "shapes", "mm_full"),
    }
    model = workdir / f"results/models/{BACKBONE}/shapes/mm_full"
    assert (model / "language_model/config.json").is_file()
    assert (workdir / f"results/models/{BACKBONE}/mm_pretrain/mm_projector.bin").is_file()
    # the text benchmark evaluated the extracted language model
    mm_row = next(r for r in rows if r["method"] == "mm_full")
    ethics = [key for key in mm_row if "ethics" in key.lower() or "cm" in key.lower()]
    assert ethics and all(mm_row[key] for key in ethics), mm_row


def test_mm_benchmark_column_only_for_mm_runs(mm_run):
    _, _, rows = mm_run
    columns = [key for key in rows[0] if "pope" in key.lower()]
    assert columns, rows[0]
    by_method = {r["method"]: r for r in rows}
    assert all(by_method["mm_full"][key] for key in columns)
    assert not any(by_method["base"][key] for key in columns)  # not evaluated: empty


def demo_scores(workdir, names, metric) -> dict[str, float]:
    """One metric of the mm_full run's result files, by benchmark name."""
    folder = workdir / f"results/eval/{BACKBONE}/shapes/mm_full"
    return {
        name: json.loads((folder / f"{name}.json").read_text())["metrics"][f"{name}/{metric}"]
        for name in names
    }


def test_real_images_beat_a_constant_image_on_the_demo_vqa(mm_run):
    accuracy = demo_scores(mm_run[0], (VQA_REAL, VQA_CONSTANT), "accuracy")
    print(f"demo VQAv2 accuracy: {accuracy}")
    assert accuracy[VQA_REAL] - accuracy[VQA_CONSTANT] >= MIN_IMAGE_GAP, accuracy


def test_real_images_beat_a_constant_image_on_the_demo_captions(mm_run):
    cider = demo_scores(mm_run[0], (CAPTION_REAL, CAPTION_CONSTANT), "cider")
    print(f"demo caption CIDEr: {cider}")
    assert cider[CAPTION_REAL] - cider[CAPTION_CONSTANT] >= MIN_CIDER_GAP, cider
    mm_row = next(r for r in mm_run[2] if r["method"] == "mm_full")
    assert mm_row["Captions shapes cider"] and mm_row["Captions shapes_constant cider"], mm_row
