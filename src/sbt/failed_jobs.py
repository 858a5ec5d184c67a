"""The failed jobs of a Snakemake run, for the end of its output (the Snakefile's onerror).

After a run with failures (e.g. under --keep-going): each failed job's rule, output and log
file, with the last lines of that log, so nobody has to scroll back for them. Read from
Snakemake's own run log, whose error blocks name the output and the log. Plain text in,
plain text out: the Snakefile hands it to Snakemake's logger.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

ERROR_BLOCK = "Error in rule "  # how Snakemake's run log opens a failed job's block
TAIL_LINES = 3  # of each failed job's log
TAIL_WIDTH = 200  # characters of each of those lines


def failed_jobs(run_log: Iterable[str]) -> list[dict]:
    """{"rule", "output" (if named), "log"} of each failed job in the run log's lines, once
    per (rule, output) even where Snakemake repeats the block."""
    failed = {}
    current = None
    for line in run_log:
        if line.startswith(ERROR_BLOCK):
            current = {"rule": line.removeprefix(ERROR_BLOCK).rstrip(":")}
        # A line without indent: the error block ended (other jobs' blocks follow).
        elif not line.startswith("    "):
            current = None
        elif current is not None and line.startswith("    output: "):
            current["output"] = line.partition(": ")[2]
        elif current is not None and line.startswith("    log: "):
            current["log"] = line.partition(": ")[2].split(" (check log")[0]
            failed[(current["rule"], current.get("output"))] = current
    return list(failed.values())


def failure_summary(log: str | os.PathLike | Iterable[str | os.PathLike] | None) -> str:
    """The failed jobs of the run whose log file(s) Snakemake's onerror passes as `log`,
    each with its own log's last lines; "" when none failed."""
    logs = [log] if isinstance(log, (str, os.PathLike)) else list(log or [])
    run_log = [
        line
        for path in logs
        if Path(path).is_file()
        for line in Path(path).read_text(errors="replace").splitlines()
    ]
    failed = failed_jobs(run_log)
    if not failed:
        return ""
    lines = [f"{len(failed)} failed job(s):"]
    for job in failed:
        lines.append(f"  {job['rule']} -> {job.get('output', '?')}")
        for job_log in job["log"].split(", "):
            lines.append(f"    log: {job_log}")
            if Path(job_log).is_file():
                tail = Path(job_log).read_text(errors="replace").splitlines()[-TAIL_LINES:]
                lines += [f"      | {text[:TAIL_WIDTH]}" for text in tail]
    return "\n".join(lines)
