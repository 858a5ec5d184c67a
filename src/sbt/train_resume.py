"""The checkpoint directory of a train job, and resuming from it.

Checkpoints go to the sibling `<output>.checkpoints/`, which holds `run.json`, the run's
signature (model, template, method, data hash, every setting but the resume-safe ones). A
job started again with the same signature resumes from its last complete checkpoint
(hparam `resume: auto`); half-written checkpoints are removed. Checkpoints of a run with
another signature are never mixed in: they are moved aside to
`<output>.checkpoints.stale-<time>/` with one line saying which settings differ.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from sbt.common import write_json

CHECKPOINTS_SUFFIX = ".checkpoints"
RUN_SIGNATURE = "run.json"


def checkpoints_dir(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + CHECKPOINTS_SUFFIX)


def complete_checkpoints(work: Path) -> list[Path]:
    """Checkpoints whose trainer_state.json was written (the Trainer writes it last)."""
    found = []
    for path in work.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if step.isdigit() and (path / "trainer_state.json").is_file():
            found.append(path)
    return sorted(found, key=lambda p: int(p.name.removeprefix("checkpoint-")))


def signature_changes(previous: dict, current: dict) -> str:
    """`hparams.learning_rate: 2e-05 -> 0.001, data_sha256: ...`: what differs, value by value."""

    def flat(value: dict, prefix: str = "") -> dict:
        items = {}
        for key, item in value.items():
            if isinstance(item, dict):
                items |= flat(item, f"{prefix}{key}.")
            else:
                items[f"{prefix}{key}"] = item
        return items

    old, new = flat(previous), flat(current)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}" for k in changed)


def _move_aside(work: Path, why: str, keep: Path) -> None:
    """Keep another run's checkpoints (nothing is lost) out of this run's way."""
    stale = work.with_name(f"{work.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(work, stale)
    work.mkdir()
    if keep.parent == work and (stale / keep.name).exists():  # this run's tokenized data
        os.replace(stale / keep.name, keep)
    print(
        f"moved checkpoints of a different run ({why}) aside to {stale}; delete it when it is "
        "no longer needed",
        file=sys.stderr,
    )


def prepare_work_dir(work: Path, signature: dict, resume: str, keep: Path) -> Path | None:
    """Make the checkpoint directory ready; return the checkpoint to resume from, if any.

    `keep` (this run's tokenized data, when it lies in `work`) survives a fresh start.
    """
    signature_file = work / RUN_SIGNATURE
    if work.exists() and resume == "auto" and signature_file.is_file():
        previous = json.loads(signature_file.read_text(encoding="utf-8"))
        if previous == signature:
            checkpoints = complete_checkpoints(work)
            for path in work.iterdir():  # half-written checkpoints and a half-saved result
                if path.is_dir() and path not in checkpoints and path != keep:
                    shutil.rmtree(path)
            return checkpoints[-1] if checkpoints else None
        _move_aside(work, signature_changes(previous, signature), keep)  # then start afresh
    work.mkdir(parents=True, exist_ok=True)
    for path in work.iterdir():
        if path == keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    write_json(signature_file, signature)
    return None


def prepare_checkpoints(args, work: Path, signature: dict, resume: str, keep: Path):
    """The checkpoint directory made ready; the checkpoint to resume from, or None."""
    # Global rank 0 first, on every node (local=False): the checkpoint directory is on the
    # shared file system, and another node must not read it while rank 0 moves it aside.
    with args.main_process_first(local=False, desc="checkpoint directory"):
        if args.process_index == 0:
            resume_from = prepare_work_dir(work, signature, resume, keep)
        else:
            checkpoints = complete_checkpoints(work)
            resume_from = checkpoints[-1] if checkpoints and resume == "auto" else None
    if resume_from:
        print(f"resuming from {resume_from}", file=sys.stderr)
    return resume_from
