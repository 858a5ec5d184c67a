"""The embedded tiny demo: LLaVA-format records, benchmark files and LLaMA backbones.

`python -m sbt.demo.llava`, `python -m sbt.demo.benchmarks` regenerate the committed files
under resources/demo/; `python -m sbt.demo.backbone` builds a backbone (the workflow's
build_tiny_backbone rule).
"""

import shutil
from pathlib import Path

# The checkout this package is installed from (editable), and its committed demo files.
CHECKOUT = Path(__file__).resolve().parents[3]
DEMO_DIR = CHECKOUT / "resources" / "demo"
# What a user's clone holds that the workflow reads (no results, no venv).
CHECKOUT_FILES = (
    *("workflow", "src", "scripts", "config", "profiles", "resources", "envs"),
    *("pyproject.toml", "requirements.txt"),
)


def copy_checkout(dest: Path) -> Path:
    """A copy of the checkout's workflow files at `dest`, to run snakemake in apart."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in CHECKOUT_FILES:
        src = CHECKOUT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest
