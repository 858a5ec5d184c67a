"""The train jobs of the demo and the paper grid, pinned: a refactor that changed a command
line (the launcher, the template, the hparams JSON that Snakemake records as a params)
would rerun every training. Update tests/golden/train_commands/ only for a deliberate
change of the recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
from snakemake_run import copy_repo, output_of, snakemake

pytestmark = pytest.mark.workflow

GOLDEN = Path(__file__).parent / "golden" / "train_commands"
PREFIX = "Shell command: "


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_repo(tmp_path_factory.mktemp("train_commands"))


@pytest.mark.parametrize(("name", "configfile"), [("demo", "config.yaml"), ("paper", "paper.yaml")])
def test_train_commands_are_unchanged(workdir, name, configfile):
    proc = snakemake(workdir, "-n", "-p", "--configfile", f"config/{configfile}", timeout=300)
    assert proc.returncode == 0, output_of(proc)[-3000:]
    commands = sorted(
        line.removeprefix(PREFIX)
        for line in output_of(proc).splitlines()
        if line.startswith(PREFIX) and " -m sbt.train " in line
    )
    expected = (GOLDEN / f"{name}.txt").read_text(encoding="utf-8").splitlines()
    assert commands == expected
