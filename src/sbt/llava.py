"""LLaVA instruction records: reading, validation and the text-only conversion.

The study turns LLaVA's visual instructions into text-only ones by deleting the ``<image>``
placeholder from the first turn of every record and keeping everything else. A file is
read whole and its list's elements are decoded one at a time by the stdlib decoder, so an
error can name its record, and memory stays near twice the size of an ASCII file (as the
published files are; ``json.load`` takes four times). The output holds one record a line,
encoded compactly by the stdlib encoder; it parses to exactly what the published
json.load / replace / json.dump loop writes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from sbt.common import InputError, atomic_path, input_error, provenance, write_json

IMAGE_TOKEN = "<image>"
HUMAN = "human"
ASSISTANT = "gpt"
ROLES = (HUMAN, ASSISTANT)

# How many skipped records (and duplicate ids) the stats list by name; counts stay exact.
MAX_LISTED = 100
MAX_LISTED_DUPLICATES = 20
PROGRESS_EVERY = 100_000

# Per-record counters (measured after conversion), in this order; summed into the stats.
COUNTERS = ("records", "with_image", "tags_removed", "tags_left_later", "first_from_gpt",
            "empty_messages", "rounds", "human_messages", "human_chars",
            "assistant_messages", "assistant_chars")  # fmt: skip

_WHITESPACE = re.compile(r"[ \t\n\r]*")
# An error followed only by such a token fragment to the end of the file means truncation.
_CUT_TOKEN = re.compile(r"[\w.+\-\\]*[ \t\n\r]*")
_KINDS = {type(None): "null", bool: "a boolean", dict: "an object", list: "a list", str: "a string"}
_TOP_LEVEL = {"{": "an object", '"': "a string", "n": "null", "t": "a boolean", "f": "a boolean"}


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for error messages users can map to the file."""
    for kind, name in _KINDS.items():  # bool before int: True is an int too
        if isinstance(value, kind):
            return name
    return "a number"


def _read(path: Path) -> tuple[str, dict]:
    """A file's text (a byte order mark stays its first character) and its stats entry."""
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except OSError as exc:
        raise input_error(path, f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise input_error(path, f"not valid UTF-8 at byte {exc.start}") from None
    sha256 = hashlib.sha256(data).hexdigest()
    source = {"path": str(path), "sha256": sha256, "bytes": len(data), "records": 0}
    return text, {**source, "skipped_invalid": 0}


def _elements(path: Path, text: str) -> Iterator[tuple[int, object]]:
    """``(index, element)`` for each element of the JSON list that ``text`` holds.

    Anything else (not JSON, cut short, not a list) raises an InputError naming the file,
    the byte and line, and the record where there is one.
    """
    decode, skip, size = json.JSONDecoder().raw_decode, _WHITESPACE.match, len(text)

    def at(pos: int) -> str:
        return f"byte {len(text[:pos].encode())} (line {text.count(chr(10), 0, pos) + 1})"

    def malformed(pos: int, message: str, index: int | None = None) -> InputError:
        return input_error(path, f"malformed JSON at {at(pos)}: {message}", index=index)

    def truncated(pos: int, where: str, index: int | None = None) -> InputError:
        return input_error(path, f"truncated JSON: the file ends {where} ({at(pos)})", index=index)

    pos = skip(text, 1 if text.startswith("\ufeff") else 0).end()
    if pos == size:
        raise input_error(path, "empty file: expected a JSON list of records")
    if text[pos] != "[":
        kind = _TOP_LEVEL.get(text[pos], "a number" if text[pos] in "-0123456789" else None)
        if kind is None:
            raise malformed(pos, "expected '['")
        raise input_error(path, f"top level is {kind}, expected a JSON list of records")
    pos = skip(text, pos + 1).end()
    for index in () if text.startswith("]", pos) else itertools.count():  # (): an empty list
        if pos == size:
            raise truncated(pos, "where a record should start", index)
        try:
            element, pos = decode(text, pos)
        except json.JSONDecodeError as exc:
            if exc.msg.startswith("Unterminated string") or _CUT_TOKEN.fullmatch(text, exc.pos):
                raise truncated(exc.pos, "inside this record", index) from None
            raise malformed(exc.pos, exc.msg, index) from None
        yield index, element
        pos = skip(text, pos).end()
        if pos == size:
            raise truncated(pos, f"after record {index} without the closing ']'")
        if text[pos] == "]":
            break
        if text[pos] != ",":
            raise malformed(pos, f"expected ',' or ']' after record {index}")
        pos = skip(text, pos + 1).end()
    pos = skip(text, pos + 1).end()  # past the closing ']'
    if pos < size:
        raise malformed(pos, "data after the closing ']'")


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


def check_record(record: object, path: str | os.PathLike, index: int) -> None:
    """Raise the one-line InputError for a record's first schema problem, if any."""
    problem = find_problem(record)
    if problem is not None:
        field_name, message = problem
        raise input_error(path, message, index=index, record_id=record_id(record), field=field_name)


def iter_valid_records(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """A LLaVA file's records with their index, raising InputError at the first invalid one."""
    for index, record in _elements(Path(path), _read(Path(path))[0]):
        check_record(record, path, index)
        yield index, record


@dataclass(frozen=True)
class ConvertOptions:
    """How to convert. The defaults reproduce the published rule exactly."""

    strip_newline: bool = False  # strip whitespace around a turn the tag was removed from
    all_turns: bool = False  # remove the tag from every turn, not only the first
    drop_image_key: bool = False  # delete the record's "image" key
    skip_invalid: bool = False  # skip (and count) invalid records instead of failing
    max_records: int | None = None  # seeded subsample of this many valid records
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_records is not None and self.max_records < 0:
            raise ValueError("max_records must be >= 0")


def _convert(record: dict, options: ConvertOptions) -> tuple[int, ...]:
    """Convert a valid record in place and return its counters, ordered as COUNTERS.

    The published rule: every IMAGE_TOKEN in the first turn's value becomes "", whatever
    that turn's role.
    """
    removed = left = empty = rounds = 0
    messages, chars, previous = {HUMAN: 0, ASSISTANT: 0}, {HUMAN: 0, ASSISTANT: 0}, None
    for number, turn in enumerate(record["conversations"]):
        value, role = turn["value"], turn["from"]
        if IMAGE_TOKEN in value and (number == 0 or options.all_turns):
            removed += value.count(IMAGE_TOKEN)
            value = value.replace(IMAGE_TOKEN, "")
            turn["value"] = value = value.strip() if options.strip_newline else value
        elif IMAGE_TOKEN in value:
            left += value.count(IMAGE_TOKEN)
        rounds += role == ASSISTANT and previous == HUMAN  # an answer to a question
        messages[role] += 1
        chars[role] += len(value)
        previous = role
        empty += not value or value.isspace()
    with_image = "image" in record
    if with_image and options.drop_image_key:
        del record["image"]
    first_from_gpt = record["conversations"][0]["from"] == ASSISTANT
    return (1, int(with_image), removed, left, int(first_from_gpt), empty, rounds,
            messages[HUMAN], chars[HUMAN], messages[ASSISTANT], chars[ASSISTANT])  # fmt: skip


def convert_record(record: dict, options: ConvertOptions = ConvertOptions()) -> dict[str, int]:
    """Convert one record in place; return its counters by name (see COUNTERS).

    Raises ValueError naming the field when the record is invalid.
    """
    problem = find_problem(record)
    if problem is not None:
        field_name, message = problem
        raise ValueError(f"field {field_name!r}: {message}" if field_name else message)
    return dict(zip(COUNTERS, _convert(record, options), strict=True))


def _encode(record: dict) -> bytes:
    try:
        return json.dumps(record, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate (from a "\ud8xx" escape) has no UTF-8 form
        return json.dumps(record).encode()


def _duplicates(ids: Iterable) -> dict:
    """How many ids (None: no id) repeat an earlier one, and the first ones repeated."""
    seen, count, first = set(), 0, []
    for rid in ids:
        if rid in seen:
            count += 1
            if len(first) < MAX_LISTED_DUPLICATES and rid not in first:
                first.append(rid)
        elif rid is not None:
            seen.add(rid)
    return {"count": count, "first": first}


def _convert_files(inputs: list[Path], options: ConvertOptions, progress) -> tuple:
    """Read, validate and convert every record in order.

    Returns ``(kept, sources, skipped)``: ``(counters, id, encoded line)`` of each valid
    record, each file's stats entry, and the first MAX_LISTED skipped records.
    """
    kept, sources, skipped, records_in, bytes_in = [], [], [], 0, 0
    for path in inputs:
        text, source = _read(path)
        sources.append(source)
        bytes_in += source["bytes"]
        for index, record in _elements(path, text):
            records_in, source["records"] = records_in + 1, index + 1
            if progress is not None and records_in % PROGRESS_EVERY == 0:
                progress(records_in, bytes_in)
            problem = find_problem(record)
            if problem is None:  # converted, then encoded
                kept.append((_convert(record, options), record.get("id"), _encode(record)))
                continue
            if not options.skip_invalid:
                check_record(record, path, index)
            source["skipped_invalid"] += 1
            if len(skipped) < MAX_LISTED:
                reason = (f"field {problem[0]!r}: " if problem[0] else "") + problem[1]
                entry = {"file": str(path), "index": index, "id": record_id(record)}
                skipped.append({**entry, "reason": reason})
        del text  # before the next file is read
    return kept, sources, skipped


def convert(
    inputs: Iterable[str | os.PathLike],
    output: str | os.PathLike,
    stats_path: str | os.PathLike | None = None,
    options: ConvertOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Convert LLaVA files (concatenated in order) to one text-only LLaVA JSON list.

    Returns the statistics (also written to ``stats_path``, with provenance). They describe
    the records written, after conversion (``records_with_image`` counts those whose source
    had an "image" key, also when it is dropped). Invalid input raises InputError and leaves
    neither the output nor the stats file behind. ``progress(records, bytes)`` is called
    every PROGRESS_EVERY records read.
    """
    options, inputs = options or ConvertOptions(), [Path(path) for path in inputs]
    if not inputs:
        raise ValueError("at least one input file is needed")
    for path in inputs:
        if not path.is_file():
            raise input_error(path, "not a regular file" if path.exists() else "no such file")
    # The temporary file is opened without truncating it: on ext4, a file truncated to zero
    # makes close() wait until its data is on disk (auto_da_alloc).
    with atomic_path(output) as tmp, open(os.open(tmp, os.O_WRONLY), "wb") as fh:
        kept, sources, skipped = _convert_files(inputs, options, progress)
        subsample = None
        if options.max_records is not None:
            total, wanted = len(kept), options.max_records
            if wanted < total:
                chosen = random.Random(options.seed).sample(range(total), wanted)
                kept = [kept[position] for position in sorted(chosen)]
            subsample = {"max_records": wanted, "seed": options.seed, "records_before": total}
            subsample["applied"] = wanted < total
        lines = b",\n".join(line for *_, line in kept)
        fh.writelines([b"[\n", lines, b"\n]\n"] if kept else [b"[]\n"])  # no copy of ``lines``
        columns = zip(*(counters for counters, _, _ in kept), strict=True)
        totals = dict(zip(COUNTERS, [sum(c) for c in columns] or [0] * len(COUNTERS), strict=True))
        records = totals["records"]

        def mean(total: int, count: int) -> float | None:
            return round(total / count, 4) if count else None

        stats = {
            "records_in": sum(source["records"] for source in sources),
            "records_out": records,
            "skipped_invalid": sum(source["skipped_invalid"] for source in sources),
            "skipped": skipped,
            "rounds_total": totals["rounds"],
            "rounds_mean": mean(totals["rounds"], records),
            "records_with_image": totals["with_image"],
            "records_without_image": records - totals["with_image"],
            "image_tags_removed": totals["tags_removed"],
            "image_tags_left_in_later_turns": totals["tags_left_later"],
            "first_turn_from_gpt": totals["first_from_gpt"],
            "empty_messages": totals["empty_messages"],
            "human_messages": totals["human_messages"],
            "assistant_messages": totals["assistant_messages"],
            "mean_chars_human": mean(totals["human_chars"], totals["human_messages"]),
            "mean_chars_assistant": mean(totals["assistant_chars"], totals["assistant_messages"]),
            "duplicate_ids": _duplicates(rid for _, rid, _ in kept),
            "options": asdict(options),
            "subsample": subsample,
            "sources": sources,
        }
        if stats_path is not None:
            write_json(stats_path, {**stats, "provenance": provenance(stage="convert_text_only")})
    return stats


def summary_lines(stats: dict) -> list[str]:
    """A short human-readable digest of convert()'s statistics."""

    def number(value: float | None, digits: int = 1) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    return [
        f"{stats['records_in']:,} records in, {stats['records_out']:,} out, "
        f"{stats['skipped_invalid']:,} invalid skipped, from {len(stats['sources'])} file(s)",
        f"rounds {stats['rounds_total']:,} (mean {number(stats['rounds_mean'], 2)}); "
        f"with image {stats['records_with_image']:,}, without {stats['records_without_image']:,}",
        f"<image> tags removed {stats['image_tags_removed']:,}, left in later turns "
        f"{stats['image_tags_left_in_later_turns']:,}; first turn from gpt "
        f"{stats['first_turn_from_gpt']:,}; empty messages {stats['empty_messages']:,}",
        f"mean characters: human {number(stats['mean_chars_human'])}, assistant "
        f"{number(stats['mean_chars_assistant'])}; duplicate ids "
        f"{stats['duplicate_ids']['count']:,}",
    ]
