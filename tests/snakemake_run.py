"""Run real `snakemake` on a temporary copy of the repository (shared by workflow tests)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from sbt.demo import copy_checkout

REPO = Path(__file__).resolve().parents[1]


def copy_repo(dest: Path) -> Path:
    """The files a user's clone holds that the workflow reads (no results, no venv)."""
    return copy_checkout(dest)


def snakemake_env(env: dict | None = None) -> dict:
    """This test's environment with its Python first on PATH (for the jobs' `python`)."""
    full_env = dict(os.environ)
    full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env['PATH']}"
    full_env.setdefault("OMP_NUM_THREADS", "1")
    full_env.update(env or {})
    return full_env


def snakemake(
    workdir: Path, *args: str, env: dict | None = None, timeout: float = 1800
) -> subprocess.CompletedProcess:
    """Run snakemake from this test's Python environment; never raises on failure."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        env=snakemake_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_snakemake(
    workdir: Path, *args: str, env: dict | None = None, **popen: object
) -> subprocess.Popen:
    """Snakemake in the background, in the same environment; `popen` goes to Popen."""
    return subprocess.Popen(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        env=snakemake_env(env),
        **popen,
    )


def output_of(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def planned_jobs(proc: subprocess.CompletedProcess) -> Counter:
    """Rule -> job count from a dry run's 'Job stats' table (empty when nothing to do)."""
    counts: Counter = Counter()
    text = output_of(proc)
    if "Job stats:" not in text:
        return counts
    table = text.split("Job stats:", 1)[1]
    for line in table.splitlines()[3:]:
        match = re.fullmatch(r"(\S+)\s+(\d+)", line.strip())
        if not match:
            break
        if match.group(1) not in ("total", "all"):
            counts[match.group(1)] = int(match.group(2))
    return counts


def write_config(workdir: Path, name: str, overrides: dict) -> str:
    """A config file beside the demo's, merged over it by `--configfile A B`."""
    path = workdir / "config" / name
    path.write_text(yaml.safe_dump(overrides, sort_keys=False))
    return f"config/{name}"


def run_ok(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    proc = snakemake(workdir, *args)
    if proc.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{output_of(proc)[-10000:]}")
    return proc


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """One complete demo run (the local profile), shared by the workflow-level tests."""
    workdir = copy_repo(tmp_path_factory.mktemp("demo"))
    run_ok(workdir, "--profile", "profiles/local", "--cores", "2")
    return workdir
