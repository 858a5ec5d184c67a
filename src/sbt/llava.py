"""LLaVA instruction files: reading and the text-only conversion.

The study turns LLaVA's visual instructions into text-only ones by deleting the ``<image>``
placeholder from the first turn of every record and keeping everything else. A file is
read whole and its list's elements are decoded one at a time, so an error can name its
record (checked by sbt.records' schema), and each record is written once converted: memory
stays near twice the size of an ASCII file (``json.load`` takes four times). The output is
byte for byte what the published json.load / replace / json.dump(indent=4) loop writes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import operator
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sbt.common import atomic_path, input_error, int_at_least, provenance, write_json
from sbt.records import ASSISTANT, HUMAN, check_record, find_problem, record_id

IMAGE_TOKEN = "<image>"

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
_TOP_LEVEL = {"{": "an object", '"': "a string", "n": "null", "t": "a boolean", "f": "a boolean"}


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
    return text, {"path": str(path), "sha256": sha256, "bytes": len(data), "records": 0,
                  "skipped_invalid": 0}  # fmt: skip


def _elements(path: Path, text: str) -> Iterator[tuple[int, object]]:
    """``(index, element)`` for each element of the JSON list that ``text`` holds.

    Anything else (not JSON, cut short, not a list) raises an InputError naming the file,
    the byte and line, and the record where there is one.
    """
    decode, skip, size = json.JSONDecoder().raw_decode, _WHITESPACE.match, len(text)

    def at(pos: int) -> str:
        return f"byte {len(text[:pos].encode())} (line {text.count(chr(10), 0, pos) + 1})"

    def malformed(pos: int, message: str, index: int | None = None) -> Exception:
        return input_error(path, f"malformed JSON at {at(pos)}: {message}", index=index)

    def truncated(pos: int, where: str, index: int | None = None) -> Exception:
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


def iter_valid_records(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """A LLaVA file's records with their index, raising InputError at the first invalid one."""
    for index, record in _elements(Path(path), _read(Path(path))[0]):
        check_record(record, index, path)
        yield index, record


def _option(default: object, help_text: str, **argparse_kwargs: object) -> object:
    """A ConvertOptions field whose metadata is its sbt.convert flag (help, type, metavar)."""
    return field(default=default, metadata={"help": help_text, **argparse_kwargs})


@dataclass(frozen=True)
class ConvertOptions:
    """How to convert. The defaults reproduce the published rule exactly."""

    strip_newline: bool = _option(
        False, "strip whitespace around a turn after removing its <image> tag"
    )
    all_turns: bool = _option(False, "remove <image> from every turn, not only the first")
    drop_image_key: bool = _option(False, 'delete each record\'s "image" key')
    skip_invalid: bool = _option(
        False, "skip invalid records (counted and listed in the stats) instead of failing"
    )
    max_records: int | None = _option(
        None, "keep a seeded random subset of N records (in their original order)",
        type=int_at_least(0), metavar="N",
    )  # fmt: skip
    seed: int = _option(0, "seed for --max-records (default 0)", type=int)

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
        tags = value.count(IMAGE_TOKEN)
        if tags and (number == 0 or options.all_turns):
            removed += tags
            value = value.replace(IMAGE_TOKEN, "")
            turn["value"] = value = value.strip() if options.strip_newline else value
        else:
            left += tags
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


def _converted(inputs: list[Path], options: ConvertOptions, progress, sources: list,
               skipped: list) -> Iterator[tuple[tuple[int, ...], object, str]]:  # fmt: skip
    """``(counters, id, text)`` of each valid record, converted, in order.

    ``text`` is the record as an element of json.dump(records, indent=4): JSON strings hold
    no raw newline, so indenting the record's own indent=4 text by one level (4 spaces a
    line) gives exactly the encoder's lines one level down. Appends each file's stats entry
    to ``sources`` and the first MAX_LISTED skipped records to ``skipped``.
    """
    records_in, bytes_in = 0, 0
    for path in inputs:
        text, source = _read(path)
        sources.append(source)
        bytes_in += source["bytes"]
        for index, record in _elements(path, text):
            records_in, source["records"] = records_in + 1, index + 1
            if progress is not None and records_in % PROGRESS_EVERY == 0:
                progress(records_in, bytes_in)
            problem = find_problem(record)
            if problem is None:
                counters = _convert(record, options)
                indented = "    " + json.dumps(record, indent=4).replace("\n", "\n    ")
                yield counters, record.get("id"), indented
                continue
            if not options.skip_invalid:
                check_record(record, index, path)
            source["skipped_invalid"] += 1
            if len(skipped) < MAX_LISTED:
                reason = (f"field {problem[0]!r}: " if problem[0] else "") + problem[1]
                entry = {"file": str(path), "index": index, "id": record_id(record)}
                skipped.append({**entry, "reason": reason})
        del text  # before the next file is read


def _write(fh, records: Iterable[tuple[tuple[int, ...], object, str]]) -> tuple[dict, dict]:
    """Write the records as json.dump(records, fh, indent=4) does (``[]`` when there are none).

    Returns their counters summed by name and their duplicate ids: how many repeat an
    earlier id (a record without id repeats none) and the first ones repeated.
    """
    totals, seen, repeats, first, opening = [0] * len(COUNTERS), set(), 0, [], "[\n"
    for counters, rid, text in records:
        fh.write(opening + text)
        opening = ",\n"
        totals = list(map(operator.add, totals, counters))
        if rid in seen:
            repeats += 1
            if len(first) < MAX_LISTED_DUPLICATES and rid not in first:
                first.append(rid)
        elif rid is not None:
            seen.add(rid)
    fh.write("[]" if opening == "[\n" else "\n]")
    return dict(zip(COUNTERS, totals, strict=True)), {"count": repeats, "first": first}


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
    sources, skipped, subsample = [], [], None
    records = _converted(inputs, options, progress, sources, skipped)
    if options.max_records is not None:  # the only case that holds every record's text
        records, wanted = list(records), options.max_records
        subsample = {"max_records": wanted, "seed": options.seed, "records_before": len(records),
                     "applied": wanted < len(records)}  # fmt: skip
        if subsample["applied"]:
            chosen = random.Random(options.seed).sample(range(len(records)), wanted)
            records = [records[position] for position in sorted(chosen)]
    # The temporary file is opened without truncating it: on ext4, a file truncated to zero
    # makes close() wait until its data is on disk (auto_da_alloc). The text is ASCII.
    with (
        atomic_path(output) as tmp,
        open(os.open(tmp, os.O_WRONLY), "w", encoding="utf-8", newline="") as fh,
    ):
        totals, duplicates = _write(fh, records)
        count = totals["records"]

        def mean(total: int, count: int) -> float | None:
            return round(total / count, 4) if count else None

        stats = {
            "records_in": sum(source["records"] for source in sources),
            "records_out": count,
            "skipped_invalid": sum(source["skipped_invalid"] for source in sources),
            "skipped": skipped,
            "rounds_total": totals["rounds"],
            "rounds_mean": mean(totals["rounds"], count),
            "records_with_image": totals["with_image"],
            "records_without_image": count - totals["with_image"],
            "image_tags_removed": totals["tags_removed"],
            "image_tags_left_in_later_turns": totals["tags_left_later"],
            "first_turn_from_gpt": totals["first_from_gpt"],
            "empty_messages": totals["empty_messages"],
            "human_messages": totals["human_messages"],
            "assistant_messages": totals["assistant_messages"],
            "mean_chars_human": mean(totals["human_chars"], totals["human_messages"]),
            "mean_chars_assistant": mean(totals["assistant_chars"], totals["assistant_messages"]),
            "duplicate_ids": duplicates,
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
