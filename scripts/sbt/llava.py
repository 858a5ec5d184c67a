"""LLaVA instruction records: streaming reader, validation and the text-only conversion.

The study turns LLaVA's visual instructions into text-only ones by deleting the ``<image>``
placeholder from the first turn of every record and keeping everything else. The largest
collection (the 665k mix) is about 1 GB: ``json.load`` of it costs several GB of Python
objects and ``json.dump(indent=4)`` runs the slow pure-Python encoder. Here records are
parsed a buffer at a time with the stdlib's C scanner, checked, converted and measured in
one pass; the output reuses the source text wherever that is exact (unchanged records, or
records whose only change is deleted literal tags) and encodes any other record compactly
with the C encoder. Memory stays flat, and the output parses to exactly the records the
published loop writes.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

from sbt.common import InputError, atomic_path, input_error, provenance, write_json

IMAGE_TOKEN = "<image>"
HUMAN = "human"
ASSISTANT = "gpt"
ROLES = (HUMAN, ASSISTANT)

# How many skipped records (and duplicate ids) the stats list by name; counts stay exact.
MAX_LISTED = 100
MAX_LISTED_DUPLICATES = 20
PROGRESS_EVERY = 100_000

_CHUNK_BYTES = 1 << 16
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SEPARATOR = re.compile(r"[ \t\n\r]*,[ \t\n\r]*")
# A backslash-u escape of one of the characters of "<image>" (<, i, m, a, g, e, >).
_TAG_CHAR_ESCAPE = re.compile(r"\\u00(?:3[cCeE]|6[1579dD])")
# A decode error this close to the end of the buffer may only mean the record continues in
# the next chunk (a cut literal, number or escape is at most a few characters long).
_CUT_MARGIN = 64
# At the end of the file, an error followed only by such a token fragment means truncation.
_CUT_TOKEN = re.compile(r"[\w.+\-\\]*[ \t\n\r]*")


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for error messages users can map to the file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return "a number"


def _position(path: Path, char_offset: int) -> str:
    """Byte offset and line of a character offset, computed only when reporting an error."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    with open(path, "rb") as fh:
        head = fh.read(len(codecs.BOM_UTF8))
        byte_offset = len(head) if head == codecs.BOM_UTF8 else 0
        fh.seek(byte_offset)
        line = 1
        remaining = char_offset
        while remaining > 0:
            raw = fh.read(_CHUNK_BYTES)
            text = decoder.decode(raw, final=not raw)
            if not raw and not text:
                break
            piece = text[:remaining]
            byte_offset += len(piece.encode("utf-8", errors="surrogateescape"))
            line += piece.count("\n")
            remaining -= len(piece)
    return f"byte {byte_offset} (line {line})"


class RecordGroup(NamedTuple):
    """Consecutive list elements decoded from one buffer, with their exact source text.

    ``text`` runs from the first element's start to the last one's end (separators
    included); ``bounds[k]`` is element k's ``(start, end)`` within ``text``.
    """

    first_index: int
    records: list
    text: str
    bounds: list[tuple[int, int]]


class RecordStream:
    """Read the elements of a file holding one JSON list without loading the whole file.

    Iterating yields ``(index, element)``; ``groups()`` yields RecordGroup batches (faster,
    and with the source text). Whitespace and layout are free. A file that ends early, is
    not valid UTF-8, is not JSON, or whose top level is not a list raises an InputError
    naming the file, the record index and the byte offset. While reading, ``sha256``,
    ``bytes_read`` and ``records`` describe what has been read so far.
    """

    def __init__(self, path: str | os.PathLike, chunk_bytes: int | None = None):
        self.path = Path(path)
        self.chunk_bytes = chunk_bytes or _CHUNK_BYTES
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0
        self.records = 0
        self._scan = json.JSONDecoder().scan_once
        self._fh = None
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._buf = ""
        self._pos = 0
        self._start = 0  # where the element just decoded by _decode() starts
        self._base = 0  # characters dropped from the front of the buffer so far
        self._eof = False

    def __iter__(self) -> Iterator[tuple[int, object]]:
        for group in self.groups():
            yield from enumerate(group.records, group.first_index)

    def groups(self) -> Iterator[RecordGroup]:
        try:
            fh = open(self.path, "rb")
        except OSError as exc:
            raise input_error(self.path, f"cannot read: {exc.strerror}") from None
        with fh:
            self._fh = fh
            if self._open_list():
                yield from self._groups()

    # -- buffer handling --------------------------------------------------------------
    def _refill(self, at_least: int = 0) -> None:
        raw = self._fh.read(max(self.chunk_bytes, at_least))
        pending = len(self._decoder.getstate()[0])
        try:
            text = self._decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as exc:
            where = self.bytes_read - pending + exc.start
            raise input_error(self.path, f"not valid UTF-8 at byte {where}") from None
        self.sha256.update(raw)
        self.bytes_read += len(raw)
        self._eof = not raw
        self._base += self._pos
        self._buf = self._buf[self._pos :] + text
        self._pos = 0

    def _skip_whitespace(self) -> None:
        """Move past whitespace; afterwards a character is available unless the file ended."""
        while True:
            self._pos = _WHITESPACE.match(self._buf, self._pos).end()
            if self._pos < len(self._buf) or self._eof:
                return
            self._refill()

    def _where(self, buffer_pos: int) -> str:
        return _position(self.path, self._base + buffer_pos)

    # -- grammar ----------------------------------------------------------------------
    def _open_list(self) -> bool:
        """Consume ``[``; return False for an empty list (the file then checked to its end)."""
        self._skip_whitespace()
        if self._pos >= len(self._buf):
            raise input_error(self.path, "empty file: expected a JSON list of records")
        first = self._buf[self._pos]
        if first != "[":
            kinds = {"{": "an object", '"': "a string", "n": "null", "t": "a boolean"}
            kinds["f"] = "a boolean"
            kind = kinds.get(first, "a number" if first in "-0123456789" else None)
            if kind is None:
                raise input_error(
                    self.path, f"malformed JSON at {self._where(self._pos)}: expected '['"
                )
            raise input_error(self.path, f"top level is {kind}, expected a JSON list of records")
        self._pos += 1
        self._skip_whitespace()
        if self._pos < len(self._buf) and self._buf[self._pos] == "]":
            self._pos += 1
            self._expect_end()
            return False
        return True

    def _groups(self) -> Iterator[RecordGroup]:
        index = 0
        scan = self._scan
        separator = _SEPARATOR.match
        while True:
            # Fast path: every element that lies wholly inside the buffer and is followed by a
            # comma and the next element's start. Anything else takes the careful path below.
            buf, pos = self._buf, self._pos
            size = len(buf)
            group_start = pos
            records: list = []
            bounds: list[tuple[int, int]] = []
            while True:
                try:
                    value, end = scan(buf, pos)
                except (StopIteration, json.JSONDecodeError):
                    break
                if end >= size:
                    break
                found = separator(buf, end)
                if found is None or found.end() >= size:
                    break
                records.append(value)
                bounds.append((pos - group_start, end - group_start))
                pos = found.end()
            if records:
                self._pos = pos
                index += len(records)
                self.records = index
                last_end = bounds[-1][1]
                yield RecordGroup(
                    index - len(records), records, buf[group_start : group_start + last_end], bounds
                )

            # Careful path: one element, reading more of the file as needed.
            if self._pos >= len(self._buf):
                raise input_error(
                    self.path,
                    f"truncated JSON: the file ends where a record should start "
                    f"({self._where(self._pos)})",
                    index=index,
                )
            value = self._decode(index)
            text = self._buf[self._start : self._pos]
            self.records = index + 1
            yield RecordGroup(index, [value], text, [(0, len(text))])
            index += 1
            self._skip_whitespace()
            if self._pos >= len(self._buf):
                raise input_error(
                    self.path,
                    f"truncated JSON: the file ends after record {index - 1} without the "
                    f"closing ']' ({self._where(self._pos)})",
                )
            mark = self._buf[self._pos]
            if mark == "]":
                self._pos += 1
                self._expect_end()
                return
            if mark != ",":
                raise input_error(
                    self.path,
                    f"malformed JSON at {self._where(self._pos)}: expected ',' or ']' "
                    f"after record {index - 1}",
                )
            self._pos += 1
            self._skip_whitespace()

    def _decode(self, index: int) -> object:
        while True:
            try:
                value, end = self._scan(self._buf, self._pos)
            except StopIteration as exc:
                error_pos, message = exc.value, "Expecting value"
            except json.JSONDecodeError as exc:
                error_pos, message = exc.pos, exc.msg
            else:
                if end < len(self._buf) or self._eof:
                    self._start, self._pos = self._pos, end
                    return value
                # A bare number or literal may continue in the next chunk: read on and retry.
                self._refill(at_least=end - self._pos)
                continue
            unterminated = message.startswith("Unterminated string")
            if not self._eof:
                if unterminated or error_pos >= len(self._buf) - _CUT_MARGIN:
                    # Perhaps the record just goes on in the file. Read at least as much
                    # again as is pending, so a huge record costs a few retries, not many.
                    self._refill(at_least=len(self._buf) - self._pos)
                    continue
            elif unterminated or _CUT_TOKEN.fullmatch(self._buf, error_pos):
                raise input_error(
                    self.path,
                    f"truncated JSON: the file ends inside this record ({self._where(error_pos)})",
                    index=index,
                )
            raise input_error(
                self.path,
                f"malformed JSON at {self._where(error_pos)}: {message}",
                index=index,
            )

    def _expect_end(self) -> None:
        self._skip_whitespace()
        if self._pos < len(self._buf):
            raise input_error(
                self.path,
                f"malformed JSON at {self._where(self._pos)}: data after the closing ']'",
            )


def record_id(record: object) -> str | int | None:
    """The record's id when it is usable in messages, else None."""
    if isinstance(record, dict):
        value = record.get("id")
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return value
    return None


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
        role = turn["from"]
        if role not in ROLES:
            return f"{where}.from", f"unknown role {role!r} (expected 'human' or 'gpt')"
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
    """Stream a LLaVA file's records, raising InputError at the first invalid one."""
    for index, record in RecordStream(path):
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

    @property
    def source_text_editable(self) -> bool:
        """Whether a changed record can be written as its source text minus the tags.

        True when the only change is deleting tags; then copying the source text is both
        exact and much faster than encoding the record again.
        """
        return not (self.strip_newline or self.drop_image_key)


# Per-record counters (measured after conversion), in this order; summed into the stats.
COUNTERS = (
    "records",
    "with_image",
    "tags_removed",
    "tags_left_later",
    "first_from_gpt",
    "empty_messages",
    "rounds",
    "human_messages",
    "human_chars",
    "assistant_messages",
    "assistant_chars",
)
_TAGS_REMOVED = COUNTERS.index("tags_removed")


def _convert_in_place(record: object, options: ConvertOptions) -> tuple[tuple, bool] | None:
    """Validate, convert and measure a record in one pass: the hot loop of convert().

    Returns ``(counters, changed)``, or None when the record is invalid (find_problem()
    then says why; both check the same schema). The published rule: every IMAGE_TOKEN in
    the first turn's value becomes "", whatever that turn's role.
    """
    if type(record) is not dict:
        return None
    if "id" in record:
        rid = record["id"]
        if type(rid) is not str and type(rid) is not int:
            return None
    turns = record.get("conversations")
    if type(turns) is not list or not turns:
        return None
    strip = options.strip_newline
    every_turn = options.all_turns
    changed = False
    removed = left_later = empty = rounds = 0
    human_messages = human_chars = assistant_messages = assistant_chars = 0
    after_human = False
    in_first_turn = True
    for turn in turns:
        if type(turn) is not dict:
            return None
        value = turn.get("value")
        if type(value) is not str:
            return None
        if IMAGE_TOKEN in value:
            if in_first_turn or every_turn:
                removed += value.count(IMAGE_TOKEN)
                value = value.replace(IMAGE_TOKEN, "")
                if strip:
                    value = value.strip()
                turn["value"] = value
                changed = True
            else:
                left_later += value.count(IMAGE_TOKEN)
        in_first_turn = False
        role = turn.get("from")
        if role == HUMAN:
            human_messages += 1
            human_chars += len(value)
            after_human = True
        elif role == ASSISTANT:
            assistant_messages += 1
            assistant_chars += len(value)
            rounds += after_human
            after_human = False
        else:
            return None
        if not value or value.isspace():
            empty += 1
    with_image = "image" in record
    if with_image and options.drop_image_key:
        del record["image"]
        changed = True
    first_from_gpt = turns[0]["from"] == ASSISTANT
    counters = (
        1,
        int(with_image),
        removed,
        left_later,
        int(first_from_gpt),
        empty,
        rounds,
        human_messages,
        human_chars,
        assistant_messages,
        assistant_chars,
    )
    return counters, changed


def convert_record(record: dict, options: ConvertOptions = ConvertOptions()) -> dict[str, int]:
    """Convert one record in place; return its counters by name (see COUNTERS).

    Raises ValueError naming the field when the record is invalid.
    """
    result = _convert_in_place(record, options)
    if result is None:
        field_name, message = find_problem(record) or (None, "invalid record")
        raise ValueError(f"field {field_name!r}: {message}" if field_name else message)
    return dict(zip(COUNTERS, result[0], strict=True))


@dataclass
class _Source:
    path: str
    sha256: str = ""
    bytes: int = 0
    records: int = 0
    skipped_invalid: int = 0


@dataclass
class ConversionStats:
    """Totals over the records written, plus what was read and skipped."""

    options: ConvertOptions
    counters: list[int] = field(default_factory=lambda: [0] * len(COUNTERS))
    records_in: int = 0
    skipped_count: int = 0
    skipped: list[dict] = field(default_factory=list)
    seen_ids: set = field(default_factory=set)
    duplicate_count: int = 0
    duplicates: list = field(default_factory=list)
    sources: list[_Source] = field(default_factory=list)
    subsample: dict | None = None

    def reject(self, path: Path, index: int, record: object) -> None:
        """Fail on an invalid record, or count and list it when skipping is on."""
        field_name, message = find_problem(record) or (None, "invalid record")
        rid = record_id(record)
        if not self.options.skip_invalid:
            raise input_error(path, message, index=index, record_id=rid, field=field_name)
        self.skipped_count += 1
        self.sources[-1].skipped_invalid += 1
        if len(self.skipped) < MAX_LISTED:
            where = f"field {field_name!r}: " if field_name else ""
            self.skipped.append(
                {"file": str(path), "index": index, "id": rid, "reason": where + message}
            )

    def fold(self, rows: list[tuple], ids: list) -> None:
        """Add a batch of per-record counters and ids (summed in C, not per record)."""
        if rows:
            for position, total in enumerate(map(sum, zip(*rows, strict=True))):
                self.counters[position] += total
        batch = set(ids)
        batch.discard(None)
        known = len(ids) - ids.count(None)
        if len(batch) == known and self.seen_ids.isdisjoint(batch):
            self.seen_ids |= batch
            return
        for rid in ids:
            if rid is None:
                continue
            if rid in self.seen_ids:
                self.duplicate_count += 1
                if len(self.duplicates) < MAX_LISTED_DUPLICATES and rid not in self.duplicates:
                    self.duplicates.append(rid)
            else:
                self.seen_ids.add(rid)

    def as_dict(self) -> dict:
        totals = dict(zip(COUNTERS, self.counters, strict=True))
        records = totals["records"]

        def mean(total: int, count: int) -> float | None:
            return round(total / count, 4) if count else None

        return {
            "records_in": self.records_in,
            "records_out": records,
            "skipped_invalid": self.skipped_count,
            "skipped": self.skipped,
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
            "duplicate_ids": {"count": self.duplicate_count, "first": self.duplicates},
            "options": asdict(self.options),
            "subsample": self.subsample,
            "sources": [asdict(source) for source in self.sources],
        }


class _ListWriter:
    """Write a JSON list of records (or runs of records), buffering about a megabyte.

    An item is either source text (one record or several with their separators, kept when
    that is exact) or a record encoded compactly by the C encoder; items are joined by
    ",\n". Either way the list parses back to the converted records.
    """

    _FLUSH_CHARS = 1 << 20

    def __init__(self, fh):
        self._fh = fh
        self._pending: list[str] = []
        self._pending_chars = 0
        self._written = 0
        self.encode = json.JSONEncoder(ensure_ascii=False).encode
        self._encode_ascii = json.JSONEncoder().encode

    def add(self, item: str) -> None:
        self._pending.append(item)
        self._pending_chars += len(item)
        if self._pending_chars >= self._FLUSH_CHARS:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        self._fh.write(",\n" if self._written else "[\n")
        try:
            self._fh.write(",\n".join(self._pending))
        except UnicodeEncodeError:
            self._write_one_by_one()
        self._written += len(self._pending)
        self._pending.clear()
        self._pending_chars = 0

    def _write_one_by_one(self) -> None:
        for number, line in enumerate(self._pending):
            if number:
                self._fh.write(",\n")
            try:
                self._fh.write(line)
            except UnicodeEncodeError:
                # A lone surrogate (from a "\ud8xx" escape) has no UTF-8 form: keep it escaped.
                self._fh.write(self._encode_ascii(json.loads(line)))

    def close(self) -> None:
        self.flush()
        self._fh.write("\n]\n" if self._written else "[]\n")


def _delete_literal_tags(text: str, removed: int) -> str | None:
    """``text`` without its literal tags, when that deletes exactly the ``removed`` tags.

    Exact when the text holds no \\u escape of a character of the tag (so every decoded tag
    is literal in the text) and as many literal tags as were removed (so none sits in
    another string). Otherwise None: the record must be encoded again.
    """
    edited = text.replace(IMAGE_TOKEN, "")
    if len(text) - len(edited) != removed * len(IMAGE_TOKEN):
        return None
    if _TAG_CHAR_ESCAPE.search(text) is not None:
        return None
    return edited


def _convert_file(
    path: Path,
    options: ConvertOptions,
    stats: ConversionStats,
    writer: _ListWriter,
    held: list | None,
    progress: Callable[[int, int], None] | None,
    bytes_before: int,
) -> int:
    """Convert one source into ``writer`` (or into ``held`` when subsampling); return bytes read.

    Output reuses the source text wherever that is exact (unchanged records, or records
    whose only change is deleting literal tags), so most records are never re-encoded.
    """
    source = _Source(str(path))
    stats.sources.append(source)
    stream = RecordStream(path)
    encode = writer.encode
    editable = options.source_text_editable
    rows: list[tuple] = []
    ids: list = []
    next_progress = PROGRESS_EVERY
    for group in stream.groups():
        results = []
        removed = 0
        all_valid = True
        changed = False
        for offset, record in enumerate(group.records):
            result = _convert_in_place(record, options)
            results.append(result)
            if result is None:
                all_valid = False
                stats.reject(path, group.first_index + offset, record)
                continue
            removed += result[0][_TAGS_REMOVED]
            changed = changed or result[1]
        text = None
        if held is None and all_valid:
            if not changed:
                text = group.text
            elif editable:
                text = _delete_literal_tags(group.text, removed)
        if text is not None:
            # The whole group's source text, tags deleted, is the exact output.
            writer.add(text)
            rows.extend(result[0] for result in results)
            ids.extend(record.get("id") for record in group.records)
        else:
            records = zip(group.records, results, group.bounds, strict=True)
            for record, result, (start, end) in records:
                if result is None:
                    continue
                counters, record_changed = result
                line = group.text[start:end]
                if record_changed:
                    edited = None
                    if editable:
                        edited = _delete_literal_tags(line, counters[_TAGS_REMOVED])
                    line = encode(record) if edited is None else edited
                if held is not None:
                    held.append((line, counters, record.get("id")))
                else:
                    writer.add(line)
                    rows.append(counters)
                    ids.append(record.get("id"))
        if len(rows) >= 4096:
            stats.fold(rows, ids)
            rows.clear()
            ids.clear()
        if progress is not None and stream.records >= next_progress:
            progress(stats.records_in + stream.records, bytes_before + stream.bytes_read)
            next_progress += PROGRESS_EVERY
    stats.fold(rows, ids)
    source.sha256 = stream.sha256.hexdigest()
    source.bytes = stream.bytes_read
    source.records = stream.records
    stats.records_in += stream.records
    return stream.bytes_read


def _subsample_indices(total: int, options: ConvertOptions) -> list[int] | None:
    """Sorted positions of a seeded random subset, or None when everything is kept."""
    if options.max_records is None or options.max_records >= total:
        return None
    return sorted(random.Random(options.seed).sample(range(total), options.max_records))


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
    every PROGRESS_EVERY records of a file.

    Memory stays flat (a buffer, the ids seen) except with ``max_records``, which holds the
    converted text of every valid record until the subset is drawn (about the input's size).
    """
    options = options or ConvertOptions()
    inputs = [Path(path) for path in inputs]
    if not inputs:
        raise ValueError("at least one input file is needed")
    for path in inputs:
        if not path.exists():
            raise input_error(path, "no such file")
        if not path.is_file():
            raise input_error(path, "not a regular file")
    stats = ConversionStats(options)
    held: list | None = [] if options.max_records is not None else None

    with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        writer = _ListWriter(fh)
        bytes_read = 0
        for path in inputs:
            bytes_read += _convert_file(path, options, stats, writer, held, progress, bytes_read)
        if held is not None:
            chosen = _subsample_indices(len(held), options)
            stats.subsample = {
                "max_records": options.max_records,
                "seed": options.seed,
                "records_before": len(held),
                "applied": chosen is not None,
            }
            kept = held if chosen is None else [held[position] for position in chosen]
            for line, _, _ in kept:
                writer.add(line)
            stats.fold([counters for _, counters, _ in kept], [rid for _, _, rid in kept])
        writer.close()
        result = stats.as_dict()
        if stats_path is not None:
            write_json(stats_path, {**result, "provenance": provenance(stage="convert_text_only")})
    return result


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


__all__ = [
    "ASSISTANT",
    "COUNTERS",
    "HUMAN",
    "IMAGE_TOKEN",
    "ROLES",
    "ConversionStats",
    "ConvertOptions",
    "InputError",
    "RecordStream",
    "check_record",
    "convert",
    "convert_record",
    "find_problem",
    "iter_valid_records",
    "json_type",
    "record_id",
    "summary_lines",
]
