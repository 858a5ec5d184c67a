"""Shared pytest fixtures.

Fixtures for tests that need a model (all session-scoped, built once, offline, in seconds):

- `tiny_records`: a list of ~300 LLaVA-format text-only records (deterministic,
  `sbt.demo.llava.tiny_records`), some with two rounds.
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
import shutil

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json  # noqa: E402

import pytest  # noqa: E402
from slurm_cluster import slurm_cluster_fixture  # noqa: E402, F401
from snakemake_run import demo_run  # noqa: E402, F401

from sbt.demo import llava as demo_llava  # noqa: E402

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_records() -> list[dict]:
    return demo_llava.tiny_records()


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
