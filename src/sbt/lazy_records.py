"""LLaVA records read without building all of them as Python objects.

`read_records` returns what `sbt.tokenize_chat.load_records` returns, with the same errors,
as a sequence that keeps the data file's bytes and decodes a record when it is asked for:
the bytes of a JSON file are a fraction of its records as Python objects (dicts and
strings: about four times the file), and `sbt.train_data` tokenizes a batch at a time.
Where the file is not a plain JSON list (or JSON Lines) of objects, or any record is not
JSON, load_records reads the file itself and raises its error.

Written by hand because `datasets`' JSON loader parses a JSON list whole into Python
objects first: reading 80,000 records took 1,696 MiB with `Dataset.from_json` against 177
MiB here (`scripts/bench_train.py --measure data`, docs/training.md).
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Sequence
from pathlib import Path

from sbt.common import InputError
from sbt.records import check_record
from sbt.tokenize_chat import load_records

# A JSON string (escapes included) or a bracket: enough to find where each object of a
# JSON list starts and ends without building it (no UTF-8 character contains " or \).
_JSON_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[][{}]')
_JSON_SPACE = b" \t\n\r"
# Line breaks besides \n at which read_json_file's str.splitlines also splits JSON Lines.
_OTHER_LINE_BREAKS = re.compile(rb"[\r\x0b\x0c\x1c\x1d\x1e]|\xc2\x85|\xe2\x80[\xa8\xa9]")


def _list_spans(raw: bytes) -> list[tuple[int, int]] | None:
    """Byte spans of the objects of a JSON list; None where `raw` is anything else."""
    spans, depth, start, opening = [], 0, 0, None
    for token in _JSON_TOKENS.finditer(raw):
        char = raw[token.start()]
        if char == ord('"'):
            if depth < 2:  # a string outside every record
                return None
        elif char in b"[{":
            if depth == 0:
                if char != ord("["):
                    return None
                opening = token.start()
            elif depth == 1:
                if char != ord("{"):
                    return None
                start = token.start()
            depth += 1
        else:
            depth -= 1
            if depth == 1:
                spans.append((start, token.end()))
            elif depth == 0:
                closing = token.start()
                break
            elif depth < 0:
                return None
    else:
        return None
    if raw[closing] != ord("]") or (raw[:opening] + raw[closing + 1 :]).strip(_JSON_SPACE):
        return None
    bounds = [opening + 1, *(x for span in spans for x in span), closing]
    gaps = [raw[a:b].strip(_JSON_SPACE) for a, b in zip(bounds[::2], bounds[1::2], strict=True)]
    if gaps[0] or gaps[-1] or any(gap != b"," for gap in gaps[1:-1]):
        return None
    return spans


def _line_spans(raw: bytes) -> list[tuple[int, int]] | None:
    """Byte spans of the non-empty lines of JSON Lines; None where lines are split oddly."""
    if _OTHER_LINE_BREAKS.search(raw):
        return None
    spans, start = [], 0
    for line in raw.split(b"\n"):
        if line.strip(_JSON_SPACE):
            spans.append((start, start + len(line)))
        start += len(line) + 1
    return spans


class _Records(Sequence):
    """The records of a data file, each decoded from the file's bytes when asked for."""

    def __init__(self, raw: bytes, spans: list[tuple[int, int]]) -> None:
        self.raw = raw
        self.starts = array("q", (start for start, _ in spans))
        self.ends = array("q", (end for _, end in spans))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict:
        return json.loads(self.raw[self.starts[index] : self.ends[index]])


def read_records(path: str | Path) -> Sequence[dict]:
    """`load_records`' records, with its errors, without all of them as Python objects.

    The file's bytes stay in memory (a fifth of the records as objects, or less) and a
    record is decoded when asked for. A file that is not a plain JSON list (or JSON Lines)
    of objects is read by load_records itself, which raises its error.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError:
        return load_records(path)
    spans = _line_spans(raw) if path.suffix == ".jsonl" else _list_spans(raw)
    if spans is None:
        return load_records(path)
    records, problem = _Records(raw, spans), None
    try:
        for index in range(len(records)):  # load_records parses everything, then checks
            record = records[index]
            if problem is None:
                try:
                    check_record(record, index, path)
                except InputError as exc:
                    problem = exc
    except ValueError:  # not JSON (JSONDecodeError, UnicodeDecodeError): load_records says
        return load_records(path)
    if problem:
        raise problem
    return records
