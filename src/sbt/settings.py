"""Settings declared as dataclass fields, with their rules in the field metadata.

`setting(default, help, **rules)` makes such a field; `check_types` and `check_values`
enforce the rules on a dataclass's values (sbt.train_config.TrainConfig and LoraSettings);
scripts/gen_config_docs.py turns the same declarations into JSON Schema and Markdown.

Metadata: `help`; `choices`; `minimum` / `maximum` / `below` (an exclusive maximum) and
`special` (one value allowed outside them, max_steps' -1), with `rule` wording them in
errors where the generic words do not fit; `schema`: JSON Schema keywords only the workflow
config adds (it asks more than train.py, which tests drive with, e.g., learning_rate 0);
`launch`: read by the workflow to size and start the job, never by the Trainer, yet
recorded with the run; `resume_safe`: does not change the trained weights, so it is left
out of the checkpoint signature (a resumed run may differ in it); `level`: "backbone" for
the keys set per backbone (backbones.<name>.<key>), not per method.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from collections.abc import Mapping
from dataclasses import field
from types import UnionType

BOOL_OR_AUTO = ("auto",)  # with a bool annotation: true, false or "auto"


class SettingError(ValueError):
    """A setting that is unknown, of the wrong type or out of range (one line); `key` is
    the setting's dotted name where one is to blame."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def setting(default, help: str, **rules) -> dataclasses.Field:
    """A field with its help text and rules (metadata keys: see the module docstring)."""
    metadata = {"help": help, **rules}
    if isinstance(default, (dict, list)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: default, metadata=metadata)
    return field(default=default, metadata=metadata)


def settings_of(cls, level: str | None = None) -> list[dataclasses.Field]:
    """The fields of `cls` (of one `level`, "training" or "backbone", when given)."""
    return [
        f
        for f in dataclasses.fields(cls)
        if level is None or f.metadata.get("level", "training") == level
    ]


def accepted_types(cls, name: str) -> tuple[type, ...]:
    """Python types a value of field `name` may have in a JSON object (float: int too)."""
    hint = _hints(cls)[name]
    members = typing.get_args(hint) if isinstance(hint, UnionType) else (hint,)
    types = []
    for member in members:
        origin = typing.get_origin(member) or member
        if origin is float:
            types += [int, float]
        elif dataclasses.is_dataclass(origin):
            types.append(dict)
        else:
            types.append(origin)
    return tuple(types)


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def check_types(cls, values: Mapping, where: str) -> None:
    known = [f.name for f in dataclasses.fields(cls)]
    for key, value in values.items():
        if key not in known:
            raise SettingError(
                f"unknown key {where}{key!r}; valid keys: {', '.join(known)}", f"{where}{key}"
            )
        types = accepted_types(cls, key)
        wrong_bool = isinstance(value, bool) and bool not in types
        if wrong_bool or not isinstance(value, types):
            names = "/".join(t.__name__ for t in types)
            raise SettingError(
                f"{where}{key!r} must be {names}, got {json.dumps(value)}", f"{where}{key}"
            )


def check_values(config, where: str) -> None:
    """Choices and ranges of every field, in field order (nested settings after their key)."""
    for f in dataclasses.fields(config):
        value, rules = getattr(config, f.name), f.metadata
        if dataclasses.is_dataclass(value):
            check_values(value, f"{where}{f.name}.")
            continue
        if _breaks(value, rules):
            key = f"{where}{f.name}"
            raise SettingError(f"'{key}' must be {rule_text(rules)}", key)


def _breaks(value, rules: Mapping) -> bool:
    if isinstance(value, list):  # target_modules: a list of names
        return not all(isinstance(item, str) for item in value)
    if isinstance(value, str):
        return bool(rules.get("choices")) and value not in rules["choices"]
    if value is None or isinstance(value, bool) or value == rules.get("special", object()):
        return False
    low, high, below = rules.get("minimum"), rules.get("maximum"), rules.get("below")
    return (
        (low is not None and value < low)
        or (high is not None and value > high)
        or (below is not None and value >= below)
    )


def rule_text(rules: Mapping) -> str:
    """`one of a, b`, `true, false or "auto"`, `at least 1`, `in [0, 1)`, or the field's rule."""
    if rules.get("rule"):
        return rules["rule"]
    choices = rules.get("choices")
    if choices == BOOL_OR_AUTO:
        return 'true, false or "auto"'
    if choices:
        return f"one of {', '.join(choices)}"
    low, high, below = rules.get("minimum"), rules.get("maximum"), rules.get("below")
    if high is not None or below is not None:
        return f"in [{low}, {high}]" if high is not None else f"in [{low}, {below})"
    return f"at least {low}"
