"""Installing SLURM for the local test cluster: Debian's slurm-wlm and munge, with apt-get.

Only the packages: sbt.local_slurm_conf configures and sbt.local_slurm starts the daemons
in a private directory. Nothing here runs unless the daemons are missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

SLURM_PACKAGES = ("slurm-wlm", "munge")
REQUIRED_PROGRAMS = (
    "slurmctld",
    "slurmd",
    "munged",
    "sbatch",
    "srun",
    "squeue",
    "scancel",
    "sinfo",
    "scontrol",
)
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


class ClusterUnavailable(RuntimeError):
    """SLURM cannot be installed or started here; tests that need it are skipped."""


def which(program: str) -> str | None:
    return shutil.which(program, path=SEARCH_PATH)


def missing_programs() -> list[str]:
    return [program for program in REQUIRED_PROGRAMS if which(program) is None]


def _pids_of(names: tuple[str, ...]) -> set[int]:
    """Process ids whose command name is one of `names` (read from /proc, no ps needed)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() in names:
                pids.add(int(entry.name))
    return pids


def _run_apt(args: list[str], timeout: float) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        result = subprocess.run(
            ["apt-get", "-o", "DPkg::Lock::Timeout=120", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise ClusterUnavailable(f"apt-get {args[0]} took over {timeout:.0f} s") from exc
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise ClusterUnavailable(f"apt-get {args[0]} failed: " + " | ".join(tail))


@contextlib.contextmanager
def _services_kept_stopped() -> Iterator[None]:
    """Deny service starts from package scripts (policy-rc.d), as in container images.

    Without this, installing the packages on a host with an init system starts the stock
    munged/slurmctld/slurmd on /etc config, which then answer every SLURM command instead
    of the test cluster.
    """
    policy = Path("/usr/sbin/policy-rc.d")
    created = False
    if not policy.exists():
        policy.write_text("#!/bin/sh\n# temporary: keep package daemons stopped\nexit 101\n")
        policy.chmod(0o755)
        created = True
    try:
        yield
    finally:
        if created:
            policy.unlink(missing_ok=True)


def ensure_slurm_installed() -> None:
    """Install slurm-wlm and munge with apt-get when the daemons are missing.

    Daemons that the package scripts start anyway (a host whose policy allows it) are
    stopped again by pid, and a slurm.conf that the install created is removed, so that no
    SLURM command on this machine waits for a controller that does not run.
    """
    if not missing_programs():
        return
    if os.geteuid() != 0:
        raise ClusterUnavailable(
            f"SLURM is not installed ({', '.join(missing_programs())} missing) and "
            "installing it needs root: apt-get install slurm-wlm munge"
        )
    if which("apt-get") is None:
        raise ClusterUnavailable("SLURM is not installed and there is no apt-get to install it")
    system_conf = Path("/etc/slurm/slurm.conf")
    conf_existed = system_conf.exists()
    daemons = ("munged", "slurmctld", "slurmd", "slurmdbd")
    running_before = _pids_of(daemons)
    with _services_kept_stopped():
        _run_apt(["update"], timeout=300)
        _run_apt(
            [
                "install",
                "-y",
                "--no-install-recommends",
                "-o",
                "Dpkg::Options::=--force-confold",
                "-o",
                "Dpkg::Options::=--force-confdef",
                *SLURM_PACKAGES,
            ],
            timeout=900,
        )
    for pid in _pids_of(daemons) - running_before:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    if system_conf.exists() and not conf_existed:
        system_conf.unlink()
    if missing_programs():
        raise ClusterUnavailable(
            f"apt-get installed {' '.join(SLURM_PACKAGES)} but "
            f"{', '.join(missing_programs())} is still missing"
        )
