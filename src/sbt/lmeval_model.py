"""One lm-eval model object shared by many benchmarks, loaded only when needed, and the
request cache that lets a rerun skip every request the model already answered.

- `LazyModel` is an lm-eval `LM` that builds lm-eval's own `hf` model (HFLM) on the first
  request that reaches it. lm-eval's `CachingLM` (simple_evaluate's `use_cache`) sits in
  front of it, so a rerun whose requests are all in the cache never loads the weights.
  It also counts, per task, the requests the model itself answered (`model_requests`).
- `cache_prefix` names the SQLite file of one model setting: a hash of the settings that
  change answers (model arguments, batch size, device, package versions) and a hash of
  the model's files (size and modification time), so retraining a run or changing its
  dtype starts a new file, and the stale file of the same setting is deleted. lm-eval's
  cache keys hold only the request (prompt, continuation, generation arguments); the
  file name is what ties them to a model.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM, CacheHook

VERSIONED = ("lm_eval", "torch", "transformers", "peft", "accelerate", "tokenizers")


class LazyModel(LM):
    """An lm-eval LM whose real model is created by `create()` on first use."""

    def __init__(self, create: Callable[[], LM], describe: str = "model") -> None:
        super().__init__()
        self._create = create
        self._describe = describe
        self._model: LM | None = None
        self._failed: BaseException | None = None
        self.loads = 0
        self.model_requests: Counter[str] = Counter()  # task name -> requests answered

    def _real(self) -> LM:
        if self._failed is not None:  # a model that failed to load fails the same way again
            raise self._failed
        if self._model is None:
            print(f"[evaluate] loading {self._describe}", file=sys.stderr, flush=True)
            try:
                self._model = self._create()
            except BaseException as exc:
                self._failed = exc
                raise
            self.loads += 1
            self._model.set_cache_hook(self.cache_hook)
        return self._model

    def _answer(self, kind: str, requests: list) -> list:
        self.model_requests.update(req.task_name for req in requests)
        if not requests:
            return []
        return getattr(self._real(), kind)(requests)

    def loglikelihood(self, requests: list) -> list:
        return self._answer("loglikelihood", requests)

    def loglikelihood_rolling(self, requests: list) -> list:
        return self._answer("loglikelihood_rolling", requests)

    def generate_until(self, requests: list) -> list:
        return self._answer("generate_until", requests)

    def set_cache_hook(self, cache_hook: CacheHook) -> None:
        self.cache_hook = cache_hook
        if self._model is not None:
            self._model.set_cache_hook(cache_hook)

    def close_cache(self) -> None:
        """Close the SQLite file of the last call (everything in it is committed)."""
        dbdict = getattr(self.cache_hook, "dbdict", None)
        if dbdict is not None:
            dbdict.close()
        self.set_cache_hook(CacheHook(None))

    # What simple_evaluate reads for its report; nothing here loads the model.
    @property
    def tokenizer(self) -> Any:
        return getattr(self._model, "tokenizer", None)

    @property
    def eot_token_id(self) -> int | None:
        return getattr(self._model, "eot_token_id", None)

    @property
    def max_length(self) -> int | None:
        return getattr(self._model, "max_length", None)

    def get_model_info(self) -> dict:
        info = getattr(self._model, "get_model_info", None)
        return info() if info else {}

    def release(self) -> None:
        """Free the weights (before another model setting loads its own)."""
        self.close_cache()
        if self._model is None:
            return
        self._model = None
        gc.collect()
        if "torch" in sys.modules:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def hf_model(model_args: Mapping[str, Any], batch_size: int, device: str) -> LazyModel:
    """lm-eval's `hf` model with these arguments, built as simple_evaluate builds it."""

    def create() -> LM:
        from lm_eval.api.registry import get_model

        extra = {"batch_size": batch_size, "max_batch_size": None, "device": device}
        return get_model("hf").create_from_arg_obj(dict(model_args), extra)

    return LazyModel(create, describe=f"{model_args.get('pretrained')} ({model_args.get('dtype')})")


# --------------------------------------------------------------------------- the cache
def _digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def files_fingerprint(path: str | None) -> object:
    """What identifies a model's weights: every file's size and mtime for a local path;
    the cached snapshot (its commit is in the path) for a hub id; None for none."""
    if not path:
        return None
    local = Path(path)
    if local.is_file():
        stat = local.stat()
        return [stat.st_size, stat.st_mtime_ns]
    if local.is_dir():
        entries = []
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            stat = file.stat()
            entries.append([file.relative_to(local).as_posix(), stat.st_size, stat.st_mtime_ns])
        return entries
    try:
        from huggingface_hub import try_to_load_from_cache

        snapshot = try_to_load_from_cache(path, "config.json")
    except Exception:  # noqa: BLE001 - an id the hub library cannot parse
        snapshot = None
    return [path, str(snapshot) if isinstance(snapshot, str) else None]


def package_versions() -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cache_prefix(cache_dir: str | os.PathLike, settings: Mapping[str, Any], files: list) -> str:
    """The `use_cache` path (lm-eval appends `_rank0.db`) for one model setting.

    `settings`: everything besides the weights that changes answers; `files`: the model,
    adapter and tokenizer paths, fingerprinted. A file of the same settings but other
    weights (the run was retrained) is stale and deleted here.
    """
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    settings_hash = _digest({**settings, "packages": package_versions()})
    weights_hash = _digest([files_fingerprint(path) for path in files])
    name = f"{settings_hash}-{weights_hash}"
    for stale in folder.glob(f"{settings_hash}-*"):
        if not stale.name.startswith(f"{name}_rank"):
            stale.unlink()
    return str(folder / name)
