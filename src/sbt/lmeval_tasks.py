"""Run lm-eval (the library) on stock tasks, offline, optionally on local benchmark files.

Local files keep the stock task's prompt, metrics and `!function` helpers: for each task a
small YAML is written into a private folder with `include: <absolute stock YAML>`, the same
task name, `dataset_path: json` and the files as `dataset_kwargs.data_files`. The stock
YAML and its config come from lm-eval's public `TaskManager` index of its ~14k bundled
YAMLs, built once per process (`stock_task_manager`, about 8 s): a per-run evaluation job
(sbt/lmeval_run.py) pays it once for all its benchmarks. Splits a stock task names but the
local files lack are switched off, so a test-only file works for a task that also lists a
train split.

Heavy imports (torch, datasets, lm_eval.evaluator) happen inside functions, after the
offline switches are set.
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbt.common import InputError, input_error

SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")
# lm-eval's own default (100000) is slow for corpus-level metrics (e.g. SQuAD2); the study
# reports no standard errors, so a smaller number only affects the stderr entries.
DEFAULT_BOOTSTRAP_ITERS = 1000


def stock_tasks_dir() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).resolve().parent / "tasks"


# --------------------------------------------------------------------------- finding tasks
@functools.cache
def stock_task_manager() -> Any:
    """lm-eval's public TaskManager over its bundled tasks, built once per process.

    Building it parses every bundled YAML (~14k files, about 8 s), so an evaluation job
    pays it once however many benchmarks it evaluates (`evaluation.group: run`).
    """
    from lm_eval.tasks import TaskManager

    return TaskManager()


def stock_entry(name: str) -> Any:
    """The index entry of a bundled task, group or tag (None: no such name)."""
    return stock_task_manager().task_index.get(name)


def stock_config(name: str) -> dict[str, Any]:
    """A bundled task's config as lm-eval indexed it: includes merged, `!function` left as
    text (nothing imported). A copy: the index's own stays untouched."""
    return copy.deepcopy(stock_entry(name).cfg or {})


def unknown_task_error(name: str, known: Iterable[str]) -> InputError:
    near = difflib.get_close_matches(name, sorted(known), n=6, cutoff=0.6)
    hint = f"; near matches: {', '.join(near)}" if near else "; no similar lm-eval task names"
    return input_error("--task", f"unknown lm-eval task {name!r}{hint}")


def locate_stock_tasks(names: Sequence[str]) -> dict[str, Path]:
    """Path of the stock YAML of each task in `names` (single tasks, not groups or tags)."""
    index = stock_task_manager().task_index
    found: dict[str, Path] = {}
    for name in names:
        entry = index.get(name)
        if entry is None:
            raise unknown_task_error(name, index)
        kind = getattr(entry.kind, "name", str(entry.kind))
        if kind not in ("TASK", "PY_TASK") or entry.yaml_path is None:
            members = sorted(_members(entry))
            listed = f" ({', '.join(members[:8])}{', ...' if len(members) > 8 else ''})"
            raise input_error(
                "--task",
                f"{name!r} is an lm-eval {kind.lower()}, not a single task; with --data-files "
                f"name its tasks one by one{listed if members else ''}",
            )
        found[name] = Path(entry.yaml_path).resolve()
    return found


def _members(entry: Any) -> set[str]:
    """Task names a tag or group entry stands for (what the error message suggests)."""
    if getattr(entry.kind, "name", "") == "TAG":
        return set(entry.tags)
    listed = (entry.cfg or {}).get("task")
    if isinstance(listed, list):
        return {t if isinstance(t, str) else str(t.get("task", t.get("group"))) for t in listed}
    return set()


def check_task_names(names: Sequence[str]) -> None:
    """Fail early, with near matches, when a stock task/group/tag name does not exist."""
    index = stock_task_manager().task_index
    for name in names:
        if name not in index:
            raise unknown_task_error(name, index)


# --------------------------------------------------------------------------- local task YAMLs
def parse_data_files(specs: Sequence[str] | None) -> dict[str, Path]:
    """`SPLIT=PATH` arguments -> {split: absolute path}; every file must exist."""
    data_files: dict[str, Path] = {}
    for spec in specs or ():
        split, sep, path = spec.partition("=")
        if not sep or not split or not path:
            raise input_error("--data-files", f"expected SPLIT=PATH, got {spec!r}")
        if split in data_files:
            raise input_error("--data-files", f"split {split!r} given twice")
        file = Path(path)
        if not file.is_file():
            raise input_error(file, f"benchmark data file not found (--data-files {spec})")
        data_files[split] = file.resolve()
    return data_files


@dataclass
class LocalTask:
    """One stock task rebound to local files."""

    name: str
    stock_yaml: Path
    overrides: dict[str, Any]
    config: dict[str, Any] = field(repr=False)  # the merged config (functions unresolved)
    stock_splits: dict[str, str] = field(default_factory=dict)  # e.g. {"test_split": "test"}

    @property
    def stock_source(self) -> str:
        """The stock YAML relative to lm-eval's tasks folder (for provenance)."""
        try:
            return self.stock_yaml.relative_to(stock_tasks_dir()).as_posix()
        except ValueError:
            return self.stock_yaml.as_posix()

    def yaml_text(self) -> str:
        from sbt.lmeval_study import dump_task_yaml  # `!function` tags of the study mode

        return dump_task_yaml(self.overrides)


def plan_local_task(
    name: str, stock_yaml: Path, data_files: Mapping[str, Path], num_fewshot: int
) -> LocalTask:
    """Overrides that bind stock task `name` (defined in `stock_yaml`) to `data_files`."""
    stock = stock_config(name)
    stock_splits = {key: stock.get(key) for key in SPLIT_KEYS if stock.get(key)}
    overrides: dict[str, Any] = {
        "include": str(stock_yaml),
        "task": name,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {s: str(p) for s, p in data_files.items()}},
    }
    for key, split in stock_splits.items():
        if split not in data_files:
            overrides[key] = None  # no such file: lm-eval must not look for that split
    kept = {key: split for key, split in stock_splits.items() if split in data_files}
    eval_split = kept.get("test_split") or kept.get("validation_split")
    if eval_split is None:
        wanted = stock.get("test_split") or stock.get("validation_split")
        raise input_error(
            "--data-files",
            f"task {name} evaluates on split {wanted!r}; give --data-files {wanted}=PATH "
            f"(given: {', '.join(data_files) or 'none'})",
        )
    fixed_shots = stock.get("num_fewshot")
    shots = fixed_shots if fixed_shots == 0 else num_fewshot
    if shots and shots > 0:
        sources = {kept.get("fewshot_split"), kept.get("training_split")}
        if eval_split == kept.get("test_split"):
            sources.add(kept.get("validation_split"))
        if not sources - {None}:
            wanted = stock.get("fewshot_split") or stock.get("training_split") or "train"
            raise input_error(
                "--data-files",
                f"task {name} with {shots}-shot prompts needs a split to draw examples from; "
                f"give --data-files {wanted}=PATH",
            )
    config = {**stock, **{k: v for k, v in overrides.items() if k != "include"}}
    return LocalTask(name, stock_yaml, overrides, config, stock_splits)


def plan_local_tasks(
    names: Sequence[str], data_files: Mapping[str, Path], num_fewshot: int
) -> list[LocalTask]:
    """Plan every task; each given split must be one some task reads."""
    stock = locate_stock_tasks(names)
    tasks = [plan_local_task(name, stock[name], data_files, num_fewshot) for name in names]
    known = {split for t in tasks for split in t.stock_splits.values()}
    for split in data_files:
        if split not in known:
            raise input_error(
                "--data-files",
                f"split {split!r} is not read by {', '.join(names)} "
                f"(their splits: {', '.join(sorted(known)) or 'none'})",
            )
    return tasks


def config_metric_names(config: Mapping[str, Any]) -> list[str] | None:
    """Metric names a task config declares (None when it declares none)."""
    metric_list = config.get("metric_list")
    if not metric_list:
        return None
    return [m["metric"] for m in metric_list if isinstance(m, dict) and "metric" in m]


def check_declared_metrics(tasks: Sequence[LocalTask], metrics: Sequence[str] | None) -> None:
    """Before any model is loaded: each requested metric must be one the task declares."""
    for task in tasks:
        declared = config_metric_names(task.config)
        if not metrics or not declared:
            continue
        for metric in metrics:
            if metric.partition(",")[0] not in declared:
                raise input_error(
                    "--metrics",
                    f"task {task.name} has no metric {metric!r} (it has: {', '.join(declared)})",
                )


# --------------------------------------------------------------------------- running lm-eval
def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def hf_model_args(
    model: str,
    *,
    adapter: str | None = None,
    tokenizer: str | None = None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    allow_pickle_weights: bool = False,
    add_bos_token: bool | None = None,
) -> dict[str, Any]:
    """model_args of lm-eval's "hf" model: a base model, plus a PEFT adapter when given.

    Weights load from safetensors only (lm-eval passes extra model_args on to
    from_pretrained), unless pickled .bin weights are explicitly allowed.
    """
    args: dict[str, Any] = {
        "pretrained": model,
        "dtype": dtype,
        "trust_remote_code": trust_remote_code,
    }
    if not allow_pickle_weights:
        args["use_safetensors"] = True
    if adapter:
        args["peft"] = adapter
    if tokenizer:
        args["tokenizer"] = tokenizer
    if add_bos_token is not None:  # None: the tokenizer's own default (LLaMA: add <s>)
        args["add_bos_token"] = add_bos_token
    return args


# --------------------------------------------------------------------------- reading results
def metric_key(result_key: str) -> str | None:
    """lm-eval result key -> our metric name: "acc,none" -> "acc"; stderr/alias -> None."""
    name, sep, filter_name = result_key.partition(",")
    if not sep or name.endswith("_stderr"):
        return None
    return name if filter_name == "none" else f"{name},{filter_name}"


def primary_metrics(task_result: Mapping[str, Any]) -> dict[str, float | None]:
    """Every metric lm-eval reports for one task, without stderr entries (NaN -> None)."""
    metrics: dict[str, float | None] = {}
    for key, value in task_result.items():
        name = metric_key(key)
        if name is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        metrics[name] = float(value) if math.isfinite(value) else None
    return metrics


def select_metrics(
    task: str, available: Mapping[str, float | None], wanted: Sequence[str] | None
) -> dict[str, float | None]:
    """The `wanted` metrics of one task ("acc", or "exact_match,strict-match" for a filter).

    A bare name takes the unfiltered value, or every filtered variant when the task only
    has filtered ones (gsm8k's exact_match).
    """
    if not wanted:
        return dict(available)
    chosen: dict[str, float | None] = {}
    for want in wanted:
        want = want.removesuffix(",none")
        if want in available:
            chosen[want] = available[want]
            continue
        variants = {k: v for k, v in available.items() if k.partition(",")[0] == want}
        if not variants:
            raise input_error(
                "--metrics",
                f"task {task} reports no metric {want!r} "
                f"(it reports: {', '.join(sorted(available)) or 'none'})",
            )
        chosen.update(variants)
    return chosen


def samples_per_task(results: Mapping[str, Any], task: str) -> dict[str, int] | None:
    """{"original", "effective"} documents of a task; a group sums its tasks."""
    n_samples = results.get("n-samples", {})
    if task in n_samples:
        return dict(n_samples[task])
    members = results.get("group_subtasks", {}).get(task)
    if not members:
        return None
    parts = [samples_per_task(results, m) for m in members]
    parts = [p for p in parts if p]
    return {key: sum(p.get(key, 0) for p in parts) for key in ("original", "effective")}


def json_safe(value: Any) -> Any:
    """lm-eval's results as plain JSON types (numpy scalars and the like converted)."""
    import json

    from lm_eval.utils import handle_non_serializable

    return json.loads(json.dumps(value, default=handle_non_serializable))
