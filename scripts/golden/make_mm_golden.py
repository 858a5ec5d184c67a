"""Golden stage-1 and stage-2 (image) labels from the study's own preprocessing code, for
tests/test_golden_mm.py.

Run it with the side environment that has the study's stack (scripts/golden/side_env.sh),
from the repository root:

    .golden-venv/bin/python scripts/golden/make_mm_golden.py --study DIR

DIR is an export of the study's repository, read as by make_train_golden.py (whose helpers
this script uses). Each record of tests/golden/mm_records.json goes the way of the study's
`LazySupervisedDataset.__getitem__` (llava/train/train.py) in stage 2: `preprocess_multimodal`
with `is_multimodal` and `--mm_use_im_start_end True` (finetune-7b.sh), then `preprocess` with
`has_image=True`, whose `tokenizer_image_token` puts IMAGE_TOKEN_INDEX (-200) where
`<image>` was. The tokenizer is the study's (make_train_golden.study_tokenizer) with the
tokens `initialize_vision_tokenizer` adds: `<im_patch>` (`mm_use_im_patch_token`, default
True), then `<im_start>`, `<im_end>`, each with `add_tokens(..., special_tokens=True)`.
Stage 1 (train_scripts/pretrain-7b.sh, `--version v0_plain`, also `--mm_use_im_start_end
True`) takes the same path with conversation `v0_plain`, where `preprocess` calls
`preprocess_plain`, on the CC3M-style records of tests/golden/mm_pretrain_records.json;
they are written as the template "v0_plain".

Writes tests/golden/mm_labels.json: per template, per fixture, per record id the tokens as
strings (the added tokens by name, -200 as "<image>", so the ids the two stacks give the
added tokens do not matter), the labels (ids; -100 untrained) and the study's mismatch
flag, plus the versions and the sha256 of every input.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_train_golden as text_golden  # noqa: E402

FUNCTIONS = {"llava/train/train.py": ("preprocess_multimodal", "preprocess_plain")}
ADDED_TOKENS = (["<im_patch>"], ["<im_start>", "<im_end>"])  # initialize_vision_tokenizer


def study_mm_namespace(study: Path) -> dict:
    namespace = text_golden.study_namespace(study)
    constants: dict = {}
    exec((study / "llava/constants.py").read_text(encoding="utf-8"), constants)  # noqa: S102
    namespace.update(
        {name: constants[name] for name in ("DEFAULT_IM_START_TOKEN", "DEFAULT_IM_END_TOKEN")}
    )
    namespace["DataArguments"] = object  # only an annotation
    namespace["copy"] = copy  # preprocess_plain's deepcopy
    for relative, names in FUNCTIONS.items():
        text_golden.extract_functions(study / relative, names, namespace)
    return namespace


def study_mm_example(namespace: dict, tokenizer, record: dict) -> dict:
    data_args = SimpleNamespace(is_multimodal=True, mm_use_im_start_end=True)
    sources = namespace["preprocess_multimodal"](
        copy.deepcopy([record["conversations"]]), data_args
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        data = namespace["preprocess"](sources, tokenizer, has_image=True)
    input_ids, labels = data["input_ids"][0], data["labels"][0]
    limit = tokenizer.model_max_length  # the collator truncates here
    image_index = namespace["IMAGE_TOKEN_INDEX"]
    tokens = [
        "<image>" if i == image_index else tokenizer.convert_ids_to_tokens(i)
        for i in input_ids[:limit].tolist()
    ]
    return {
        "tokens": tokens,
        "labels": labels[:limit].tolist(),
        "mismatch": text_golden.MISMATCH in out.getvalue(),
    }


def golden(
    study: Path,
    records_path: Path,
    pretrain_path: Path,
    fixtures: list[Path],
    model_max_length: int,
) -> dict:
    namespace = study_mm_namespace(study)
    conversation = namespace["conversation_lib"]
    by_template = {
        template: json.loads(records_path.read_text(encoding="utf-8"))
        for template in text_golden.TEMPLATES
    }
    by_template["v0_plain"] = json.loads(pretrain_path.read_text(encoding="utf-8"))
    sources = ("llava/conversation.py", "llava/constants.py", "llava/train/train.py",
               "llava/mm_utils.py")  # fmt: skip
    result: dict = {
        "generator": "scripts/golden/make_mm_golden.py",
        "versions": text_golden.versions(),
        "study_sources_sha256": {name: text_golden.sha256(study / name) for name in sources},
        "records": records_path.as_posix(),
        "records_sha256": text_golden.sha256(records_path),
        "pretrain_records": pretrain_path.as_posix(),
        "pretrain_records_sha256": text_golden.sha256(pretrain_path),
        "model_max_length": model_max_length,
        "fixtures": {},
        "templates": {},
    }
    for fixture in fixtures:
        result["fixtures"][fixture.name] = text_golden.fixture_info(fixture)
    for template, records in by_template.items():
        conversation.default_conversation = conversation.conv_templates[template]
        per_fixture = result["templates"][template] = {}
        for fixture in fixtures:
            tokenizer = text_golden.study_tokenizer(fixture, model_max_length)
            for tokens in ADDED_TOKENS:
                tokenizer.add_tokens(tokens, special_tokens=True)
            examples = {
                str(record["id"]): study_mm_example(namespace, tokenizer, record)
                for record in records
            }
            per_fixture[fixture.name] = examples
            text_golden.report_flagged(template, fixture, examples)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True, type=Path, help="export of the study's repo")
    parser.add_argument("--records", type=Path, default=Path("tests/golden/mm_records.json"))
    parser.add_argument(
        "--pretrain-records", type=Path, default=Path("tests/golden/mm_pretrain_records.json")
    )
    parser.add_argument(
        "--fixtures", nargs="+", type=Path, default=text_golden.FIXTURES,
        help=text_golden.FIXTURES_HELP,
    )  # fmt: skip
    parser.add_argument("--model-max-length", type=int, default=2048, help="the study's 2048")
    parser.add_argument("--output", type=Path, default=Path("tests/golden/mm_labels.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = golden(
        args.study, args.records, args.pretrain_records, args.fixtures, args.model_max_length
    )
    text_golden.write_golden(data, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
