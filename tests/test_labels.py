"""Assistant-only labels, skip counting, tokenizer set-up, and the preview_tokens CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_templates import CONVERSATION, EXPECTED

from sbt import preview_tokens
from sbt.common import InputError
from sbt.tokenize_chat import (
    IGNORE_INDEX,
    SKIP_EMPTY_MESSAGE,
    SKIP_NO_ASSISTANT_MESSAGE,
    SKIP_TRUNCATED,
    load_tokenizer,
    tokenize_records,
)


@pytest.fixture(scope="module")
def tokenizers(tiny_backbone):
    """One set-up tokenizer per template (set-up differs only for v0)."""
    return {name: load_tokenizer(str(tiny_backbone), name, 512)[0] for name in EXPECTED}


def independent_labels(tokenizer, text: str, trained: list[str]) -> list[int]:
    """Labels from first principles: find the trained strings, keep tokens ending inside."""
    spans, position = [], 0
    for piece in trained:
        start = text.index(piece, position)
        spans.append((start, start + len(piece)))
        position = start + len(piece)
    encoded = tokenizer(text, return_offsets_mapping=True)
    labels = []
    for token_id, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
        inside = end > start and any(a <= end - 1 < b for a, b in spans)
        labels.append(token_id if inside else IGNORE_INDEX)
    return labels


def trained_runs(example: dict) -> list[list[int]]:
    runs, current = [], []
    for token_id, label in zip(example["input_ids"], example["labels"], strict=True):
        if label != IGNORE_INDEX:
            assert label == token_id
            current.append(token_id)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_labels_cover_exactly_the_assistant_turns(tokenizers, name):
    tokenizer = tokenizers[name]
    text, trained = EXPECTED[name]
    examples, skips = tokenize_records(
        [{"id": "r1", "conversations": CONVERSATION}], tokenizer, name, 512
    )
    assert sum(skips.values()) == 0
    (example,) = examples
    assert example["input_ids"] == tokenizer(text)["input_ids"]
    assert example["labels"] == independent_labels(tokenizer, text, trained)
    # The tokenizer adds BOS in front; it carries no loss.
    assert example["input_ids"][0] == tokenizer.bos_token_id
    assert example["labels"][0] == IGNORE_INDEX
    # Each trained run decodes to one assistant message plus its closing separator.
    decoded = [
        tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        for run in trained_runs(example)
    ]
    assert [piece.lstrip(" ") for piece in decoded] == [piece.lstrip(" ") for piece in trained]


def test_literal_special_strings_become_special_tokens(tokenizers):
    tokenizer = tokenizers["llama_2"]
    (example,), _ = tokenize_records(
        [{"id": "r1", "conversations": CONVERSATION}], tokenizer, "llama_2", 512
    )
    ids = example["input_ids"]
    # Added BOS plus the literal "<s>" that opens round two; one "</s>" per answer.
    assert ids.count(tokenizer.bos_token_id) == 2
    assert ids.count(tokenizer.eos_token_id) == 2
    eos_positions = [i for i, t in enumerate(ids) if t == tokenizer.eos_token_id]
    assert all(example["labels"][i] == tokenizer.eos_token_id for i in eos_positions)
    second_bos = [i for i, t in enumerate(ids) if t == tokenizer.bos_token_id][1]
    assert example["labels"][second_bos] == IGNORE_INDEX


def test_skips_are_counted_by_reason(tokenizers):
    tokenizer = tokenizers["v1"]
    long_question = "What is this? " * 80
    records = [
        {"id": "ok", "conversations": CONVERSATION},
        {"id": "empty", "conversations": [CONVERSATION[0], {"from": "gpt", "value": ""}]},
        {"id": "blank", "conversations": [{"from": "human", "value": " "}, CONVERSATION[1]]},
        {"id": "question-only", "conversations": [CONVERSATION[0]]},
        {"id": "gpt-only", "conversations": [CONVERSATION[1]]},
        {
            "id": "cut",
            "conversations": [{"from": "human", "value": long_question}, CONVERSATION[1]],
        },
        {
            "id": "cut-but-kept",
            "conversations": [*CONVERSATION[:2], {"from": "human", "value": long_question},
                              CONVERSATION[3]],
        },
    ]  # fmt: skip
    examples, skips = tokenize_records(records, tokenizer, "v1", 200)
    assert [ex["id"] for ex in examples] == ["ok", "cut-but-kept"]
    assert [ex["truncated"] for ex in examples] == [False, True]
    assert len(examples[1]["input_ids"]) == 200
    assert skips == {
        SKIP_EMPTY_MESSAGE: 2,
        SKIP_NO_ASSISTANT_MESSAGE: 2,
        "no_trained_token": 0,
        SKIP_TRUNCATED: 1,
    }


def test_malformed_record_names_file_record_and_field(tokenizers):
    records = [
        {"id": "fine", "conversations": CONVERSATION},
        {"id": "odd", "conversations": [{"from": "system", "value": "x"}]},
    ]
    with pytest.raises(InputError) as caught:
        tokenize_records(records, tokenizers["v1"], "v1", 512, source="data.json")
    assert str(caught.value) == (
        "data.json: record 1 (id 'odd'): field 'conversations[0].from': "
        "role must be 'human' or 'gpt', got 'system'"
    )


def test_tokenizer_setup_follows_the_study(tiny_backbone):
    tokenizer, added = load_tokenizer(str(tiny_backbone), "v1", 300)
    assert not added
    assert tokenizer.pad_token == tokenizer.unk_token == "<unk>"
    assert tokenizer.padding_side == "right"
    assert tokenizer.model_max_length == 300
    v0_tokenizer, added = load_tokenizer(str(tiny_backbone), "v0", 300)
    assert added
    assert v0_tokenizer.pad_token == "[PAD]"
    assert v0_tokenizer.pad_token_id == len(v0_tokenizer) - 1


def test_templates_need_eos_to_be_the_literal(tiny_backbone, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    tokenizer.eos_token = "<unk>"
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(InputError, match="does not map it to its EOS token"):
        load_tokenizer(str(tmp_path), "v1", 512)
    load_tokenizer(str(tmp_path), "v0", 512)  # v0 writes no special literal


def test_chat_template_labels(tiny_backbone_factory):
    tokenizer, _ = load_tokenizer(str(tiny_backbone_factory("chat_template")), "chat_template", 512)
    (example,), _ = tokenize_records(
        [{"id": "r1", "conversations": CONVERSATION}], tokenizer, "chat_template", 512
    )
    # The chat template writes its own special tokens: the tokenizer adds no BOS.
    assert example["input_ids"][0] != tokenizer.bos_token_id
    decoded = [tokenizer.decode(run) for run in trained_runs(example)]
    assert decoded == ["A cat on a mat.<|im_end|>\n", "It is orange.<|im_end|>\n"]


def test_preview_tokens_cli(tiny_backbone, tiny_records, tmp_path, capsys):
    data = tmp_path / "data.json"
    no_answer = {"id": "e", "conversations": [{"from": "human", "value": "Anyone there?"}]}
    data.write_text(json.dumps([*tiny_records[:5], no_answer]))
    output = tmp_path / "preview.jsonl"
    argv = ["--tokenizer", str(tiny_backbone), "--template", "v1", "--input", str(data),
            "--output", str(output), "--max-length", "256", "--show", "1"]  # fmt: skip
    assert preview_tokens.main(argv) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["id"] for row in rows] == [r["id"] for r in tiny_records[:5]]
    assert all(set(row) == {"id", "input_ids", "labels"} for row in rows)
    tokenizer, _ = load_tokenizer(str(tiny_backbone), "v1", 256)
    expected, _ = tokenize_records(tiny_records[:5], tokenizer, "v1", 256)
    assert [row["labels"] for row in rows] == [ex["labels"] for ex in expected]
    out, err = capsys.readouterr()
    answer = tiny_records[0]["conversations"][1]["value"]
    assert f"ASSISTANT:[[ {answer}</s>]]" in out
    assert "5 of 6 records" in err and "no_assistant_message: 1" in err


def test_preview_tokens_bad_input_leaves_nothing(tiny_backbone, tmp_path, capsys):
    data = tmp_path / "data.json"
    data.write_text(json.dumps([{"id": "x", "conversations": "oops"}]))
    output = tmp_path / "preview.jsonl"
    argv = ["--tokenizer", str(tiny_backbone), "--template", "v1", "--input", str(data),
            "--output", str(output)]  # fmt: skip
    assert preview_tokens.main(argv) == 2
    assert not output.exists()
    assert list(tmp_path.iterdir()) == [data]
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {data}: record 0 (id 'x'): field 'conversations': must be a list, got a string"
    )


@pytest.mark.parametrize("template", ["llama_2", "v1"])  # the demo backbones' templates
def test_no_demo_record_is_skipped(tiny_backbone, template):
    """The demo data, converted as the workflow does, trains on every record."""
    import json

    from sbt.llava import convert_record
    from sbt.tokenize_chat import load_tokenizer, tokenize_records

    demo = Path(__file__).resolve().parents[1] / "resources/demo/llava_instruct_demo.json"
    records = json.loads(demo.read_text())
    for record in records:
        convert_record(record)
    tokenizer, _ = load_tokenizer(str(tiny_backbone), template, 512)  # the demo's max length
    examples, skips = tokenize_records(records, tokenizer, template, 512, source=demo)
    assert sum(skips.values()) == 0, skips
    assert len(examples) == len(records) == 300
    assert all(any(label != -100 for label in ex["labels"]) for ex in examples)


@pytest.mark.parametrize("legacy", [True, False])
def test_both_checkout_layouts_tokenize_alike(tiny_backbone, tiny_backbone_json, tiny_records,
                                              legacy):  # fmt: skip
    """tokenizer.model only (Vicuna) and with tokenizer.json (LLaMA-2): same ids and labels,
    in either mode; the modes differ after `</s>`."""
    results = []
    for path in (tiny_backbone, tiny_backbone_json):
        tokenizer, _ = load_tokenizer(str(path), "v1", 256, legacy=legacy)
        results.append(tokenize_records(tiny_records[:30], tokenizer, "v1", 256)[0])
    assert results[0] == results[1]
    after_eos = [
        tokenizer.convert_ids_to_tokens(
            ex["input_ids"][ex["input_ids"].index(tokenizer.eos_token_id) + 1]
        )
        for ex in results[0]
        if ex["input_ids"].count(tokenizer.eos_token_id) > 1
    ]
    assert after_eos and all(token.startswith("▁") is legacy for token in after_eos)
