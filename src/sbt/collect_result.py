#!/usr/bin/env python
"""One benchmark's result JSON from its record written by sbt.evaluate_run.

    python -m sbt.collect_result --record results/lm_eval/<run>/<benchmark>.json \\
        --output results/eval/<run>/<benchmark>.json [--run-log logs/lm_eval/<run>.log]

An "ok" record: its result document is written to --output (atomically), the very file
evaluate.py would have written. An "error" record: its log lines and its error go to
stderr (this job's log), nothing is written, and the exit status is 1, so Snakemake fails
this benchmark alone. The error record is then renamed to <record>.failed: the run's
evaluation job has a missing output, so the next snakemake run redoes it, and the request
cache answers every benchmark that did not fail.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sbt.common import write_json

FAILED = ".failed"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--run-log", help="the run's evaluation log (named in errors)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    failed = args.record.with_name(args.record.name + FAILED)
    source = args.record if args.record.is_file() else failed
    try:
        record = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: {args.record}: no readable record ({exc})", file=sys.stderr)
        return 1
    for line in record.get("log", []):
        print(line, file=sys.stderr)
    if record.get("status") == "ok" and source == args.record:
        write_json(args.output, record["result"])
        print(f"[collect_result] wrote {args.output}", file=sys.stderr)
        return 0
    if source == args.record:
        args.record.replace(failed)  # the next snakemake run redoes the run's evaluation
    if args.run_log:
        print(f"(the run's evaluation log: {args.run_log})", file=sys.stderr)
    error = record.get("error") or "no result"
    print(f"error: {record.get('benchmark', args.record.stem)}: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
