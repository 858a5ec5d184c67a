#!/usr/bin/env python
"""Build the small model of the MMLU golden test (tests/golden/mmlu_model/).

A random tiny LLaMA never answers an MMLU prompt with a letter, so comparing the study's
scoring with ours on it would compare zeros. This builds the tiny backbone
(sbt.demo.backbone: SentencePiece tokenizer trained on the demo LLaVA file,
hidden 64, 2 layers) and trains it for a few steps to answer " A".." D" after "Answer:"
on the demo MMLU questions, with seeded *random* letters: it then answers with letters,
different ones for different prompts, about as often right as chance. Run with the
project's environment:

    .venv/bin/python scripts/golden/make_mmlu_model.py --output tests/golden/mmlu_model
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from sbt.common import atomic_path, cli
from sbt.demo.backbone import build_tiny_backbone
from sbt.mmlu_study import format_example, load_mmlu

ROOT = Path(__file__).resolve().parents[2]

CORPUS = ROOT / "resources" / "demo" / "llava_instruct_demo.json"
DATA_DIR = ROOT / "resources" / "demo" / "benchmarks" / "mmlu"


def training_pairs(seed: int) -> list[tuple[str, str]]:
    """(question ending "Answer:", " X") for every demo MMLU row, X a seeded random letter."""
    rng = random.Random(seed)
    test, dev = load_mmlu(DATA_DIR)
    rows = [*test, *(row for subject in sorted(dev) for row in dev[subject])]
    return [(format_example(row, include_answer=False), " " + rng.choice("ABCD")) for row in rows]


def train(
    model, tokenizer, pairs, *, steps: int, seed: int, lr: float, context: int
) -> list[float]:
    """Loss on the answer tokens only; each prompt cut to its last `context` tokens."""
    import torch

    torch.manual_seed(seed)
    examples = []
    for prompt, answer in pairs:
        ids = tokenizer(prompt).input_ids[-context:]
        target = tokenizer(prompt + answer).input_ids[len(tokenizer(prompt).input_ids) :]
        examples.append((ids + target, [-100] * len(ids) + target))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = random.Random(seed)
    losses = []
    model.train()
    for _ in range(steps):
        batch = rng.sample(examples, 8)
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.tensor([ids + [0] * (width - len(ids)) for ids, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import tempfile

    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    torch.use_deterministic_algorithms(True)
    with tempfile.TemporaryDirectory() as tmp:
        base = build_tiny_backbone(
            [CORPUS], Path(tmp) / "base", vocab_size=1000, max_position_embeddings=2048
        )
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = LlamaForCausalLM.from_pretrained(base, dtype=torch.float32)
        losses = train(
            model,
            tokenizer,
            training_pairs(args.seed),
            steps=args.steps,
            seed=args.seed,
            lr=3e-3,
            context=48,
        )
        print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} in {len(losses)} steps", file=sys.stderr)
        with atomic_path(args.output, directory=True) as out:
            model.save_pretrained(out)
            for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
                (out / name).write_bytes((base / name).read_bytes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
