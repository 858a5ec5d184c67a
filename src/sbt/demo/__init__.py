"""The embedded tiny demo: LLaVA-format records, benchmark files and LLaMA backbones.

`python -m sbt.demo.llava`, `python -m sbt.demo.benchmarks` regenerate the committed files
under resources/demo/; `python -m sbt.demo.backbone` builds a backbone (the workflow's
build_tiny_backbone rule).
"""

from pathlib import Path

# The committed demo files of the checkout this package is installed from (editable).
DEMO_DIR = Path(__file__).resolve().parents[3] / "resources" / "demo"
