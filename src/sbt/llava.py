"""LLaVA instruction records: streaming reader, validation and the text-only conversion.

The study turns LLaVA's visual instructions into text-only ones by deleting the ``<image>``
placeholder from the first turn of every record and keeping everything else. The largest
collection (the 665k mix) is about 1 GB: ``json.load`` of it costs several GB of Python
objects and ``json.dump(indent=4)`` runs the slow pure-Python encoder.

How convert() is fast and still exact:

- One pass, flat memory. RecordStream decodes the file 64 KB at a time and parses the
  elements of the list with the stdlib's C scanner, handing them out in groups together
  with their source text; the SHA-256 of the file is updated as the bytes go by.
- Little work per record. _convert_run() validates, converts and measures a run of
  records in one flat loop. The output of a run whose only change is deleted literal
  tags is its source text with the tags deleted (checked: as many literal tags as the
  records lost, and no escaped tag character anywhere), so nearly nothing is encoded
  again; other records are encoded compactly by the C encoder.
- Two processes for a large file. The file is cut where a record seems to start
  (_split_point(), at SPLIT_SHARE of its bytes). A forked helper converts from there to
  the end into a fragment file, while this process converts the part before it with a
  RecordStream told to stop at the cut. The stream stops only if an element really
  starts there in the sequential reading; otherwise it reads on and the helper's work
  is thrown away, so a bad guess costs time, never correctness. After its part, this
  process hashes the rest of the file, then appends the helper's fragment to the output
  (copy_file_range, in the kernel) and adds the helper's counters, ids (for duplicates)
  and skipped records. If the helper fails in any way (bad input in its part included),
  this process converts that part itself, so errors read exactly as without the helper.
  The main share is below one half because this process also hashes the whole file
  and appends the fragment. Small files, subsampling and one-CPU machines stay in one
  process.

The output parses to exactly the records the published loop writes; only whitespace
between records differs.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import marshal
import os
import random
import re
import signal
import sys
import tempfile
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

# Splitting large files between two processes (see the module docstring).
PARALLEL_MIN_BYTES = 16 << 20  # smaller files are done before a helper would pay off
SPLIT_SHARE = 0.46  # where, as a share of the file's bytes, to look for a record to split at
_SPLIT_WINDOW = 1 << 20  # bytes read there to find one
_SPLIT_TRIES = 200
_RECORD_GAP = re.compile(r"\}[ \t\n\r]*,[ \t\n\r]*\{")
_AFTER_ELEMENT = re.compile(r"[ \t\n\r]*[,\]]")


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


def _position(path: Path, char_offset: int, start: int = 0) -> str:
    """Byte offset and line of a character offset (counted from byte ``start``).

    Computed only when reporting an error, so it simply reads the file again.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    with open(path, "rb") as fh:
        line = 1
        if start:
            while fh.tell() < start:
                raw = fh.read(min(_CHUNK_BYTES, start - fh.tell()))
                if not raw:
                    break
                line += raw.count(b"\n")
            byte_offset = start
        else:
            head = fh.read(len(codecs.BOM_UTF8))
            byte_offset = len(head) if head == codecs.BOM_UTF8 else 0
        fh.seek(byte_offset)
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
    ``bytes_read`` and ``records`` describe what this stream has read so far.

    Two options let several readers share one file (see convert()). ``start``: begin at
    this byte offset, where an element of the list starts (its index is ``first_index``);
    the opening ``[`` then lies before it. ``stop``: a byte offset where an element is
    thought to start. If the elements do start there, the stream ends just before it and
    sets ``stopped``; if not, it ignores ``stop`` and reads on as if it had not been given,
    so a wrong guess costs time, never correctness. ``sha256`` may be a hash object to go
    on updating (None: a new one; False: do not hash).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        chunk_bytes: int | None = None,
        *,
        start: int = 0,
        first_index: int = 0,
        stop: int | None = None,
        sha256: object = None,
    ):
        self.path = Path(path)
        self.chunk_bytes = chunk_bytes or _CHUNK_BYTES
        self.start = start
        self.first_index = first_index
        self.sha256 = hashlib.sha256() if sha256 is None else sha256 or None
        self.bytes_read = 0
        self.records = 0
        self.stopped = False
        self._stop = stop if stop is not None and stop > start else None
        self._scan = json.JSONDecoder().scan_once
        self._fh = None
        # A byte order mark is only allowed at the very start of the file.
        self._decoder = codecs.getincrementaldecoder("utf-8" if start else "utf-8-sig")()
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
            if self.start:
                fh.seek(self.start)
                self._skip_whitespace()
                yield from self._groups()
            elif self._open_list():
                yield from self._groups()

    # -- buffer handling --------------------------------------------------------------
    def _refill(self, at_least: int = 0) -> None:
        size = max(self.chunk_bytes, at_least)
        if self._stop is not None:
            room = self._stop - self.start - self.bytes_read
            if room > 0:
                size = min(size, room)  # never read past the hoped-for stop ...
            else:
                self._stop = None  # ... but more is needed before it: no element starts there
        raw = self._fh.read(size)
        pending = len(self._decoder.getstate()[0])
        try:
            text = self._decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as exc:
            where = self.start + self.bytes_read - pending + exc.start
            raise input_error(self.path, f"not valid UTF-8 at byte {where}") from None
        if self.sha256 is not None:
            self.sha256.update(raw)
        self.bytes_read += len(raw)
        self._eof = not raw
        self._base += self._pos
        self._buf = self._buf[self._pos :] + text
        self._pos = 0

    def _skip_whitespace(self, may_stop: bool = False) -> None:
        """Move past whitespace; afterwards a character is available unless the file ended
        (or, with ``may_stop``, the stream is at its stop)."""
        while True:
            self._pos = _WHITESPACE.match(self._buf, self._pos).end()
            if self._pos < len(self._buf) or self._eof or (may_stop and self._at_stop()):
                return
            self._refill()

    def _at_stop(self) -> bool:
        """Whether everything before the stop offset is read, decoded and consumed."""
        return (
            self._stop is not None
            and self.start + self.bytes_read == self._stop
            and self._pos >= len(self._buf)
            and not self._decoder.getstate()[0]
        )

    def _where(self, buffer_pos: int) -> str:
        return _position(self.path, self._base + buffer_pos, self.start)

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
        index = self.first_index
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
                if found is None:
                    break
                after = found.end()
                if after >= size:
                    break
                records.append(value)
                bounds.append((pos - group_start, end - group_start))
                pos = after
            if records:
                self._pos = pos
                index += len(records)
                self.records = index - self.first_index
                last_end = bounds[-1][1]
                yield RecordGroup(
                    index - len(records), records, buf[group_start : group_start + last_end], bounds
                )

            # Careful path: one element, reading more of the file as needed.
            if self._pos >= len(self._buf):
                if self._at_stop():
                    self.stopped = True  # an element starts at the stop: leave it to others
                    return
                raise input_error(
                    self.path,
                    f"truncated JSON: the file ends where a record should start "
                    f"({self._where(self._pos)})",
                    index=index,
                )
            value = self._decode(index)
            text = self._buf[self._start : self._pos]
            self.records = index + 1 - self.first_index
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
            self._skip_whitespace(may_stop=True)

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


def _convert_run(
    records: list, first: int, options: ConvertOptions, totals: list[int], ids: list
) -> tuple[int, bool]:
    """Validate, convert and measure ``records[first:]`` in place: the hot loop of convert().

    Stops at the first invalid record and returns ``(stop, changed)``: that record's
    position (``len(records)`` when all are valid; find_problem() says what is wrong, both
    check the same schema) and whether any record before it changed. The counters of
    ``records[first:stop]`` are added to ``totals`` (ordered as COUNTERS) and their ids
    (None where absent) appended to ``ids``. The published rule: every IMAGE_TOKEN in the
    first turn's value becomes "", whatever that turn's role.

    Written as one flat loop with local tallies because it runs for every record; a record
    only adds its tallies to the run's once it has turned out valid.
    """
    strip = options.strip_newline
    every_turn = options.all_turns
    drop_image = options.drop_image_key
    changed = False
    with_image = removed = left_later = first_from_gpt = empty = rounds = 0
    human_messages = human_chars = assistant_messages = assistant_chars = 0
    stop = first
    for stop in range(first, len(records)):
        record = records[stop]
        if type(record) is not dict:
            break
        rid = record.get("id")
        if type(rid) is not str and type(rid) is not int and (rid is not None or "id" in record):
            break
        turns = record.get("conversations")
        if type(turns) is not list or not turns:
            break
        record_removed = record_left = record_empty = record_rounds = 0
        record_human = record_human_chars = record_assistant = record_assistant_chars = 0
        after_human = record_changed = False
        in_first_turn = True
        for turn in turns:
            if type(turn) is not dict:
                break
            value = turn.get("value")
            if type(value) is not str:
                break
            if IMAGE_TOKEN in value:
                if in_first_turn or every_turn:
                    record_removed += value.count(IMAGE_TOKEN)
                    value = value.replace(IMAGE_TOKEN, "")
                    if strip:
                        value = value.strip()
                    turn["value"] = value
                    record_changed = True
                else:
                    record_left += value.count(IMAGE_TOKEN)
            in_first_turn = False
            role = turn.get("from")
            if role == HUMAN:
                record_human += 1
                record_human_chars += len(value)
                after_human = True
            elif role == ASSISTANT:
                record_assistant += 1
                record_assistant_chars += len(value)
                record_rounds += after_human
                after_human = False
            else:
                break
            if not value or value.isspace():
                record_empty += 1
        else:  # every turn valid: the record counts
            if "image" in record:
                with_image += 1
                if drop_image:
                    del record["image"]
                    record_changed = True
            changed = changed or record_changed
            first_from_gpt += turns[0]["from"] == ASSISTANT
            removed += record_removed
            left_later += record_left
            empty += record_empty
            rounds += record_rounds
            human_messages += record_human
            human_chars += record_human_chars
            assistant_messages += record_assistant
            assistant_chars += record_assistant_chars
            ids.append(rid)
            continue
        break  # an invalid turn
    else:
        stop = len(records)
    tallies = (
        stop - first,
        with_image,
        removed,
        left_later,
        first_from_gpt,
        empty,
        rounds,
        human_messages,
        human_chars,
        assistant_messages,
        assistant_chars,
    )
    for position, tally in enumerate(tallies):
        totals[position] += tally
    return stop, changed


def _convert_in_place(record: object, options: ConvertOptions) -> tuple[tuple, bool] | None:
    """Convert one record: ``(counters, changed)``, or None when it is invalid."""
    totals = [0] * len(COUNTERS)
    stop, changed = _convert_run([record], 0, options, totals, [])
    return (tuple(totals), changed) if stop else None


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

    def add_counters(self, rows: list[tuple]) -> None:
        """Add a batch of per-record counters (summed in C, not per record)."""
        if rows:
            for position, total in enumerate(map(sum, zip(*rows, strict=True))):
                self.counters[position] += total

    def fold(self, rows: list[tuple], ids: list) -> None:
        """Add a batch of per-record counters and ids, in file order."""
        self.add_counters(rows)
        self.add_ids(ids)

    def add_ids(self, ids: list) -> None:
        """Count duplicates among a batch of ids (None: no id), in file order."""
        seen = self.seen_ids
        if seen.isdisjoint(ids):
            before = len(seen)
            seen.update(ids)
            seen.discard(None)
            if len(seen) - before == len(ids) - ids.count(None):
                return  # all new and all different: the usual case, done in C
            earlier: set = set()  # repeats within the batch only
        else:
            earlier = seen
        for rid in ids:
            if rid is None:
                continue
            if rid in earlier:
                self.duplicate_count += 1
                if len(self.duplicates) < MAX_LISTED_DUPLICATES and rid not in self.duplicates:
                    self.duplicates.append(rid)
            else:
                earlier.add(rid)

    def merge_part(self, part: _PartResult, first_index: int) -> None:
        """Add what a helper process found in the part of the file after this one's."""
        for position, total in enumerate(part.counters):
            self.counters[position] += total
        self.add_ids(part.ids)
        self.skipped_count += part.skipped_count
        self.sources[-1].skipped_invalid += part.skipped_count
        for entry in part.skipped[: max(0, MAX_LISTED - len(self.skipped))]:
            self.skipped.append({**entry, "index": entry["index"] + first_index})

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
    ",\\n". Either way the list parses back to the converted records. A ``fragment``
    writer leaves out the brackets: its file is spliced into another list later.
    """

    _FLUSH_CHARS = 1 << 20

    def __init__(self, fh, *, fragment: bool = False):
        self._fh = fh
        self._fragment = fragment
        self._pending: list[str] = []
        self._pending_chars = 0
        self.written = 0  # items written so far
        self.encode = json.JSONEncoder(ensure_ascii=False).encode
        self._encode_ascii = json.JSONEncoder().encode

    def add(self, item: str) -> None:
        self._pending.append(item)
        self._pending_chars += len(item)
        if self._pending_chars >= self._FLUSH_CHARS:
            self.flush()

    def _open_items(self) -> None:
        """Write what goes before the next item: the separator, or the list's opening."""
        if self.written:
            self._fh.write(",\n")
        elif not self._fragment:
            self._fh.write("[\n")

    def flush(self) -> None:
        if not self._pending:
            return
        self._open_items()
        try:
            self._fh.write(",\n".join(self._pending))
        except UnicodeEncodeError:
            self._write_one_by_one()
        self.written += len(self._pending)
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

    def add_fragment(self, fragment: int, items: int) -> None:
        """Append the ``items`` items a fragment writer wrote to file descriptor ``fragment``."""
        if not items:
            return
        self.flush()
        self._open_items()
        self._fh.flush()
        _append_file(fragment, self._fh.buffer)
        self.written += items

    def close(self) -> None:
        self.flush()
        if not self._fragment:
            self._fh.write("\n]\n" if self.written else "[]\n")


def _append_file(source: int, target) -> None:
    """Copy all of file descriptor ``source`` to flushed binary file ``target``, at its position.

    In the kernel where possible; the source's own position is left alone.
    """
    offset = 0
    copy_range = getattr(os, "copy_file_range", None)
    if copy_range is not None:
        try:
            while copied := copy_range(source, target.fileno(), 1 << 30, offset_src=offset):
                offset += copied
            return
        except OSError:
            pass  # not supported between these file systems: copy the rest by hand
    while block := os.pread(source, 1 << 20, offset):
        target.write(block)
        offset += len(block)


def _open_empty(path: Path):
    """Open an existing empty file (made by mkstemp) to write UTF-8 text, without truncating it.

    Truncating would change nothing but the cost: on ext4 a file truncated to zero makes
    close() wait until all its data has blocks on disk (auto_da_alloc).
    """
    return open(os.open(path, os.O_WRONLY), "w", encoding="utf-8", newline="\n")


def _delete_literal_tags(text: str, removed: int) -> str | None:
    """``text`` without its literal tags, when that deletes exactly the ``removed`` tags.

    Exact when the text holds no \\u escape of a character of the tag (so every decoded tag
    is literal in the text) and as many literal tags as were removed (so none sits in
    another string). Otherwise None: the record must be encoded again.
    """
    pieces = text.split(IMAGE_TOKEN)  # split + join is faster than str.replace here
    if len(pieces) - 1 != removed:
        return None
    if _TAG_CHAR_ESCAPE.search(text) is not None:
        return None
    return "".join(pieces)


def _convert_stream(
    stream: RecordStream,
    options: ConvertOptions,
    stats: ConversionStats,
    writer: _ListWriter,
    held: list | None,
    on_ids: Callable[[list], None],
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Convert a stream's records into ``writer`` (or into ``held`` when subsampling).

    Counters go to ``stats`` (or with each held record); ids of the records written go to
    ``on_ids`` in file order, a few thousand at a time. Output reuses the source text
    wherever that is exact: a run of valid records whose only change is deleting literal
    tags is written as its source text minus the tags, so most records are never encoded
    again. ``progress(records, bytes)`` is called every PROGRESS_EVERY records of the stream.
    """
    path = stream.path
    encode = writer.encode
    runs = held is None and options.source_text_editable
    ids: list = []
    next_progress = PROGRESS_EVERY
    for group in stream.groups():
        records = group.records
        if runs:
            position = 0
            while position < len(records):
                removed_before = stats.counters[_TAGS_REMOVED]
                stop, changed = _convert_run(records, position, options, stats.counters, ids)
                if stop > position:
                    whole = position == 0 and stop == len(records)
                    text = group.text
                    if not whole:
                        text = text[group.bounds[position][0] : group.bounds[stop - 1][1]]
                    if changed:
                        removed = stats.counters[_TAGS_REMOVED] - removed_before
                        text = _delete_literal_tags(text, removed)
                    if text is not None:
                        writer.add(text)
                    else:  # an escaped tag: encode these records again
                        for record in records[position:stop]:
                            writer.add(encode(record))
                if stop < len(records):
                    stats.reject(path, group.first_index + stop, records[stop])
                position = stop + 1
        else:
            rows = []
            for offset, record in enumerate(records):
                result = _convert_in_place(record, options)
                if result is None:
                    stats.reject(path, group.first_index + offset, record)
                    continue
                counters, changed = result
                start, end = group.bounds[offset]
                line = group.text[start:end]
                if changed:
                    edited = None
                    if options.source_text_editable:
                        edited = _delete_literal_tags(line, counters[_TAGS_REMOVED])
                    line = encode(record) if edited is None else edited
                if held is not None:
                    held.append((line, counters, record.get("id")))
                else:
                    writer.add(line)
                    rows.append(counters)
                    ids.append(record.get("id"))
            stats.add_counters(rows)
        if len(ids) >= 4096:
            on_ids(ids)
            ids = []
        if progress is not None and stream.records >= next_progress:
            progress(stream.records, stream.bytes_read)
            next_progress += PROGRESS_EVERY
    on_ids(ids)


class _PartResult(NamedTuple):
    """What a helper process sends back about the part of a file it converted."""

    records: int  # elements read (valid or not)
    bytes: int
    items: int  # items in the fragment file
    counters: list[int]
    ids: list  # of the records written, in file order
    skipped_count: int
    skipped: list[dict]  # indices count from the part's first record


def _convert_part(path: Path, start: int, options: ConvertOptions, fragment: int) -> _PartResult:
    """Convert the records from byte ``start`` on into file descriptor ``fragment``."""
    stream = RecordStream(path, start=start, sha256=False)
    stats = ConversionStats(options, sources=[_Source(str(path))])
    ids: list = []
    with open(fragment, "w", encoding="utf-8", newline="\n") as fh:
        writer = _ListWriter(fh, fragment=True)
        _convert_stream(stream, options, stats, writer, None, ids.extend)
        writer.close()
    return _PartResult(
        stream.records,
        stream.bytes_read,
        writer.written,
        stats.counters,
        ids,
        stats.skipped_count,
        stats.skipped,
    )


def _run_part(
    path: Path, start: int, options: ConvertOptions, fragment: int, results: int, unused: int
):
    """The helper process: convert the part, send the result, exit (never returns).

    The result goes through the pipe ``results`` marshalled (fast for long lists of ids);
    on any failure nothing is sent, and the main process converts the part itself, so
    problems are reported exactly as without the helper (first in file order, with
    absolute record numbers). os._exit skips the exit handlers and buffers the helper
    inherited; they belong to the main process.
    """
    try:
        os.close(unused)  # the main process's end of the pipe
        try:
            payload = marshal.dumps(tuple(_convert_part(path, start, options, fragment)))
        except BaseException:
            payload = b""
        with open(results, "wb") as pipe:
            pipe.write(payload)
    finally:
        os._exit(0)


class _PartHelper:
    """A forked process converting a file from byte ``start`` to its end, meanwhile.

    It writes into ``fragment``, a file descriptor of a temporary file next to ``beside``
    that has no name any more, so nothing is left behind whatever happens.
    """

    def __init__(self, path: Path, start: int, options: ConvertOptions, beside: Path):
        self.start = start
        opened: list[int] = []
        try:
            self.fragment, name = tempfile.mkstemp(
                prefix=f"{beside.name}.", suffix=".part", dir=beside.parent
            )
            opened.append(self.fragment)
            os.unlink(name)  # it lives on, nameless, while a process holds it open
            self._results, results_to_send = os.pipe()
            opened += [self._results, results_to_send]
            pid = os.fork()
        except BaseException:
            for fd in opened:
                os.close(fd)
            raise
        if pid == 0:
            _run_part(path, start, options, self.fragment, results_to_send, self._results)
        os.close(results_to_send)
        self._pid: int | None = pid

    def result(self) -> _PartResult | None:
        """Wait for the helper to finish; None when it failed."""
        with open(self._results, "rb", closefd=False) as pipe:
            payload = pipe.read()
        self._reap()
        try:
            return _PartResult(*marshal.loads(payload))
        except (EOFError, ValueError, TypeError):  # nothing or a cut message: it failed
            return None

    def _reap(self) -> None:
        if self._pid is not None:
            os.waitpid(self._pid, 0)
            self._pid = None

    def close(self) -> None:
        """Stop the helper if it still runs, and let go of the pipe and the fragment."""
        if self._pid is not None:
            os.kill(self._pid, signal.SIGKILL)  # still unreaped: the pid is still its own
            self._reap()
        os.close(self._results)
        os.close(self.fragment)


def _can_fork() -> bool:
    """Whether a helper process may be forked safely and would get a CPU of its own.

    Only on Linux (elsewhere fork without exec is discouraged or missing), with at least
    two CPUs for this process, and with no other thread running: a forked copy of a
    threaded process may inherit a lock some other thread holds.
    """
    if not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2:
        return False
    threading = sys.modules.get("threading")
    return threading is None or threading.active_count() == 1


def _split_point(path: Path, size: int) -> int | None:
    """Byte offset at about SPLIT_SHARE of the file where a record seems to start, or None.

    A guess, verified by the main reader: the first ``}, {`` there that is followed by a
    whole record (an object with "conversations", then ``,`` or ``]``). The ``{`` of a turn
    inside a record does not qualify, nor (almost always) text inside a string.
    """
    start = int(size * SPLIT_SHARE)
    with open(path, "rb") as fh:
        fh.seek(start)
        # surrogateescape keeps characters cut at the window's edges byte for byte.
        window = fh.read(_SPLIT_WINDOW).decode("utf-8", errors="surrogateescape")
    scan = json.JSONDecoder().scan_once
    for tries, gap in enumerate(_RECORD_GAP.finditer(window)):
        if tries == _SPLIT_TRIES:
            break
        brace = gap.end() - 1
        try:
            value, end = scan(window, brace)
        except (StopIteration, ValueError):
            continue
        if type(value) is dict and "conversations" in value and _AFTER_ELEMENT.match(window, end):
            return start + len(window[:brace].encode("utf-8", errors="surrogateescape"))
    return None


def _hash_from(path: Path, start: int, sha256) -> int:
    """Feed the file from byte ``start`` to its end into ``sha256``; return the bytes read."""
    total = 0
    with open(path, "rb") as fh:
        fh.seek(start)
        while block := fh.read(1 << 20):
            sha256.update(block)
            total += len(block)
    return total


def _convert_file(
    path: Path,
    options: ConvertOptions,
    stats: ConversionStats,
    writer: _ListWriter,
    held: list | None,
    progress: Callable[[int, int], None] | None,
    bytes_before: int,
    parts_beside: Path | None,
) -> int:
    """Convert one source into ``writer`` (or into ``held`` when subsampling); return bytes read.

    Given ``parts_beside`` (the output's temporary file), a large file is split: a forked
    helper converts its second part into a file next to it while this process converts
    the first (see the module docstring).
    """
    source = _Source(str(path))
    stats.sources.append(source)
    records_before = stats.records_in

    def report_from(records: int, bytes_read: int) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda n, b: progress(records_before + records + n, bytes_before + bytes_read + b)

    helper = None
    if parts_beside is not None and held is None:
        size = path.stat().st_size
        if size >= PARALLEL_MIN_BYTES and _can_fork():
            split = _split_point(path, size)
            if split is not None:
                helper = _PartHelper(path, split, options, parts_beside)
    try:
        stream = RecordStream(path, stop=helper.start if helper else None)
        _convert_stream(stream, options, stats, writer, held, stats.add_ids, report_from(0, 0))
        records, bytes_read, sha256 = stream.records, stream.bytes_read, stream.sha256
        if stream.stopped:  # the helper's part starts where it was meant to
            rest_sha256 = sha256.copy()
            rest_bytes = _hash_from(path, helper.start, rest_sha256)
            part = helper.result()
            if part is not None:
                writer.add_fragment(helper.fragment, part.items)
                stats.merge_part(part, records)
                records += part.records
                bytes_read += rest_bytes
                sha256 = rest_sha256
            else:  # the helper failed: convert its part here, reporting as usual
                rest = RecordStream(path, start=helper.start, first_index=records, sha256=sha256)
                report = report_from(records, bytes_read)
                _convert_stream(rest, options, stats, writer, held, stats.add_ids, report)
                records += rest.records
                bytes_read += rest.bytes_read
            if progress is not None:
                progress(records_before + records, bytes_before + bytes_read)
    finally:
        if helper is not None:
            helper.close()
    source.sha256 = sha256.hexdigest()
    source.bytes = bytes_read
    source.records = records
    stats.records_in += records
    return bytes_read


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
    *,
    parallel: bool = True,
) -> dict:
    """Convert LLaVA files (concatenated in order) to one text-only LLaVA JSON list.

    Returns the statistics (also written to ``stats_path``, with provenance). They describe
    the records written, after conversion (``records_with_image`` counts those whose source
    had an "image" key, also when it is dropped). Invalid input raises InputError and leaves
    neither the output nor the stats file behind. ``progress(records, bytes)`` is called
    every PROGRESS_EVERY records a process reads (the helper's records are added at once
    when it is done). ``parallel=False`` keeps everything in this process; the result is
    the same either way.

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

    with atomic_path(output) as tmp, _open_empty(tmp) as fh:
        writer = _ListWriter(fh)
        parts_beside = tmp if parallel else None
        bytes_read = 0
        for path in inputs:
            bytes_read += _convert_file(
                path, options, stats, writer, held, progress, bytes_read, parts_beside
            )
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
