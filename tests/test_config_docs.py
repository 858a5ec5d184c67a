"""What is written from the code is up to date: the schema's training settings and template
names, config/README.md's hyperparameter table (scripts/gen_config_docs.py)."""

from __future__ import annotations

import re

import gen_config_docs
import yaml

from sbt import lmeval_bench, merge_lora, train_config
from sbt.settings import settings_of
from sbt.templates import TEMPLATE_NAMES
from sbt.train_config import TrainConfig
from sbt.training import METHODS


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


def test_every_dtype_list_in_the_schema_is_a_stage_s_choices():
    """The schema's dtype enums (hand-written) name exactly what the stages accept."""
    accepted = [set(lmeval_bench.DTYPES), set(merge_lora.DTYPES), set(train_config.DTYPES)]
    schema = yaml.safe_load(gen_config_docs.SCHEMA.read_text(encoding="utf-8"))
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key.endswith("dtype") and isinstance(value, dict) and "enum" in value:
                    found.append({v for v in value["enum"] if v is not None})
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    assert len(found) >= 5
    for choices in found:
        assert choices in accepted, choices


def test_the_schema_s_methods_are_training_s():
    schema = yaml.safe_load(gen_config_docs.SCHEMA.read_text(encoding="utf-8"))
    assert schema["$defs"]["method"]["enum"] == list(METHODS)


def test_a_backbone_s_methods_are_training_s_and_the_multimodal_arm_s():
    from sbt.runs import MM_METHODS

    schema = yaml.safe_load(gen_config_docs.SCHEMA.read_text(encoding="utf-8"))
    backbone = schema["properties"]["backbones"]["additionalProperties"]["properties"]
    assert backbone["methods"]["items"]["enum"] == [*METHODS, *MM_METHODS]
