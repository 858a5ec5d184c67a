"""Config checks, the experiment grid, and every input/params function the rules use."""

import difflib
import functools
import json
import os
import re
from pathlib import Path

import jsonschema
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

# The workflow's package (`make setup` installs it), imported here so the training
# settings are checked and merged by the very declarations (sbt.train_config) that
# sbt.train reads them with.
from sbt.settings import SettingError, settings_of
from sbt.train_config import TrainConfig
from sbt.training import METHODS
from sbt.launch import slurm_resources, train_launcher as launch_command
from sbt import runs
from sbt.prefetch_benchmarks import ETHICS_SPLITS, ETHICS_SUBSETS, ethics_file_name

# The multi-node launch script, relative to the working directory (a recorded param).
NODE_SCRIPT = os.path.relpath(
    Path(workflow.basedir).parent / "scripts" / "torchrun_slurm.sh"
)


def schema_error_line(error):
    """(key, message) of a JSON Schema error, short enough for one line.

    Snakemake's own message repeats the whole schema (hundreds of lines); the path of the
    offending key, what is wrong with it and a hint at the likely fix is what helps.
    """
    key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in known]
        hints = []
        for name in unknown:
            near = difflib.get_close_matches(name, known, n=1)
            hints.append(
                f"{name!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
            )
        return key, f"unknown key {', '.join(hints)}; valid keys: {', '.join(known)}"
    message = error.message
    path = list(error.absolute_path)
    if error.validator == "enum" and path and isinstance(path[-1], str):
        # a named key (template, dtype, ...) whose value is not in its list
        valid = ", ".join(
            "null" if v is None else str(v) for v in error.validator_value
        )
        message = f"unknown {path[-1]} {error.instance!r}; valid: {valid}"
    if len(message) > 300:
        message = message[:300] + " ..."
    if error.validator == "type" and isinstance(error.instance, str):
        try:
            float(error.instance)
        except ValueError:
            pass
        else:  # YAML 1.1 reads 2e-5 as a string: a float needs a dot
            message += f" (YAML reads {error.instance} as text; write it with a dot, e.g. 2.0e-5)"
    return key, message


def validate_config():
    """Snakemake's schema validation (which also fills in the schema's defaults), with a
    one-line error naming the key instead of the schema dump."""
    try:
        validate(config, schema="../schemas/config.schema.yaml")
    except WorkflowError as exc:
        error = exc.__context__
        if not isinstance(error, jsonschema.ValidationError):
            raise
        config_error(*schema_error_line(error))


RESULTS = runs.RESULTS
# What the local rule prefetch_benchmarks writes (on a machine with network).
PREFETCH_DIR = "resources/benchmarks"
PREFETCH_MANIFEST = f"{PREFETCH_DIR}/manifest.json"
PREFETCHED_ETHICS = [
    f"{PREFETCH_DIR}/ethics/{ethics_file_name(subset, split)}"
    for subset in ETHICS_SUBSETS
    for split in ETHICS_SPLITS
]
PREFETCHED_MMLU = f"{PREFETCH_DIR}/mmlu"  # data.tar's dev/ and test/ CSVs (mmlu_study)
# The study's own MMLU script, as a task (sbt.mmlu_study).
MMLU_STUDY = "mmlu_study"
EXTERNAL = runs.EXTERNAL


def config_error(key, message):
    """One line naming the config key, raised before any job is scheduled."""
    raise WorkflowError(f"config error: {key}: {message}")


validate_config()


# Data sources that the prefetch rules may download: source path -> url.
SOURCE_URLS = {
    v["sources"][0]: v["url"] for v in config["data"].values() if v.get("url")
}


def check_path(key, path):
    """Relative paths stay inside the working directory; leaving it takes an absolute path."""
    if not Path(path).is_absolute() and ".." in Path(path).parts:
        config_error(
            key,
            f"relative path {path!r} leaves the working directory; use an absolute path if intended",
        )


def check_mmlu_study(name, bench):
    """data_dir goes with task mmlu_study, alone in its benchmark, and must exist."""
    data_dir = bench.get("data_dir")
    if MMLU_STUDY not in bench["tasks"] and not data_dir:
        return
    if bench["tasks"] != [MMLU_STUDY]:
        config_error(
            f"benchmarks.{name}.tasks",
            f"{MMLU_STUDY} runs alone in its benchmark (data_dir is for it only)",
        )
    if not data_dir:
        config_error(
            f"benchmarks.{name}.data_dir",
            f"{MMLU_STUDY} reads data.tar's CSV files: set data_dir (e.g. {PREFETCHED_MMLU})",
        )
    if bench.get("data_files"):
        config_error(
            f"benchmarks.{name}.data_files",
            f"{MMLU_STUDY} takes data_dir, not data_files",
        )
    check_path(f"benchmarks.{name}.data_dir", data_dir)
    if data_dir != PREFETCHED_MMLU and not Path(data_dir, "test").is_dir():
        config_error(
            f"benchmarks.{name}.data_dir",
            f"{data_dir!r} has no test/ folder (nor is it written by prefetch_benchmarks)",
        )


def check_config():
    """Checks JSON Schema cannot express: names that refer to each other, files that must exist.
    (Template names are the schema's enum, written from sbt.templates' registry.)"""
    for name, variant in config["data"].items():
        if variant["url"] and len(variant["sources"]) != 1:
            config_error(f"data.{name}.url", "a url needs exactly one file in sources")
        for i, source in enumerate(variant["sources"]):
            check_path(f"data.{name}.sources[{i}]", source)
            if not Path(source).exists() and not variant.get("url"):
                config_error(
                    f"data.{name}.sources[{i}]",
                    f"file {source!r} does not exist (and no url to prefetch it from)",
                )
    for name, backbone in config["backbones"].items():
        check_path(f"backbones.{name}.model", backbone["model"])
        for variant in backbone.get("data", []):
            if variant not in config["data"]:
                config_error(
                    f"backbones.{name}.data", f"unknown data variant {variant!r}"
                )
        for method in backbone["methods"]:
            if method not in config["training"]:
                config_error(
                    f"backbones.{name}.methods",
                    f"method {method!r} has no settings under training.{method}",
                )
    for name, bench in config["benchmarks"].items():
        check_mmlu_study(name, bench)
        for split, path in bench.get("data_files", {}).items():
            check_path(f"benchmarks.{name}.data_files.{split}", path)
            if not Path(path).exists() and path not in PREFETCHED_ETHICS:
                config_error(
                    f"benchmarks.{name}.data_files.{split}",
                    f"file {path!r} does not exist (nor is it written by prefetch_benchmarks)",
                )
    for name, checkpoint in config["external"].items():
        check_path(f"external.{name}.model", checkpoint["model"])
        group = checkpoint.get("backbone")
        if group is not None and group not in config["backbones"]:
            config_error(f"external.{name}.backbone", f"unknown backbone {group!r}")
    if EXTERNAL in config["backbones"]:
        config_error(
            f"backbones.{EXTERNAL}", "this name is reserved for external checkpoints"
        )


check_config()


def names_pattern(names):
    """Regex that matches exactly one of the configured names (none: matches nothing)."""
    escaped = sorted((re.escape(n) for n in names), key=len, reverse=True)
    return "|".join(escaped) or "(?!)"


wildcard_constraints:
    data=names_pattern(config["data"]),
    backbone=names_pattern(config["backbones"]),
    method=names_pattern(METHODS),
    benchmark=names_pattern(config["benchmarks"]),
    checkpoint=names_pattern(config["external"]),


# ---------------------------------------------------------------- the grid


def backbone_data(backbone):
    settings = config["backbones"][backbone]
    return settings.get("data") or list(config["data"])


def trained_runs():
    """(backbone, data, method) of every fine-tuning run in the grid."""
    return [
        (backbone, data, method)
        for backbone, settings in config["backbones"].items()
        for data in backbone_data(backbone)
        for method in settings["methods"]
    ]


def all_runs():
    """Every evaluated model as its results path: base backbones, our runs, external."""
    return (
        [f"{backbone}/base" for backbone in config["backbones"]]
        + [f"{backbone}/{data}/{method}" for backbone, data, method in trained_runs()]
        + [f"{EXTERNAL}/{checkpoint}" for checkpoint in config["external"]]
    )


def run_of(wildcards):
    """The run an evaluate job belongs to (sbt.runs.Run; its path is one of all_runs())."""
    return runs.resolve_run(config, dict(wildcards.items()))


def eval_result(run, benchmark):
    return f"{RESULTS}/eval/{run}/{benchmark}.json"


def eval_outputs():
    """Every result JSON: every run x every benchmark."""
    return [
        eval_result(run, bench) for bench in config["benchmarks"] for run in all_runs()
    ]


def get_final_output():
    return [
        f"{RESULTS}/tables/summary.csv",
        f"{RESULTS}/tables/summary.md",
        f"{RESULTS}/tables/summary.tex",
        f"{RESULTS}/plots",
    ]


# ---------------------------------------------------------------- data


def data_sources(wildcards):
    return config["data"][wildcards.data]["sources"]


def conversion_flags(wildcards):
    """The variant's conversion options as converter flags (a params, so edits rerun it)."""
    variant = config["data"][wildcards.data]
    flags = [
        f"--{key.replace('_', '-')}"
        for key in ("strip_newline", "all_turns", "drop_image_key", "skip_invalid")
        if variant[key]
    ]
    if variant["max_records"]:
        flags += [
            "--max-records",
            str(variant["max_records"]),
            "--seed",
            str(variant["seed"]),
        ]
    return " ".join(flags)


# ---------------------------------------------------------------- backbones


def is_tiny(backbone):
    return runs.is_tiny(config, backbone)


def backbone_model(backbone):
    """Where the base weights come from: the locally built demo model, or an id/path."""
    return runs.backbone_model(config, backbone)


def backbone_inputs(wildcards):
    """A built demo backbone is a rule output; hub ids and cluster paths are not."""
    if is_tiny(wildcards.backbone):
        return {"backbone": backbone_model(wildcards.backbone)}
    return {}


def tiny_corpus():
    """Text the demo tokenizers are trained on: the data variants' sources. (Not the
    benchmark files, so editing a benchmark never rebuilds and retrains the backbones.)
    """
    return sorted({s for v in config["data"].values() for s in v["sources"]})


# ---------------------------------------------------------------- training


BACKBONE_SETTINGS = [f.name for f in settings_of(TrainConfig, "backbone")]


@functools.cache
def hparams(backbone, method):
    """The run's TrainConfig, merged once: its defaults (sbt.train_config) <-
    training.<method> <- backbones.<b>.training.<method> <- the backbone's own keys
    (trust_remote_code, tokenizer_legacy, allow_pickle_weights)."""
    settings = config["backbones"][backbone]
    layers = (
        config["training"].get(method, {}),
        settings.get("training", {}).get(method, {}),
        {key: settings[key] for key in BACKBONE_SETTINGS},
    )
    try:
        return TrainConfig.from_layers(*layers)
    except SettingError as exc:  # what the schema cannot say, e.g. max_steps 0
        key = f"training.{method}" + (f".{exc.key}" if exc.key else "")
        config_error(key, f"{exc} (backbone {backbone})")


def train_hparams_json(wildcards):
    """Every training setting, num_gpus included: it is a params, so editing any of them
    (the global batch follows the GPUs unless global_batch_size is set) reruns the job.
    """
    settings = hparams(wildcards.backbone, wildcards.method)
    return json.dumps(settings.params(wildcards.method), sort_keys=True)


def check_global_batch(backbone, method):
    """global_batch_size must split into per-device batches over the job's processes."""
    settings = hparams(backbone, method)
    processes = max(1, settings.num_gpus) * settings.nodes
    try:  # the rule train itself applies (sbt.train_config), said in config terms
        settings.accumulation_steps(processes)
    except SettingError:
        nodes = " x nodes" if settings.nodes > 1 else ""
        per_step = settings.per_device_train_batch_size * processes
        config_error(
            f"training.{method}.global_batch_size",
            f"{settings.global_batch_size} for backbone {backbone} is not a multiple of"
            f" per_device_train_batch_size x num_gpus{nodes} = {per_step}",
        )


for _backbone, _, _method in trained_runs():
    check_global_batch(_backbone, _method)


def num_gpus(backbone, method):
    return hparams(backbone, method).num_gpus


def train_nodes(wildcards):
    return hparams(wildcards.backbone, wildcards.method).nodes


def train_resource(name):
    """One scheduler resource of a train job (sbt.launch.slurm_resources): `gpu` on one
    node; `nodes`, `tasks`, `gres`, `tasks_per_gpu`, `mpi` across several (None: unset).
    """

    def value(wildcards):
        settings = hparams(wildcards.backbone, wildcards.method)
        return slurm_resources(settings.nodes, settings.num_gpus)[name]

    return value


def train_launcher(wildcards):
    """One node: python, or torchrun with one process per GPU (FSDP and DeepSpeed need
    torchrun even on one GPU). Several nodes: srun starting one torchrun per node, which
    meet in a c10d rendezvous (sbt.launch, docs/slurm.md). From wildcards only, so the
    launch line is a recorded param."""
    settings = hparams(wildcards.backbone, wildcards.method)
    return launch_command(
        settings.nodes,
        settings.num_gpus,
        sharded=bool(settings.fsdp or settings.deepspeed),
        cpus_per_task=train_threads(wildcards),
        node_script=NODE_SCRIPT,
    )


def train_threads(wildcards):
    """CPU cores for data loading and the launcher: 8 per GPU, 1 on a CPU-only job."""
    return max(1, 8 * num_gpus(wildcards.backbone, wildcards.method))


def deepspeed_config(wildcards):
    """The DeepSpeed JSON is an input, so editing it reruns the runs that use it."""
    path = hparams(wildcards.backbone, wildcards.method).deepspeed
    return {"deepspeed": path} if path else {}


def size_b(backbone):
    return runs.backbone_size_b(config, backbone)


def train_mem_mb(wildcards, attempt):
    """Host memory grows with the model and with each retry after running out."""
    return int((8 + 16 * size_b(wildcards.backbone)) * 1024 * attempt)


def train_runtime(wildcards, attempt):
    return int(max(30, 90 * size_b(wildcards.backbone)) * attempt)


# ---------------------------------------------------------------- evaluation


def benchmark(name):
    return config["benchmarks"][name]


def eval_inputs(wildcards):
    return benchmark_inputs(run_of(wildcards), wildcards.benchmark)


def benchmark_inputs(run, name):
    """Model directories (demo backbones and our own runs) and files one benchmark reads."""
    inputs = {}
    if run.model.startswith(f"{RESULTS}/"):
        inputs["model"] = run.model
    if run.adapter and run.adapter.startswith(f"{RESULTS}/"):
        inputs["adapter"] = run.adapter
    bench = benchmark(name)
    data_files = bench.get("data_files")
    # Without local files the job reads the HF cache that prefetch_benchmarks filled.
    inputs["data_files"] = (
        list(data_files.values()) if data_files else [PREFETCH_MANIFEST]
    )
    # mmlu_study: every CSV (so edits rerun it), or the folder prefetch_benchmarks writes.
    if bench.get("data_dir"):
        inputs["data_files"] = mmlu_files(bench["data_dir"])
    return inputs


def mmlu_files(data_dir):
    if data_dir == PREFETCHED_MMLU:
        return [PREFETCHED_MMLU]
    return sorted(
        str(p) for split in ("dev", "test") for p in Path(data_dir, split).glob("*.csv")
    )


def hub_benchmark_tasks():
    """lm-eval tasks of the benchmarks that have no local files (cached by prefetch)."""
    return sorted(
        {
            task
            for bench in config["benchmarks"].values()
            if not bench.get("data_files") and not bench.get("data_dir")
            for task in bench["tasks"]
        }
    )


def eval_args(wildcards):
    """Only wildcards in, no `output` argument: Snakemake does not record params computed
    from outputs, and the params trigger must see every argument."""
    return benchmark_args(run_of(wildcards), wildcards.benchmark)


def benchmark_args(run, name):
    """Command-line arguments of sbt.evaluate for one run x benchmark."""
    bench = benchmark(name)
    study = config["evaluation"]  # the study-mode keys (see sbt/lmeval_study.py)
    # A benchmark's own dtype (mmlu_study: the study's MMLU script ran float32) wins over
    # evaluation.dtype ("checkpoint": the model's own torch_dtype), which wins over the run's.
    dtype = bench.get("dtype") or study.get("dtype") or run.dtype
    args = ["--model", run.model, "--dtype", dtype, "--benchmark", name]
    if run.adapter:
        args += ["--adapter", run.adapter]
    for task in bench["tasks"]:
        args += ["--task", task]
    args += ["--num-fewshot", str(bench["num_fewshot"])]
    if bench.get("data_files"):
        args += ["--data-files"] + [f"{s}={p}" for s, p in bench["data_files"].items()]
    if bench.get("data_dir"):
        args += ["--data-dir", bench["data_dir"]]
    if bench.get("metrics"):
        args += ["--metrics", *bench["metrics"]]
    if bench.get("limit"):
        args += ["--limit", str(bench["limit"])]
    if bench["log_samples"]:  # every prompt and answer, beside the result JSON
        result = eval_result(run.path, name)
        samples = result.removesuffix(".json") + ".samples.jsonl"
        args += ["--log-samples", samples]
    batch_size = bench.get("batch_size", config["evaluation"]["batch_size"])
    args += ["--batch-size", str(batch_size)]
    args += ["--seed", str(config["evaluation"]["seed"])]
    args += ["--device", config["evaluation"]["device"]]
    bos = {None: "default", True: "true", False: "false"}[study.get("add_bos_token")]
    args += ["--add-bos-token", bos]
    args += ["--fewshot-sampler", study.get("fewshot_sampler", "lm_eval")]
    args += ["--task-config", study.get("task_config", "lm_eval")]
    if run.settings.get("trust_remote_code"):
        args.append("--trust-remote-code")
    if run.settings["allow_pickle_weights"]:
        args.append("--allow-pickle-weights")
    args += ["--run-info", json.dumps(run.info, sort_keys=True)]
    return args


def eval_gpus(wildcards):
    return run_of(wildcards).gpus


def eval_mem_mb(wildcards, attempt):
    return int((6 + 4 * run_of(wildcards).size_b) * 1024 * attempt)


def eval_runtime(wildcards, attempt):
    return int((20 + 15 * run_of(wildcards).size_b) * attempt)


# ---------------------------------------------------------------- disk


BYTES_PER_PARAM = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 4}


def disk_estimate():
    """Rough disk the grid's model outputs need, so nobody finds out from a full quota.

    Full fine-tunes are saved in their save_dtype (auto: float32); a LoRA adapter is about 2% of its
    base at the study's r=64 on every linear layer; a resumable checkpoint (weights plus
    Adam state, float32) needs about 16 bytes per trained parameter while its job runs.
    """
    gb = 1e9
    models = checkpoints = 0.0
    counts = {"full": 0, "lora": 0}
    for backbone, _, method in trained_runs():
        params = size_b(backbone) * 1e9
        per_param = BYTES_PER_PARAM[hparams(backbone, method).save_dtype]
        trained = params if method == "full" else params * 0.02
        models += params * per_param if method == "full" else trained * 4
        checkpoints = max(checkpoints, trained * 16)
        counts[method] += 1
    return (
        f"Disk estimate: {counts['full']} full models + {counts['lora']} LoRA adapters"
        f" = {models / gb:.1f} GB under {RESULTS}/models; up to {checkpoints / gb:.1f} GB"
        " more per training job while it runs (resumable checkpoint, deleted after success)."
    )


if workflow.is_main_process:
    logger.info(disk_estimate())


# ---------------------------------------------------------------- failures


ERROR_BLOCK = "Error in rule "  # how Snakemake's run log opens a failed job's block


def report_failures(log):
    """After a run with failures (e.g. under --keep-going): each failed job's rule, output
    and log file, with the last lines of that log, so nobody has to scroll back for them.
    Read from Snakemake's own run log, whose error blocks name the output and the log.
    """
    logs = [log] if isinstance(log, (str, os.PathLike)) else list(log or [])
    run_log = [
        line
        for path in logs
        if Path(path).is_file()
        for line in Path(path).read_text(errors="replace").splitlines()
    ]
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
    if not failed:
        return
    lines = [f"{len(failed)} failed job(s):"]
    for job in failed.values():
        lines.append(f"  {job['rule']} -> {job.get('output', '?')}")
        for job_log in job["log"].split(", "):
            lines.append(f"    log: {job_log}")
            if Path(job_log).is_file():
                tail = Path(job_log).read_text(errors="replace").splitlines()[-3:]
                lines += [f"      | {text[:200]}" for text in tail]
    logger.error("\n".join(lines))
