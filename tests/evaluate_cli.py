"""scripts/evaluate.py as a module for the tests that call its `main` in-process.

Loaded from its file under another name, once: `evaluate` is also Hugging Face's package,
which some lm-eval tasks import.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "evaluate.py"


def _load():
    spec = importlib.util.spec_from_file_location("sbt_evaluate_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


evaluate_cli = _load()
