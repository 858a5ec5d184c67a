"""Write the parts of the config schema and config/README.md that the code declares.

Nothing is stated twice: the training settings (`sbt.train_config.TrainConfig` and its
`LoraSettings`, with the rules `sbt.settings` reads from their field metadata) become the schema's `$defs/lora` and `$defs/hparams` and the hyperparameter
table of config/README.md; the per-backbone settings (trust_remote_code, tokenizer_legacy,
allow_pickle_weights) their entries under `backbones`; the template registry
(`sbt.templates.TEMPLATES`) the `template` enum. Each part sits between `BEGIN GENERATED`
and `END GENERATED` markers; the rest of both files is written by hand.

    python scripts/gen_config_docs.py          # rewrite the generated parts
    python scripts/gen_config_docs.py --check  # exit 1 when a committed copy is stale

tests/test_config_docs.py runs the check.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import textwrap
from pathlib import Path

import yaml

from sbt.settings import BOOL_OR_AUTO, accepted_types, settings_of
from sbt.templates import TEMPLATE_NAMES
from sbt.train_config import LoraSettings, TrainConfig

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
README = REPO / "config" / "README.md"
PAPER = REPO / "config" / "paper.yaml"
SOURCE = "written by scripts/gen_config_docs.py; do not edit"
WIDTH = 92
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.+/-]*$")
_YAML_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}


def describe(f: dataclasses.Field) -> str:
    """A setting's help text, with what its metadata says about reruns and resumes."""
    text = f.metadata["help"]
    if f.metadata.get("launch"):
        text += (
            " A launch setting (never read by the Trainer), recorded with the run: editing it"
            " reruns training."
        )
    if f.metadata.get("resume_safe"):
        text += (
            " Not compared when resuming: a run that differs only here continues the checkpoints."
        )
    return text


def field_schema(cls, f: dataclasses.Field, *, default: bool = False) -> dict:
    """The JSON Schema of one setting: from its type, choices and bounds, then the keywords
    only the workflow config adds (`schema` metadata)."""
    rules, types = f.metadata, accepted_types(cls, f.name)
    if dict in types:  # the nested LoraSettings
        return {"$ref": "#/$defs/lora"}
    names = {int: "integer", bool: "boolean", str: "string", list: "array", type(None): "null"}
    if float in types:
        out = {"type": "number"}
    elif rules.get("choices") == BOOL_OR_AUTO:
        out = {"oneOf": [{"type": "boolean"}, {"const": "auto"}]}
    else:
        listed = [names[t] for t in types]
        out = {"type": listed[0] if len(listed) == 1 else listed}
    if rules.get("choices") and rules["choices"] != BOOL_OR_AUTO:
        out["enum"] = list(rules["choices"])
    bounds = {"minimum": "minimum", "maximum": "maximum", "below": "exclusiveMaximum"}
    limits = {bounds[k]: rules[k] for k in bounds if rules.get(k) is not None}
    if "special" in rules:  # max_steps' -1 below the range; the exact rule: TrainConfig's
        limits["minimum"] = min(rules["special"], limits["minimum"])
    out |= limits
    extra = rules.get("schema", {})
    if "oneOf" in extra:  # the config spells the type out itself
        out.pop("type", None)
    out |= extra
    if default:  # Snakemake fills it in
        out["default"] = f.default
        out["description"] = describe(f)
    else:
        out["description"] = f"{describe(f)} Study value: {_value(f.default)}."
    return out


def schema_parts() -> dict[str, dict]:
    fields = sorted(settings_of(TrainConfig, "training"), key=lambda f: f.name == "lora")
    hparams = {f.name: field_schema(TrainConfig, f) for f in fields}  # lora last
    lora = {f.name: field_schema(LoraSettings, f) for f in settings_of(LoraSettings)}
    return {
        "hparams": {
            "lora": {
                "type": "object",
                "description": "LoRA adapter settings (peft LoraConfig), for method lora.",
                "additionalProperties": False,
                "properties": lora,
            },
            "hparams": {
                "type": "object",
                "description": "Training hyperparameters for one method. Keys left out take the"
                " study's values (config/README.md lists them); per-backbone overrides are"
                " merged key by key.",
                "additionalProperties": False,
                "properties": hparams,
            },
        },
        "template": {
            "template": {
                "type": "string",
                "enum": list(TEMPLATE_NAMES),
                "description": "Conversation template (sbt.templates; docs/training.md shows"
                " each one's format).",
            }
        },
        "backbone_settings": {
            f.name: field_schema(TrainConfig, f, default=True)
            for f in settings_of(TrainConfig, "backbone")
        },
    }


def _scalar(value) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if _PLAIN.match(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value)


def _flow(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return _scalar(value)


def yaml_lines(mapping: dict, indent: int) -> list[str]:
    """Block YAML in the schema's hand-written style: descriptions folded (`>-`), lists
    and their items in flow style."""
    pad, lines = " " * indent, []
    for key, value in mapping.items():
        if isinstance(value, dict):
            lines += [f"{pad}{key}:", *yaml_lines(value, indent + 2)]
        elif key == "description" and _plain_line(f"{pad}{key}: {value}"):
            lines.append(f"{pad}{key}: {value}")
        elif key == "description":
            wrapped = textwrap.wrap(value, WIDTH - indent - 2, break_on_hyphens=False)
            lines += [f"{pad}{key}: >-", *(f"{pad}  {line}" for line in wrapped)]
        elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
            lines += [f"{pad}{key}:", *(f"{pad}  - {_flow(v)}" for v in value)]
        else:
            lines.append(f"{pad}{key}: {_flow(value)}")
    return lines


def _plain_line(line: str) -> bool:
    """Whether `key: text` fits on one line with the text as a plain YAML scalar."""
    text = line.split(": ", 1)[1]
    risky = ": " in text or " #" in text or text.endswith(":") or text[0] in "-?:,[]{}#&*!|>'\"%@`"
    return len(line) <= WIDTH and not risky


def yaml_block(mapping: dict, indent: int) -> str:
    lines = yaml_lines(mapping, indent)
    text = "\n".join(lines) + "\n"
    if yaml.safe_load(textwrap.dedent(text)) != mapping:  # the writer must not lose anything
        raise AssertionError(f"YAML for {list(mapping)} does not read back as written")
    return text


def _value(value) -> str:
    if isinstance(value, float):
        return repr(value).replace("e-0", "e-")
    return _flow(value) if not isinstance(value, str) else value


def _paper_note(path: list[str], default) -> str:
    """` (paper config: X)` where config/paper.yaml trains with another value."""
    training = yaml.safe_load(PAPER.read_text(encoding="utf-8"))["training"]
    values = {}
    for method, layer in training.items():
        for key in path:
            layer = layer.get(key, {}) if isinstance(layer, dict) else {}
        values[method] = default if layer == {} else layer
    differ = {m: v for m, v in values.items() if v != default}
    if not differ:
        return ""
    if len(differ) == len(values) and len({json.dumps(v) for v in differ.values()}) == 1:
        return f" (paper config: `{_value(next(iter(differ.values())))}`)"
    return " (paper config: " + ", ".join(f"`{_value(v)}` for {m}" for m, v in differ.items()) + ")"


def _row(cls, f: dataclasses.Field, prefix: str = "") -> str:
    meaning = describe(f)
    choices = f.metadata.get("choices") or f.metadata.get("schema", {}).get("enum")
    if choices and choices != BOOL_OR_AUTO and not all(f"`{c}`" in meaning for c in choices):
        meaning += " One of " + ", ".join(f"`{c}`" for c in choices) + "."
    default = getattr(cls(), f.name)
    study = f"`{_value(default)}`" + _paper_note([*prefix.split(".")[:-1], f.name], default)
    return f"| `{prefix}{f.name}` | {study} | {meaning} |"


def readme_table() -> str:
    rows = ["| key | study | meaning |", "|---|---|---|"]
    for f in settings_of(TrainConfig, "training"):
        if f.name != "lora":
            rows.append(_row(TrainConfig, f))
    rows += [_row(LoraSettings, f, "lora.") for f in settings_of(LoraSettings)]
    return "\n".join(rows) + "\n"


def replace_block(text: str, name: str, body: str, comment: tuple[str, str]) -> str:
    """`text` with the lines between the BEGIN/END GENERATED markers of `name` replaced."""
    open_, close = comment
    pattern = re.compile(
        rf"^([ \t]*){re.escape(open_)}BEGIN GENERATED {name}\b.*?\n"
        rf"(.*?)^[ \t]*{re.escape(open_)}END GENERATED {name}\b.*?\n",
        re.M | re.S,
    )
    match = pattern.search(text)
    if not match:
        raise SystemExit(f"no BEGIN/END GENERATED {name} markers found")
    pad = match.group(1)
    block = (
        f"{pad}{open_}BEGIN GENERATED {name}: {SOURCE}{close}\n"
        f"{body}"
        f"{pad}{open_}END GENERATED {name}{close}\n"
    )
    return text[: match.start()] + block + text[match.end() :]


def generated() -> dict[Path, str]:
    """Each generated file's full text as it should be committed."""
    schema = SCHEMA.read_text(encoding="utf-8")
    indents = {"hparams": 2, "template": 8, "backbone_settings": 8}
    for name, part in schema_parts().items():
        schema = replace_block(schema, name, yaml_block(part, indents[name]), ("# ", ""))
    readme = replace_block(
        README.read_text(encoding="utf-8"), "hparams", readme_table(), ("<!-- ", " -->")
    )
    return {SCHEMA: schema, README: readme}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    stale = [path for path, text in generated().items() if path.read_text("utf-8") != text]
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(REPO)} (run python scripts/gen_config_docs.py)")
        return 1 if stale else 0
    for path, text in generated().items():
        if path in stale:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
