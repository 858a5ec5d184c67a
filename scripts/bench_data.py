#!/usr/bin/env python
"""Peak memory of the training data path, before and after the Arrow cache.

`scripts/bench_train.py --measure data` runs this (`--records`, default 80,000 LLaVA-like
records of the demo's length mix). Each measurement is a fresh process that first does
what every training process does anyway: import torch, transformers, datasets and sbt,
and set up the tokenizer. Its peak resident set at that point (ru_maxrss, read as the
process's VmHWM on Linux, see `_max_rss`) is the baseline; then it runs only the data path, and the figure printed is the peak above that
baseline: the memory the data path adds to each rank.

- before: the in-memory path that `sbt.training` had, kept here as the reference
  (`old_tokenize`, `old_from_cache`). Every rank read the records and tokenized them into
  Python lists of ints (`tokenize_records`), kept for the whole run (about 36 bytes a
  token); rank 0 also wrote them to a `.npz` cache, and a rank that found the cache read
  it back into lists.
- after: `sbt.train_data.prepare_train_data`. Global rank 0 tokenizes with
  `Dataset.map` into a memory-mapped Arrow file; the other ranks open it. Also measured:
  a rank that then reads every row once, as an epoch does (its resident set then holds the
  file's pages, which are the page cache's, shared by all ranks of the node).

Usage: python scripts/bench_data.py MODE WORKDIR (run by bench_train.py, one per mode).
"""

from __future__ import annotations

import contextlib
import gc
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_train_variant import MAX_LENGTH, TEMPLATE  # the bench's, so its data are the same

MODES = {
    "before-tokenize": "before: tokenize into lists, every rank (rank 0 also saves .npz)",
    "before-cache": "before: lists read back from the .npz cache",
    "after-tokenize": "after: Dataset.map into the Arrow cache, global rank 0",
    "after-cache": "after: the Arrow cache opened, every other rank",
    "after-cache-read": "after: the Arrow cache opened, every row read once",
    # What rank 0 holds to read the records it tokenizes: sbt.lazy_records, against the
    # loader datasets has for JSON files, which a JSON list makes parse the whole file
    # into Python objects at once (datasets/packaged_modules/json) before Arrow gets it.
    "read-lazy": "reading: sbt.lazy_records.read_records, every record decoded once",
    "read-datasets": "reading: datasets.Dataset.from_json, every row read once",
}


def old_tokenize(data: Path, tokenizer, cache: Path) -> list[dict]:
    """The old path: records -> Python lists of every example, kept; rank 0 saves .npz."""
    import numpy as np

    from sbt.tokenize_chat import load_records, tokenize_records

    records = load_records(data)
    examples, skips = tokenize_records(records, tokenizer, TEMPLATE, MAX_LENGTH, source=data)
    count = len(records)
    del records
    lengths = np.array([len(ex["input_ids"]) for ex in examples], dtype=np.int64)
    meta = {"ids": [ex["id"] for ex in examples], "records": count, "skips": skips}
    with open(cache, "wb") as fh:
        np.savez(
            fh,
            input_ids=np.fromiter(
                (t for ex in examples for t in ex["input_ids"]), np.int32, lengths.sum()
            ),
            labels=np.fromiter(
                (t for ex in examples for t in ex["labels"]), np.int32, lengths.sum()
            ),
            lengths=lengths,
            truncated=np.array([ex["truncated"] for ex in examples], dtype=bool),
            meta=np.array(json.dumps(meta)),
        )
    return examples


def old_from_cache(cache: Path) -> list[dict]:
    """The old cache hit: the .npz read back into Python lists."""
    import numpy as np

    with np.load(cache) as saved:
        meta = json.loads(str(saved["meta"]))
        bounds = np.concatenate([[0], np.cumsum(saved["lengths"])])
        input_ids, labels = saved["input_ids"], saved["labels"]
        return [
            {
                "id": record_id,
                "input_ids": input_ids[start:end].tolist(),
                "labels": labels[start:end].tolist(),
                "truncated": bool(truncated),
            }
            for record_id, start, end, truncated in zip(
                meta["ids"], bounds[:-1], bounds[1:], saved["truncated"], strict=True
            )
        ]


def read_every_record(mode: str, data: Path, cache: Path) -> int:
    """Read the data file's records, each once, by one of the two readers; their count."""
    if mode == "read-lazy":
        from sbt.lazy_records import read_records

        records = read_records(data)
        for index in range(len(records)):
            records[index]
        return len(records)
    import datasets

    shutil.rmtree(cache, ignore_errors=True)
    rows = datasets.Dataset.from_json(str(data), cache_dir=str(cache))
    for index in range(len(rows)):
        rows[index]
    return len(rows)


class _OneProcess:
    """What prepare_train_data needs of TrainingArguments, for a single process."""

    def main_process_first(self, local=True, desc="work"):
        return contextlib.nullcontext()


def _max_rss() -> int:
    """Peak resident set of this process, in bytes.

    Linux's ru_maxrss carries the peak of the process this one was started from across
    exec (here: the bench, which holds the generated records), so the same peak is read
    from this process's own memory map, /proc/self/status VmHWM, where there is one.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def run_mode(mode: str, workdir: Path) -> dict:
    """One measurement in this (fresh) process."""
    import datasets  # noqa: F401  (the imports of a training process: part of the baseline)
    import numpy  # noqa: F401
    import pyarrow  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from sbt.tokenize_chat import load_tokenizer
    from sbt.train_data import file_sha256, prepare_train_data

    setup = json.loads((workdir / "setup.json").read_text(encoding="utf-8"))
    data, npz, arrow_dir = Path(setup["data"]), workdir / "old-cache.npz", workdir / "arrow"
    tokenizer, _ = load_tokenizer(setup["model"], TEMPLATE, MAX_LENGTH)
    data_sha256 = file_sha256(data)
    gc.collect()
    baseline = _max_rss()
    start = time.perf_counter()
    if mode.startswith("read-"):
        held = read_every_record(mode, data, workdir / "datasets-cache")
    elif mode == "before-tokenize":
        held = old_tokenize(data, tokenizer, npz)
    elif mode == "before-cache":
        held = old_from_cache(npz)
    else:
        held = prepare_train_data(
            _OneProcess(),
            data,
            data_sha256,
            tokenizer,
            TEMPLATE,
            MAX_LENGTH,
            cache_dir=arrow_dir,
            max_skipped_fraction=1.0,
        )
        if mode == "after-cache-read":
            for index in range(len(held.dataset)):
                held.dataset[index]
    seconds = time.perf_counter() - start
    peak = _max_rss()
    if mode.startswith("read-"):
        examples, tokens = held, None
    elif isinstance(held, list):
        examples, tokens = len(held), sum(len(ex["input_ids"]) for ex in held)
    else:
        import pyarrow.compute as pc

        examples, tokens = held.examples, pc.sum(held.dataset.data.column("length")).as_py()
    return {
        "mode": mode,
        "baseline": baseline,
        "peak": peak,
        "above": peak - baseline,
        "seconds": seconds,
        "examples": examples,
        "tokens": tokens,
    }


def measure(workdir: Path, env: dict) -> dict:
    """Every mode, each in a fresh process, in order (a cache mode reads the one before)."""
    shutil.rmtree(workdir / "arrow", ignore_errors=True)  # the "tokenize" modes start cold
    (workdir / "old-cache.npz").unlink(missing_ok=True)
    results = {}
    for mode in MODES:
        done = subprocess.run(
            [sys.executable, __file__, mode, str(workdir)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"data path {mode} failed:\n{done.stderr[-3000:]}")
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def report(results: dict, records: int) -> None:
    first = results["before-tokenize"]
    print(
        f"data path: {records} LLaVA-like records -> {first['examples']} examples, "
        f"{first['tokens'] / 1e6:.1f}M tokens; peak RSS per process above the imports' "
        f"baseline ({first['baseline'] / 2**20:.0f} MiB: torch, transformers, datasets, "
        "tokenizer)"
    )
    for mode, result in results.items():
        if mode.startswith("read-"):
            print(f"  {MODES[mode]}: {result['above'] / 2**20:.0f} MiB ({result['seconds']:.1f} s)")
            continue
        print(
            f"  {MODES[mode]}: {result['above'] / 2**20:.0f} MiB "
            f"({result['above'] / result['tokens']:.1f} bytes a token, {result['seconds']:.1f} s)"
        )
    for after, before in (("after-tokenize", "before-tokenize"), ("after-cache", "before-cache")):
        ratio = results[after]["above"] / results[before]["above"]
        print(f"data path ratio ({after.removeprefix('after-')}): after / before = {ratio:.2f}")
    ratio = results["read-lazy"]["above"] / results["read-datasets"]["above"]
    print(f"record reading ratio: lazy_records / datasets' JSON loader = {ratio:.2f}")


if __name__ == "__main__":
    print(json.dumps(run_mode(sys.argv[1], Path(sys.argv[2]))))
