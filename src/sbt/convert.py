#!/usr/bin/env python
"""Turn LLaVA visual instructions into text-only ones (the study's data step).

By default this applies the published rule exactly: every "<image>" in the first turn of
each record becomes "" and everything else is kept. Several inputs are concatenated in
order. The output is byte for byte what the published json.load / replace /
json.dump(indent=4) loop writes (see sbt.llava). Clean-ups are opt-in flags and recorded in
the statistics.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields

from sbt.common import cli
from sbt.llava import ConvertOptions, convert, summary_lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--input", nargs="+", required=True, metavar="RAW", help="LLaVA JSON file(s), in order"
    )
    parser.add_argument("--output", required=True, help="text-only LLaVA JSON to write")
    parser.add_argument("--stats", help="write conversion statistics (JSON) here")
    for option in fields(ConvertOptions):  # help, type and metavar are the field's metadata
        flag = {"action": "store_true"} if option.type == "bool" else {}  # off by default
        flag.update(option.metadata, default=option.default)
        parser.add_argument(f"--{option.name.replace('_', '-')}", **flag)
    parser.add_argument("--quiet", action="store_true", help="no progress or summary on stderr")
    return parser.parse_args(argv)


@cli
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = ConvertOptions(
        **{option.name: getattr(args, option.name) for option in fields(ConvertOptions)}
    )
    started = time.perf_counter()

    def say(line: str) -> None:
        print(f"convert_text_only: {line}", file=sys.stderr, flush=True)

    def report_progress(records: int, bytes_read: int) -> None:
        elapsed = time.perf_counter() - started
        say(f"{records:,} records, {bytes_read / 1e6:,.0f} MB ({elapsed:.1f} s)")

    stats = convert(
        args.input, args.output, args.stats, options, None if args.quiet else report_progress
    )
    if not args.quiet:
        for line in summary_lines(stats):
            say(line)
        say(f"wrote {args.output} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
