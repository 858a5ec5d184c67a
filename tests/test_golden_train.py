"""Our tokens and labels equal the study's, token for token (golden data from its own code).

tests/golden/train_labels.json was written by scripts/golden/make_train_golden.py: the
study's `preprocess_v1` / `preprocess_llama_2` (llava/train/train.py) run under transformers
4.31 with the slow `LlamaTokenizer`, on the records of tests/golden/train_records.json (demo
records converted to text-only, plus hand-made ones: answers opening with a digit,
punctuation, a newline or a space, a first turn from gpt, unicode, a long answer, a trailing
user turn). The tokenizer fixtures are SentencePiece models built by
src/sbt/demo/backbone.py in both checkout layouts: tokenizer.model only (as Vicuna
ships) and with tokenizer.json (as LLaMA-2 ships); a third, `sp_tokenizer_nonlegacy`, is
the tokenizer.json layout with `"legacy": false` added to tokenizer_config.json, which 4.31
honours: it is compared with our `tokenizer_legacy: false`.

Records the study's own arithmetic flags ("tokenization mismatch", after which it masks the
whole record) are excluded from the comparison, and their count is pinned here. In the
non-legacy mode the `v1` arithmetic flags every multi-round record (the study's code
counts `▁US` in a round tokenized alone where the whole text has `US` after `</s>`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from sbt.common import InputError
from sbt.tokenize_chat import (
    IGNORE_INDEX,
    legacy_probe,
    load_tokenizer,
    study_legacy,
    tokenize_records,
)
from sbt.training import tokenized_cache_key

GOLDEN = Path(__file__).parent / "golden"
TEMPLATES = ("v1", "llava_llama_2")
FIXTURES = ("sp_tokenizer", "sp_tokenizer_json")
ALL_FIXTURES = (*FIXTURES, "sp_tokenizer_nonlegacy")
LEGACY = {"sp_tokenizer": True, "sp_tokenizer_json": True, "sp_tokenizer_nonlegacy": False}
# The study masks a record whose last turn is the user's (its round arithmetic then falls
# short of the sequence length); this workflow trains that record's answers.
STUDY_MISMATCHES = {fixture: {t: 1 for t in TEMPLATES} for fixture in ALL_FIXTURES}
STUDY_MISMATCHES["sp_tokenizer_nonlegacy"]["v1"] = 25  # every multi-round record


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((GOLDEN / "train_labels.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return json.loads((GOLDEN / "train_records.json").read_text(encoding="utf-8"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_golden_data_belongs_to_the_committed_inputs(golden):
    assert golden["versions"]["transformers"] == "4.31.0"
    assert golden["records_sha256"] == sha256(GOLDEN / "train_records.json")
    for name in ALL_FIXTURES:
        files = {f.name: sha256(f) for f in sorted((GOLDEN / name).iterdir()) if f.is_file()}
        assert golden["fixtures"][name]["sha256"] == files, f"regenerate golden data ({name})"
        assert golden["fixtures"][name]["legacy"] is LEGACY[name]
    assert golden["fixtures"]["sp_tokenizer"]["layout"] == "model"
    assert golden["fixtures"]["sp_tokenizer_json"]["layout"] == "model+json"


@pytest.mark.parametrize("fixture", ALL_FIXTURES)
@pytest.mark.parametrize("template", TEMPLATES)
def test_tokens_and_labels_equal_the_studys(golden, records, template, fixture):
    expected = golden["templates"][template][fixture]
    max_length = golden["model_max_length"]
    legacy = LEGACY[fixture]
    # tokenizer_legacy "auto" (the default) decides as 4.31 did, from the checkout's config.
    assert study_legacy(GOLDEN / fixture) is legacy
    tokenizer, added = load_tokenizer(str(GOLDEN / fixture), template, max_length, legacy="auto")
    assert not added
    examples, skips = tokenize_records(records, tokenizer, template, max_length)
    assert sum(skips.values()) == 0, skips
    ours = {str(example["id"]): example for example in examples}
    assert sorted(ours) == sorted(expected) and len(ours) == len(records)

    flagged = sorted(record_id for record_id, e in expected.items() if e["mismatch"])
    assert len(flagged) == STUDY_MISMATCHES[fixture][template], flagged
    assert "hand-10" in flagged
    compared = [record_id for record_id in expected if record_id not in flagged]
    assert len(compared) == len(records) - len(flagged) >= 20
    for record_id in compared:
        assert ours[record_id]["input_ids"] == expected[record_id]["input_ids"], record_id
        assert ours[record_id]["labels"] == expected[record_id]["labels"], record_id
    # The study masked the flagged records entirely; we train them. (Their ids agree too in
    # legacy mode; 4.31's non-legacy slow tokenizer cuts the "▁" off the first piece after a
    # special token, which can leave no vocabulary piece: `</s>USER` -> `</s>`, `<unk>`.)
    for record_id in flagged:
        if legacy:
            assert ours[record_id]["input_ids"] == expected[record_id]["input_ids"]
        assert set(expected[record_id]["labels"]) == {IGNORE_INDEX}
        assert any(label != IGNORE_INDEX for label in ours[record_id]["labels"])


@pytest.mark.parametrize("fixture", FIXTURES)
def test_lone_space_token_opening_an_answer_is_trained(golden, records, fixture):
    """`"... ASSISTANT: 2 dogs"`: the space is a token of its own, and the study trains it."""
    tokenizer, _ = load_tokenizer(str(GOLDEN / fixture), "v1", 2048)
    (example,), _ = tokenize_records(
        [r for r in records if r["id"] == "hand-01"], tokenizer, "v1", 2048
    )
    tokens = tokenizer.convert_ids_to_tokens(example["input_ids"])
    first = next(i for i, label in enumerate(example["labels"]) if label != IGNORE_INDEX)
    assert tokens[first - 1 : first + 2] == [":", "▁", "2"]
    assert example["labels"][first + 1] != IGNORE_INDEX


@pytest.mark.parametrize("fixture", FIXTURES)
def test_non_legacy_differs_after_special_tokens(golden, records, fixture):
    legacy, _ = load_tokenizer(str(GOLDEN / fixture), "v1", 2048, legacy=True)
    newer, _ = load_tokenizer(str(GOLDEN / fixture), "v1", 2048, legacy=False)
    assert legacy_probe(legacy) is True and legacy_probe(newer) is False
    probe = "</s>USER"
    assert legacy.tokenize(probe)[1].startswith("▁")
    assert not newer.tokenize(probe)[1].startswith("▁")
    # Multi-round records differ right after each "</s>"; single-round ones do not.
    multi = [r for r in records if r["id"] == "hand-09"]
    (a,), _ = tokenize_records(multi, legacy, "v1", 2048)
    (b,), _ = tokenize_records(multi, newer, "v1", 2048)
    assert a["input_ids"] == golden["templates"]["v1"][fixture]["hand-09"]["input_ids"]
    assert a["input_ids"] != b["input_ids"]
    after_eos = a["input_ids"].index(legacy.eos_token_id) + 1
    assert legacy.convert_ids_to_tokens(a["input_ids"][after_eos]).startswith("▁")
    assert not newer.convert_ids_to_tokens(b["input_ids"][after_eos]).startswith("▁")
    # The tokenized-data cache tells the two apart.
    keys = {tokenized_cache_key("0" * 64, t, "v1", 2048) for t in (legacy, newer)}
    assert len(keys) == 2


def generic_copy(source: Path, target: Path, legacy: bool) -> Path:
    """The tokenizer saved as a plain PreTrainedTokenizerFast, which ignores `legacy`."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tokenizer = AutoTokenizer.from_pretrained(str(source), legacy=legacy)
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend_tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    ).save_pretrained(target)
    return target


@pytest.mark.parametrize("behaves_legacy", [False, True])
def test_probe_stops_a_tokenizer_that_contradicts_the_setting(tmp_path, behaves_legacy):
    path = generic_copy(GOLDEN / "sp_tokenizer_json", tmp_path / "tok", behaves_legacy)
    # As set, it loads.
    tokenizer, _ = load_tokenizer(str(path), "v1", 2048, legacy=behaves_legacy)
    assert legacy_probe(tokenizer) is behaves_legacy
    # The other way round: one line naming the tokenizer and the config key.
    with pytest.raises(InputError) as error:
        load_tokenizer(str(path), "v1", 2048, legacy=not behaves_legacy)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: tokenizer_legacy is {str(not behaves_legacy).lower()}")
    assert f"set the backbone's tokenizer_legacy to {str(behaves_legacy).lower()}" in message


def test_preview_tokens_takes_the_setting(tmp_path, records, capsys):
    from sbt import preview_tokens

    data = tmp_path / "data.json"
    data.write_text(json.dumps(records[:3]), encoding="utf-8")
    base = ["--template", "v1", "--input", str(data), "--output", str(tmp_path / "p.jsonl")]
    fixture = str(GOLDEN / "sp_tokenizer")
    assert preview_tokens.main(["--tokenizer", fixture, *base]) == 0
    assert preview_tokens.main(["--tokenizer", fixture, "--tokenizer-legacy", "false", *base]) == 0
    generic = generic_copy(GOLDEN / "sp_tokenizer", tmp_path / "generic", legacy=False)
    capsys.readouterr()
    argv = ["--tokenizer", str(generic), "--tokenizer-legacy", "true", *base]
    assert preview_tokens.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {generic}: tokenizer_legacy is true") and "\n" not in err
