"""The SLURM path for real: sbatch on a one-node cluster, the Snakemake SLURM executor, and
the cluster profile profiles/slurm.

The cluster comes from tests/slurm_cluster.py (installed with apt-get when missing, started
per test session, stopped afterwards). GPUs are GRES entries backed by spare devices, so
GPU requests are scheduled and jobs see CUDA_VISIBLE_DEVICES without a GPU.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest
import yaml
from slurm_cluster import SlurmCluster, running_cluster, slurm_cluster_fixture  # noqa: F401
from snakemake_run import REPO, copy_repo, output_of, snakemake

pytestmark = pytest.mark.slurm

PROFILE = REPO / "profiles" / "slurm"
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")
# Options this test cluster needs on top of the profile: it has no job accounting (sacct
# cannot answer, squeue can), and short jobs should be polled after 1 s instead of 40 s.
TEST_CLUSTER_OPTIONS = (
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--latency-wait",
    "5",
)

TINY_SNAKEFILE = """\
localrules: all, summarize


rule all:
    input:
        "summary.txt",


rule gpu_probe:
    output:
        "probe.txt",
    resources:
        gpu=1,
        mem_mb=200,
        runtime=5,
    shell:
        "echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES SLURM_JOB_ID=$SLURM_JOB_ID > {output}"


rule summarize:
    input:
        "probe.txt",
    output:
        "summary.txt",
    shell:
        "(cat {input}; echo SLURM_JOB_ID=${{SLURM_JOB_ID:-none}}) > {output}"
"""


def slurm_env(cluster: SlurmCluster) -> dict[str, str]:
    """What `snakemake_run.snakemake` must add so that its jobs reach this cluster."""
    return {
        "SLURM_CONF": cluster.env["SLURM_CONF"],
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), cluster.env["PATH"]]),
    }


def submitted_jobs(text: str) -> dict[str, str]:
    """SLURM job id -> Snakemake job id, from the executor's 'has been submitted' lines."""
    return {slurm_id: smk_id for smk_id, slurm_id in SUBMITTED.findall(text)}


def parse_env_line(line: str) -> dict[str, str]:
    return dict(token.split("=", 1) for token in line.split())


def test_sbatch_gpu_job_sees_one_device(slurm_cluster, tmp_path):
    out = tmp_path / "job.out"
    job_id = slurm_cluster.run(
        "sbatch",
        "--parsable",
        "--gpus=1",
        f"--output={out}",
        "--wrap",
        "echo CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset} SLURM_JOB_ID=$SLURM_JOB_ID",
    ).strip()
    state = slurm_cluster.wait_for_job(job_id)
    assert state == "COMPLETED", slurm_cluster.diagnostics()
    assert parse_env_line(out.read_text()) == {
        "CUDA_VISIBLE_DEVICES": "0",
        "SLURM_JOB_ID": job_id,
    }
    job = slurm_cluster.show_job(job_id)
    assert job["TresPerJob"] == "gres:gpu:1"
    assert job["ExitCode"] == "0:0"


def test_snakemake_slurm_executor_with_profile(slurm_cluster, tmp_path):
    """The tiny workflow through profiles/slurm: the GPU rule via sbatch, the other locally."""
    (tmp_path / "Snakefile").write_text(TINY_SNAKEFILE)
    (tmp_path / "empty.yaml").write_text("{}\n")
    started = time.monotonic()
    proc = snakemake(
        tmp_path,
        "--profile",
        str(PROFILE),
        "--configfile",
        "empty.yaml",  # the profile names the study's config; this workflow has none
        "--jobs",
        "2",
        "--default-resources",
        f"slurm_partition={slurm_cluster.partition}",
        *TEST_CLUSTER_OPTIONS,
        env=slurm_env(slurm_cluster),
        timeout=120,
    )
    text = output_of(proc)
    assert proc.returncode == 0, text[-8000:] + slurm_cluster.diagnostics()
    elapsed = time.monotonic() - started

    jobs = submitted_jobs(text)
    assert len(jobs) == 1, text  # gpu_probe only: summarize and all are local rules
    (slurm_id,) = jobs
    assert "localrule summarize:" in text and "rule gpu_probe:" in text
    job = slurm_cluster.show_job(slurm_id)
    assert job["JobState"] == "COMPLETED"
    assert job["TresPerJob"] == "gres:gpu:1"
    assert job["Partition"] == slurm_cluster.partition
    assert job["JobName"].startswith("sbt_")  # slurm-jobname-prefix from the profile
    assert job["Comment"] == "rule_gpu_probe"
    assert f"JobId={slurm_id} " in slurm_cluster.log()  # the controller saw the submission

    probe, local = (tmp_path / "summary.txt").read_text().splitlines()
    assert parse_env_line(probe) == {"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_ID": slurm_id}
    assert local == "SLURM_JOB_ID=none"  # the local rule ran outside SLURM
    assert elapsed < 90


def test_cluster_stops_everything_it_started():
    """A second cluster beside the session's: after exit no daemon, file or config is left."""
    with running_cluster() as cluster:
        pids = [process.pid for process in cluster.processes.values()]
        root = cluster.root
        assert cluster.run("scontrol", "ping").count("UP") == 1
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), pid
    assert not root.exists()
    assert not Path("/etc/slurm/slurm.conf").exists()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def _first_eval_target(config_path: Path) -> str:
    """One evaluation of one fine-tuned run of the demo: data, train and eval rules."""
    config = yaml.safe_load(config_path.read_text())
    data = next(iter(config["data"]))
    backbone, spec = next(iter(config["backbones"].items()))
    method = spec.get("methods", ["full"])[-1]
    benchmark = next(iter(config["benchmarks"]))
    return f"results/eval/{backbone}/{data}/{method}/{benchmark}.json"


@pytest.mark.workflow
@pytest.mark.slow
def test_demo_chain_through_slurm_profile(slurm_cluster, tmp_path):
    """The demo's data -> train -> evaluate chain via `--profile profiles/slurm`."""
    if not (REPO / "workflow" / "Snakefile").exists():
        pytest.skip("workflow/Snakefile does not exist yet")
    workdir = copy_repo(tmp_path / "repo")
    target = _first_eval_target(workdir / "config" / "config.yaml")
    proc = snakemake(
        workdir,
        "--profile",
        "profiles/slurm",
        "--configfile",
        "config/config.yaml",
        "--max-threads",
        "2",  # the test node has 2 CPUs
        *TEST_CLUSTER_OPTIONS,
        target,
        env=slurm_env(slurm_cluster),
        timeout=900,
    )
    text = output_of(proc)
    assert proc.returncode == 0, text[-10000:] + slurm_cluster.diagnostics()
    assert (workdir / target).stat().st_size > 0
    jobs = submitted_jobs(text)
    assert len(jobs) >= 3, text  # at least convert, train and evaluate went through sbatch
    states = slurm_cluster.job_states()
    assert {slurm_id: states.get(slurm_id) for slurm_id in jobs} == dict.fromkeys(jobs, "COMPLETED")
