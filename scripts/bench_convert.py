#!/usr/bin/env python
"""Time our text-only converter against the published snippet on the same generated file.

Both run in their own subprocess and their outputs must be byte-identical. The
last two lines hold the targets, as ratios with PASS or FAIL: our time over the snippet's
(at most TIME_TARGET) and our peak memory over the input file's size (at most
MEMORY_TARGET; peak memory is the process's peak resident set, from os.wait4). The input
is LLaVA-shaped, made by the demo generator and pretty-printed as the published files are;
like the 665k mix it holds records without image and records whose first turn is from gpt
(its mix is printed). The targets are meant for the default 100,000 records: on a tiny
input the interpreter alone outweighs the file.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sbt.demo.llava import generate_records

SCRIPTS = Path(__file__).resolve().parent
TIME_TARGET = 1.5  # our seconds over the published snippet's, at most
MEMORY_TARGET = 3.0  # our peak resident memory over the input file's size, at most

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


def write_input(path: Path, records: int, seed: int) -> dict[str, int]:
    """Stream generated records to a pretty-printed JSON list without holding them all.

    Returns the mix written: records without image, first turns from gpt, turns.
    """
    mix = {"without_image": 0, "first_from_gpt": 0, "turns": 0}
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("[\n")
        for number, record in enumerate(generate_records(records, seed)):
            if number:
                fh.write(",\n")
            fh.write(json.dumps(record, indent=4))
            mix["without_image"] += "image" not in record
            mix["first_from_gpt"] += record["conversations"][0]["from"] == "gpt"
            mix["turns"] += len(record["conversations"])
        fh.write("\n]\n")
    return mix


def write_input_elsewhere(path: Path, records: int, seed: int) -> dict[str, int]:
    """write_input() in a child process, so this one stays small.

    A process started from this one counts this one's resident memory in its own peak
    (ru_maxrss) until it has loaded its program, and generating holds a lot of memory.
    """
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
        "from bench_convert import write_input; "
        "print(json.dumps(write_input(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))"
    )
    command = [sys.executable, "-c", code, str(SCRIPTS), str(path), str(records), str(seed)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def run_measured(command: list[str]) -> tuple[float, int]:
    """Run a command; return its wall seconds and its peak resident memory in bytes."""
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
        mix = write_input_elsewhere(source, args.records, args.seed)
        size = source.stat().st_size
        print(
            f"input: {args.records:,} records, {size / 1e6:.1f} MB "
            f"(generated in {time.perf_counter() - started:.1f} s); "
            f"{mix['without_image'] / args.records:.1%} without image, "
            f"{mix['first_from_gpt'] / args.records:.1%} first turn from gpt, "
            f"{mix['turns'] / args.records:.1f} turns per record"
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
                "-m",
                "sbt.convert",
                "--quiet",
                "--input",
                str(source),
                "--output",
                str(ours_out),
            ],
        }
        # Alternate the two and keep each one's best run: the machine may be shared.
        best: dict[str, tuple[float, int]] = {}
        outputs = {"published snippet": snippet_out, "convert_text_only": ours_out}
        for attempt in range(1, args.repeat + 1):
            for name, command in commands.items():
                # Each run writes a new file, as under Snakemake, which deletes outputs first.
                outputs[name].unlink(missing_ok=True)
                seconds, rss = run_measured(command)
                print(f"run {attempt}: {name}: {seconds:.2f} s, peak RSS {rss / 1e6:.0f} MB")
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, rss)
        with open(snippet_out, encoding="utf-8") as fh:
            expected = json.load(fh)
        with open(ours_out, encoding="utf-8") as fh:
            identical = json.load(fh) == expected
        del expected
        same_bytes = filecmp.cmp(snippet_out, ours_out, shallow=False)

        print("best of each:")
        for name, output in outputs.items():
            seconds, rss = best[name]
            print(
                f"{name}: {seconds:.2f} s, {args.records / seconds:,.0f} records/s, "
                f"peak RSS {rss / 1e6:.0f} MB ({rss / size:.2f} x input), "
                f"output {output.stat().st_size / 1e6:.1f} MB"
            )
        print(f"outputs parse to identical content: {'yes' if identical else 'NO'}")
        print(f"outputs are byte-identical: {'yes' if same_bytes else 'NO'}")
        if not (identical and same_bytes):
            return 1
        (ours, ours_rss), (snippet, _) = best["convert_text_only"], best["published snippet"]
        verdict = {True: "PASS", False: "FAIL"}
        print(
            f"time ratio: {ours / snippet:.2f} (convert_text_only {ours:.2f} s / published "
            f"snippet {snippet:.2f} s; target <= {TIME_TARGET}): "
            f"{verdict[ours <= TIME_TARGET * snippet]}"
        )
        print(
            f"memory ratio: {ours_rss / size:.2f} (convert_text_only peak RSS "
            f"{ours_rss / 1e6:.0f} MB / input {size / 1e6:.1f} MB; target <= {MEMORY_TARGET}): "
            f"{verdict[ours_rss <= MEMORY_TARGET * size]}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
