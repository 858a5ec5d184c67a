"""Training on SLURM for real: the multi-node launch line and preemption with requeue, on
the project's one-node SLURM cluster (tests/slurm_cluster.py), through the Snakemake SLURM
executor and profiles/slurm.

- `training.<method>.nodes > 1` becomes scheduler resources (sbt.launch.slurm_resources)
  that the executor turns into `--nodes=N --ntasks=N --gres=gpu:G`, and a launch line
  `srun ... bash scripts/torchrun_slurm.sh N G -m sbt.train ...` (one torchrun per node,
  c10d rendezvous on the first host of $SLURM_JOB_NODELIST). A one-node cluster cannot give
  two nodes, so the same line runs with two tasks on the one node: two torchrun agents, one
  gloo process each, must give the weights of one process with the same global batch.
- With `--slurm-requeue` a train job killed with SIGKILL and requeued by SLURM runs again,
  resumes from its last checkpoint and ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from slurm_cluster import SlurmCluster, slurm_cluster_fixture  # noqa: F401
from snakemake_run import REPO, output_of, snakemake, start_snakemake

from sbt.launch import slurm_resources, srun_torchrun_launcher, train_launcher
from sbt.slurm_demo import LOCAL_CLUSTER_OPTIONS
from sbt.train_resume import complete_checkpoints
from sbt.training import train

SCRIPTS = REPO / "scripts"
PROFILE = REPO / "profiles" / "slurm"
# Two processes with 2 samples each see the global batch of 4 that one process sees at
# once; gradient accumulation is derived (1) from global_batch_size and the world size.
DISTRIBUTED_HPARAMS = {
    "num_train_epochs": 1,
    "per_device_train_batch_size": 2,
    "global_batch_size": 4,
    # One mean over the step's trained tokens across processes, as one process computes it
    # over its batch of 4 (micro_batch would average two per-process means instead).
    "loss_averaging": "token",
    "learning_rate": 1e-3,
    "bf16": False,
    "gradient_checkpointing": True,
    "model_max_length": 512,
    "save_steps": 1000,
    "lora": {"r": 4, "dropout": 0.0},
}
RECORDS = 24  # one epoch: 24 / 4 = 6 steps
# Enough steps that the job is still running when the test kills it after its first
# checkpoint (at 120 steps it sometimes finished first).
PREEMPT_HPARAMS = {
    "max_steps": 400,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "learning_rate": 1e-3,
    "bf16": False,
    "gradient_checkpointing": False,
    "model_max_length": 512,
    "save_steps": 10,
    "logging_steps": 10,
}
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+)")


def weights(path: Path) -> dict[str, torch.Tensor]:
    adapter = path / "adapter_model.safetensors"
    return load_file(adapter if adapter.exists() else path / "model.safetensors")


def slurm_env(cluster: SlurmCluster) -> dict[str, str]:
    return {
        "SLURM_CONF": cluster.env["SLURM_CONF"],
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), cluster.env["PATH"]]),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }


def resources_text(resources: dict, **extra: object) -> str:
    """A rule's `resources:` lines; None values left out (unset, as Snakemake does)."""
    items = {k: v for k, v in resources.items() if v is not None} | extra
    return "".join(f"        {k}={v!r},\n" for k, v in items.items())


def train_snakefile(launcher: str, resources: dict, model: Path, data: Path, hparams: dict):
    """One rule running sbt.train as the workflow's train rule does."""
    return f"""\
rule all:
    input:
        "model",


rule train:
    output:
        directory("model"),
    log:
        "train.log",
    threads: 1
    resources:
{resources_text(resources, mem_mb=3000, runtime=20)}    params:
        launcher={launcher!r},
        model={str(model)!r},
        data={str(data)!r},
        hparams={json.dumps(hparams)!r},
    shell:
        "{{params.launcher}} -m sbt.train --model {{params.model:q}} --template v1"
        " --method full --data {{params.data:q}} --output {{output:q}}"
        " --hparams {{params.hparams:q}} 2> {{log:q}}"
"""


def snakemake_slurm_args(cluster: SlurmCluster, *extra: str) -> list[str]:
    return ["--profile", str(PROFILE), "--configfile", "empty.yaml", "--jobs", "1",
            "--retries", "0", "--default-resources", f"slurm_partition={cluster.partition}",
            *LOCAL_CLUSTER_OPTIONS, *extra]  # fmt: skip


# ---------------------------------------------------------------- what is submitted


class _Resources(dict):
    __getattr__ = dict.__getitem__


def sbatch_options(resources: dict, threads: int) -> str:
    """The executor's own sbatch options for a job with these resources (no cluster)."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    given = {k: v for k, v in resources.items() if v is not None}
    job = SimpleNamespace(resources=_Resources(given, mem_mb=1000, runtime=60), threads=threads)
    params = {"run_uuid": "run", "slurm_logfile": "log", "comment_str": "c", "account": "",
              "partition": "", "workdir": "."}  # fmt: skip
    return get_submit_command(job, params) + set_gres_string(job)


def test_nodes_become_sbatch_options_and_a_launch_line():
    two_nodes = slurm_resources(nodes=2, gpus_per_node=4)
    assert two_nodes == {"gpu": None, "gres": "gpu:4", "nodes": 2, "tasks": 2,
                         "tasks_per_gpu": 0, "mpi": "srun"}  # fmt: skip
    options = sbatch_options(two_nodes, threads=32).split()
    assert {"--nodes=2", "--ntasks=2", "--cpus-per-task=32", "--gres=gpu:4"} <= set(options)
    assert not [o for o in options if o.startswith(("--gpus", "--ntasks-per-gpu"))], options
    one_node = slurm_resources(nodes=1, gpus_per_node=4)
    options = sbatch_options(one_node, threads=32).split()
    assert "--gpus=4" in options and not [o for o in options if o.startswith("--nodes")]

    line = train_launcher(
        2, 4, sharded=True, cpus_per_task=32, node_script="/repo/scripts/torchrun_slurm.sh"
    )
    assert line == (
        "srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --cpus-per-task=32 --mem=0"
        " --gres=gpu:4 --kill-on-bad-exit=1 bash /repo/scripts/torchrun_slurm.sh 2 4"
    )
    assert train_launcher(1, 4, False, 32, "s") == "torchrun --standalone --nproc_per_node=4"
    assert train_launcher(1, 1, True, 8, "s") == "torchrun --standalone --nproc_per_node=1"
    assert train_launcher(1, 0, False, 1, "s") == "python"


def test_node_script_starts_torchrun_with_a_c10d_rendezvous(tmp_path):
    """torchrun_slurm.sh's torchrun line, with a stand-in torchrun that prints it."""
    fake = tmp_path / "torchrun"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    env = dict(os.environ, TORCHRUN=str(fake), SLURM_JOB_ID="1234", SBT_RDZV_HOST="node07")
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "torchrun_slurm.sh"), "2", "4", "train.py", "--x", "1"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "--nnodes=2", "--nproc_per_node=4", "--rdzv_backend=c10d",
        "--rdzv_endpoint=node07:29734", "--rdzv_id=1234", "train.py", "--x", "1",
    ]  # fmt: skip
    env.pop("SLURM_JOB_ID")
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "torchrun_slurm.sh"), "2", "4", "train.py"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode != 0 and "not inside a SLURM job" in proc.stderr


# ---------------------------------------------------------------- on the cluster


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="compares CPU runs (gloo)")
def test_two_tasks_train_like_one_process_through_the_launch_line(
    slurm_cluster, tiny_backbone, tiny_records, tmp_path
):
    torch.set_num_threads(1)
    data = tmp_path / "data.json"
    data.write_text(json.dumps(tiny_records[:RECORDS]), encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    (work / "empty.yaml").write_text("{}\n")
    # The multi-node resources and launch line, with two tasks on the one node.
    resources = slurm_resources(nodes=1, gpus_per_node=0, tasks_per_node=2)
    launcher = srun_torchrun_launcher(1, 0, 1, str(SCRIPTS / "torchrun_slurm.sh"), tasks_per_node=2)
    (work / "Snakefile").write_text(
        train_snakefile(launcher, resources, tiny_backbone, data, DISTRIBUTED_HPARAMS)
    )
    started = time.monotonic()
    proc = snakemake(
        work, *snakemake_slurm_args(slurm_cluster), env=slurm_env(slurm_cluster), timeout=300
    )
    log = (work / "train.log").read_text() if (work / "train.log").exists() else ""
    assert proc.returncode == 0, output_of(proc)[-6000:] + log[-4000:]
    print(f"snakemake with a 2-task SLURM job: {time.monotonic() - started:.0f} s")
    (slurm_id,) = [job["JobId"] for job in slurm_cluster.show_jobs() if job.get("Comment") == "rule_train"][-1:]  # fmt: skip
    job = slurm_cluster.show_job(slurm_id)
    assert (job["JobState"], job["NumNodes"], job["NumTasks"]) == ("COMPLETED", "1", "2")
    # The executor ran the rule's own srun (mpi resource), not one of its own around it:
    # an `srun -n1` step would have left no room for the two tasks.
    output = work / "model"
    info = json.loads((output / "training_info.json").read_text())
    assert info["effective"]["world_size"] == 2
    assert info["effective"]["distributed"] == "MULTI_CPU"
    assert info["effective"]["gradient_accumulation_steps"] == 1
    assert info["effective"]["global_batch_size"] == 4 and info["global_step"] == 6
    assert log.count("wrote model: 6 steps") == 1  # rank 0 alone writes the result

    reference = train(str(tiny_backbone), "v1", "full", data, tmp_path / "reference",
                      DISTRIBUTED_HPARAMS | {"per_device_train_batch_size": 4})  # fmt: skip
    assert reference["effective"]["world_size"] == 1 and reference["global_step"] == 6
    expected, got = weights(tmp_path / "reference"), weights(output)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-5, rtol=0), name
    start = weights(tiny_backbone)
    assert any(not torch.equal(got[n], start[n]) for n in start)  # it did learn


def wait_for(predicate, what: str, proc: subprocess.Popen, log: Path, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"snakemake ended while waiting for {what}:\n{log.read_text()[-6000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-6000:]}")


@pytest.mark.slurm
@pytest.mark.slow
def test_killed_train_job_is_requeued_and_resumes_to_the_same_weights(
    slurm_cluster, tiny_backbone, tiny_records, tmp_path
):
    torch.set_num_threads(1)
    data = tmp_path / "data.json"
    data.write_text(json.dumps(tiny_records[:40]), encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    (work / "empty.yaml").write_text("{}\n")
    resources = slurm_resources(nodes=1, gpus_per_node=0)
    (work / "Snakefile").write_text(
        train_snakefile("python", resources, tiny_backbone, data, PREEMPT_HPARAMS)
    )
    checkpoints = work / "model.checkpoints"
    log = tmp_path / "snakemake.log"
    with open(log, "wb") as out:
        proc = start_snakemake(
            work,
            *snakemake_slurm_args(slurm_cluster, "--slurm-requeue"),
            env=slurm_env(slurm_cluster),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        job_id = wait_for(
            lambda: (found := SUBMITTED.findall(log.read_text())) and found[-1],
            "the train job's submission",
            proc,
            log,
        )
        wait_for(
            lambda: (checkpoints / "checkpoint-10" / "trainer_state.json").exists(),
            "the train job's first checkpoint",
            proc,
            log,
        )
        assert slurm_cluster.show_job(job_id)["Requeue"] == "1"  # --slurm-requeue
        # Kill and requeue between two of Snakemake's status checks, as SLURM's own
        # preemption does at once: Snakemake is paused meanwhile, so it never sees the
        # job failed (it would resubmit it) and only sees it pending or running again.
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            slurm_cluster.run("scancel", "--signal=KILL", job_id)
            killed = wait_for(
                lambda: slurm_cluster.job_states().get(job_id) not in ("RUNNING", "COMPLETING"),
                "the killed job to end",
                proc,
                log,
                timeout=30,
            )
            assert killed
            state = slurm_cluster.job_states()[job_id]
            assert state in ("FAILED", "CANCELLED", "COMPLETED"), state
            assert not (work / "model").exists()
            # What the restart resumes from: the last checkpoint written in full (the kill
            # may cut the next one short; the resumed run writes it again).
            left = [p.name for p in complete_checkpoints(checkpoints)]
            slurm_cluster.run("scontrol", "requeue", job_id)
            # SLURM holds a requeued job back for a while (BeginTime); start it now.
            slurm_cluster.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
            wait_for(
                lambda: slurm_cluster.job_states().get(job_id) in ("PENDING", "RUNNING"),
                "the requeued job",
                proc,
                log,
                timeout=30,
            )
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        returncode = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    text = log.read_text()
    assert returncode == 0, text[-6000:]
    assert text.count("has been submitted with SLURM jobid") == 1  # requeued, not resubmitted
    job = slurm_cluster.show_job(job_id)
    assert job["JobState"] == "COMPLETED" and job["Restarts"] == "1"

    info = json.loads((work / "model" / "training_info.json").read_text())
    assert info["resumed_from"] == left[-1] and info["global_step"] == PREEMPT_HPARAMS["max_steps"]
    assert not checkpoints.exists()
    reference = train(str(tiny_backbone), "v1", "full", data, tmp_path / "reference",
                      PREEMPT_HPARAMS)  # fmt: skip
    assert reference["resumed_from"] is None
    expected, got = weights(tmp_path / "reference"), weights(work / "model")
    for name, tensor in expected.items():
        assert (got[name] - tensor).abs().max().item() <= 1e-6, name
