"""Plumbing every stage script shares: clear input errors, atomic outputs, provenance."""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# Packages whose versions decide results; recorded in every model directory and result JSON.
TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "peft",
    "accelerate",
    "datasets",
    "lm_eval",
    "snakemake",
)


# Weight dtypes by their torch names. Stages add "auto" (transformers' choice, the
# checkpoint's torch_dtype) and evaluation "checkpoint" where they accept them.
TORCH_DTYPES = ("float32", "bfloat16", "float16")

# The Hugging Face libraries' offline switches: stages read local files and the local HF
# cache only, unless the environment says otherwise (the prefetch rules set them to 0).
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def use_offline_hub() -> None:
    """No model or dataset hub: only local files and the local HF cache.

    Set before `datasets`/`transformers` are imported; an explicit value in the environment
    (e.g. HF_HUB_OFFLINE=0 on a machine that may download) is respected.
    """
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


class InputError(Exception):
    """Bad input. The message is one line naming the file, the record and the field."""


def input_error(
    path: str | os.PathLike,
    message: str,
    *,
    index: int | None = None,
    record_id: object = None,
    field: str | None = None,
) -> InputError:
    """Build an InputError whose text reads `FILE: record INDEX (id ID): field F: MESSAGE`."""
    parts = [str(path)]
    if index is not None:
        where = f"record {index}"
        if record_id is not None:
            where += f" (id {record_id!r})"
        parts.append(where)
    if field is not None:
        parts.append(f"field {field!r}")
    parts.append(message)
    return InputError(": ".join(parts))


def read_json_file(path: str | os.PathLike, lines: bool | None = None) -> object:
    """A JSON file's content, or a JSON Lines file's (`.jsonl`, or ``lines=True`` whatever
    the name) as a list, one item a line.

    Unreadable or malformed files raise one InputError naming the file (and the line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise input_error(path, f"cannot read: {exc.strerror or exc}") from None
    if not (path.suffix == ".jsonl" if lines is None else lines):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise input_error(path, f"invalid JSON: {exc}") from None
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise input_error(path, f"invalid JSON on line {number}: {exc}") from None
    return items


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type` for integers >= minimum, with argparse's own error message."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def cli(main: Callable[..., int | None]) -> Callable[..., int]:
    """Run a stage's main(): an InputError becomes one `error:` line on stderr and exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 2

    return wrapper


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `target`; move it into place only if the block succeeds.

    A failing stage therefore never leaves a half-written output that Snakemake (or a
    researcher) could mistake for a finished one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    # mkstemp/mkdtemp create private (0600/0700) paths; outputs should follow the umask
    # like any other file, so colleagues on a shared cluster can read them.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod((0o777 if directory else 0o666) & ~umask)
    try:
        yield tmp
        if directory and target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink()


def write_json(path: str | os.PathLike, obj: object, *, indent: int | None = 2) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=indent, ensure_ascii=False)
        fh.write("\n")


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    from importlib import metadata  # here, not at import: every stage script loads this module

    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(args: list[str], cwd: str | os.PathLike | None) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=cwd or Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_revision(cwd: str | os.PathLike | None = None) -> str | None:
    out = _git(["rev-parse", "HEAD"], cwd)
    return (out or "").strip() or None


def git_state(cwd: str | os.PathLike | None = None) -> dict[str, object]:
    """The commit, and whether tracked files were edited since (with a hash of that diff),
    so a result produced from an edited working tree says so."""
    revision = git_revision(cwd)
    diff = _git(["diff", "HEAD", "--no-color"], cwd) if revision else None
    return {
        "git_revision": revision,
        "git_dirty": bool(diff) if diff is not None else None,
        "git_diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else None,
    }


def quiet_progress_bars() -> None:
    """No carriage-return progress bars in job logs (tqdm, as used by lm-eval and datasets).

    Set before those libraries are imported; an explicit value in the environment wins.
    """
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def provenance(**extra: object) -> dict[str, object]:
    """What produced an output: package versions, Python, platform, git state, plus `extra`."""
    return {
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **git_state(),
        **extra,
    }
