#!/usr/bin/env python
"""Try the SLURM profile on this machine before a real cluster: `make slurm-demo`.

Starts the project's one-node SLURM cluster on localhost (sbt.local_slurm: munged,
slurmctld and slurmd in a private temporary directory; Debian's slurm-wlm and munge are
installed with apt-get when missing, which needs root), runs the demo DAG through
`--profile profiles/slurm` with every non-local job submitted by sbatch, prints the
cluster's view of the jobs (squeue while they run, `scontrol show job` after), and stops
the cluster again, leaving nothing behind but the workflow's outputs.

Extra arguments after `--` go to snakemake, e.g. `-- --forceall` or `-- -n`.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from sbt.common import cli
from sbt.local_slurm import ClusterUnavailable, SlurmCluster, running_cluster

REPO = Path(__file__).resolve().parents[2]  # the checkout (an editable install)
# What this cluster needs on top of the profile: it has no job accounting (sacct cannot
# answer, squeue can), and short jobs are polled after 1 s instead of 40 s.
LOCAL_CLUSTER_OPTIONS = (
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--latency-wait",
    "5",
)
RUN_ID = re.compile(r"SLURM run ID: (\S+)")


def rule_of(comment: str) -> str:
    """The rule name in the executor's job comment `rule_<rule>[_wildcards_<values>]`."""
    return comment.removeprefix("rule_").split("_wildcards_", 1)[0]


def job_table(cluster: SlurmCluster, run_name: str) -> list[dict[str, str]]:
    """One row per SLURM job of a Snakemake run: job id, rule, state, elapsed, exit code."""
    rows = [
        {
            "job_id": job["JobId"],
            "rule": rule_of(job.get("Comment", "")),
            "state": job["JobState"],
            "elapsed": job.get("RunTime", ""),
            "exit": job.get("ExitCode", ""),
            "comment": job.get("Comment", ""),
        }
        for job in cluster.show_jobs(name=run_name)
    ]
    return sorted(rows, key=lambda row: int(row["job_id"]))


def format_job_table(rows: list[dict[str, str]]) -> str:
    columns = ("job_id", "rule", "state", "elapsed", "exit", "comment")
    widths = {col: max([len(col)] + [len(row[col]) for row in rows]) for col in columns}
    lines = ["  ".join(col.ljust(widths[col]) for col in columns)]
    lines += ["  ".join(row[col].ljust(widths[col]) for col in columns) for row in rows]
    return "\n".join(lines)


def snakemake_env(cluster: SlurmCluster) -> dict[str, str]:
    """Our Python first on PATH (the jobs' `python`), then the cluster's clients; its
    slurm.conf."""
    path = os.pathsep.join([str(Path(sys.executable).parent), cluster.env["PATH"]])
    env = os.environ | {"SLURM_CONF": cluster.env["SLURM_CONF"], "PATH": path}
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_demo(
    cluster: SlurmCluster,
    workdir: Path,
    configfile: str = "config/config.yaml",
    extra: tuple[str, ...] = (),
    timeout: float | None = None,
    echo: bool = True,
) -> tuple[int, str]:
    """Run the workflow in `workdir` through the SLURM profile on `cluster`; return
    (exit code, everything snakemake printed)."""
    argv = [
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        "profiles/slurm",
        "--configfile",
        configfile,
        "--max-threads",
        str(cluster.node_spec.cpus),
        *LOCAL_CLUSTER_OPTIONS,
        *extra,
    ]
    proc = subprocess.Popen(
        argv,
        cwd=workdir,
        env=snakemake_env(cluster),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if echo:
            print(line, end="", flush=True)
    return proc.wait(timeout=timeout), "".join(lines)


def run_name(text: str) -> str | None:
    """The executor's run id (jobs are named sbt_<run id>), from snakemake's output."""
    found = RUN_ID.findall(text)
    return found[-1] if found else None


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("extra", nargs="*", help="arguments for snakemake (after --)")
    args = parser.parse_args(argv)
    try:
        with running_cluster() as cluster:
            print(f"SLURM cluster up: {cluster.run('sinfo').strip()}", flush=True)
            code, text = run_demo(cluster, REPO, args.configfile, tuple(args.extra))
            name = run_name(text)
            print("\nsqueue (jobs still known to the controller):")
            print(cluster.run("squeue", "--all", check=False).rstrip())
            if name:
                print(f"\nSLURM jobs of run {name} (scontrol show job):")
                print(format_job_table(job_table(cluster, name)))
    except ClusterUnavailable as exc:
        print(f"error: no local SLURM cluster: {exc}", file=sys.stderr)
        return 1
    print("SLURM cluster stopped.")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
