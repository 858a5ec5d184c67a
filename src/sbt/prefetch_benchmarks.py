"""Fetch benchmark data once, on a machine with network, so evaluation jobs run offline.

Two kinds of benchmark need this:

- ETHICS: lm-eval's stock tasks read `EleutherAI/hendrycks_ethics`, a script-based hub
  dataset that `datasets` 4 and later refuse to load. We download the original archive
  (`ethics.tar`) and write each subset's train and test split as JSON Lines in exactly the
  schema that dataset script produced, so the stock task YAMLs read them unchanged via
  `data_files`.
- MMLU as the study ran it (task `mmlu_study`): the study's script reads the original
  archive's CSV files (`data.tar`: `data/dev/{subject}_dev.csv`, `data/test/...`), so the
  dev and test files are unpacked as they are into one folder (`dev/`, `test/`).
- Everything else configured without `data_files` (lm-eval's MMLU, GSM8K, ...): the tasks are built
  once through lm-eval, which downloads their datasets into the Hugging Face cache;
  evaluation jobs then run with HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1 against that
  cache. SQuAD2's metric (`evaluate.load("squad_v2")`) is cached the same way.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from sbt.common import (
    atomic_path,
    cli,
    input_error,
    provenance,
    write_json,
)

ETHICS_URL = "https://people.eecs.berkeley.edu/~hendrycks/ethics.tar"
# subset -> (folder inside the archive, CSV file prefix); as in the original dataset script.
ETHICS_SUBSETS = {
    "cm": ("commonsense", "cm"),
    "deontology": ("deontology", "deontology"),
    "justice": ("justice", "justice"),
    "utilitarianism": ("utilitarianism", "util"),
    "virtue": ("virtue", "virtue"),
}
ETHICS_SPLITS = ("train", "test")
MMLU_URL = "https://people.eecs.berkeley.edu/~hendrycks/data.tar"
MMLU_SPLITS = (
    "dev",
    "test",
)  # what the study's evaluate_mmlu.py reads (not val/, auxiliary_train/)
MMLU_MEMBER = re.compile(r"^data/(dev|test)/([a-z_]+)_(dev|test)\.csv$")


def ethics_file_name(subset: str, split: str) -> str:
    return f"ethics_{subset}_{split}.jsonl"


def ethics_rows(subset: str, text: str, source: str) -> Iterator[dict]:
    """One subset's CSV rows in the hub dataset's schema (types and group ids included)."""
    if subset == "utilitarianism":  # no header: more pleasant, less pleasant
        reader = csv.DictReader(io.StringIO(text), fieldnames=["activity", "baseline"])
    else:
        reader = csv.DictReader(io.StringIO(text))
    group_size = {"deontology": 4, "justice": 4, "virtue": 5}.get(subset)
    for index, row in enumerate(reader):
        try:
            if subset == "utilitarianism":
                yield {"activity": row["activity"], "baseline": row["baseline"], "rating": ""}
                continue
            label = int(row["label"])
            if subset == "cm":
                yield {
                    "label": label,
                    "input": row["input"],
                    "is_short": row["is_short"] == "True",
                    "edited": row["edited"] == "True",
                }
                continue
            group = {"group_id": index // group_size, "label": label}
            if subset == "deontology":
                yield {**group, "scenario": row["scenario"], "excuse": row["excuse"]}
            elif subset == "justice":
                yield {**group, "scenario": row["scenario"]}
            else:  # virtue: "scenario [SEP] trait"
                scenario, trait = row["scenario"].split(" [SEP] ")
                yield {**group, "scenario": scenario, "trait": trait}
        except (KeyError, ValueError, TypeError) as exc:
            raise input_error(source, f"unexpected row: {exc}", index=index) from exc


def convert_ethics_archive(archive: str | Path, output_dir: str | Path) -> dict[str, int]:
    """ethics.tar -> output_dir/ethics_<subset>_<split>.jsonl; returns rows per file."""
    counts: dict[str, int] = {}
    output_dir = Path(output_dir)
    with tarfile.open(archive) as tar:
        members = {Path(m.name).as_posix(): m for m in tar.getmembers() if m.isfile()}
        for subset, (folder, prefix) in ETHICS_SUBSETS.items():
            for split in ETHICS_SPLITS:
                inner = f"ethics/{folder}/{prefix}_{split}.csv"
                if inner not in members:
                    raise input_error(archive, "member missing from the archive", field=inner)
                text = tar.extractfile(members[inner]).read().decode("utf-8")
                name = ethics_file_name(subset, split)
                with atomic_path(output_dir / name) as tmp, open(tmp, "w") as fh:
                    n = 0
                    for row in ethics_rows(subset, text, f"{archive}:{inner}"):
                        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                        n += 1
                counts[name] = n
    return counts


def unpack_mmlu_archive(archive: str | Path, output_dir: str | Path) -> dict[str, int]:
    """data.tar -> output_dir/{dev,test}/{subject}_{split}.csv, bytes unchanged; returns
    files per split. Only those members are read (no path from the archive is trusted)."""
    output_dir = Path(output_dir)
    found: dict[str, dict[str, tarfile.TarInfo]] = {split: {} for split in MMLU_SPLITS}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            match = MMLU_MEMBER.match(Path(member.name).as_posix().removeprefix("./"))
            if member.isfile() and match and match.group(1) == match.group(3):
                found[match.group(1)][match.group(2)] = member
        if not found["test"]:
            raise input_error(
                archive, "no data/test/{subject}_test.csv members (not MMLU's data.tar?)"
            )
        for subject in sorted(found["test"]):
            if subject not in found["dev"]:
                raise input_error(
                    archive, "member missing from the archive", field=f"data/dev/{subject}_dev.csv"
                )
        for split, members in found.items():
            for subject, member in sorted(members.items()):
                with atomic_path(output_dir / split / f"{subject}_{split}.csv") as tmp:
                    tmp.write_bytes(tar.extractfile(member).read())
    return {split: len(members) for split, members in found.items()}


def download(url: str, target: Path) -> Path:
    with atomic_path(target) as tmp:
        with urllib.request.urlopen(url) as response, open(tmp, "wb") as fh:
            while chunk := response.read(1 << 20):
                fh.write(chunk)
    return target


def cache_hub_tasks(tasks: list[str]) -> dict[str, int]:
    """Build each lm-eval task once (downloading its dataset into the HF cache)."""
    from lm_eval.tasks import TaskManager, get_task_dict

    sizes: dict[str, int] = {}
    task_dict = get_task_dict(tasks, TaskManager())
    for name, task in _leaf_tasks(task_dict):
        docs = task.eval_docs
        sizes[name] = len(docs)
        print(f"cached {name}: {sizes[name]} documents", file=sys.stderr)
    if "squadv2" in tasks:
        import evaluate as hf_evaluate

        hf_evaluate.load("squad_v2")
    return sizes


def _leaf_tasks(task_dict: dict) -> Iterator[tuple[str, object]]:
    for key, value in task_dict.items():
        if isinstance(value, dict):
            yield from _leaf_tasks(value)
        else:
            yield getattr(key, "group_name", key), value


def local_archive(source: str, download_to: Path, what: str) -> str:
    """The archive as a local path: downloaded first when `source` is a URL."""
    if source.startswith(("https://", "http://")):
        return str(download(source, download_to))
    if not Path(source).exists():
        raise input_error(source, f"{what} archive not found")
    return source


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ethics-dir", help="write ETHICS JSON Lines files here")
    parser.add_argument(
        "--ethics-archive",
        default=ETHICS_URL,
        help="ethics.tar: a local path or a download address (default: the original archive)",
    )
    parser.add_argument(
        "--mmlu-dir", help="unpack MMLU's dev/ and test/ CSV files (task mmlu_study) here"
    )
    parser.add_argument(
        "--mmlu-archive",
        default=MMLU_URL,
        help="MMLU's data.tar: a local path or a download address (default: the original)",
    )
    parser.add_argument("--hub-tasks", nargs="*", default=[], help="lm-eval tasks to cache")
    parser.add_argument("--manifest", required=True, help="JSON summary of what was fetched")
    args = parser.parse_args(argv)

    manifest: dict[str, object] = {}
    if args.ethics_dir:
        archive = local_archive(args.ethics_archive, Path(args.ethics_dir) / "ethics.tar", "ETHICS")
        manifest["ethics"] = convert_ethics_archive(archive, args.ethics_dir)
    if args.mmlu_dir:
        archive = local_archive(args.mmlu_archive, Path(args.mmlu_dir) / "data.tar", "MMLU")
        manifest["mmlu"] = unpack_mmlu_archive(archive, args.mmlu_dir)
    if args.hub_tasks:
        manifest["hub_tasks"] = cache_hub_tasks(args.hub_tasks)
    write_json(args.manifest, {**manifest, "provenance": provenance()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
