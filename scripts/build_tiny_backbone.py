"""Build a tiny LLaMA-architecture backbone for demos and tests, without any model hub.

The tokenizer is trained on every string found in the corpus files (JSON or JSON Lines,
walked recursively) in the LLaMA style: BPE over words that carry their leading space as
`▁`, byte fallback (`<0x00>`..`<0xFF>`) for unseen characters, `<unk>`=0, `<s>`=1,
`</s>`=2, BOS added in front of every text, and literal `<s>`/`</s>` in text recognised as
the special tokens. The model is a randomly initialised LlamaForCausalLM (seeded). Both are
saved in the ordinary Hugging Face format (safetensors), so they load with
AutoTokenizer / AutoModelForCausalLM like any real backbone. Same inputs and seed give the
same files.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from sbt.common import atomic_path, cli, input_error, provenance, read_json_file, write_json

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
BYTE_TOKENS = tuple(f"<0x{value:02X}>" for value in range(256))
DTYPES = ("float32", "bfloat16", "float16")


def corpus_strings(paths: list[str | Path]) -> Iterator[str]:
    """Every string value (not keys) in the JSON / JSONL files, depth first."""
    for path in paths:
        content = read_json_file(path)
        documents = content if Path(path).suffix == ".jsonl" else [content]
        stack = list(reversed(documents))
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                if item:
                    yield item
            elif isinstance(item, dict):
                stack.extend(reversed(list(item.values())))
            elif isinstance(item, list):
                stack.extend(reversed(item))


def train_tokenizer(texts: list[str], vocab_size: int):
    """A LLaMA-style BPE tokenizer (tokenizers.Tokenizer) with ids: specials, bytes, merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    minimum = len(SPECIAL_TOKENS) + len(BYTE_TOKENS) + 1
    if vocab_size < minimum:
        raise ValueError(f"--vocab-size must be at least {minimum} (specials and 256 bytes)")
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    # Newlines stay tokens of their own (LLaMA's vocabulary never merges them into words).
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", behavior="isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(BYTE_TOKENS),
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)

    # Put the 256 byte tokens right after the specials, as in LLaMA's vocabulary.
    spec = json.loads(tokenizer.to_str())
    learned = sorted(spec["model"]["vocab"].items(), key=lambda item: item[1])
    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *BYTE_TOKENS, *(token for token, _ in learned)):
        vocab.setdefault(token, len(vocab))
    spec["model"]["vocab"] = vocab
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    tokenizer.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    bos_id = vocab["<s>"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return tokenizer


def build_tiny_backbone(
    corpus: list[str | Path],
    output: str | Path,
    *,
    vocab_size: int = 2000,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int | None = None,
    intermediate_size: int = 128,
    max_position_embeddings: int = 512,
    seed: int = 0,
    dtype: str = "float32",
) -> Path:
    """Train the tokenizer, initialise the model, and write both into `output` atomically."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = list(corpus_strings(corpus))
    if not texts:
        raise input_error(corpus[0] if corpus else "--corpus", "no strings to train on")
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(texts, vocab_size),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=max_position_embeddings,
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    output = Path(output)
    with atomic_path(output, directory=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(
            tmp / "build_info.json",
            provenance(
                builder="build_tiny_backbone",
                corpus=[Path(p).name for p in corpus],
                corpus_strings=len(texts),
                vocab_size=len(tokenizer),
                hidden_size=hidden_size,
                num_layers=num_layers,
                num_heads=num_heads,
                num_kv_heads=num_kv_heads or num_heads,
                intermediate_size=intermediate_size,
                max_position_embeddings=max_position_embeddings,
                seed=seed,
                dtype=dtype,
            ),
        )
    return output


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", nargs="+", required=True, help="JSON/JSONL files to learn from")
    parser.add_argument("--output", required=True, help="model directory to create")
    parser.add_argument("--vocab-size", type=int, default=2000, help="upper bound (default 2000)")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--num-kv-heads", type=int, default=None, help="default: --num-heads")
    parser.add_argument("--intermediate-size", type=int, default=128)
    parser.add_argument("--max-position-embeddings", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    args = parser.parse_args(argv)
    minimum = len(SPECIAL_TOKENS) + len(BYTE_TOKENS) + 1
    if args.vocab_size < minimum:
        parser.error(f"--vocab-size must be at least {minimum} (3 specials and 256 bytes)")
    return args


@cli
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    output = build_tiny_backbone(
        args.corpus,
        args.output,
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        num_kv_heads=args.num_kv_heads,
        intermediate_size=args.intermediate_size,
        max_position_embeddings=args.max_position_embeddings,
        seed=args.seed,
        dtype=args.dtype,
    )
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
