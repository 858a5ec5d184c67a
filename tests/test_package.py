"""The package's shape: every stage module is a CLI, and no module reaches outside it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sbt

PACKAGE = Path(sbt.__file__).resolve().parent
# The modules with a command line: the stages the rules run, and the helpers for people.
CLI_MODULES = sorted(
    ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    for path in PACKAGE.rglob("*.py")
    if 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")
)


def test_every_stage_module_has_a_help_page():
    rules = "\n".join(p.read_text() for p in (PACKAGE.parents[1] / "workflow").rglob("*.smk"))
    used = {m for m in CLI_MODULES if f"-m {m} " in rules or f"-m {m}\n" in rules}
    assert used >= {"sbt.convert", "sbt.train", "sbt.evaluate", "sbt.aggregate"}, used
    procs = {
        module: subprocess.Popen(
            [sys.executable, "-m", module, "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for module in CLI_MODULES
    }
    for module, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{module}: {err[-2000:]}"
        assert "usage:" in out, module


def test_no_module_edits_sys_path_or_imports_a_script():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "sys.path" not in text, path
        assert "import bench_" not in text and "import gpu_check" not in text, path
