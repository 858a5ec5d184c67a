"""Show exactly what training sees: token ids and assistant-only labels per record.

Writes one JSON line per kept record, `{"id", "input_ids", "labels"}` (labels -100 where
there is no loss), with the same template, tokenizer set-up, truncation and skipping as
train.py. Skipped records are counted by reason on stderr. `--show N` prints the first N
records for a reader with the trained text marked `[[...]]` (green when stdout is a
terminal).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from sbt.common import atomic_path, cli, use_offline_hub
from sbt.templates import TEMPLATE_NAMES, get_template
from sbt.tokenize_chat import (
    IGNORE_INDEX,
    count_trained_tokens,
    load_records,
    load_tokenizer,
    skip_summary,
    tokenize_records,
)

DEFAULT_MAX_LENGTH = 2048  # the study's model_max_length


def runs(labels: list[int]) -> list[tuple[int, int, bool]]:
    """Maximal `[start, end)` runs of tokens that are all trained or all untrained."""
    out: list[tuple[int, int, bool]] = []
    for index, label in enumerate(labels):
        trained = label != IGNORE_INDEX
        if out and out[-1][2] == trained:
            out[-1] = (out[-1][0], index + 1, trained)
        else:
            out.append((index, index + 1, trained))
    return out


def highlight(tokenizer, example: dict, colour: bool = False) -> str:
    """The decoded tokens with trained runs marked, e.g. `USER: hi ASSISTANT:[[ Hello</s>]]`."""
    ids = example["input_ids"]
    opening, closing = ("\x1b[42;30m", "\x1b[0m") if colour else ("[[", "]]")

    def decode(token_ids: list[int]) -> str:
        return tokenizer.decode(
            token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
        )

    # Decode growing prefixes so the spaces between runs survive the decoder.
    pieces = []
    decoded_so_far = ""
    for start, end, trained in runs(example["labels"]):
        through = decode(ids[:end])
        piece = through[len(decoded_so_far) :] if through.startswith(decoded_so_far) else None
        if piece is None:
            piece = decode(ids[start:end])
        decoded_so_far = through
        pieces.append(opening + piece + closing if trained else piece)
    return "".join(pieces)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", required=True, help="backbone directory (or HF id)")
    parser.add_argument("--template", required=True, choices=TEMPLATE_NAMES)
    parser.add_argument("--input", required=True, help="LLaVA-format JSON (list of records)")
    parser.add_argument("--output", required=True, help="JSON Lines file to write")
    parser.add_argument(
        "--max-length", type=int, default=DEFAULT_MAX_LENGTH, help="default 2048 (the study's)"
    )
    parser.add_argument("--show", type=int, default=0, metavar="N", help="print N records")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument(
        "--tokenizer-legacy",
        choices=("auto", "true", "false"),
        default="auto",
        help="LLaMA tokenizers: true: legacy behaviour (text after a special token gets the "
        "'▁' prefix); false: not; auto (default): as transformers 4.31 chose for this "
        "checkout, as the study did (the backbone's tokenizer_legacy in the workflow config)",
    )
    args = parser.parse_args(argv)
    if args.max_length < 1:
        parser.error("--max-length must be positive")
    return args


@cli
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_offline_hub()
    template = get_template(args.template)  # looked up once, the object passed down
    tokenizer, _ = load_tokenizer(
        args.tokenizer,
        template,
        args.max_length,
        trust_remote_code=args.trust_remote_code,
        legacy={"true": True, "false": False}.get(args.tokenizer_legacy, "auto"),
    )
    records = load_records(args.input)
    examples, skips = tokenize_records(
        records, tokenizer, template, args.max_length, source=args.input
    )
    with atomic_path(args.output) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for example in examples:
            row = {key: example[key] for key in ("id", "input_ids", "labels")}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    for example in examples[: args.show]:
        trained = count_trained_tokens([example])
        print(f"--- {example['id']}: {len(example['input_ids'])} tokens, {trained} trained ---")
        print(highlight(tokenizer, example, colour))
    truncated = sum(example["truncated"] for example in examples)
    print(
        f"{len(examples)} of {len(records)} records written to {args.output} "
        f"({truncated} of them truncated); {count_trained_tokens(examples)} trained tokens; "
        f"skipped: {skip_summary(skips)}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
