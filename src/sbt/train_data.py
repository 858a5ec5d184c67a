"""Training data: the tokenized records as one memory-mapped Arrow file, built once.

`prepare_train_data` turns a LLaVA-format file into the dataset the Trainer reads. It runs
`sbt.tokenize_chat.tokenize_records` over the records with `datasets.Dataset.map`
(batched), so the ids, labels and skip counts are exactly tokenize_records', and the map
writes them straight to an Arrow file: `input_ids` and `labels` (int32 lists), `length`
and `truncated`. Every process memory-maps that file (`Dataset.from_file`) instead of
holding Python lists of ints in every rank (2.7 to 3.9 GB per rank for 80k records,
`scripts/bench_train.py --measure data`): its pages live in the page cache, shared by
the ranks of a node, and the collators read one batch at a time.

Under `TrainingArguments.main_process_first(local=False)` the global rank 0 finds or
builds the file while the other ranks wait; they then open it (the checkpoint directory
and a `tokenized_cache_dir` are on the shared file system, as for the checkpoints). To
build it, rank 0 keeps the data file's bytes and decodes the records a map batch at a
time (`sbt.lazy_records.read_records`), not all of them as Python objects.

The cache is a directory `tokenized-<key>/` (`data.arrow`, `meta.json`: records, skip
counts, examples, truncated and trained tokens) in `tokenized_cache_dir`, or in the run's
checkpoint directory. The key (`tokenized_cache_key`) is the sha256 of what the examples
depend on: the data file's sha256, the tokenizer as set up, the template, the maximum
length and the source of the labelling code. It is built in a temporary directory and
renamed into place only when the skip check passes, so it appears only complete, and
bad data leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sbt.common import input_error
from sbt.lazy_records import read_records
from sbt.templates import Template, as_template
from sbt.tokenize_chat import IGNORE_INDEX, SKIP_REASONS, skip_summary, tokenize_records

TOKENIZED_CACHE_VERSION = 2  # 1: one .npz file of flat arrays; 2: an Arrow dataset
# A change in any of these files invalidates the caches (they decide ids and labels, and
# records.py which records are accepted: a cache must not outlive a stricter check).
_LABELLING_CODE = (
    "tokenize_chat.py",
    "templates.py",
    "train_data.py",
    "lazy_records.py",
    "records.py",
)
DATA_FILE = "data.arrow"
META_FILE = "meta.json"
_MAP_BATCH = 1000  # records per map call (tokenize_records encodes 512 texts at a time)


@dataclass
class TrainData:
    """The tokenized examples (a numpy-formatted, memory-mapped Dataset) and their counts."""

    dataset: object  # datasets.Dataset: input_ids, labels, length, truncated
    path: Path
    hit: bool  # found in the cache, not tokenized by this process
    records: int
    skips: dict[str, int]
    examples: int
    truncated: int
    trained_tokens: int


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tokenized_cache_key(
    data_sha256: str, tokenizer, template: Template | str, max_length: int
) -> str:
    """sha256 of everything the tokenized examples depend on.

    The data file, the tokenizer as set up (its full JSON, special tokens, chat template),
    the template, the truncation length, and the source of the labelling code.
    """
    code = Path(__file__).parent
    parts = {
        "version": TOKENIZED_CACHE_VERSION,
        "data": data_sha256,
        "tokenizer": hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest(),
        "special": [str(t) for t in tokenizer.all_special_tokens] + [str(tokenizer.pad_token)],
        "chat_template": getattr(tokenizer, "chat_template", None),
        "template": as_template(template).name,
        "max_length": max_length,
        "code": [file_sha256(code / name) for name in _LABELLING_CODE],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def tokenized_cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / f"tokenized-{key}"


def _features():
    from datasets import Features, Value
    from datasets import Sequence as ListOf

    return Features(
        {
            "input_ids": ListOf(Value("int32")),
            "labels": ListOf(Value("int32")),
            "length": Value("int32"),  # the Trainer's length grouping reads this column
            "truncated": Value("bool"),
        }
    )


@contextmanager
def _quiet_datasets():
    """No progress bars from `datasets` on stderr (training logs one line per step)."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def tokenize_to_arrow(
    records: Sequence[dict],
    tokenizer,
    template: Template | str,
    max_length: int,
    target: Path,
    *,
    source: str | Path,
    fingerprint: str,
) -> dict:
    """Tokenize `records` into the Arrow file `target`; return the counts for meta.json."""
    from datasets import Dataset

    counts = Counter({"examples": 0, "truncated": 0, "trained_tokens": 0})
    skips: Counter[str] = Counter()

    def tokenize(batch: dict) -> dict:
        indices = batch["record"]
        examples, batch_skips = tokenize_records(
            [records[i] for i in indices],
            tokenizer,
            template,
            max_length,
            source=source,
            first_index=indices[0] if indices else 0,
        )
        skips.update(batch_skips)
        counts["examples"] += len(examples)
        counts["truncated"] += sum(ex["truncated"] for ex in examples)
        counts["trained_tokens"] += sum(
            len(ex["labels"]) - ex["labels"].count(IGNORE_INDEX) for ex in examples
        )
        return {
            "input_ids": [ex["input_ids"] for ex in examples],
            "labels": [ex["labels"] for ex in examples],
            "length": [len(ex["input_ids"]) for ex in examples],
            "truncated": [ex["truncated"] for ex in examples],
        }

    with _quiet_datasets():
        Dataset.from_dict({"record": list(range(len(records)))}).map(
            tokenize,
            batched=True,
            batch_size=_MAP_BATCH,
            remove_columns=["record"],
            features=_features(),
            cache_file_name=str(target),
            load_from_cache_file=False,
            new_fingerprint=fingerprint,  # the cache key: datasets need not hash the closure
        )
    return {
        "records": len(records),
        "skips": {reason: skips[reason] for reason in SKIP_REASONS},
        **counts,
    }


def check_skipped(data: str | Path, meta: dict, max_skipped_fraction: float) -> None:
    """InputError when no record is trainable or too many were skipped."""
    skips, records = meta["skips"], meta["records"]
    skipped = sum(skips.values())
    if not meta["examples"]:
        raise input_error(data, f"no trainable record ({skip_summary(skips)})")
    if skipped > max_skipped_fraction * records:
        raise input_error(
            data,
            f"{skipped} of {records} records skipped ({skip_summary(skips)}), more than "
            f"max_skipped_fraction={max_skipped_fraction}",
        )


def _open_cache(path: Path, hit: bool) -> TrainData:
    """The cache at `path`, memory-mapped (OSError, ValueError or KeyError if unreadable)."""
    from datasets import Dataset

    meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    if meta.get("version") != TOKENIZED_CACHE_VERSION:
        raise ValueError(f"format version {meta.get('version')}")
    dataset = Dataset.from_file(str(path / DATA_FILE))  # pyarrow's errors: ValueError, OSError
    if len(dataset) != meta["examples"]:
        raise ValueError(f"{len(dataset)} examples, meta.json says {meta['examples']}")
    fields = ("records", "skips", "examples", "truncated", "trained_tokens")
    return TrainData(
        dataset.with_format("numpy"), path, hit, **{name: meta[name] for name in fields}
    )


def load_tokenized(path: Path, *, hit: bool = True) -> TrainData | None:
    """The cache at `path`, memory-mapped; None when there is none (or it is unreadable)."""
    if not (path / META_FILE).is_file():
        return None
    try:
        return _open_cache(path, hit)
    except (OSError, ValueError, KeyError) as exc:
        print(f"ignoring unreadable tokenized cache {path}: {exc}", file=sys.stderr)
        return None


def _temporary_dir(path: Path) -> Path:
    """A new empty directory on `path`'s file system, without creating `path`'s parents."""
    base = path.parent
    while not base.exists():
        base = base.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=base))
    umask = os.umask(0)  # mkdtemp makes it private; the cache should follow the umask
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    return tmp


def build_tokenized(
    path: Path,
    data: str | Path,
    tokenizer,
    template: Template | str,
    max_length: int,
    max_skipped_fraction: float,
) -> TrainData:
    """Tokenize `data` into the cache at `path` (checked, then renamed into place)."""
    records = read_records(data)
    tmp = _temporary_dir(path)
    try:
        meta = tokenize_to_arrow(
            records,
            tokenizer,
            template,
            max_length,
            tmp / DATA_FILE,
            source=data,
            fingerprint=path.name.removeprefix("tokenized-")[:64],
        )
        del records
        check_skipped(data, meta, max_skipped_fraction)
        meta = {"version": TOKENIZED_CACHE_VERSION, **meta}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, path)
        except OSError:  # a cache is there: another run's, published first, or unreadable
            try:
                _open_cache(path, hit=False)  # the same examples: use theirs
            except (OSError, ValueError, KeyError):
                shutil.rmtree(path)
                os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return _open_cache(path, hit=False)


def prepare_train_data(
    args,
    data: str | Path,
    data_sha256: str,
    tokenizer,
    template: Template | str,
    max_length: int,
    *,
    cache_dir: str | Path,
    max_skipped_fraction: float,
) -> TrainData:
    """The tokenized examples of `data`: from the cache, else tokenized by global rank 0.

    `args` is the TrainingArguments (for main_process_first). Raises InputError when no
    record is trainable or more than `max_skipped_fraction` of them were skipped.
    """
    key = tokenized_cache_key(data_sha256, tokenizer, template, max_length)
    path = tokenized_cache_path(cache_dir, key)
    with args.main_process_first(local=False, desc="tokenized data"):
        found = load_tokenized(path)
        if found is None:
            found = build_tokenized(
                path, data, tokenizer, template, max_length, max_skipped_fraction
            )
        else:
            print(f"tokenized examples from {path}", file=sys.stderr)
            meta = {"records": found.records, "skips": found.skips, "examples": found.examples}
            check_skipped(data, meta, max_skipped_fraction)
    skipped = sum(found.skips.values())
    if skipped:
        print(
            f"skipped {skipped} of {found.records} records: {skip_summary(found.skips)}",
            file=sys.stderr,
        )
    return found
