"""LLaVA records with an image -> training features for the multimodal model (`sbt.mm_model`).

The text goes through the same code as the text-only arm: a `sbt.templates.Template`
renders it with the trained character spans, `sbt.tokenize_chat.tokenize_records`
tokenizes it and labels the assistant tokens (everything else -100) and truncates to
`max_length`. The image stays one `<image>` token until then, as in the study, whose ids
carry one `IMAGE_TOKEN_INDEX` per image and whose collator truncates before the model
inserts the image features; so `max_length` counts the image as one token here too.
Afterwards `expand_image_token` repeats `<image>` once per patch (labels -100), which is
exactly what `LlavaProcessor` makes of the same text.

Where the image goes (the study's train.py `preprocess_multimodal`): `<image>` is taken out
of its turn, which then starts with `"<image>\\n"` (stripped), and with
`--mm_use_im_start_end` it becomes `"<im_start><image><im_end>"`.

Stage 1 (`PRETRAIN_TEMPLATE`, the study's `v0_plain` of train_scripts/pretrain-7b.sh, train.py
`preprocess_plain`): the text is `"<image>" + caption + "\\n"`, the human request dropped,
the caption and its newline trained. `preprocess_plain` replaces the human turn by a bare
`<image>`, so the `<im_start>`/`<im_end>` that `preprocess_multimodal` had put in are gone
from the study's stage-1 prompts; its model forward (llava_arch.py,
`prepare_inputs_labels_for_multimodal` with `tune_mm_mlp_adapter` and `mm_use_im_start_end`)
still assumes them around the image and takes the label at the image position for the
token after it, so the caption's first token is never trained. `pretrain_records(...,
study=True)` reproduces both, and tokenizes the caption on its own after the image as the
study's `tokenizer_image_token` did; `study=False` wraps the image in
`<im_start>`/`<im_end>` and trains every caption token, which is what the recipe intends
(see docs/multimodal.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sbt.common import input_error
from sbt.mm_model import IM_END_TOKEN, IM_START_TOKEN, IMAGE_TOKEN
from sbt.templates import ConversationError, EmptyMessageError, Segments, Template, messages_of
from sbt.tokenize_chat import (
    IGNORE_INDEX,
    SKIP_EMPTY_MESSAGE,
    SKIP_NO_TRAINED_TOKEN,
    SKIP_REASONS,
    tokenize_records,
)

WRAPPED_IMAGE = IM_START_TOKEN + IMAGE_TOKEN + IM_END_TOKEN


def _pretrain_segments(messages: list[str]) -> Segments:
    """The study's `preprocess_plain`: the image, then the caption and the separator."""
    if len(messages) != 2:
        raise ConversationError("a pretraining record has one request and one caption")
    image = messages[0] if messages[0] in (IMAGE_TOKEN, WRAPPED_IMAGE) else IMAGE_TOKEN
    return [(image, False), (messages[1] + "\n", True)]


PRETRAIN_TEMPLATE = Template("v0_plain", _pretrain_segments)


def place_image(conversation: list[dict], *, wrap: bool = True) -> list[dict]:
    """The study's `preprocess_multimodal` on one conversation (a new list; input unchanged)."""
    turns = []
    for turn in conversation:
        if not isinstance(turn, dict):
            turns.append(turn)  # reported by _indexed with the record's id
            continue
        value = turn.get("value")
        if isinstance(value, str) and IMAGE_TOKEN in value:
            value = (IMAGE_TOKEN + "\n" + value.replace(IMAGE_TOKEN, "").strip()).strip()
            if wrap:
                value = value.replace(IMAGE_TOKEN, WRAPPED_IMAGE)
        turns.append({**turn, "value": value})
    return turns


def expand_image_token(
    input_ids: Sequence[int], labels: Sequence[int], image_token_id: int, count: int
) -> tuple[list[int], list[int]]:
    """Repeat the one `image_token_id` `count` times; its labels are -100."""
    positions = [i for i, token in enumerate(input_ids) if token == image_token_id]
    if len(positions) != 1:
        raise ValueError(f"expected one image token, found {len(positions)}")
    at = positions[0]
    ids = [*input_ids[:at], *[image_token_id] * count, *input_ids[at + 1 :]]
    new_labels = [*labels[:at], *[IGNORE_INDEX] * count, *labels[at + 1 :]]
    return ids, new_labels


def _with_image(records: list[dict], source: str | Path) -> None:
    for index, record in enumerate(records):
        if not isinstance(record.get("image"), str):
            raise input_error(
                source,
                "missing or not a file name",
                index=index,
                record_id=record.get("id"),
                field="image",
            )
        turns = record.get("conversations") or []
        tagged = sum(IMAGE_TOKEN in str(t.get("value", "")) for t in turns if isinstance(t, dict))
        if tagged != 1:
            raise input_error(
                source,
                f"expected {IMAGE_TOKEN} in exactly one turn, found {tagged}",
                index=index,
                record_id=record.get("id"),
                field="conversations",
            )


def _features(
    examples: list[dict], records: list[dict], image_token_id: int, count: int, source
) -> list[dict]:
    """Expanded features; each example's `id` is its record's index (see `_indexed`)."""
    features = []
    for example in examples:
        record = records[example["id"]]
        if image_token_id not in example["input_ids"]:
            raise input_error(
                source,
                "the image token was truncated away; raise max_length",
                index=example["id"],
                record_id=record.get("id"),
                field="conversations",
            )
        ids, labels = expand_image_token(
            example["input_ids"], example["labels"], image_token_id, count
        )
        features.append(
            {"id": record.get("id"), "image": record["image"], "input_ids": ids, "labels": labels}
        )
    return features


def _indexed(
    records: list[dict], conversations: list[list[dict]], source, template: Template
) -> list[dict]:
    """Records to tokenize, their ids replaced by their index: LLaVA files repeat ids (another
    conversation about the same image), and the index finds each example's image. Malformed
    conversations (also those `template` cannot render) are reported here, with the
    record's own id."""
    for index, (record, turns) in enumerate(zip(records, conversations, strict=True)):
        try:
            messages = messages_of(turns)
            if template.segments is not None:
                template.segments(messages)
        except EmptyMessageError:
            pass  # counted as a skip by tokenize_records
        except ConversationError as exc:
            raise input_error(
                source, str(exc), index=index, record_id=record.get("id"), field=exc.field
            ) from None
    return [{"id": i, "conversations": turns} for i, turns in enumerate(conversations)]


def instruct_records(
    records: list[dict],
    tokenizer,
    template: Template,
    max_length: int,
    *,
    image_token_id: int,
    num_image_tokens: int,
    wrap: bool = True,
    source: str | Path = "<records>",
) -> tuple[list[dict], dict[str, int]]:
    """Stage-2 features: `{"id", "image", "input_ids", "labels"}` and the skip counts.

    Records must have an `image` and `<image>` in one turn (the LLaVA instruction data all
    do).
    """
    _with_image(records, source)
    conversations = [place_image(r["conversations"], wrap=wrap) for r in records]
    placed = _indexed(records, conversations, source, template)
    examples, skips = tokenize_records(placed, tokenizer, template, max_length, source=source)
    return _features(examples, records, image_token_id, num_image_tokens, source), skips


def pretrain_records(
    records: list[dict],
    tokenizer,
    max_length: int,
    *,
    image_token_id: int,
    num_image_tokens: int,
    study: bool = True,
    source: str | Path = "<records>",
) -> tuple[list[dict], dict[str, int]]:
    """Stage-1 features from CC3M `chat.json`-style records (request with `<image>`, caption).

    `study=True`: the study's prompts (bare `<image>`) and its first caption token untrained;
    `study=False`: `<im_start><image><im_end>` and every caption token trained.
    """
    _with_image(records, source)
    image = IMAGE_TOKEN if study else WRAPPED_IMAGE
    conversations = []
    for record in records:
        turns = [dict(t) if isinstance(t, dict) else t for t in record["conversations"]]
        if turns and isinstance(turns[0], dict) and turns[0].get("from") == "human":
            turns[0]["value"] = image
        conversations.append(turns)
    placed = _indexed(records, conversations, source, PRETRAIN_TEMPLATE)
    if not study:
        examples, skips = tokenize_records(
            placed, tokenizer, PRETRAIN_TEMPLATE, max_length, source=source
        )
        return _features(examples, records, image_token_id, num_image_tokens, source), skips
    examples, skips = [], Counter({reason: 0 for reason in SKIP_REASONS})
    for record in placed:
        try:
            messages = messages_of(record["conversations"])
        except EmptyMessageError:
            skips[SKIP_EMPTY_MESSAGE] += 1
            continue
        caption = PRETRAIN_TEMPLATE.segments(messages)[1][0]  # with its separator
        example = study_pretrain_example(
            caption, tokenizer, image_token_id, max_length, record["id"]
        )
        if example is None:  # a one-token caption: nothing left to train (nor in the study)
            skips[SKIP_NO_TRAINED_TOKEN] += 1
        else:
            examples.append(example)
    return _features(examples, records, image_token_id, num_image_tokens, source), skips


def study_pretrain_example(
    text: str, tokenizer, image_token_id: int, max_length: int, index: int
) -> dict | None:
    """The study's stage-1 ids and labels for the caption `text` (its separator included).

    train.py `preprocess_plain` tokenizes `"<image>" + caption + "\n"` with
    `tokenizer_image_token`, which tokenizes the text after `<image>` on its own: BOS,
    the image, then the caption as SentencePiece encodes a fresh text, its dummy prefix
    giving the first word a `"▁"` (`"▁A"`; a caption opening with a space gets `"▁"`,
    `"▁a"`) whatever the tokenizer's `legacy` setting. Tokenizing `" " + text` without
    special tokens gives those pieces here (the pre-tokenizer adds no second `"▁"` to a
    text that starts with one). Its labels: the caption, but the study's model forward took
    the first caption token's label at the image position, so that token is untrained.
    """
    caption = tokenizer(" " + text, add_special_tokens=False).input_ids
    input_ids = [tokenizer.bos_token_id, image_token_id, *caption][:max_length]
    labels = [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, *caption[1:]][: len(input_ids)]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return {"id": index, "input_ids": input_ids, "labels": labels}


def load_pixels(path: str | Path, image_processor):
    """One image file -> its `pixel_values` (3, H, W), as the study: RGB, the processor's
    resize and centre crop (`image_aspect_ratio` "square", the study's default)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except OSError as exc:
        raise input_error(path, f"cannot read image: {exc}") from None
    return image_processor(images=rgb, return_tensors="pt")["pixel_values"][0]


class ImageDataset:
    """Features plus their images, read when a sample is asked for (a torch map dataset)."""

    def __init__(self, features: list[dict], image_folder: str | Path, image_processor) -> None:
        self.features = features
        self.image_folder = Path(image_folder)
        self.image_processor = image_processor

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict:
        feature = self.features[index]
        pixels = load_pixels(self.image_folder / feature["image"], self.image_processor)
        return {
            "input_ids": feature["input_ids"],
            "labels": feature["labels"],
            "pixel_values": pixels,
        }


@dataclass
class ImageCollator:
    """Right-pad ids (pad id), labels (-100) and the attention mask; stack pixel_values."""

    pad_token_id: int

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        longest = max(len(sample["input_ids"]) for sample in batch)
        ids = torch.full((len(batch), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), longest), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, sample in enumerate(batch):
            n = len(sample["input_ids"])
            ids[row, :n] = torch.tensor(sample["input_ids"], dtype=torch.long)
            labels[row, :n] = torch.tensor(sample["labels"], dtype=torch.long)
            mask[row, :n] = 1
        pixels = torch.stack([sample["pixel_values"] for sample in batch])
        return {"input_ids": ids, "labels": labels, "attention_mask": mask, "pixel_values": pixels}
