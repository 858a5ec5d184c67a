"""Evaluate several benchmarks of one run in one process, with lm-eval's public API.

sbt.evaluate (one benchmark: `evaluation.group: benchmark`) and
sbt.evaluate_run (every benchmark of a run: `evaluation.group: run`) both go
through `evaluate_benchmarks`, so one benchmark gives the same document either way:

1. plan: each benchmark is validated (rows, task names, splits, metrics;
   sbt.lmeval_bench.plan_benchmark) before any model loads. A bad one fails alone.
2. group: benchmarks with the same model arguments (dtype, BOS, max_length), batch size
   and device share one model object (sbt/lmeval_model.py), loaded on the first request
   the cache cannot answer and freed before the next setting loads. Within one model,
   one simple_evaluate call takes every benchmark with the same limit, seed and
   bootstrap count: few-shot counts are set on each task, so they need not agree. A task
   name already in the call starts another call.
3. run: simple_evaluate(model=<that object>, tasks=<Task objects>, use_cache=<SQLite
   file of that setting>). Requests of one type are batched across the call's tasks. A
   call that fails is redone one benchmark at a time (the cache answers what the failed
   call had computed), so an error lands on its own benchmark.
4. split: lm-eval's results are cut back into one document per benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbt.common import InputError, input_error
from sbt.lmeval_bench import Benchmark, benchmark_name, plan_benchmark, result_document

RAISE, RECORD = "raise", "record"  # what evaluate_benchmarks does with a failed benchmark


@dataclass
class Outcome:
    """What one benchmark came to: its document or its error, its log lines, its samples."""

    name: str
    document: dict | None
    error: str | None
    lines: list[str]
    samples: dict | None = None


class ModelViews:
    """LLaVA checkpoints seen as the LLaMA they hold (sbt.checkpoints): one view per
    model, open until every benchmark of the process is evaluated."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._stack = stack
        self._open: dict[tuple, tuple[str, str | None]] = {}

    def open(self, model: str, allow_pickle_weights: bool) -> tuple[str, str | None]:
        from sbt.checkpoints import language_model_view

        key = (model, allow_pickle_weights)
        if key not in self._open:
            view = language_model_view(model, allow_pickle_weights=allow_pickle_weights)
            self._open[key] = self._stack.enter_context(view)
        return self._open[key]


def bind_model(bench: Benchmark, views: ModelViews) -> None:
    """The lm-eval model arguments of a planned benchmark (its checkpoint dtype read)."""
    from sbt.lmeval_study import bos_model_arg, checkpoint_dtype
    from sbt.lmeval_tasks import hf_model_args
    from sbt.mmlu_study import TASK_NAME as MMLU_STUDY
    from sbt.mmlu_study import study_model_args

    args = bench.args
    model_path, bench.checkpoint = views.open(args.model, args.allow_pickle_weights)
    dtype = args.dtype
    if dtype == "checkpoint":  # the study's harness: the checkpoint's own torch_dtype
        dtype = checkpoint_dtype(model_path)
    bench.dtype = dtype
    bench.model_args = hf_model_args(
        model_path,
        adapter=args.adapter,
        tokenizer=args.tokenizer,
        dtype=dtype,
        trust_remote_code=args.trust_remote_code,
        allow_pickle_weights=args.allow_pickle_weights,
        add_bos_token=bos_model_arg(args.add_bos_token),
    )
    if bench.mmlu_study:
        bench.model_args = study_model_args(bench.model_args)
        length = bench.model_args["max_length"]
        bench.log(f"{MMLU_STUDY}: BOS as the tokenizer adds it, max_length {length}")
    what = f"{args.model}" + (f" + adapter {args.adapter}" if args.adapter else "")
    bench.log(f"tasks {', '.join(bench.tasks)} on {what} ({bench.device}, {dtype})")
    if bench.data_files:
        bench.log("data files: " + ", ".join(f"{s}={p}" for s, p in bench.data_files.items()))
    bench.setup_s = time.perf_counter() - bench.started


def load_tasks(bench: Benchmark, folder: Path) -> tuple[list, list]:
    """(top-level Task/Group objects, leaf Task objects) of one benchmark.

    Generated YAMLs (local files, study overrides, mmlu_study) and bundled single tasks
    are loaded by path through a TaskManager that indexes nothing (instant) and hands
    tasks the model arguments as `metadata`, as simple_evaluate's own would (mmlu_study
    loads its tokenizer from them); groups and tags come from the shared bundled index.
    """
    from lm_eval.tasks import TaskManager

    from sbt.lmeval_study import write_tasks_module
    from sbt.lmeval_tasks import stock_entry, stock_task_manager

    local = {task.name: task for task in bench.local_tasks or []}
    own = Path(tempfile.mkdtemp(dir=folder))  # a folder per benchmark: names may repeat
    if local:
        for task in local.values():
            (own / f"{task.name}.yaml").write_text(task.yaml_text(), encoding="utf-8")
        write_tasks_module(own)
    by_path = TaskManager(include_defaults=False, metadata=dict(bench.model_args))
    top, leaves = [], []
    for name in bench.tasks:
        entry = None if name in local else stock_entry(name)
        kind = getattr(getattr(entry, "kind", None), "name", "")
        if name in local or (kind in ("TASK", "PY_TASK") and entry.yaml_path):
            path = own / f"{name}.yaml" if name in local else Path(entry.yaml_path)
            task = by_path.load(str(path))["tasks"][name]
            top.append(task)
            leaves.append(task)
            continue
        loaded = stock_task_manager().load(name)
        top.extend(
            [loaded["groups"][name]] if name in loaded["groups"] else loaded["tasks"].values()
        )
        leaves.extend(loaded["tasks"].values())
    for task in leaves:  # as simple_evaluate(num_fewshot=N): a config that fixes 0 keeps 0
        if task.get_config("num_fewshot") != 0:
            task.set_config(key="num_fewshot", value=bench.args.num_fewshot)
    return top, leaves


def plan_calls(benches: Sequence[Benchmark]) -> list[list[Benchmark]]:
    """Benchmarks in lm-eval calls: same model and call settings, task names unique."""
    calls: list[tuple[tuple, set[str], list[Benchmark]]] = []
    for bench in benches:
        for key, names, members in calls:
            if key == bench.call_key and not names & set(bench.tasks):
                members.append(bench)
                names.update(bench.tasks)
                break
        else:
            calls.append((bench.call_key, set(bench.tasks), [bench]))
    return [members for _, _, members in calls]


def listing_manager() -> Any:
    """The TaskManager simple_evaluate gets (it only logs task paths from it): the shared
    bundled index if this process has built it, else one that indexes nothing."""
    from lm_eval.tasks import TaskManager

    from sbt.lmeval_tasks import stock_task_manager

    if stock_task_manager.cache_info().currsize:
        return stock_task_manager()
    return TaskManager(include_defaults=False)


def run_call(call: Sequence[Benchmark], lm: Any, cache: str | None, folder: Path) -> dict:
    """One simple_evaluate call for benchmarks of one model: {name: (results, leaf task
    names, {"total", "model", "from_cache"} requests)}."""
    from lm_eval import simple_evaluate

    from sbt.benchmark_files import labels_must_fit_the_choices

    first = call[0].args
    loaded = {bench.name: load_tasks(bench, folder) for bench in call}
    before = dict(lm.model_requests)
    try:
        with labels_must_fit_the_choices(", ".join(bench.name for bench in call)):
            results = simple_evaluate(
                model=lm,
                tasks=[obj for top, _ in loaded.values() for obj in top],
                num_fewshot=None,  # set on each task by load_tasks
                batch_size=first.batch_size,
                device=call[0].device,
                use_cache=cache,
                limit=first.limit,
                log_samples=any(bool(bench.args.log_samples) for bench in call),
                bootstrap_iters=first.bootstrap_iters,
                task_manager=listing_manager(),
                random_seed=first.seed,
                numpy_random_seed=first.seed,
                torch_random_seed=first.seed,
                fewshot_random_seed=first.seed,
            )
    finally:
        lm.close_cache()
    if results is None:  # only non-zero ranks of a distributed run get None
        raise RuntimeError("lm-eval returned no results on this process")
    out = {}
    for bench in call:
        leaves = loaded[bench.name][1]
        total = sum(inst.repeats for task in leaves for inst in task.instances)
        model = sum(lm.model_requests[t.task_name] - before.get(t.task_name, 0) for t in leaves)
        requests = {"total": total, "model": model, "from_cache": total - model}
        out[bench.name] = (results, [task.task_name for task in leaves], requests)
    return out


def known_error(exc: BaseException, args: argparse.Namespace) -> BaseException:
    """Known failures as one-line input errors (what evaluate.py always reported)."""
    if isinstance(exc, InputError):
        return exc
    if isinstance(exc, ConnectionError):  # offline and not in the local HF cache
        return input_error(
            "--task",
            f"{exc}; with the hub offline, prefetch it into the HF cache or give --data-files",
        )
    if isinstance(exc, OSError):  # the model: missing, or only pickled weights
        hint = ""
        if "safetensors" in str(exc) and not args.allow_pickle_weights:
            hint = "; if it only ships pickled .bin weights and you trust it, set"
            hint += " allow_pickle_weights: true (--allow-pickle-weights)"
        return input_error(args.model, f"cannot load model: {exc}{hint}")
    return exc


def cache_of(bench: Benchmark, cache_dir: str | None) -> str | None:
    """The request cache file of a benchmark's model setting (None: no cache)."""
    from sbt.lmeval_model import cache_prefix

    if not cache_dir:
        return None
    args = bench.args
    paths = {"pretrained": None, "peft": None, "tokenizer": None}  # a LLaVA view's path varies
    settings = {
        "model": args.model,
        "adapter": args.adapter,
        "tokenizer": args.tokenizer,
        "model_args": {**bench.model_args, **paths},
        "batch_size": args.batch_size,
        "device": bench.device,
    }
    return cache_prefix(cache_dir, settings, [args.model, args.adapter, args.tokenizer])


class Evaluation:
    """The state of one evaluate_benchmarks call: outcomes so far, how errors are handled."""

    def __init__(self, on_error: str, unit: str) -> None:
        self.on_error, self.unit = on_error, unit
        self.outcomes: dict[str, Outcome] = {}

    def failed(self, name: str, args: argparse.Namespace, exc: BaseException, lines) -> None:
        exc = known_error(exc, args)
        if self.on_error == RAISE:
            raise exc
        if not isinstance(exc, InputError):
            traceback.print_exception(exc, file=sys.stderr)
        text = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        print(f"[evaluate] {name}: error: {text}", file=sys.stderr, flush=True)
        self.outcomes[name] = Outcome(name, None, text, list(lines))

    def call(self, call: list[Benchmark], lm: Any, cache: str | None, folder: Path) -> None:
        """Run one call; if several benchmarks fail together, each again on its own."""
        started = time.perf_counter()
        try:
            answered = run_call(call, lm, cache, folder)
        except Exception as exc:  # noqa: BLE001 - recorded, or raised again
            if len(call) == 1:
                self.failed(call[0].name, call[0].args, exc, call[0].lines)
                return
            names = ", ".join(bench.name for bench in call)
            print(f"[evaluate] {names}: failed together ({exc}); again one by one", file=sys.stderr)
            for bench in call:
                self.call([bench], lm, cache, folder)
            return
        info = {
            "unit": self.unit,
            "call": [bench.name for bench in call],
            "call_seconds": round(time.perf_counter() - started, 1),
        }
        for bench in call:
            results, leaves, requests = answered[bench.name]
            try:
                evaluation = {**info, "requests": requests, "model_loads": lm.loads}
                document = result_document(bench, results, evaluation)
            except Exception as exc:  # noqa: BLE001 - e.g. a metric the task lacks
                self.failed(bench.name, bench.args, exc, bench.lines)
                continue
            samples = results.get("samples", {})
            own = {task: samples[task] for task in leaves if task in samples}
            self.outcomes[bench.name] = Outcome(bench.name, document, None, bench.lines, own)


def evaluate_benchmarks(
    argvs: Sequence[argparse.Namespace],
    *,
    cache_dir: str | None = None,
    on_error: str = RAISE,
    unit: str = "benchmark",
) -> list[Outcome]:
    """Every benchmark's Outcome, in the order given (see the module docstring).

    on_error RAISE: the first failure propagates (evaluate.py); RECORD: it becomes that
    benchmark's Outcome and the others go on (evaluate_run.py). `cache_dir`: lm-eval's
    request cache, one SQLite file per model setting in it.
    """
    from sbt.lmeval_model import hf_model

    state = Evaluation(on_error, unit)
    with contextlib.ExitStack() as stack:
        views = ModelViews(stack)
        models: dict[str, list[Benchmark]] = {}
        for args in argvs:
            bench = None
            try:
                bench = plan_benchmark(args)
                bind_model(bench, views)
            except Exception as exc:  # noqa: BLE001 - recorded, or raised again
                state.failed(benchmark_name(args), args, exc, bench.lines if bench else [])
                continue
            models.setdefault(bench.model_key, []).append(bench)
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sbt-lmeval-")))
        for group in models.values():  # one model object per setting, one after the other
            first = group[0]
            lm = hf_model(first.model_args, first.args.batch_size, first.device)
            cache = cache_of(first, cache_dir)
            try:
                for call in plan_calls(group):
                    state.call(call, lm, cache, folder)
            finally:
                lm.release()
    return [state.outcomes[benchmark_name(args)] for args in argvs]
