"""How a train job starts its processes, and what it asks SLURM for.

One node (`nodes: 1`): `python` for one process on a CPU or one GPU, `torchrun --standalone
--nproc_per_node=G` for more GPUs (and for FSDP or DeepSpeed on one GPU); the job asks for
`gpu: G` (the SLURM executor's `--gpus=G`).

Several nodes (`nodes: N > 1`): the job asks for N nodes with G GPUs on each (`--nodes=N
--ntasks=N --gres=gpu:G`, one task per node) and carries the `mpi` resource, which makes
the Snakemake SLURM executor (snakemake-executor-plugin-slurm 2.x and its jobstep plugin)
run the rule's shell command as it is, without the `srun -n1` it otherwise puts in front.
The command then is

    srun --nodes=N --ntasks=N --ntasks-per-node=1 --cpus-per-task=T --mem=0 [--gres=gpu:G]
         --kill-on-bad-exit=1 bash scripts/torchrun_slurm.sh N G -m sbt.train ...

that is one `torchrun` per node, which meet in a c10d rendezvous on the first host of
$SLURM_JOB_NODELIST (scripts/torchrun_slurm.sh). Every option is written out because the
jobstep plugin removes the allocation's SLURM_* variables (all but the job id) before it
runs the command, so srun would otherwise fall back to its own defaults.

`tasks_per_node` > 1 starts several torchrun agents per node: the same rendezvous, for
trying the launch line on a one-node cluster (tests/test_slurm_training.py).
"""

from __future__ import annotations

import shlex


def single_node_launcher(gpus: int, sharded: bool) -> str:
    """`python`, or `torchrun --standalone` with one process per GPU."""
    if gpus > 1 or (gpus == 1 and sharded):
        return f"torchrun --standalone --nproc_per_node={gpus}"
    return "python"


def srun_torchrun_launcher(
    nodes: int,
    gpus_per_node: int,
    cpus_per_task: int,
    node_script: str,
    tasks_per_node: int = 1,
) -> str:
    """srun starting one torchrun per task (per node), joined by a c10d rendezvous."""
    tasks = nodes * tasks_per_node
    options = [
        f"--nodes={nodes}",
        f"--ntasks={tasks}",
        f"--ntasks-per-node={tasks_per_node}",
        f"--cpus-per-task={cpus_per_task}",
        "--mem=0",  # all of the job's memory on each node
    ]
    if gpus_per_node:
        options.append(f"--gres=gpu:{gpus_per_node}")
    options.append("--kill-on-bad-exit=1")  # one failed node ends the others
    script = shlex.quote(node_script)
    return f"srun {' '.join(options)} bash {script} {tasks} {max(1, gpus_per_node)}"


def train_launcher(
    nodes: int, gpus_per_node: int, sharded: bool, cpus_per_task: int, node_script: str
) -> str:
    """The command a train job puts before `-m sbt.train`; `node_script` is the path of
    scripts/torchrun_slurm.sh (used with several nodes)."""
    if nodes == 1:
        return single_node_launcher(gpus_per_node, sharded)
    return srun_torchrun_launcher(nodes, gpus_per_node, cpus_per_task, node_script)


def slurm_resources(nodes: int, gpus_per_node: int, tasks_per_node: int = 1) -> dict:
    """The train rule's scheduler resources; None leaves a resource unset.

    One node: `gpu` (the executor's `--gpus=G`). Several: `nodes`, `tasks` (one per node:
    `--ntasks`), `gres` (`--gres=gpu:G`, a count per node, where `--gpus` would be a total
    for the whole job), `mpi` (no srun added by the executor), and `tasks_per_gpu: 0`,
    without which the executor would also turn `tasks` into `--ntasks-per-gpu`.
    """
    if nodes == 1 and tasks_per_node == 1:
        return {"gpu": gpus_per_node, "gres": None, "nodes": None, "tasks": None,
                "tasks_per_gpu": None, "mpi": None}  # fmt: skip
    return {
        "gpu": None,
        "gres": f"gpu:{gpus_per_node}" if gpus_per_node else None,
        "nodes": nodes,
        "tasks": nodes * tasks_per_node,
        "tasks_per_gpu": 0,
        "mpi": "srun",
    }
