"""Golden training labels from the study's own preprocessing code, for tests/test_golden_train.py.

Run it with the side environment that has the study's stack (scripts/golden/side_env.sh:
transformers 4.31, sentencepiece), from the repository root:

    .golden-venv/bin/python scripts/golden/make_train_golden.py --study DIR

DIR is an export of the study's repository (github.com/UCSC-VLAA/Sight-Beyond-Text). Nothing
of it is copied into this project: at run time its `llava/conversation.py` is imported, and
the functions `preprocess`, `preprocess_v1`, `preprocess_llama_2` (llava/train/train.py) and
`tokenizer_image_token` (llava/mm_utils.py) are taken from its source with `ast` and run
(importing train.py itself would pull in the whole multimodal LLaVA model code).

The tokenizer is what the study's train.py builds: `AutoTokenizer.from_pretrained(path,
model_max_length=..., padding_side="right", use_fast=False)`, i.e. the slow SentencePiece
`LlamaTokenizer` read from `tokenizer.model` (also where the checkout has a tokenizer.json),
with pad = unk. Each fixture directory is one checkout layout; 4.31 reads the `legacy` flag
from the checkout's tokenizer_config.json (absent: legacy), so a third fixture, the
tokenizer.json layout with `"legacy": false` added, shows the newer behaviour. Each record goes through
`preprocess` alone, with `has_image` = whether the record has an `image` key (as the study's
dataset does), and the collator's truncation to `model_max_length`. A record the study's
own check flags ("WARNING: tokenization mismatch", after which it masks every label) is kept
with `"mismatch": true`; the test reports and excludes those.

Writes tests/golden/train_labels.json: per template, per fixture, per record id the
input_ids and labels, plus the package versions, the sha256 of the fixture files, of the
records file and of the study's source files used.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import hashlib
import importlib.util
import io
import json
import os
import sys
import tempfile
from pathlib import Path

TEMPLATES = ("v1", "llava_llama_2")
STUDY_FUNCTIONS = {
    "llava/train/train.py": ("preprocess", "preprocess_v1", "preprocess_llama_2"),
    "llava/mm_utils.py": ("tokenizer_image_token",),
}
MISMATCH = "tokenization mismatch"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def extract_functions(path: Path, names: tuple[str, ...], namespace: dict) -> None:
    """Define the top-level functions `names` of the file `path` in `namespace`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in names]
    missing = set(names) - {node.name for node in found}
    if missing:
        raise SystemExit(f"error: {path}: functions not found: {', '.join(sorted(missing))}")
    module = ast.Module(body=found, type_ignores=[])
    exec(compile(module, str(path), "exec"), namespace)  # noqa: S102 - the study's own code


def study_namespace(study: Path) -> dict:
    """The study's preprocessing functions with the few names they use."""
    import typing

    import torch
    import transformers

    conversation = load_module("study_conversation", study / "llava/conversation.py")
    constants: dict = {}
    exec((study / "llava/constants.py").read_text(encoding="utf-8"), constants)  # noqa: S102
    namespace = {
        "torch": torch,
        "transformers": transformers,
        # The typing names its annotations use.
        **{name: getattr(typing, name) for name in ("Dict", "List", "Optional", "Sequence")},
        "conversation_lib": conversation,
        "IGNORE_INDEX": constants["IGNORE_INDEX"],
        "IMAGE_TOKEN_INDEX": constants["IMAGE_TOKEN_INDEX"],
        "DEFAULT_IMAGE_TOKEN": constants["DEFAULT_IMAGE_TOKEN"],
    }
    for relative, names in STUDY_FUNCTIONS.items():
        extract_functions(study / relative, names, namespace)
    return namespace


def study_tokenizer(path: Path, model_max_length: int):
    """As llava/train/train.py builds it for LLaMA backbones (not v0): pad = unk."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(
        str(path), model_max_length=model_max_length, padding_side="right", use_fast=False
    )
    tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


def study_example(namespace: dict, tokenizer, record: dict, has_image: bool) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        data = namespace["preprocess"](
            [copy.deepcopy(record["conversations"])], tokenizer, has_image=has_image
        )
    input_ids, labels = data["input_ids"][0], data["labels"][0]
    limit = tokenizer.model_max_length  # DataCollatorForSupervisedDataset truncates here
    return {
        "input_ids": input_ids[:limit].tolist(),
        "labels": labels[:limit].tolist(),
        "mismatch": MISMATCH in out.getvalue(),
    }


def versions() -> dict[str, str]:
    import sentencepiece
    import tokenizers
    import torch
    import transformers

    return {
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "sentencepiece": sentencepiece.__version__,
        "torch": torch.__version__,
    }


def fixture_info(fixture: Path) -> dict:
    """The checkout layout, the `legacy` flag 4.31 reads, and the files' sha256."""
    config = json.loads((fixture / "tokenizer_config.json").read_text(encoding="utf-8"))
    return {
        "layout": "model+json" if (fixture / "tokenizer.json").exists() else "model",
        # transformers 4.31: legacy unless the checkout's tokenizer_config says otherwise
        "legacy": config.get("legacy", True),
        "sha256": {f.name: sha256(f) for f in sorted(fixture.iterdir()) if f.is_file()},
    }


def report_flagged(template: str, fixture: Path, examples: dict) -> None:
    flagged = sorted(i for i, e in examples.items() if e["mismatch"])
    print(
        f"{template} {fixture.name}: {len(examples)} records, {len(flagged)} "
        f"flagged by the study's mismatch check {flagged}",
        file=sys.stderr,
    )


FIXTURES = [
    Path("tests/golden/sp_tokenizer"),
    Path("tests/golden/sp_tokenizer_json"),
    Path("tests/golden/sp_tokenizer_nonlegacy"),
]
FIXTURES_HELP = 'tokenizer directories: one per checkout layout, and one whose tokenizer_config.json says "legacy": false'


def write_golden(data: dict, output: Path) -> None:
    """`dumps(data)` into `output`, atomically."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=output.parent, delete=False, encoding="utf-8", suffix=".tmp"
    ) as fh:
        fh.write(dumps(data) + "\n")
    os.chmod(fh.name, 0o644)
    os.replace(fh.name, output)
    print(f"wrote {output}", file=sys.stderr)


def golden(study: Path, records_path: Path, fixtures: list[Path], model_max_length: int) -> dict:
    namespace = study_namespace(study)
    conversation = namespace["conversation_lib"]
    records = json.loads(records_path.read_text(encoding="utf-8"))
    result: dict = {
        "generator": "scripts/golden/make_train_golden.py",
        "versions": versions(),
        "study_sources_sha256": {
            name: sha256(study / name)
            for name in ("llava/conversation.py", "llava/constants.py", *STUDY_FUNCTIONS)
        },
        "records": records_path.as_posix(),
        "records_sha256": sha256(records_path),
        "model_max_length": model_max_length,
        "fixtures": {},
        "templates": {},
    }
    for fixture in fixtures:
        result["fixtures"][fixture.name] = fixture_info(fixture)
    for template in TEMPLATES:
        conversation.default_conversation = conversation.conv_templates[template]
        per_fixture = result["templates"][template] = {}
        for fixture in fixtures:
            tokenizer = study_tokenizer(fixture, model_max_length)
            examples = {}
            for record in records:
                has_image = "image" in record
                example = study_example(namespace, tokenizer, record, has_image)
                # The study's two tokenization paths (with and without an image key) must
                # agree for text-only records, or the golden data would depend on the key.
                other = study_example(namespace, tokenizer, record, not has_image)
                if other != example:
                    raise SystemExit(f"error: record {record['id']}: has_image paths differ")
                examples[str(record["id"])] = example
            per_fixture[fixture.name] = examples
            report_flagged(template, fixture, examples)
    return result


def dumps(data: dict) -> str:
    """Indented JSON with each example on one line (small, and diffs show which changed)."""
    compact = copy.deepcopy(data)
    lines = {}
    for per_fixture in compact["templates"].values():
        for examples in per_fixture.values():
            for record_id, example in examples.items():
                key = f"@example{len(lines)}@"
                lines[key] = json.dumps(example, separators=(",", ":"))
                examples[record_id] = key
    text = json.dumps(compact, indent=1, ensure_ascii=False)
    for key, line in lines.items():
        text = text.replace(json.dumps(key), line, 1)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True, type=Path, help="export of the study's repo")
    parser.add_argument("--records", type=Path, default=Path("tests/golden/train_records.json"))
    parser.add_argument("--fixtures", nargs="+", type=Path, default=FIXTURES, help=FIXTURES_HELP)
    parser.add_argument("--model-max-length", type=int, default=2048, help="the study's 2048")
    parser.add_argument("--output", type=Path, default=Path("tests/golden/train_labels.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = golden(args.study, args.records, args.fixtures, args.model_max_length)
    write_golden(data, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
