#!/usr/bin/env python
"""Turn LLaVA visual instructions into text-only ones (the study's data step).

By default this applies the published rule exactly: every "<image>" in the first turn of
each record becomes "" and everything else is kept. Several inputs are concatenated in
order. The output is a JSON list of records, one a line; its parsed content equals what the
published json.load / replace / json.dump loop writes (see sbt.llava). Clean-ups are opt-in
flags and recorded in the statistics.
"""

from __future__ import annotations

import argparse
import sys
import time

from sbt.common import cli, int_at_least
from sbt.llava import ConvertOptions, convert, summary_lines

__all__ = ["convert", "main", "parse_args"]

FLAGS = {
    "strip_newline": "strip whitespace around a turn after removing its <image> tag",
    "all_turns": "remove <image> from every turn, not only the first",
    "drop_image_key": 'delete each record\'s "image" key',
    "skip_invalid": "skip invalid records (counted and listed in the stats) instead of failing",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--input", nargs="+", required=True, metavar="RAW", help="LLaVA JSON file(s), in order"
    )
    parser.add_argument("--output", required=True, help="text-only LLaVA JSON to write")
    parser.add_argument("--stats", help="write conversion statistics (JSON) here")
    for name, text in FLAGS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", action="store_true", help=text)
    parser.add_argument(
        "--max-records",
        type=int_at_least(0),
        metavar="N",
        help="keep a seeded random subset of N records (in their original order)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for --max-records (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress or summary on stderr")
    return parser.parse_args(argv)


@cli
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    flags = {name: getattr(args, name) for name in FLAGS}
    options = ConvertOptions(**flags, max_records=args.max_records, seed=args.seed)
    started = time.perf_counter()

    def say(line: str) -> None:
        print(f"convert_text_only: {line}", file=sys.stderr, flush=True)

    def report_progress(records: int, bytes_read: int) -> None:
        elapsed = time.perf_counter() - started
        say(f"{records:,} records, {bytes_read / 1e6:,.0f} MB ({elapsed:.1f} s)")

    progress = None if args.quiet else report_progress
    stats = convert(args.input, args.output, args.stats, options, progress)
    if not args.quiet:
        for line in summary_lines(stats):
            say(line)
        say(f"wrote {args.output} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
