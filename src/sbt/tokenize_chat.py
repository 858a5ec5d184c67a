"""Turn LLaVA conversations into training examples with loss on assistant tokens only.

Rule for labels: the prompt is rendered by its `sbt.templates.Template`, which also returns
the trained character spans (each assistant turn from just after its role tag, the opening
space included, through the separator that closes it). The text is tokenized by a fast
tokenizer with character offsets. A token is trained iff its offsets are non-empty and its
LAST character lies inside a trained span; its label is then its id, otherwise -100. Tokens
the tokenizer adds itself (BOS) have empty offsets and are never trained. With a LLaMA
tokenizer the opening space is the `"▁"` of the answer's first token (`"▁Hello"`), or a
lone `"▁"` token before a digit, punctuation or newline; either way it is trained, as by
the study's code (tests/test_golden_train.py compares both token for token).

Truncation keeps the first `max_length` tokens (for LLaMA tokenizers, which only add a BOS
in front, this is exactly what the tokenizer's own right truncation does).

Records are never dropped silently: a record with an empty message, without any assistant
message, or with no trained token left (usually after truncation) is skipped and counted
under its reason in the `skip_counts` that `tokenize_records` returns.

Literal `"</s>"` and `"<s>"` in the rendered text become the EOS / BOS special tokens, as
with LLaMA's tokenizer; `setup_tokenizer` checks this for the templates that use them.

The functions take a `sbt.templates.Template` (training resolves it once and passes it
down); a template name is looked up at the call instead, for callers that hold only a name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from sbt.common import input_error, read_json_file
from sbt.records import check_record
from sbt.templates import ConversationError, EmptyMessageError, Template, as_template

IGNORE_INDEX = -100

SKIP_EMPTY_MESSAGE = "empty_message"
SKIP_NO_ASSISTANT_MESSAGE = "no_assistant_message"
SKIP_NO_TRAINED_TOKEN = "no_trained_token"
SKIP_TRUNCATED = "no_trained_token_after_truncation"
SKIP_REASONS = (
    SKIP_EMPTY_MESSAGE,
    SKIP_NO_ASSISTANT_MESSAGE,
    SKIP_NO_TRAINED_TOKEN,
    SKIP_TRUNCATED,
)

_BATCH = 512


def load_records(path: str | Path) -> list[dict]:
    """Read LLaVA-format records (a JSON list, or JSON Lines), each checked by the schema
    the converter applies (`sbt.records.check_record`)."""
    records = read_json_file(path)
    if not isinstance(records, list):
        raise input_error(path, "expected a JSON list of records")
    for index, record in enumerate(records):
        check_record(record, index, path)
    return records


def setup_tokenizer(tokenizer, template: Template | str, max_length: int) -> bool:
    """Configure a tokenizer as the study did; return True if a token was added (resize!).

    Padding on the right, `model_max_length` = `max_length`, pad token = unk token (a
    template with its own `pad_token`, `v0`, adds that `[PAD]` token instead). Backbones
    without an unk token keep their pad token or fall back to EOS. Raises ValueError if the
    tokenizer cannot give offsets or does not map the template's literal `</s>` / `<s>` to
    its special tokens.
    """
    template = as_template(template)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("a fast tokenizer (tokenizer.json) is needed for character offsets")
    tokenizer.padding_side = "right"
    tokenizer.model_max_length = max_length
    added = False
    if template.pad_token is not None:
        if tokenizer.pad_token is None:
            added = tokenizer.add_special_tokens({"pad_token": template.pad_token}) > 0
    elif tokenizer.unk_token is not None:
        tokenizer.pad_token = tokenizer.unk_token
    elif tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token is None:
        raise ValueError("the tokenizer has no unk, pad or eos token to pad with")
    expected = {"</s>": tokenizer.eos_token_id, "<s>": tokenizer.bos_token_id}
    for literal in template.special_literals:
        ids = tokenizer(literal, add_special_tokens=False)["input_ids"]
        if ids != [expected[literal]]:
            raise ValueError(
                f"template {template.name!r} writes {literal!r}, but this tokenizer does not map it "
                f"to its {'EOS' if literal == '</s>' else 'BOS'} token; use a LLaMA-family "
                "tokenizer or the 'chat_template' template"
            )
    return added


SENTENCEPIECE_SPACE = "▁"
PROBE_WORD = "USER"


def legacy_probe(tokenizer) -> bool | None:
    """Whether the tokenizer behaves like the study's legacy SentencePiece tokenizer.

    Tokenizes `"</s>USER"` (EOS + a word, no special tokens added): legacy LLaMA tokenizers
    give the word a `"▁"` prefix after the special token (`"▁US"`, ...), non-legacy ones do
    not. Returns True / False, or None where the question does not arise: no EOS token, or
    a tokenizer that does not mark word starts with `"▁"` (GPT-2-style byte BPE and others).
    """
    eos, eos_id = tokenizer.eos_token, tokenizer.eos_token_id
    if eos is None or eos_id is None:
        return None
    alone = tokenizer(PROBE_WORD, add_special_tokens=False)["input_ids"]
    if not alone or not tokenizer.convert_ids_to_tokens(alone[0]).startswith(SENTENCEPIECE_SPACE):
        return None
    ids = tokenizer(eos + PROBE_WORD, add_special_tokens=False)["input_ids"]
    if len(ids) < 2 or ids[0] != eos_id:
        return None
    return tokenizer.convert_ids_to_tokens(ids[1]).startswith(SENTENCEPIECE_SPACE)


def check_legacy(tokenizer, legacy: bool, path: str | Path) -> None:
    """InputError naming `path` and `tokenizer_legacy` if the tokenizer contradicts it."""
    found = legacy_probe(tokenizer)
    if found is None or found == legacy:
        return
    tokens = tokenizer.convert_ids_to_tokens(
        tokenizer(tokenizer.eos_token + PROBE_WORD, add_special_tokens=False)["input_ids"]
    )
    behaves = "legacy" if found else "non-legacy"
    raise input_error(
        path,
        f"tokenizer_legacy is {str(legacy).lower()}, but the loaded tokenizer behaves "
        f"{behaves} ({tokenizer.eos_token + PROBE_WORD!r} -> {tokens}); set the backbone's "
        f"tokenizer_legacy to {str(found).lower()} or use a tokenizer that honours it",
    )


LEGACY_MODES = (True, False, "auto")


def study_legacy(path: str | Path) -> bool:
    """transformers 4.31's rule, which the study ran: legacy unless the checkout's
    tokenizer_config.json says `"legacy": false` (LLaMA-2 hub checkouts may; LLaMA, Vicuna
    v1.3 and OpenLLaMA predate the key)."""
    # The same reader AutoTokenizer uses: {} where the checkout has no tokenizer_config.json.
    from transformers.models.auto.tokenization_auto import get_tokenizer_config

    try:
        config = get_tokenizer_config(str(path))
    except OSError:
        config = {}
    return config.get("legacy") is not False


def resolve_legacy(legacy: bool | str, path: str | Path) -> bool:
    """`tokenizer_legacy` as configured (true, false or "auto") -> the mode to load."""
    if legacy not in LEGACY_MODES:
        raise input_error(path, f"tokenizer_legacy must be true, false or auto, not {legacy!r}")
    return study_legacy(path) if legacy == "auto" else bool(legacy)


def load_tokenizer(
    path: str,
    template: Template | str,
    max_length: int,
    *,
    trust_remote_code: bool = False,
    legacy: bool | str = "auto",
):
    """AutoTokenizer from `path`, set up by `setup_tokenizer`; returns (tokenizer, added).

    `legacy` is passed to the tokenizer (LLaMA tokenizers honour it, with or without a
    tokenizer.json) and checked with `legacy_probe`: True is the legacy behaviour (slow
    LlamaTokenizer of transformers 4.31, text after a special token starts with `"▁"`),
    "auto" what 4.31 chose for this checkout (`study_legacy`).
    Problems (no such tokenizer, not fast, wrong special tokens, a tokenizer that
    contradicts `legacy`) are InputErrors naming `path`.
    """
    from transformers import AutoTokenizer

    try:
        template = as_template(template)
    except ValueError as exc:
        raise input_error(path, str(exc)) from None
    legacy = resolve_legacy(legacy, path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, trust_remote_code=trust_remote_code, legacy=legacy
        )
    except (OSError, ValueError) as exc:
        raise input_error(path, f"cannot load tokenizer: {exc}") from None
    try:
        added = setup_tokenizer(tokenizer, template, max_length)
    except ValueError as exc:
        raise input_error(path, str(exc)) from None
    check_legacy(tokenizer, legacy, path)
    return tokenizer, added


def assistant_labels(
    input_ids: list[int], offsets: list[tuple[int, int]], spans: Iterable[tuple[int, int]]
) -> list[int]:
    """Labels: the token id where the token's last character is in a span, else -100."""
    spans = sorted(spans)
    if not input_ids or not spans:
        return [IGNORE_INDEX] * len(input_ids)
    offsets_array = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    starts, ends = offsets_array[:, 0], offsets_array[:, 1]
    last = ends - 1
    span_starts = np.array([s for s, _ in spans], dtype=np.int64)
    span_ends = np.array([e for _, e in spans], dtype=np.int64)
    which = np.searchsorted(span_starts, last, side="right") - 1
    trained = (ends > starts) & (which >= 0) & (last < span_ends[np.maximum(which, 0)])
    ids = np.asarray(input_ids, dtype=np.int64)
    return np.where(trained, ids, IGNORE_INDEX).tolist()


def tokenize_records(
    records: list[dict],
    tokenizer,
    template: Template | str,
    max_length: int,
    *,
    source: str | Path = "<records>",
    first_index: int = 0,
) -> tuple[list[dict], dict[str, int]]:
    """Tokenize records for training.

    Returns `(examples, skip_counts)`: examples are `{"id", "input_ids", "labels",
    "truncated"}` in record order; skip_counts maps each reason in SKIP_REASONS to a count.
    A malformed conversation raises InputError naming `source`, the record and the field;
    `first_index` is the index in `source` of `records[0]` (for a slice of the file).
    """
    template = as_template(template)
    skips: Counter[str] = Counter({reason: 0 for reason in SKIP_REASONS})
    rendered = []
    for index, record in enumerate(records):
        try:
            prompt = template.render(record.get("conversations"), tokenizer)
        except EmptyMessageError:
            skips[SKIP_EMPTY_MESSAGE] += 1
            continue
        except ConversationError as exc:
            raise input_error(
                source,
                str(exc),
                index=first_index + index,
                record_id=record.get("id"),
                field=exc.field,
            ) from None
        if not prompt.trained_spans:
            skips[SKIP_NO_ASSISTANT_MESSAGE] += 1
            continue
        rendered.append((record.get("id"), prompt))

    examples = []
    for batch_start in range(0, len(rendered), _BATCH):
        batch = rendered[batch_start : batch_start + _BATCH]
        encoded = tokenizer(
            [prompt.text for _, prompt in batch],
            add_special_tokens=template.add_special_tokens,
            return_offsets_mapping=True,
            return_attention_mask=False,
            verbose=False,  # long texts are expected here; truncation follows below
        )
        for (record_id, prompt), input_ids, offsets in zip(
            batch, encoded["input_ids"], encoded["offset_mapping"], strict=True
        ):
            truncated = len(input_ids) > max_length
            input_ids, offsets = input_ids[:max_length], offsets[:max_length]
            labels = assistant_labels(input_ids, offsets, prompt.trained_spans)
            if all(label == IGNORE_INDEX for label in labels):
                skips[SKIP_TRUNCATED if truncated else SKIP_NO_TRAINED_TOKEN] += 1
                continue
            examples.append(
                {"id": record_id, "input_ids": input_ids, "labels": labels, "truncated": truncated}
            )
    return examples, dict(skips)


def count_trained_tokens(examples: Iterable[dict]) -> int:
    return sum(sum(label != IGNORE_INDEX for label in ex["labels"]) for ex in examples)


def skip_summary(skip_counts: dict[str, int]) -> str:
    """`empty_message: 3, ...` for the reasons that occurred, or `none`."""
    parts = [f"{reason}: {n}" for reason, n in skip_counts.items() if n]
    return ", ".join(parts) or "none"
