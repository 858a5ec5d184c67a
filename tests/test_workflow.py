"""The whole demo DAG through real `snakemake`, in a temporary copy of the repository.

One complete run is shared by the tests below; the rerun-scope tests then ask Snakemake
(dry run) what a config edit would redo, exactly as a researcher would.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from snakemake_run import output_of, planned_jobs, run_ok, write_config

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

BACKBONES = ("tiny-llama2", "tiny-vicuna")
N_BENCHMARKS = 7  # the demo config: TruthfulQA-MC, five ETHICS subsets, mmlu_study


def read_summary(workdir: Path) -> list[dict[str, str]]:
    with open(workdir / "results/tables/summary.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_demo_produces_tables_and_plots(demo_run):
    rows = read_summary(demo_run)
    runs = {(r["backbone"], r["method"]) for r in rows}
    assert runs == {(b, m) for b in BACKBONES for m in ("base", "full", "lora")}
    for suffix in ("csv", "md", "tex"):
        assert (demo_run / f"results/tables/summary.{suffix}").stat().st_size > 0
    assert list((demo_run / "results/plots").glob("*.png"))
    markdown = (demo_run / "results/tables/summary.md").read_text()
    assert all(backbone in markdown for backbone in BACKBONES)


def test_every_job_left_a_log_and_a_benchmark(demo_run):
    logs = list((demo_run / "logs").rglob("*.log"))
    benchmarks = list((demo_run / "benchmarks").rglob("*.tsv"))
    # convert 1, build 2, train 4, evaluate 6 runs x benchmarks, aggregate 1
    expected = 1 + 2 + 4 + 6 * N_BENCHMARKS + 1
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
        "evaluate_base": N_BENCHMARKS,
        "evaluate_run": 2 * N_BENCHMARKS,
        "aggregate": 1,
    }


def test_shot_count_change_reruns_only_that_benchmark(demo_run):
    extra = write_config(
        demo_run, "extra_shots.yaml", {"benchmarks": {"ethics_cm": {"num_fewshot": 1}}}
    )
    proc = run_ok(demo_run, "-n", "--configfile", "config/config.yaml", extra)
    assert planned_jobs(proc) == {"evaluate_base": 2, "evaluate_run": 4, "aggregate": 1}


def test_learning_rate_change_reruns_only_that_backbone(demo_run):
    extra = write_config(
        demo_run,
        "extra_lr.yaml",
        {"backbones": {"tiny-vicuna": {"training": {"full": {"learning_rate": 0.005}}}}},
    )
    proc = run_ok(demo_run, "-n", "--configfile", "config/config.yaml", extra)
    assert planned_jobs(proc) == {"train": 1, "evaluate_run": N_BENCHMARKS, "aggregate": 1}
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
    assert planned_jobs(proc) == {"train": 1, "evaluate_run": N_BENCHMARKS, "aggregate": 1}
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
        "evaluate_run": 2 * N_BENCHMARKS,
        "aggregate": 1,
    }
    assert "lora.merged" in output_of(proc)


def test_log_samples_reruns_that_benchmark_and_keeps_every_answer(demo_run):
    extra = write_config(
        demo_run, "extra_samples.yaml", {"benchmarks": {"ethics_cm": {"log_samples": True}}}
    )
    proc = run_ok(demo_run, "-n", "-p", "--configfile", "config/config.yaml", extra)
    assert planned_jobs(proc) == {"evaluate_base": 2, "evaluate_run": 4, "aggregate": 1}
    assert "--log-samples results/eval/tiny-llama2/base/ethics_cm.samples.jsonl" in output_of(proc)
