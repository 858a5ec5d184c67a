#!/usr/bin/env python
"""Evaluate every benchmark of one run in one process: `evaluation.group: run`.

    python -m sbt.evaluate_run --records DIR [--cache-dir DIR] --each <sbt.evaluate options> --each ...

Each `--each` group holds one benchmark's evaluate.py options (without --output; --benchmark
names it). The benchmarks go through the same code as evaluate.py (sbt/lmeval_run.py): each
model setting is loaded once, benchmarks that share it are batched into as few lm-eval calls
as their settings allow, and lm-eval's request cache in --cache-dir answers every request
the model already answered (an interrupted or edited run redoes only what is new).

For each benchmark one record DIR/<benchmark>.json is written: {"benchmark", "status": "ok"
or "error", "result": the document evaluate.py would write, "error", "log": its log lines}.
A failed benchmark gets an error record and the others go on; sbt.collect_result
turns each record into the benchmark's result JSON, or into that benchmark's failure.
Samples (--log-samples) are written where each benchmark's options say.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from sbt.common import cli, input_error, write_json
from sbt.lmeval_bench import add_arguments, benchmark_name, write_samples
from sbt.lmeval_run import RECORD, evaluate_benchmarks

EACH = "--each"


def log(message: str) -> None:
    print(f"[evaluate_run] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[argparse.Namespace]]:
    """This script's own options, and one evaluate.py namespace per `--each` group."""
    own, *groups = _split(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", required=True, help="folder of the per-benchmark records")
    parser.add_argument("--cache-dir", help="lm-eval's request cache (SQLite files) for this run")
    args = parser.parse_args(own)
    if not groups:
        raise input_error(EACH, "no benchmark given (one --each group per benchmark)")
    benchmark = argparse.ArgumentParser(prog=f"{parser.prog} {EACH}")
    add_arguments(benchmark, output_required=False)
    benches = [benchmark.parse_args(group) for group in groups]
    names = Counter(benchmark_name(bench) for bench in benches)
    for name, count in names.items():
        if count > 1:
            raise input_error(EACH, f"benchmark {name!r} given {count} times")
    return args, benches


def _split(argv: list[str]) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for arg in argv:
        if arg == EACH:
            parts.append([])
        else:
            parts[-1].append(arg)
    return parts


@cli
def main(argv: list[str] | None = None) -> int:
    args, benches = parse_args(sys.argv[1:] if argv is None else argv)
    outcomes = evaluate_benchmarks(benches, cache_dir=args.cache_dir, on_error=RECORD, unit="run")
    requests: Counter[str] = Counter()
    for bench, outcome in zip(benches, outcomes, strict=True):
        if outcome.document is not None and bench.log_samples:
            write_samples(bench.log_samples, outcome.samples or {})
        record = {
            "benchmark": outcome.name,
            "status": "ok" if outcome.document is not None else "error",
            "result": outcome.document,
            "error": outcome.error,
            "log": outcome.lines,
        }
        path = Path(args.records) / f"{outcome.name}.json"
        write_json(path, record)
        path.with_name(path.name + ".failed").unlink(missing_ok=True)  # collect_result's
        if outcome.document is not None:
            requests.update(outcome.document["provenance"]["evaluation"]["requests"])
    failed = [outcome.name for outcome in outcomes if outcome.document is None]
    log(
        f"{len(outcomes) - len(failed)} of {len(outcomes)} benchmarks evaluated"
        + (f" (failed: {', '.join(failed)})" if failed else "")
        + f"; requests: {requests['total']}, answered by the model {requests['model']},"
        f" from the cache {requests['from_cache']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
