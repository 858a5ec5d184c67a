"""The SLURM path for real: sbatch on a one-node cluster, the Snakemake SLURM executor, and
the cluster profile profiles/slurm.

The cluster comes from tests/slurm_cluster.py (installed with apt-get when missing, started
per test session, stopped afterwards). GPUs are GRES entries backed by links to /dev/null, so
GPU requests are scheduled and jobs see CUDA_VISIBLE_DEVICES without a GPU.

- the demo DAG (one backbone, both methods, two benchmarks) runs to the tables with every
  non-local job submitted by sbatch; its job table is printed (`pytest -s`) and written to
  the test's tmp dir as slurm_jobs.txt;
- a second cluster whose node declares 64 CPUs, about 1 TB and 8 GPUs receives the study's
  (config/paper.yaml) train and evaluate jobs, whose GPU, memory, time and CPU requests are
  checked as the controller holds them.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from slurm_cluster import (  # noqa: F401
    NodeSpec,
    SlurmCluster,
    format_job_table,
    job_table,
    rule_of,
    running_cluster,
    slurm_cluster_fixture,
    start_or_skip,
)
from snakemake_run import REPO, copy_repo, output_of, snakemake, start_snakemake

from sbt.common import OFFLINE_ENV
from sbt.slurm_demo import LOCAL_CLUSTER_OPTIONS, run_demo

pytestmark = pytest.mark.slurm

PROFILE = REPO / "profiles" / "slurm"
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")

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
        *LOCAL_CLUSTER_OPTIONS,
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


LOCAL_OR_REMOTE_JOB = re.compile(r"^(local)?rule (\S+):\n((?:    .*\n)+)", re.MULTILINE)
RUN_ID = re.compile(r"SLURM run ID: (\S+)")
SUBMITTED_BY_CONTROLLER = re.compile(r"_slurm_rpc_submit_batch_job: JobId=(\d+) ")


SHOWN_LOG_FILE = re.compile(r"^Logfile .*:\n={80}\n.*?^={80}$", re.MULTILINE | re.DOTALL)


def without_shown_logs(text: str) -> str:
    """Snakemake's own output without the job logs it shows (`show-failed-logs`): a job's
    log holds the job step's Snakemake output, with job blocks of its own."""
    return SHOWN_LOG_FILE.sub("", text)


def snakemake_jobs(text: str) -> dict[str, tuple[str, bool, str]]:
    """Snakemake job id -> (rule, is local rule, wildcards), from the job blocks it prints."""
    jobs = {}
    for local, rule, body in LOCAL_OR_REMOTE_JOB.findall(without_shown_logs(text)):
        fields = dict(line.strip().split(": ", 1) for line in body.splitlines() if ": " in line)
        if "jobid" in fields:
            jobs[fields["jobid"]] = (rule, bool(local), fields.get("wildcards", ""))
    return jobs


def report_job_table(cluster: SlurmCluster, run_name: str, path: Path) -> list[dict[str, str]]:
    """The run's SLURM jobs: printed (seen with `pytest -s`) and kept in `path`."""
    rows = job_table(cluster, run_name)
    table = f"SLURM jobs of run {run_name}:\n{format_job_table(rows)}\n"
    path.write_text(table)
    print("\n" + table)
    return rows


def assert_all_remote_jobs_submitted(text: str, cluster: SlurmCluster) -> tuple[str, dict]:
    """Every non-local Snakemake job went through sbatch, and only those; returns the run
    name and SLURM id -> (rule, wildcards)."""
    jobs = snakemake_jobs(text)
    submitted = submitted_jobs(text)  # SLURM id -> Snakemake id
    remote = {smk_id for smk_id, (_, local, _) in jobs.items() if not local}
    assert remote, text
    assert sorted(submitted.values(), key=int) == sorted(remote, key=int), text
    (run_name,) = set(RUN_ID.findall(text))
    # The controller received each submission and holds exactly these jobs under the run.
    controller_ids = set(SUBMITTED_BY_CONTROLLER.findall(cluster.log()))
    assert set(submitted) <= controller_ids, cluster.diagnostics()
    by_slurm_id = {slurm_id: jobs[smk_id] for slurm_id, smk_id in submitted.items()}
    held = {job["JobId"]: job for job in cluster.show_jobs(name=run_name)}
    assert set(held) == set(submitted), (held, submitted)
    # Each SLURM job is the job Snakemake said: its rule and wildcard values in the comment.
    for slurm_id, (rule, _, wildcards) in by_slurm_id.items():
        comment = held[slurm_id]["Comment"]
        assert rule_of(comment) == rule, (slurm_id, comment)
        values = [item.split("=", 1)[1] for item in wildcards.split(", ") if "=" in item]
        assert all(value in comment for value in values), (slurm_id, comment, wildcards)
    return run_name, by_slurm_id


def shrink_demo_config(path: Path) -> dict:
    """The demo config with its first backbone only, its text arm only (the multimodal
    arm's rules are tested in test_workflow_mm.py) and two benchmarks (a whole DAG in
    about two minutes on two CPUs). Written over the copy's config/config.yaml, because a
    config merged on top cannot delete the other backbone."""
    config = yaml.safe_load(path.read_text())
    backbone = next(iter(config["backbones"]))
    settings = config["backbones"][backbone]
    settings["methods"] = [m for m in settings["methods"] if not m.startswith("mm_")]
    settings.pop("multimodal", None)
    config["backbones"] = {backbone: settings}
    config["data"] = {name: v for name, v in config["data"].items() if not v.get("images")}
    config["benchmarks"] = dict(list(config["benchmarks"].items())[:2])
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config


@pytest.mark.workflow
@pytest.mark.slow
def test_demo_dag_through_slurm_profile(slurm_cluster, tmp_path):
    """The demo DAG to the tables via `--profile profiles/slurm`: every non-local job by
    sbatch, each completed, tables written by the local aggregate rule."""
    if not (REPO / "workflow" / "Snakefile").exists():
        pytest.skip("workflow/Snakefile does not exist yet")
    workdir = copy_repo(tmp_path / "repo")
    config = shrink_demo_config(workdir / "config" / "config.yaml")
    (backbone,) = config["backbones"]
    runs = len(config["backbones"][backbone]["methods"]) * len(config["data"])
    benchmarks = len(config["benchmarks"])
    assert runs == 2 and benchmarks == 2  # full and LoRA, two benchmarks
    started = time.monotonic()
    # What `make slurm-demo` runs, on a copy of the repository.
    returncode, text = run_demo(slurm_cluster, workdir, timeout=600, echo=False)
    elapsed = time.monotonic() - started
    (tmp_path / "snakemake.log").write_text(text)
    assert returncode == 0, text[-10000:] + slurm_cluster.diagnostics()

    run_name, slurm_jobs = assert_all_remote_jobs_submitted(text, slurm_cluster)
    rows = report_job_table(slurm_cluster, run_name, tmp_path / "slurm_jobs.txt")
    print(f"snakemake took {elapsed:.0f} s")
    assert Counter(rule for rule, _, _ in slurm_jobs.values()) == {
        "convert_text_only": len(config["data"]),
        "build_tiny_backbone": 1,
        "train": runs,
        "evaluate_base": 1,  # evaluation.group: run: one job per run, every benchmark
        "evaluate_run": runs,
    }
    local_rules = {rule for rule, local, _ in snakemake_jobs(text).values() if local}
    # The result JSONs (one per run x benchmark) are written on the submit host.
    assert local_rules == {"aggregate", "all", "result_base", "result_run"}, text
    assert {row["state"] for row in rows} == {"COMPLETED"}, format_job_table(rows)
    for name in ("summary.csv", "summary.md", "summary.tex"):
        assert (workdir / "results" / "tables" / name).stat().st_size > 0, name
    table = (workdir / "results" / "tables" / "summary.csv").read_text().splitlines()
    assert len(table) == 1 + 1 + runs  # header, the base backbone, the fine-tuned runs


# ------------------------------------------------------ the study's GPU jobs, as submitted

# A GPU server as the study's jobs need it; slurmd believes the declared size.
PAPER_NODE = NodeSpec(cpus=64, memory_mb=1_000_000, gpus=8)
PAPER_TRAIN_TARGET = "results/models/llama2-7b/textonly_80k/lora"
PAPER_EVAL_TARGET = "results/eval/llama2-7b/base/boolq.json"
# What the workflow's resource functions give a 7B backbone on the first attempt:
# train: training.lora.num_gpus GPUs, (8 + 16 x 7) GiB host memory, 90 min per billion
# parameters; evaluate (one job per run): one GPU, (6 + 4 x 7) GiB, 13 benchmarks x
# (20 + 15 x 7) min.
PAPER_EXPECTED = {
    "train": {"gpus": 4, "mem_mb": 122880, "minutes": 630, "cpus": 32},  # 8 cores per GPU
    "evaluate_base": {"gpus": 1, "mem_mb": 34816, "minutes": 13 * 125, "cpus": 1},
}


@pytest.fixture(scope="module")
def paper_cluster() -> Iterator[SlurmCluster]:
    """A second cluster (about 1 s to start) whose node is a 32-CPU, 8-GPU server."""
    with contextlib.ExitStack() as stack:
        yield start_or_skip(stack, PAPER_NODE)


def write_paper_placeholders(workdir: Path) -> None:
    """Stand-ins for what the network-bound local rules (prefetch_data, convert_text_only
    of the 80k file, prefetch_benchmarks) would write, so that only train and evaluate run."""
    from sbt.prefetch_benchmarks import ETHICS_SPLITS, ETHICS_SUBSETS, ethics_file_name

    config = yaml.safe_load((workdir / "config" / "paper.yaml").read_text())
    sources = [s for variant in config["data"].values() for s in variant["sources"]]
    derived = [
        f"results/data/{name}{ext}" for name in config["data"] for ext in (".json", ".stats.json")
    ]
    derived += ["resources/benchmarks/manifest.json"]
    derived += [
        f"resources/benchmarks/ethics/{ethics_file_name(subset, split)}"
        for subset in ETHICS_SUBSETS
        for split in ETHICS_SPLITS
    ]
    for relative in sources + derived:  # sources first: outputs must be newer than inputs
        path = workdir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("[]\n")
        time.sleep(0.01)
    # mmlu_study's folder: a run's one evaluation job reads every benchmark's files.
    (workdir / "resources" / "benchmarks" / "mmlu").mkdir(parents=True, exist_ok=True)


def memory_mb(value: str) -> int:
    """`scontrol` memory (120G, 34M, 1T) in MB."""
    factor = {"M": 1, "G": 1024, "T": 1024 * 1024}[value[-1]]
    return int(float(value[:-1]) * factor)


def minutes(limit: str) -> int:
    """`scontrol` TimeLimit ([D-]HH:MM:SS) in minutes."""
    days, _, clock = limit.rpartition("-")
    hours, mins, _secs = (int(part) for part in clock.split(":"))
    return (int(days or 0) * 24 + hours) * 60 + mins


def gpus_per_job(tres_per_job: str) -> int:
    """GPUs in TresPerJob: `gres:gpu:4` (SLURM 22.05) or `gres/gpu:4` (later)."""
    match = re.fullmatch(r"gres[:/]gpu:(\d+)", tres_per_job)
    assert match, tres_per_job
    return int(match.group(1))


def rule_resources(text: str) -> dict[str, dict[str, str]]:
    """Rule -> the `resources:` Snakemake printed for its (single) job in this run."""
    resources = {}
    for _, rule, body in LOCAL_OR_REMOTE_JOB.findall(without_shown_logs(text)):
        for line in body.splitlines():
            if line.strip().startswith("resources: "):
                items = line.strip().removeprefix("resources: ").split(", ")
                resources[rule] = dict(item.split("=", 1) for item in items)
    return resources


def wait_until_running(
    cluster: SlurmCluster, proc: subprocess.Popen, count: int, log: Path, timeout: float = 90
) -> list[dict[str, str]]:
    """The cluster's jobs once `count` of them run (the only jobs on this cluster) and
    Snakemake has logged their submission (so that an interrupt cancels them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"snakemake exited early ({proc.returncode}):\n{log.read_text()[-6000:]}")
        jobs = cluster.show_jobs()
        if (
            len(jobs) >= count
            and all(job["JobState"] == "RUNNING" for job in jobs)
            and len(submitted_jobs(log.read_text())) >= count
        ):
            return jobs
        time.sleep(0.3)
    pytest.fail(f"not {count} running jobs after {timeout} s:\n{log.read_text()[-6000:]}")


def interrupt(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Ctrl-C for Snakemake: it cancels its SLURM jobs and exits."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.workflow
def test_paper_gpu_jobs_sbatch_options(paper_cluster, tmp_path):
    """The study's train (4 GPUs) and evaluate (1 GPU) jobs as the controller receives and
    allocates them, from `--profile profiles/slurm --configfile config/paper.yaml`.

    There is no 7B model here: once both jobs run, their requests and allocations are
    read, and Snakemake is interrupted (as a user's Ctrl-C), which cancels them. Were they
    left to run, they would fail offline (HF_HUB_OFFLINE=1, an empty HF cache)."""
    if not (REPO / "workflow" / "Snakefile").exists():
        pytest.skip("workflow/Snakefile does not exist yet")
    workdir = copy_repo(tmp_path / "repo")
    write_paper_placeholders(workdir)
    env = slurm_env(paper_cluster)
    env.update(OFFLINE_ENV, HF_HOME=str(tmp_path / "hf"))
    log = tmp_path / "snakemake.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = start_snakemake(
            workdir,
            PAPER_TRAIN_TARGET,
            PAPER_EVAL_TARGET,
            "--profile",
            "profiles/slurm",
            "--retries",
            "0",
            *LOCAL_CLUSTER_OPTIONS,
            "--configfile",
            "config/paper.yaml",
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        running = wait_until_running(paper_cluster, proc, count=2, log=log)
        allocated = {
            job["JobId"]: paper_cluster.show_job(job["JobId"], details=True) for job in running
        }
    finally:
        interrupt(proc)
    text = log.read_text()
    print(f"snakemake ran {time.monotonic() - started:.0f} s until interrupted")

    run_name, slurm_jobs = assert_all_remote_jobs_submitted(text, paper_cluster)
    # scancel returns before the controller has ended a running job: on a loaded machine a
    # job can still show RUNNING for some seconds after Snakemake has exited.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and {
        row["state"] for row in job_table(paper_cluster, run_name)
    } & {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING"}:
        time.sleep(1)
    rows = report_job_table(paper_cluster, run_name, tmp_path / "slurm_jobs.txt")
    assert sorted(rule for rule, _, _ in slurm_jobs.values()) == ["evaluate_base", "train"]
    assert set(allocated) == set(slurm_jobs)
    printed = rule_resources(text)
    for slurm_id, (rule, _, _) in slurm_jobs.items():
        job = allocated[slurm_id]
        expected = PAPER_EXPECTED[rule]
        requested = {
            "gpus": gpus_per_job(job["TresPerJob"]),
            "mem_mb": memory_mb(job["MinMemoryNode"]),
            "minutes": minutes(job["TimeLimit"]),
            "cpus": int(job["CPUs/Task"]),  # threads of the rule
        }
        assert requested == expected, (rule, job)
        # The same values Snakemake computed for the job (nothing lost on the way).
        assert printed[rule]["gpu"] == str(expected["gpus"])
        assert printed[rule]["mem_mb"] == str(expected["mem_mb"])
        assert printed[rule]["runtime"] == str(expected["minutes"])
        # What the scheduler granted: that many GPUs (device indices) and that much memory.
        assert job["JOB_GRES"] == f"gpu:{expected['gpus']}", job
        assert job["GRES"].startswith(f"gpu:{expected['gpus']}(IDX:"), job
        assert int(job["Mem"]) == expected["mem_mb"]
        assert job["Partition"] == paper_cluster.partition  # the cluster's default
        assert job["NumNodes"] == "1"
        assert job["JobName"] == run_name and run_name.startswith("sbt_")
    # Ctrl-C cancelled both; nothing of the run is left in the queue.
    assert {row["state"] for row in rows} == {"CANCELLED"}, format_job_table(rows)
