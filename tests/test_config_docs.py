"""What is written from the code is up to date: the schema's training settings and template
names, config/README.md's hyperparameter table (scripts/gen_config_docs.py)."""

from __future__ import annotations

import re

import gen_config_docs

from sbt.settings import settings_of
from sbt.templates import TEMPLATE_NAMES
from sbt.train_config import TrainConfig


def test_generated_parts_are_up_to_date():
    for path, text in gen_config_docs.generated().items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.name} is stale: run python scripts/gen_config_docs.py and commit the result"
        )


def backbone_rows() -> dict[str, list[str]]:
    """config/README.md's backbones table: key -> its cells."""
    text = gen_config_docs.README.read_text(encoding="utf-8")
    table = text.split("## `backbones`", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        match = re.fullmatch(r"`(\w+)`", cells[0]) if line.startswith("|") else None
        if match:
            rows[match.group(1)] = cells
    return rows


def test_hand_written_backbone_rows_agree_with_the_code():
    """The rows the generator leaves alone still name every template and the defaults."""
    rows = backbone_rows()
    for name in TEMPLATE_NAMES:
        assert f"`{name}`" in rows["template"][2], name
    defaults = TrainConfig()
    for f in settings_of(TrainConfig, "backbone"):
        assert rows[f.name][1] == f"`{gen_config_docs._value(getattr(defaults, f.name))}`"
