"""The configuration files of the one-node SLURM cluster on localhost (sbt.local_slurm).

`write_config` writes slurm.conf, gres.conf and cgroup.conf into the cluster's private
directory: free TCP ports, state, spool, log and pid files under that directory, munge
authentication through the cluster's own socket, and one node (`NodeSpec`: what it
declares to SLURM, which slurmd believes) in one partition. GPUs are GRES entries backed by
links to /dev/null. Nothing here starts a daemon; that is sbt.local_slurm.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

NODE_NAME = "localhost"
PARTITION = "debug"
NODE_CPUS = 2
NODE_GPUS = 2
MIN_NODE_MEMORY_MB = 16384


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _memory_mb() -> int:
    """Memory to announce for the node: what the machine has, minus a margin for the OS.

    At least MIN_NODE_MEMORY_MB, so that the demo's memory requests (sized for real
    clusters) are accepted on small machines; nothing enforces it here (task/none).
    """
    machine_mb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            machine_mb = int(int(line.split()[1]) / 1024 * 0.9)
    return max(machine_mb, MIN_NODE_MEMORY_MB)


@dataclass(frozen=True)
class NodeSpec:
    """What the one node declares to SLURM; slurmd believes it (config_overrides).

    memory_mb None: this machine's memory (at least MIN_NODE_MEMORY_MB).
    """

    cpus: int = NODE_CPUS
    memory_mb: int | None = None
    gpus: int = NODE_GPUS

    def real_memory_mb(self) -> int:
        return self.memory_mb if self.memory_mb is not None else _memory_mb()


def _gres_conf_line(root: Path, gpus: int) -> str:
    """gres.conf: one stand-in device file per GPU, root/gpus/gpuN -> /dev/null.

    SLURM needs a character device behind each GPU (a GPU count alone leaves the node
    invalid; a regular file is scheduled but sets no CUDA_VISIBLE_DEVICES); links to
    /dev/null exist on every machine, however many GPUs the node declares.
    """
    device_dir = root / "gpus"
    device_dir.mkdir(exist_ok=True)
    for index in range(gpus):
        (device_dir / f"gpu{index}").symlink_to("/dev/null")
    files = f"{device_dir}/gpu[0-{gpus - 1}]" if gpus > 1 else f"{device_dir}/gpu0"
    return f"NodeName={NODE_NAME} Name=gpu File={files}"


def write_config(root: Path, node: NodeSpec | None = None) -> Path:
    """Write slurm.conf, gres.conf and cgroup.conf under root; return the slurm.conf path."""
    node = node or NodeSpec()
    ctld_port, slurmd_port = _free_ports(2)
    for sub in ("state", "spool", "log", "run"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "slurm.conf"
    settings = {
        "ClusterName": "sbt-test",
        "SlurmctldHost": f"{NODE_NAME}(127.0.0.1)",
        "SlurmctldPort": ctld_port,
        "SlurmdPort": slurmd_port,
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "AuthType": "auth/munge",
        "CredType": "cred/munge",
        "AuthInfo": f"socket={root / 'munge' / 'munge.socket'}",
        "StateSaveLocation": root / "state",
        "SlurmdSpoolDir": root / "spool",
        "SlurmctldPidFile": root / "run" / "slurmctld.pid",
        "SlurmdPidFile": root / "run" / "slurmd.pid",
        "SlurmctldLogFile": root / "log" / "slurmctld.log",
        "SlurmdLogFile": root / "log" / "slurmd.log",
        "SlurmctldDebug": "info",
        "SlurmdDebug": "info",
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "JobAcctGatherType": "jobacct_gather/none",
        "AccountingStorageType": "accounting_storage/none",
        "JobCompType": "jobcomp/none",
        "MpiDefault": "none",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core_Memory",
        "SchedulerType": "sched/backfill",
        # Start jobs as soon as they are submitted (default waits for the next 2 s cycle).
        "SchedulerParameters": "sched_min_interval=0",
        # Jobs without --mem would otherwise claim the whole node and run one at a time.
        "DefMemPerCPU": 512,
        "GresTypes": "gpu",
        # Trust the node line below instead of the hardware: CI machines differ.
        "SlurmdParameters": "config_overrides",
        "ReturnToService": 2,
        "MinJobAge": 300,
        "KillWait": 2,
        "InactiveLimit": 0,
        "Waittime": 0,
    }
    lines = [f"{key}={value}" for key, value in settings.items()]
    lines.append(
        f"NodeName={NODE_NAME} NodeAddr=127.0.0.1 CPUs={node.cpus} "
        f"RealMemory={node.real_memory_mb()}"
        + (f" Gres=gpu:{node.gpus}" if node.gpus else "")
        + " State=UNKNOWN"
    )
    lines.append(
        f"PartitionName={PARTITION} Nodes={NODE_NAME} Default=YES MaxTime=INFINITE State=UP"
    )
    conf.write_text("\n".join(lines) + "\n")
    (root / "gres.conf").write_text(_gres_conf_line(root, node.gpus) + "\n" if node.gpus else "")
    (root / "cgroup.conf").write_text("CgroupPlugin=autodetect\nIgnoreSystemd=yes\n")
    return conf
