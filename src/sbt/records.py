"""The schema of a LLaVA instruction record, shared by conversion and training.

One check (`find_problem`) decides which records are valid, so the converter and the
training loaders reject the same records with the same one-line error (file, record index,
id, field), training before any GPU time.
"""

from __future__ import annotations

import os

from sbt.common import input_error

HUMAN = "human"
ASSISTANT = "gpt"
ROLES = (HUMAN, ASSISTANT)

_KINDS = {type(None): "null", bool: "a boolean", dict: "an object", list: "a list", str: "a string"}


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for error messages users can map to the file."""
    for kind, name in _KINDS.items():  # bool before int: True is an int too
        if isinstance(value, kind):
            return name
    return "a number"


def record_id(record: object) -> str | int | None:
    """The record's id when it is usable in messages, else None."""
    value = record.get("id") if isinstance(record, dict) else None
    return value if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def find_problem(record: object) -> tuple[str | None, str] | None:
    """First schema problem of a record as ``(field, message)``, or None when it is valid.

    Checked: an object; ``id`` (optional) a string or integer; ``conversations`` a non-empty
    list of objects, each with ``from`` in ROLES and a string ``value``. Other keys are free.
    """
    if not isinstance(record, dict):
        return None, f"record must be an object, got {json_type(record)}"
    if "id" in record and record_id(record) is None:
        return "id", f"must be a string or an integer, got {json_type(record['id'])}"
    if "conversations" not in record:
        return "conversations", "missing"
    turns = record["conversations"]
    if not isinstance(turns, list):
        return "conversations", f"must be a list, got {json_type(turns)}"
    if not turns:
        return "conversations", "empty list"
    for number, turn in enumerate(turns):
        where = f"conversations[{number}]"
        if not isinstance(turn, dict):
            return where, f"turn must be an object, got {json_type(turn)}"
        if "from" not in turn:
            return f"{where}.from", "missing"
        if "value" not in turn:
            return f"{where}.value", "missing"
        if turn["from"] not in ROLES:
            return f"{where}.from", f"unknown role {turn['from']!r} (expected 'human' or 'gpt')"
        if not isinstance(turn["value"], str):
            return f"{where}.value", f"must be a string, got {json_type(turn['value'])}"
    return None


def check_record(record: object, index: int, path: str | os.PathLike) -> None:
    """Raise the one-line InputError for a record's first schema problem, if any."""
    problem = find_problem(record)
    if problem is not None:
        field_name, message = problem
        raise input_error(path, message, index=index, record_id=record_id(record), field=field_name)
