"""The whole demo DAG through real `snakemake`, in a temporary copy of the repository."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COPIED = ("workflow", "scripts", "config", "profiles", "resources", "envs", "requirements.txt")

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def copy_repo(dest: Path) -> Path:
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """One complete demo run, shared by the tests that inspect its outputs."""
    workdir = copy_repo(tmp_path_factory.mktemp("demo"))
    snakemake(workdir, "--profile", "profiles/local", "--cores", "2")
    return workdir


def read_summary(workdir: Path) -> list[dict[str, str]]:
    with open(workdir / "results/tables/summary.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_demo_produces_tables_and_plots(demo_run):
    rows = read_summary(demo_run)
    runs = {(r["backbone"], r["method"]) for r in rows}
    for backbone in ("tiny-llama2", "tiny-vicuna"):
        for method in ("base", "full", "lora"):
            assert (backbone, method) in runs
    for suffix in ("csv", "md", "tex"):
        assert (demo_run / f"results/tables/summary.{suffix}").stat().st_size > 0
    assert list((demo_run / "results/plots").glob("*.png"))
    markdown = (demo_run / "results/tables/summary.md").read_text()
    assert "tiny-llama2" in markdown and "|" in markdown


def test_every_rule_left_a_log_and_a_benchmark(demo_run):
    logs = list((demo_run / "logs").rglob("*.log"))
    benchmarks = list((demo_run / "benchmarks").rglob("*.tsv"))
    # convert 1, build 2, train 4, evaluate 6 runs x 6 benchmarks, aggregate 1
    assert len(logs) == len(benchmarks) == 1 + 2 + 4 + 36 + 1


def test_second_run_has_nothing_to_do(demo_run):
    proc = snakemake(demo_run, "--profile", "profiles/local", "--cores", "2", "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr
