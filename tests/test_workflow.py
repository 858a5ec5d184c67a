"""The whole demo DAG through real `snakemake`, in a temporary copy of the repository.

One complete run is shared by the tests below; the rerun-scope tests then ask Snakemake
(dry run) what a config edit would redo, exactly as a researcher would. The demo evaluates
per run (evaluation.group: run): evaluate_base/evaluate_run are one job per run, and
result_base/result_run one local step per run x benchmark that writes its result JSON.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from snakemake_run import output_of, planned_jobs, run_ok, snakemake, write_config

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

BACKBONES = ("tiny-llama2", "tiny-vicuna")
N_BENCHMARKS = 7  # the demo config: TruthfulQA-MC, five ETHICS subsets, mmlu_study
RUNS = 8  # two backbones: base, full, lora, mm_full (the multimodal arm, shapes demo)
TRAINED = 6  # full, lora, mm_full per backbone
BASE = "results/eval/tiny-llama2/base"


# A benchmark edited for every run: each run's evaluation job, every run x benchmark result
# step (cheap, local), the tables.
RERUN_EVERY_RUN = {
    "evaluate_base": 2,
    "evaluate_run": TRAINED,
    "result_base": 2 * N_BENCHMARKS,
    "result_run": TRAINED * N_BENCHMARKS,
    "aggregate": 1,
}
ONE_RETRAINED_RUN = {"train": 1, "evaluate_run": 1, "result_run": N_BENCHMARKS, "aggregate": 1}


def read_summary(workdir: Path) -> list[dict[str, str]]:
    with open(workdir / "results/tables/summary.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_demo_produces_tables_and_plots(demo_run):
    rows = read_summary(demo_run)
    runs = {(r["backbone"], r["method"]) for r in rows}
    assert runs == {(b, m) for b in BACKBONES for m in ("base", "full", "lora", "mm_full")}
    for suffix in ("csv", "md", "tex"):
        assert (demo_run / f"results/tables/summary.{suffix}").stat().st_size > 0
    assert list((demo_run / "results/plots").glob("*.png"))
    markdown = (demo_run / "results/tables/summary.md").read_text()
    assert all(backbone in markdown for backbone in BACKBONES)


def test_every_job_left_a_log_and_a_benchmark(demo_run):
    logs = list((demo_run / "logs").rglob("*.log"))
    benchmarks = list((demo_run / "benchmarks").rglob("*.tsv"))
    # convert 1, build 2, train 4, evaluate 8 runs, results 8 runs x benchmarks, aggregate 1;
    # the multimodal arm: shapes_demo 1, build_tiny_tower 2, mm_pretrain 2, mm_finetune 2,
    # evaluate_mm 2 mm runs x 6 mm benchmarks
    expected = 1 + 2 + 4 + RUNS + RUNS * N_BENCHMARKS + 1 + 1 + 2 + 2 + 2 + 2 * 6
    assert len(logs) == len(benchmarks) == expected


def test_job_logs_read_as_text_with_progress(demo_run):
    """No carriage-return progress bars; training logs say elapsed time and ETA."""
    for log in (demo_run / "logs").rglob("*.log"):
        assert "\r" not in log.read_text(errors="replace"), log
    train_log = (demo_run / "logs/train/tiny-vicuna/textonly_demo/full.log").read_text()
    assert re.search(r"step \d+/\d+ loss \S+ lr \S+ elapsed \d+:\d\d:\d\d eta ", train_log)


def test_second_run_has_nothing_to_do(demo_run):
    proc = run_ok(demo_run, "--profile", "profiles/local", "-n")
    assert "Nothing to be done" in output_of(proc)


def test_new_backbone_plans_only_its_own_jobs(demo_run):
    extra = write_config(
        demo_run,
        "extra_backbone.yaml",
        {
            "backbones": {
                "tiny-third": {"model": "tiny", "template": "llava_v1", "dtype": "float32"}
            }
        },
    )
    proc = run_ok(demo_run, "-n", "--configfile", "config/config.yaml", extra)
    assert planned_jobs(proc) == {
        "build_tiny_backbone": 1,
        "train": 2,
        "evaluate_base": 1,
        "evaluate_run": 2,
        "result_base": N_BENCHMARKS,
        "result_run": 2 * N_BENCHMARKS,
        "aggregate": 1,
    }


def test_shot_count_change_reruns_only_that_benchmark(demo_run):
    """Each run's evaluation job reruns (its request cache answers every other benchmark:
    test_shot_change_asks_the_model_only_for_that_benchmark), then the runs' local result
    steps; nothing else."""
    extra = write_config(
        demo_run, "extra_shots.yaml", {"benchmarks": {"ethics_cm": {"num_fewshot": 1}}}
    )
    proc = run_ok(demo_run, "-n", "--configfile", "config/config.yaml", extra)
    assert planned_jobs(proc) == RERUN_EVERY_RUN


def test_learning_rate_change_reruns_only_that_backbone(demo_run):
    extra = write_config(
        demo_run,
        "extra_lr.yaml",
        {"backbones": {"tiny-vicuna": {"training": {"full": {"learning_rate": 0.005}}}}},
    )
    proc = run_ok(demo_run, "-n", "--configfile", "config/config.yaml", extra)
    assert planned_jobs(proc) == ONE_RETRAINED_RUN
    assert "results/models/tiny-vicuna/textonly_demo/full" in output_of(proc)


@pytest.mark.parametrize(
    "change",
    [{"num_gpus": 1}, {"global_batch_size": 8}],
    ids=["num_gpus", "global_batch_size"],
)
def test_global_batch_change_reruns_only_that_training(demo_run, change):
    """The global batch follows num_gpus (or is stated): either edit retrains that run."""
    extra = write_config(
        demo_run,
        "extra_batch.yaml",
        {"backbones": {"tiny-vicuna": {"training": {"lora": change}}}},
    )
    proc = run_ok(demo_run, "-n", "--configfile", "config/config.yaml", extra)
    assert planned_jobs(proc) == ONE_RETRAINED_RUN
    assert "results/models/tiny-vicuna/textonly_demo/lora" in output_of(proc)


def test_html_report_holds_tables_and_plots(demo_run):
    run_ok(demo_run, "--report", "results/report.html")
    html = (demo_run / "results/report.html").read_text(errors="replace")
    assert "summary.csv" in html
    assert "truthfulqa.png" in html and "ethics.png" in html
    assert "benchmark family <strong>ethics</strong>" in html


def test_merged_lora_option_plans_merges_and_reevaluates_only_lora(demo_run):
    extra = write_config(demo_run, "extra_merged.yaml", {"evaluation": {"merged_lora": True}})
    proc = run_ok(demo_run, "-n", "--configfile", "config/config.yaml", extra)
    assert planned_jobs(proc) == {
        "merge_lora": 2,
        "evaluate_run": 2,
        "result_run": 2 * N_BENCHMARKS,
        "aggregate": 1,
    }
    assert "lora.merged" in output_of(proc)


def test_log_samples_reruns_that_benchmark_and_keeps_every_answer(demo_run):
    extra = write_config(
        demo_run, "extra_samples.yaml", {"benchmarks": {"ethics_cm": {"log_samples": True}}}
    )
    proc = run_ok(demo_run, "-n", "-p", "--configfile", "config/config.yaml", extra)
    assert planned_jobs(proc) == RERUN_EVERY_RUN
    assert "--log-samples results/eval/tiny-llama2/base/ethics_cm.samples.jsonl" in output_of(proc)


def test_per_benchmark_unit_plans_a_job_per_run_and_benchmark(demo_run):
    extra = write_config(demo_run, "extra_unit.yaml", {"evaluation": {"group": "benchmark"}})
    proc = run_ok(demo_run, "-n", "-p", "--configfile", "config/config.yaml", extra)
    jobs = planned_jobs(proc)
    assert jobs == {
        "evaluate_base": 2 * N_BENCHMARKS,
        "evaluate_run": TRAINED * N_BENCHMARKS,
        "aggregate": 1,
    }
    text = output_of(proc)
    assert "--cache-dir results/cache/lm_eval/tiny-llama2/base/ethics_cm --output" in text
    assert "Evaluation estimate: 56 evaluation jobs, 56 model loads" in text


def clone(demo_run: Path, dest: Path) -> Path:
    shutil.copytree(demo_run, dest, symlinks=True)
    return dest


def test_both_evaluation_units_give_the_same_numbers(demo_run, tmp_path):
    workdir = clone(demo_run, tmp_path / "run")
    extra = write_config(workdir, "extra_unit.yaml", {"evaluation": {"group": "benchmark"}})
    names = sorted(p.name for p in (demo_run / BASE).glob("*.json"))
    assert len(names) == N_BENCHMARKS
    proc = run_ok(
        workdir, "--cores", "2", "--configfile", "config/config.yaml", extra,
        "--", *(f"{BASE}/{name}" for name in names),
    )  # fmt: skip
    assert planned_jobs(proc) == {"evaluate_base": N_BENCHMARKS}
    for name in names:
        per_run = json.loads((demo_run / BASE / name).read_text())
        alone = json.loads((workdir / BASE / name).read_text())
        assert alone["provenance"]["evaluation"]["unit"] == "benchmark"
        assert per_run["provenance"]["evaluation"]["unit"] == "run"
        for key in ("metrics", "results", "n_samples", "n_shot", "versions", "config"):
            assert alone[key] == per_run[key], (name, key)


def test_shot_change_asks_the_model_only_for_that_benchmark(demo_run, tmp_path):
    """The run's job reruns; lm-eval's request cache (results/cache/lm_eval/) answers every
    benchmark but the edited one, and the model setting nothing new needs never loads."""
    workdir = clone(demo_run, tmp_path / "run")
    files = {"test": "resources/demo/benchmarks/ethics_cm.jsonl"}
    files["train"] = "resources/demo/benchmarks/ethics_cm_train.jsonl"
    edit = {"benchmarks": {"ethics_cm": {"num_fewshot": 1, "data_files": files}}}
    extra = write_config(workdir, "extra_shots.yaml", edit)
    target = f"{BASE}/ethics_cm.json"
    proc = run_ok(
        workdir, "--cores", "2", "--configfile", "config/config.yaml", extra, "--", target
    )
    assert planned_jobs(proc) == {"evaluate_base": 1, "result_base": 1}
    assert json.loads((workdir / target).read_text())["n_shot"] == {"ethics_cm": 1}
    records = workdir / "results/lm_eval/tiny-llama2/base"
    for record in sorted(records.glob("*.json")):
        requests = json.loads(record.read_text())["result"]["provenance"]["evaluation"]["requests"]
        if record.stem == "ethics_cm":
            assert requests["model"] == requests["total"] > 0
        else:
            assert requests["model"] == 0 and requests["from_cache"] == requests["total"] > 0
    log = (workdir / "logs/lm_eval/tiny-llama2/base.log").read_text()
    assert log.count("[evaluate] loading ") == 1  # not mmlu_study's own model setting
    dry = snakemake(workdir, "-n", "--configfile", "config/config.yaml", extra)
    # The other runs still have the old ethics_cm: their jobs are next.
    assert planned_jobs(dry)["evaluate_base"] == 1
    assert planned_jobs(dry)["evaluate_run"] == TRAINED
