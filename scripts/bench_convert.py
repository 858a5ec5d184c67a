#!/usr/bin/env python
"""Time our text-only converter against the published snippet on the same generated file.

Both run in their own subprocess (peak RSS is read per child with os.wait4), their
outputs must parse to identical content, and the last line is ``ratio: X`` (our
records/s over the snippet's). The input is LLaVA-shaped, made by the demo generator,
pretty-printed as the published files are.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from make_demo_llava import generate_records

SCRIPTS = Path(__file__).resolve().parent

# The published conversion: load everything, blank the tag in the first turn, dump with indent.
PUBLISHED_SNIPPET = """
import json, sys
with open(sys.argv[1]) as f:
    data = json.load(f)
for i in range(len(data)):
    data[i]['conversations'][0]['value'] = data[i]['conversations'][0]['value'].replace('<image>', '')
with open(sys.argv[2], 'w') as out:
    json.dump(data, out, indent=4)
"""


def write_input(path: Path, records: int, seed: int) -> None:
    """Stream generated records to a pretty-printed JSON list without holding them all."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("[\n")
        for number, record in enumerate(generate_records(records, seed)):
            if number:
                fh.write(",\n")
            fh.write(json.dumps(record, indent=4))
        fh.write("\n]\n")


def run_measured(command: list[str]) -> tuple[float, int]:
    """Run a command; return (wall seconds, peak RSS in bytes of that child alone)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"bench_convert: {command[1]} failed with exit code {process.returncode}")
    return elapsed, usage.ru_maxrss * 1024  # Linux reports kilobytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="records to generate")
    parser.add_argument("--workdir", help="folder for the files (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed")
    parser.add_argument(
        "--repeat", type=int, default=2, help="timed runs of each (best is reported)"
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        workdir = Path(tmp)
        source = workdir / "llava_bench.json"
        started = time.perf_counter()
        write_input(source, args.records, args.seed)
        size = source.stat().st_size
        print(
            f"input: {args.records:,} records, {size / 1e6:.1f} MB "
            f"(generated in {time.perf_counter() - started:.1f} s)"
        )

        os.sync()  # let the kernel finish writing the input before anything is timed

        snippet_out = workdir / "snippet.json"
        ours_out = workdir / "ours.json"
        commands = {
            "published snippet": [
                sys.executable,
                "-c",
                PUBLISHED_SNIPPET,
                str(source),
                str(snippet_out),
            ],
            "convert_text_only": [
                sys.executable,
                str(SCRIPTS / "convert_text_only.py"),
                "--quiet",
                "--input",
                str(source),
                "--output",
                str(ours_out),
            ],
        }
        # Alternate the two and keep each one's best run: the machine may be shared.
        best: dict[str, tuple[float, int]] = {}
        for attempt in range(1, args.repeat + 1):
            for name, command in commands.items():
                seconds, rss = run_measured(command)
                print(f"run {attempt}: {name}: {seconds:.2f} s, peak RSS {rss / 1e6:.0f} MB")
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, rss)
        snippet_s, snippet_rss = best["published snippet"]
        ours_s, ours_rss = best["convert_text_only"]
        with open(snippet_out, encoding="utf-8") as fh:
            expected = json.load(fh)
        with open(ours_out, encoding="utf-8") as fh:
            identical = json.load(fh) == expected
        del expected

        print("best of each:")
        rows = [
            ("published snippet", snippet_s, snippet_rss, snippet_out),
            ("convert_text_only", ours_s, ours_rss, ours_out),
        ]
        for name, seconds, rss, output in rows:
            print(
                f"{name}: {seconds:.2f} s, {args.records / seconds:,.0f} records/s, "
                f"peak RSS {rss / 1e6:.0f} MB ({rss / size:.2f} x input), "
                f"output {output.stat().st_size / 1e6:.1f} MB"
            )
        print(f"outputs parse to identical content: {'yes' if identical else 'NO'}")
        if not identical:
            return 1
        print(f"ratio: {snippet_s / ours_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
