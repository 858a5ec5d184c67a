"""Shared pytest fixtures.

Fixtures for tests that need a model (all session-scoped, built once, offline, in seconds):

- `tiny_records`: a list of ~300 LLaVA-format text-only records (deterministic, generated
  here), some with two rounds.
- `tiny_corpus`: those records written as a JSON file (a valid `--data` for train.py).
- `tiny_backbone`: Path of a tiny LLaMA backbone built by src/sbt/demo/backbone.py
  from `tiny_corpus` (hidden 64, 2 layers, vocab <= 2000, seed 0), with a SentencePiece
  tokenizer in the `tokenizer.model`-only layout. Treat it as read-only. Load with
  `sbt.tokenize_chat.load_tokenizer` (the study's legacy mode) or
  AutoTokenizer.from_pretrained(tiny_backbone, legacy=True) / AutoModelForCausalLM.
- `tiny_backbone_json`: the same tokenizer in the LLaMA-2 layout (with tokenizer.json),
  tokenizer files only.
- `tiny_backbone_factory(template_name)`: a backbone suited to a template: the same
  `tiny_backbone` for the study's templates; for `chat_template` a copy whose tokenizer
  carries a small ChatML-style chat template (CHATML_TEMPLATE).
"""

from __future__ import annotations

import os
import random
import shutil

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json  # noqa: E402

import pytest  # noqa: E402
from slurm_cluster import slurm_cluster_fixture  # noqa: E402, F401
from snakemake_run import demo_run  # noqa: E402, F401

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_SUBJECTS = ["cat", "dog", "man", "woman", "bus", "train", "kite", "pizza", "horse", "boat"]
_PLACES = ["on a table", "in a park", "near the river", "on the street", "at the beach"]
_COLORS = ["red", "blue", "green", "white", "black", "yellow", "brown"]


def make_tiny_records(count: int = 300, seed: int = 0) -> list[dict]:
    """Deterministic LLaVA-style records whose `<image>` placeholder was already removed."""
    rng = random.Random(seed)
    records = []
    for i in range(count):
        subject, place, color = rng.choice(_SUBJECTS), rng.choice(_PLACES), rng.choice(_COLORS)
        question = (
            f"\nWhat is the {color} {subject} doing?"
            if i % 2
            else f"Describe the {subject} in the picture.\n"
        )
        turns = [
            {"from": "human", "value": question},
            {"from": "gpt", "value": f"The {color} {subject} is {place}. The scene is bright."},
        ]
        if i % 3 == 0:
            other = rng.choice(_SUBJECTS)
            turns += [
                {"from": "human", "value": f"Is there a {other} too?"},
                {"from": "gpt", "value": rng.choice(["Yes, there is one.", "No, I see none."])},
            ]
        records.append({"id": f"{i:06d}", "image": f"{i:012d}.jpg", "conversations": turns})
    return records


@pytest.fixture(scope="session")
def tiny_records() -> list[dict]:
    return make_tiny_records()


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory, tiny_records):
    path = tmp_path_factory.mktemp("tiny_corpus") / "tiny.json"
    path.write_text(json.dumps(tiny_records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory, tiny_corpus):
    import torch

    from sbt.demo.backbone import build_tiny_backbone

    torch.set_num_threads(1)
    return build_tiny_backbone([tiny_corpus], tmp_path_factory.mktemp("backbones") / "tiny")


@pytest.fixture(scope="session")
def tiny_backbone_json(tmp_path_factory, tiny_corpus):
    from sbt.demo.backbone import build_tokenizer

    target = tmp_path_factory.mktemp("backbones") / "tiny_json"
    return build_tokenizer([tiny_corpus], target, tokenizer_layout="model+json")


@pytest.fixture(scope="session")
def tiny_backbone_factory(tmp_path_factory, tiny_backbone):
    built = {}

    def factory(template_name: str = "v1"):
        if template_name != "chat_template":
            return tiny_backbone
        if template_name not in built:
            from transformers import AutoTokenizer

            target = tmp_path_factory.mktemp("backbones") / "tiny_chat"
            shutil.copytree(tiny_backbone, target, dirs_exist_ok=True)
            tokenizer = AutoTokenizer.from_pretrained(target, legacy=True)
            tokenizer.chat_template = CHATML_TEMPLATE
            tokenizer.save_pretrained(target)
            built[template_name] = target
        return built[template_name]

    return factory
