#!/usr/bin/env python
"""Evaluate one model (optionally base + PEFT adapter) on one benchmark with lm-eval.

Runs lm-eval, the library (`simple_evaluate`, model "hf"), offline. With --data-files the
stock tasks run on local files in their dataset's own schema, keeping lm-eval's prompts and
metrics; without, on the stock datasets from the local Hugging Face cache. Several --task
values form one benchmark evaluated in one call (TruthfulQA-MC: truthfulqa_mc1 and
truthfulqa_mc2 on the same file). Every random seed is fixed and the batch size is fixed, so
a rerun gives the same numbers.

Output JSON (written atomically): see sbt/lmeval_bench.py. sbt.evaluate_run evaluates
every benchmark of a run in one process (one model load; `evaluation.group: run`) through
the same code (sbt/lmeval_run.py), so both give the same documents.
"""

from __future__ import annotations

import argparse
import sys

from sbt.common import cli, write_json
from sbt.lmeval_bench import add_arguments, write_samples
from sbt.lmeval_run import RAISE, evaluate_benchmarks


def log(message: str) -> None:
    print(f"[evaluate] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="lm-eval's request cache (one SQLite file per model setting): a rerun asks "
        "the model only what it has not answered yet",
    )
    return parser.parse_args(argv)


def evaluate(args: argparse.Namespace) -> dict:
    """Validate the arguments, run lm-eval, write the samples; return the output document."""
    (outcome,) = evaluate_benchmarks([args], cache_dir=args.cache_dir, on_error=RAISE)
    if args.log_samples:
        write_samples(args.log_samples, outcome.samples or {})
    return outcome.document


@cli
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    document = evaluate(args)
    write_json(args.output, document)
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
