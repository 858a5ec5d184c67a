"""Build a tiny LLaMA-architecture backbone for demos and tests, without any model hub.

The tokenizer is a SentencePiece model trained with the `sentencepiece` library on every
string found in the corpus files (JSON or JSON Lines, walked recursively) plus the study's
system prompts and role tags, with LLaMA's trainer settings: BPE, byte fallback
(`<0x00>`..`<0xFF>` for unseen characters), digits split, identity normalisation, extra
whitespace kept, a dummy `▁` prefix, `<unk>`=0, `<s>`=1, `</s>`=2, no pad token. Text is
fed to the trainer line by line, so (as in LLaMA's vocabulary) a newline is the byte token
`<0x0A>`. It is saved the way LLaMA checkouts ship it: `tokenizer.model` +
`tokenizer_config.json` (`LlamaTokenizer`, BOS added, no EOS), and with
`--tokenizer-layout model+json` also a `tokenizer.json` in the form LLaMA-2 ships (the
legacy SentencePiece behaviour as a `Prepend("▁")` + `Replace(" ", "▁")` normaliser).

The model is a randomly initialised LlamaForCausalLM (seeded), saved as safetensors, so
both load with AutoTokenizer / AutoModelForCausalLM like any real backbone. Same inputs,
options and seed give the same files (build_info.json aside, which records versions).
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator
from pathlib import Path

from sbt.common import (
    TORCH_DTYPES,
    atomic_path,
    cli,
    input_error,
    provenance,
    read_json_file,
    write_json,
)

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
BYTE_TOKENS = tuple(f"<0x{value:02X}>" for value in range(256))
LAYOUTS = ("model", "model+json")
MIN_VOCAB = len(SPECIAL_TOKENS) + len(BYTE_TOKENS) + 1

# LLaMA's SentencePiece trainer settings (its tokenizer.model's trainer_spec), plus what
# makes training single-threaded and order-preserving, hence deterministic.
SENTENCEPIECE_SETTINGS = {
    "model_type": "bpe",
    "split_digits": True,
    "byte_fallback": True,
    "normalization_rule_name": "identity",
    "remove_extra_whitespaces": False,
    "add_dummy_prefix": True,
    "allow_whitespace_only_pieces": True,
    "split_by_unicode_script": True,
    "split_by_number": True,
    "split_by_whitespace": True,
    "max_sentencepiece_length": 16,
    "character_coverage": 0.99995,
    "unk_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "pad_id": -1,
    "unk_surface": " \u2047 ",
    "hard_vocab_limit": False,
    "num_threads": 1,
    "input_sentence_size": 0,
    "shuffle_input_sentence": False,
    "minloglevel": 2,
}


def _added_token(content: str) -> dict:
    return {
        "__type": "AddedToken",
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
    }


def llama_tokenizer_config(model_max_length: int) -> dict:
    """tokenizer_config.json as LLaMA-2 checkouts ship it (no `legacy` key: the workflow
    passes the backbone's `tokenizer_legacy` setting when it loads the tokenizer)."""
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": _added_token("<s>"),
        "clean_up_tokenization_spaces": False,
        "eos_token": _added_token("</s>"),
        "model_max_length": model_max_length,
        "pad_token": None,
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": _added_token("<unk>"),
    }


SPECIAL_TOKENS_MAP = {
    "bos_token": _added_token("<s>"),
    "eos_token": _added_token("</s>"),
    "unk_token": _added_token("<unk>"),
}


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


def template_strings() -> list[str]:
    """The study's system prompts and role tags, so prompts tokenize into words."""
    from sbt import templates

    tags = "USER: ASSISTANT: ### Human: ### Assistant: [INST] [/INST] <<SYS>> <</SYS>>"
    systems = [templates.SYS_V1, templates.SYS_V0, templates.SYS_LLAMA_2]
    return [*systems, templates.SYS_LLAVA_LLAMA_2, tags]


def train_sentencepiece(texts: list[str], vocab_size: int) -> bytes:
    """A LLaMA-style SentencePiece BPE model (the bytes of tokenizer.model)."""
    import sentencepiece

    if vocab_size < MIN_VOCAB:
        raise ValueError(f"--vocab-size must be at least {MIN_VOCAB} (specials and 256 bytes)")
    lines = [line for text in texts for line in text.split("\n") if line]
    if not lines:
        raise ValueError("no text to train the tokenizer on")
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=vocab_size,
        max_sentence_length=max(4192, max(len(line.encode()) for line in lines) + 1),
        **SENTENCEPIECE_SETTINGS,
    )
    return model.getvalue()


def llama2_tokenizer_json(model_dir: str | Path) -> str:
    """tokenizer.json for the SentencePiece model in `model_dir`, in the form LLaMA-2 ships:
    BPE with byte fallback, a `Prepend("▁")` + `Replace(" ", "▁")` normaliser (the legacy
    behaviour), no pre-tokeniser, BOS added by the post-processor."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), legacy=True)
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec["normalizer"] = {
        "type": "Sequence",
        "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        ],
    }
    spec["pre_tokenizer"] = None
    spec["model"]["unk_token"] = "<unk>"
    # The serialisation LLaMA-2's file has (merges as "a b" strings, which SentencePiece
    # pieces allow as they hold no spaces), readable by tokenizers 0.13 (transformers 4.31).
    spec["model"].pop("ignore_merges", None)
    spec["model"]["merges"] = [
        merge if isinstance(merge, str) else " ".join(merge) for merge in spec["model"]["merges"]
    ]
    spec["truncation"] = None
    spec["padding"] = None
    return json.dumps(spec, ensure_ascii=False, indent=2) + "\n"


def write_tokenizer(
    model_proto: bytes, output: str | Path, *, layout: str = "model", model_max_length: int
) -> None:
    """Write tokenizer.model, tokenizer_config.json, special_tokens_map.json (and
    tokenizer.json for layout `model+json`) into the directory `output`."""
    if layout not in LAYOUTS:
        raise ValueError(f"--tokenizer-layout must be one of {', '.join(LAYOUTS)}")
    output = Path(output)
    (output / "tokenizer.model").write_bytes(model_proto)
    write_json(output / "tokenizer_config.json", llama_tokenizer_config(model_max_length))
    write_json(output / "special_tokens_map.json", SPECIAL_TOKENS_MAP)
    if layout == "model+json":
        (output / "tokenizer.json").write_text(llama2_tokenizer_json(output), encoding="utf-8")


def build_tokenizer(
    corpus: list[str | Path],
    output: str | Path,
    *,
    vocab_size: int = 2000,
    model_max_length: int = 512,
    tokenizer_layout: str = "model",
) -> Path:
    """Only the tokenizer files (as in a backbone) in `output`, written atomically."""
    texts = list(corpus_strings(corpus))
    if not texts:
        raise input_error(corpus[0] if corpus else "--corpus", "no strings to train on")
    model_proto = train_sentencepiece([*texts, *template_strings()], vocab_size)
    output = Path(output)
    with atomic_path(output, directory=True) as tmp:
        write_tokenizer(
            model_proto, tmp, layout=tokenizer_layout, model_max_length=model_max_length
        )
    return output


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
    tokenizer_layout: str = "model",
) -> Path:
    """Train the tokenizer, initialise the model, and write both into `output` atomically."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    texts = list(corpus_strings(corpus))
    if not texts:
        raise input_error(corpus[0] if corpus else "--corpus", "no strings to train on")
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(TORCH_DTYPES)}")
    if tokenizer_layout not in LAYOUTS:
        raise ValueError(f"--tokenizer-layout must be one of {', '.join(LAYOUTS)}")
    model_proto = train_sentencepiece([*texts, *template_strings()], vocab_size)
    output = Path(output)
    with atomic_path(output, directory=True) as tmp:
        write_tokenizer(
            model_proto, tmp, layout=tokenizer_layout, model_max_length=max_position_embeddings
        )
        tokenizer = AutoTokenizer.from_pretrained(str(tmp), legacy=True)
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
        model.save_pretrained(tmp)
        write_json(
            tmp / "build_info.json",
            provenance(
                builder="build_tiny_backbone",
                corpus=[Path(p).name for p in corpus],
                corpus_strings=len(texts),
                vocab_size=len(tokenizer),
                tokenizer_layout=tokenizer_layout,
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
    parser.add_argument("--dtype", choices=TORCH_DTYPES, default="float32")
    parser.add_argument(
        "--tokenizer-layout",
        choices=LAYOUTS,
        default="model",
        help="model: tokenizer.model only (as Vicuna ships); model+json: also tokenizer.json "
        "(as LLaMA-2 ships). Default: model",
    )
    parser.add_argument(
        "--tokenizer-only",
        action="store_true",
        help="write only the tokenizer files (model_max_length = --max-position-embeddings)",
    )
    args = parser.parse_args(argv)
    if args.vocab_size < MIN_VOCAB:
        parser.error(f"--vocab-size must be at least {MIN_VOCAB} (3 specials and 256 bytes)")
    return args


@cli
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tokenizer_only:
        output = build_tokenizer(
            args.corpus,
            args.output,
            vocab_size=args.vocab_size,
            model_max_length=args.max_position_embeddings,
            tokenizer_layout=args.tokenizer_layout,
        )
        print(f"wrote {output}")
        return 0
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
        tokenizer_layout=args.tokenizer_layout,
    )
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
