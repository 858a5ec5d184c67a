"""A real one-node SLURM cluster on localhost, for tests of the SLURM executor and profile.

Why a real cluster: the Snakemake SLURM executor talks to `sbatch`, `squeue` and `scontrol`;
only real daemons show whether our profile's options and resource names are accepted.

The cluster lives entirely in a private temporary directory: its own munge key and socket,
its own `slurm.conf` (selected with the SLURM_CONF environment variable, never written to
/etc/slurm), its own state, spool, log and pid files, and free TCP ports. GPUs are
simulated with GRES backed by links to /dev/null, so `--gpus=1` is scheduled and the job
sees CUDA_VISIBLE_DEVICES=0 on a machine without GPUs.

Used by the tests (the `slurm_cluster` fixture in tests/slurm_cluster.py), by
`make slurm-demo` (src/sbt/slurm_demo.py), and as a context manager:

    with running_cluster() as cluster:
        subprocess.run(["sbatch", "--wrap", "true"], env=cluster.env)

The node's size is a parameter: `running_cluster(NodeSpec(cpus=64, memory_mb=1_000_000,
gpus=8))` declares a GPU server that SLURM schedules as if it were real (slurmd believes
the declared values, `SlurmdParameters=config_overrides`), so the sbatch options of the
study's big jobs can be checked on a small machine. Jobs still run on this machine.

The configuration files are written by sbt.local_slurm_conf; this module starts, waits
for and stops the daemons, and is the handle (`SlurmCluster`) the clients talk through.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sbt.local_slurm_conf import NODE_NAME, PARTITION, NodeSpec, write_config
from sbt.slurm_install import (
    SEARCH_PATH,
    ClusterUnavailable,
    ensure_slurm_installed,
    which,
)

STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
# Set to 1 (CI) to turn "SLURM cannot be set up here" from a skip into a test error.
REQUIRE_ENV_VAR = "SBT_REQUIRE_SLURM"


@dataclass
class SlurmCluster:
    """A running cluster: pass `env` to every SLURM client (sbatch, squeue, snakemake)."""

    root: Path
    conf: Path
    env: dict[str, str]
    node: str = NODE_NAME
    partition: str = PARTITION
    node_spec: NodeSpec = field(default_factory=NodeSpec)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        """Run a SLURM client command against this cluster and return its stdout."""
        result = subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result.stdout

    def log(self, daemon: str = "slurmctld") -> str:
        """Text of a daemon's log file (slurmctld, slurmd or munged)."""
        path = self.root / "log" / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def job_ids(self) -> list[str]:
        """Ids of all jobs the controller still knows (finished ones stay for MinJobAge)."""
        return self.run("squeue", "--states=all", "--noheader", "--format=%i").split()

    def job_states(self) -> dict[str, str]:
        """Job id -> state (PENDING, RUNNING, COMPLETED, FAILED, ...) for all known jobs."""
        out = self.run("squeue", "--states=all", "--noheader", "--format=%i|%T")
        return dict(line.split("|", 1) for line in out.split())

    def show_job(self, job_id: str, details: bool = False) -> dict[str, str]:
        """`scontrol show job` as a dict of its KEY=VALUE fields.

        details: `scontrol -d`, which adds the allocation of a running job (JOB_GRES,
        GRES=gpu:4(IDX:0-3), CPU_IDs, Mem).
        """
        flags = ["-d"] if details else []
        out = self.run("scontrol", *flags, "--oneliner", "show", "job", str(job_id))
        fields = {}
        for token in out.split():
            key, sep, value = token.partition("=")
            if sep:
                fields[key] = value
        return fields

    def show_jobs(self, name: str | None = None) -> list[dict[str, str]]:
        """`scontrol show job` fields of every known job (only those named `name` if given).

        One client call for all jobs; values with spaces are not split correctly (none of
        JobId, JobName, Comment, JobState, RunTime, ExitCode, TRES has any).
        """
        out = self.run("scontrol", "--oneliner", "show", "job")
        jobs = []
        for line in out.splitlines():
            fields = dict(token.partition("=")[::2] for token in line.split() if "=" in token)
            if "JobId" in fields and (name is None or fields.get("JobName") == name):
                jobs.append(fields)
        return jobs

    def wait_for_job(self, job_id: str, timeout: float = 30) -> str:
        """Wait until a job has left the queue; return its final state."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.job_states().get(str(job_id), "")
            if state and state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
                return state
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} still {state or 'unknown'} after {timeout} s")

    def diagnostics(self) -> str:
        """Log tails of all daemons, for assertion messages.

        Includes what each daemon printed itself: configuration errors appear there, before
        its log file is opened.
        """
        parts = []
        for daemon in ("slurmctld", "slurmd", "munged"):
            for path in (
                self.root / "log" / f"{daemon}.stdout",
                self.root / "log" / f"{daemon}.log",
            ):
                if path.exists() and path.stat().st_size:
                    lines = path.read_text(errors="replace").splitlines()[-25:]
                    parts.append(f"--- {path.name} (tail) ---\n" + "\n".join(lines))
        return "\n".join(parts)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test process dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _start(name: str, argv: list[str], root: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a daemon in the foreground (-D/-F) as our own child, so we hold its pid."""
    with open(root / "log" / f"{name}.stdout", "wb") as out:
        return subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches our parent, which then stops us in order
            preexec_fn=_die_with_parent,
        )


def _wait_until(predicate, timeout: float, what: str, cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in cluster.processes.items():
            if process.poll() is not None:
                raise ClusterUnavailable(
                    f"{name} exited with {process.returncode} while waiting for {what}\n"
                    + cluster.diagnostics()
                )
        if predicate():
            return
        time.sleep(0.1)
    raise ClusterUnavailable(
        f"timed out after {timeout} s waiting for {what}\n" + cluster.diagnostics()
    )


def _write_srun_wrapper(root: Path, conf: Path) -> Path:
    """A `srun` that finds our slurm.conf even when SLURM_CONF was removed from its env.

    The executor's job step (snakemake-executor-plugin-slurm-jobstep 0.6.1) drops every
    SLURM_* variable except job identity before calling `srun`, SLURM_CONF included. On a
    real cluster srun then reads /etc/slurm/slurm.conf; here that file must not exist, so
    this wrapper, first on the jobs' PATH, restores the setting.
    """
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "srun"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'SLURM_CONF="${{SLURM_CONF:-{conf}}}"\n'
        "export SLURM_CONF\n"
        f'exec {which("srun")} "$@"\n'
    )
    wrapper.chmod(0o755)
    return bin_dir


def _client_env(conf: Path, bin_dir: Path) -> dict[str, str]:
    """This process's environment without SLURM job variables, pointed at our slurm.conf."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    env["SLURM_CONF"] = str(conf)
    env["PATH"] = os.pathsep.join([str(bin_dir), SEARCH_PATH])
    return env


def _node_state(cluster: SlurmCluster) -> str:
    result = subprocess.run(
        ["sinfo", "--noheader", "--Node", "--format=%T"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=10,
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def _start_daemons(cluster: SlurmCluster) -> None:
    root, env = cluster.root, cluster.env
    munge_dir = root / "munge"
    munge_dir.mkdir(mode=0o700)
    key = munge_dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    socket_path = munge_dir / "munge.socket"
    cluster.processes["munged"] = _start(
        "munged",
        [
            which("munged"),
            "--foreground",
            "--force",
            f"--socket={socket_path}",
            f"--key-file={key}",
            f"--pid-file={root / 'run' / 'munged.pid'}",
            f"--log-file={root / 'log' / 'munged.log'}",
            f"--seed-file={munge_dir / 'munged.seed'}",
        ],
        root,
        env,
    )
    _wait_until(socket_path.exists, STARTUP_TIMEOUT_S, "the munge socket", cluster)
    cluster.processes["slurmctld"] = _start(
        "slurmctld", [which("slurmctld"), "-D", "-i", "-f", str(cluster.conf)], root, env
    )
    cluster.processes["slurmd"] = _start(
        "slurmd", [which("slurmd"), "-D", "-N", NODE_NAME, "-f", str(cluster.conf)], root, env
    )
    _wait_until(
        lambda: _node_state(cluster) == "idle", STARTUP_TIMEOUT_S, "the node to be idle", cluster
    )


def _cancel_all_jobs(cluster: SlurmCluster) -> None:
    with contextlib.suppress(Exception):
        active = [
            job_id
            for job_id, state in cluster.job_states().items()
            if state in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED")
        ]
        if active:
            cluster.run("scancel", *active, check=False)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while time.monotonic() < deadline and any(
                state in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING")
                for state in cluster.job_states().values()
            ):
                time.sleep(0.2)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def running_cluster(node: NodeSpec | None = None) -> Iterator[SlurmCluster]:
    """Install if needed, start munged + slurmctld + slurmd, yield, then stop exactly them.

    `node`: what the node declares (default: 2 CPUs, this machine's memory, 2 GPUs).
    """
    ensure_slurm_installed()
    node = node or NodeSpec()
    root = Path(tempfile.mkdtemp(prefix="sbt-slurm-"))  # short: the munge socket path is limited
    conf = write_config(root, node)
    cluster = SlurmCluster(
        root=root,
        conf=conf,
        env=_client_env(conf, _write_srun_wrapper(root, conf)),
        node_spec=node,
    )
    try:
        _start_daemons(cluster)
        yield cluster
    finally:
        if "slurmctld" in cluster.processes:
            _cancel_all_jobs(cluster)
        for name in ("slurmd", "slurmctld", "munged"):
            if name in cluster.processes:
                _stop(cluster.processes[name])
        shutil.rmtree(root, ignore_errors=True)
