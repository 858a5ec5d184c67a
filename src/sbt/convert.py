#!/usr/bin/env python
"""Turn LLaVA visual instructions into text-only ones (the study's data step).

By default this applies the published rule exactly: every "<image>" in the first turn of
each record becomes "" and everything else is kept. Several inputs are concatenated in
order. The output is a JSON list of records; its parsed content equals what the published
json.load / replace / json.dump loop writes, at a fraction of the time and memory (a large
file is read by two processes at once, see sbt.llava). Clean-ups are opt-in flags and
recorded in the statistics.
"""

from __future__ import annotations

import argparse
import sys
import time

from sbt.common import cli, int_at_least
from sbt.llava import ConvertOptions, convert, summary_lines

__all__ = ["convert", "main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--input", nargs="+", required=True, metavar="RAW", help="LLaVA JSON file(s), in order"
    )
    parser.add_argument("--output", required=True, help="text-only LLaVA JSON to write")
    parser.add_argument("--stats", help="write conversion statistics (JSON) here")
    parser.add_argument(
        "--strip-newline",
        action="store_true",
        help="strip whitespace around a turn after removing its <image> tag",
    )
    parser.add_argument(
        "--all-turns",
        action="store_true",
        help="remove <image> from every turn, not only the first",
    )
    parser.add_argument(
        "--drop-image-key", action="store_true", help='delete each record\'s "image" key'
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip invalid records (counted and listed in the stats) instead of failing",
    )
    parser.add_argument(
        "--max-records",
        type=int_at_least(0),
        metavar="N",
        help="keep a seeded random subset of N records (in their original order)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for --max-records (default 0)")
    parser.add_argument(
        "--single-process",
        action="store_true",
        help="convert in this process only (by default a large file is split between two)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress or summary on stderr")
    return parser.parse_args(argv)


@cli
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = ConvertOptions(
        strip_newline=args.strip_newline,
        all_turns=args.all_turns,
        drop_image_key=args.drop_image_key,
        skip_invalid=args.skip_invalid,
        max_records=args.max_records,
        seed=args.seed,
    )
    started = time.perf_counter()

    def report_progress(records: int, bytes_read: int) -> None:
        elapsed = time.perf_counter() - started
        print(
            f"convert_text_only: {records:,} records, {bytes_read / 1e6:,.0f} MB ({elapsed:.1f} s)",
            file=sys.stderr,
            flush=True,
        )

    stats = convert(
        args.input,
        args.output,
        stats_path=args.stats,
        options=options,
        progress=None if args.quiet else report_progress,
        parallel=not args.single_process,
    )
    if not args.quiet:
        elapsed = time.perf_counter() - started
        for line in summary_lines(stats):
            print(f"convert_text_only: {line}", file=sys.stderr)
        print(f"convert_text_only: wrote {args.output} in {elapsed:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
