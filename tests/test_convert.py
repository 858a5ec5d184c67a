"""Text-only conversion: the published rule byte for byte, validation, statistics, options."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from bench_convert import PUBLISHED_SNIPPET

from sbt import convert as convert_text_only
from sbt import llava
from sbt.common import InputError
from sbt.demo.llava import DEFAULT_OUTPUT as DEMO
from sbt.demo.llava import generate_records


def turn(role: str, value: str) -> dict:
    return {"from": role, "value": value}


# Records covering every placement of the tag and the other quirks of real LLaVA files.
EDGE_RECORDS = [
    {
        "id": "000000033471",
        "image": "000000033471.jpg",
        "conversations": [
            turn("human", "<image>\nWhat are the colors of the bus in the image?"),
            turn("gpt", "The bus in the image is white and red."),
            turn("human", "What feature can be seen on the back of the bus?"),
            turn("gpt", "The back of the bus features an advertisement."),
        ],
    },
    {"id": 52846, "image": "000000052846.jpg", "conversations": [
        turn("human", "Where is the cat sitting?\n<image>"), turn("gpt", "On a suitcase.")]},
    {"id": "mid", "image": "a.jpg", "conversations": [
        turn("human", "Look at <image> and tell me"), turn("gpt", "Sure.")]},
    {"id": "twice", "image": "b.jpg", "conversations": [
        turn("human", "<image>\n<image>\nCompare both."), turn("gpt", "They match.")]},
    {"id": "later", "image": "c.jpg", "conversations": [
        turn("human", "<image>\nFirst?"), turn("gpt", "Yes."),
        turn("human", "And this <image> one?"), turn("gpt", "Also <image> yes.")]},
    {"id": "i6IyJda_0", "conversations": [
        turn("human", "How do I boil an egg?"), turn("gpt", "Put it in boiling water.")]},
    {"id": "gptfirst_1", "conversations": [
        turn("gpt", "Hello <image>! How can I help?"), turn("human", "Tell me a joke."),
        turn("gpt", "Why did the chicken cross the road?")]},
    {"id": "unicode_é", "image": "d.jpg", "conversations": [
        turn("human", "<image>\nQu'est-ce que c'est ? 猫 🐈 \u00a0naïve"),
        turn("gpt", "C'est un chat — très mignon. \U0001f600")]},
    {"id": 7, "image": "e.jpg", "extra": {"source": "coco", "tags": [1, 2]},
     "conversations": [turn("human", "<image>"), turn("gpt", "")], "zz_last": None},
    {"conversations": [turn("human", "no id here <image>"), turn("gpt", "ok")], "id": "keys"},
    {"id": "keytag", "note": "keep this <image>", "image": "<image>.jpg",
     "conversations": [turn("human", "<image>\nHi"), turn("gpt", "Hello")]},
]  # fmt: skip


def write_json_file(path: Path, obj: object, **dump_kwargs) -> Path:
    path.write_text(json.dumps(obj, **dump_kwargs), encoding="utf-8")
    return path


def run_published_snippet(source: Path, tmp_path: Path) -> list:
    """The study's own conversion loop, run as written, for comparison."""
    out = tmp_path / f"{source.stem}.snippet.json"
    subprocess.run([sys.executable, "-c", PUBLISHED_SNIPPET, str(source), str(out)], check=True)
    return json.loads(out.read_text(encoding="utf-8"))


def read_output(path: Path) -> list:
    return json.loads(path.read_text(encoding="utf-8"))


def key_orders(records: list) -> list:
    return [[list(record), [list(t) for t in record["conversations"]]] for record in records]


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = convert_text_only.main(args)
    return code, capsys.readouterr().err


# -- the published rule ---------------------------------------------------------------


@pytest.mark.parametrize(
    "layout",
    [
        {"indent": 4},  # as the published files are written (ASCII escapes)
        {"ensure_ascii": False},  # compact, raw UTF-8
        {"indent": "\t", "separators": (" ,", " :  "), "ensure_ascii": False},  # odd spacing
    ],
    ids=["indent4", "compact-utf8", "odd-whitespace"],
)
def test_default_equals_published_snippet(tmp_path, layout):
    source = write_json_file(tmp_path / "raw.json", EDGE_RECORDS, **layout)
    expected = run_published_snippet(source, tmp_path)
    out = tmp_path / "out.json"
    llava.convert([source], out)
    produced = read_output(out)
    assert produced == expected
    assert key_orders(produced) == key_orders(expected)
    assert [type(r["id"]) for r in produced] == [type(r["id"]) for r in EDGE_RECORDS]


def test_default_values_exactly(tmp_path):
    source = write_json_file(tmp_path / "raw.json", EDGE_RECORDS, indent=4)
    out = tmp_path / "out.json"
    llava.convert([source], out)
    first_turns = [r["conversations"][0]["value"] for r in read_output(out)]
    assert first_turns == [
        "\nWhat are the colors of the bus in the image?",
        "Where is the cat sitting?\n",
        "Look at  and tell me",
        "\n\nCompare both.",
        "\nFirst?",
        "How do I boil an egg?",
        "Hello ! How can I help?",
        "\nQu'est-ce que c'est ? 猫 🐈 \u00a0naïve",
        "",
        "no id here ",
        "\nHi",
    ]
    produced = read_output(out)
    later = produced[4]["conversations"]
    assert [t["value"] for t in later[2:]] == ["And this <image> one?", "Also <image> yes."]
    keytag = produced[10]
    assert keytag["note"] == "keep this <image>" and keytag["image"] == "<image>.jpg"
    assert produced[1] == {**EDGE_RECORDS[1], "conversations": [
        turn("human", "Where is the cat sitting?\n"), turn("gpt", "On a suitcase.")]}  # fmt: skip


def test_escaped_tags_and_lone_surrogates_match_snippet(tmp_path):
    # \u003c spells "<": the decoded value holds a tag the source text does not show literally.
    raw = (
        '[{"id": "esc", "conversations": [{"from": "human", "value": "\\u003cimage>\\nWhat?"},'
        ' {"from": "gpt", "value": "<image> stays"}]},\n'
        ' {"id": "mixed", "conversations": [{"from": "human", "value": "<im\\u0061ge>x<image>"},'
        ' {"from": "gpt", "value": "y"}]},\n'
        ' {"id": "sur", "conversations": [{"from": "human", "value": "<image>\\ud800 lone"},'
        ' {"from": "gpt", "value": "\\udfff\\u003e"}]}]'
    )
    source = tmp_path / "raw.json"
    source.write_text(raw, encoding="utf-8")
    expected = run_published_snippet(source, tmp_path)
    out = tmp_path / "out.json"
    llava.convert([source], out)
    produced = read_output(out)
    assert produced == expected
    assert produced[0]["conversations"][0]["value"] == "\nWhat?"
    assert produced[0]["conversations"][1]["value"] == "<image> stays"
    assert produced[1]["conversations"][0]["value"] == "x"
    assert produced[2]["conversations"][0]["value"] == "\ud800 lone"
    assert produced[2]["conversations"][1]["value"] == "\udfff>"
    assert "\\ud800" in out.read_text(encoding="utf-8")  # kept escaped: no UTF-8 form


def test_many_records_with_multibyte_characters_match_snippet(tmp_path):
    records = list(generate_records(400, seed=5))
    records[17]["conversations"][1]["value"] += " ünïcödé ✓ 猫"
    source = write_json_file(tmp_path / "raw.json", records, indent=4, ensure_ascii=False)
    expected = run_published_snippet(source, tmp_path)
    out = tmp_path / "out.json"
    stats = llava.convert([source], out)
    assert read_output(out) == expected
    assert stats["records_out"] == 400
    assert stats["sources"][0]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


def test_huge_record_is_read_whole(tmp_path):
    big = {
        "id": "big",
        "conversations": [turn("human", "<image>\n" + "x" * 200_000), turn("gpt", "y")],
    }
    source = write_json_file(tmp_path / "raw.json", [big, EDGE_RECORDS[0]])
    out = tmp_path / "out.json"
    llava.convert([source], out)
    assert read_output(out) == run_published_snippet(source, tmp_path)


# The converted demo collection, byte for byte (json.dump(records, indent=4), ASCII escapes).
DEMO_OUTPUT_SHA256 = "d2653ef4984596d40cd5af7689ec2972701130a68bb794ea2072272b1fa3c71c"


def snippet_bytes(source: Path, tmp_path: Path) -> bytes:
    """The bytes the study's own conversion loop writes for ``source``."""
    run_published_snippet(source, tmp_path)
    return (tmp_path / f"{source.stem}.snippet.json").read_bytes()


def test_output_bytes_are_the_snippets(tmp_path):
    out = tmp_path / "out.json"
    llava.convert([DEMO], out)
    assert out.read_bytes() == snippet_bytes(DEMO, tmp_path)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == DEMO_OUTPUT_SHA256


# Values whose encoding could differ between one json.dump of the list and one
# json.dumps(record, indent=4) a record: escapes, nesting, numbers.
BYTE_EDGE_RECORDS = [
    {"id": "nested", "empty_object": {}, "empty_list": [], "deep": {"a": [{}, [], [[]], {"b": {}}]},
     "conversations": [turn("human", "<image>\n"), turn("gpt", "")]},
    {"id": "numbers", "floats": [0.1, -2.5e-300, 1e300, 3.0, -0.0], "big": 2**70, "neg": -(2**65),
     "flags": [True, False, None], "conversations": [turn("human", "x<image>y")]},
    {"id": "unicode_é猫", "conversations": [
        turn("human", "naïve 猫 🐈 \u00a0 \u2028 \t tab \\ back \" quote \x00 \x1f"),
        turn("gpt", "\U0001f600 \ufeff")]},
    {"id": 0, "conversations": [turn("gpt", "<image>")], "image": "0.jpg"},
]  # fmt: skip


@pytest.mark.parametrize(
    "layout",
    [{"indent": 4}, {"ensure_ascii": False}, {"indent": 1, "ensure_ascii": False}],
    ids=["indent4", "compact-utf8", "indent1-utf8"],
)
def test_edge_values_are_byte_exact(tmp_path, layout):
    source = write_json_file(tmp_path / "raw.json", BYTE_EDGE_RECORDS + EDGE_RECORDS, **layout)
    out = tmp_path / "out.json"
    llava.convert([source], out)
    assert out.read_bytes() == snippet_bytes(source, tmp_path)
    assert out.read_bytes().isascii()


def test_lone_surrogates_and_nan_are_byte_exact(tmp_path):
    raw = (
        '[{"id": "sur", "x": [NaN, Infinity, -Infinity, 1E5, 12345678901234567890123],'
        ' "conversations": [{"from": "human", "value": "<image>\\ud800 \\udfff\\udbff\\udc00"},'
        ' {"from": "gpt", "value": "\\ud83d"}]}]'
    )
    source = tmp_path / "raw.json"
    source.write_text(raw, encoding="utf-8")
    out = tmp_path / "out.json"
    llava.convert([source], out)
    assert out.read_bytes() == snippet_bytes(source, tmp_path)


@pytest.mark.parametrize("count", [0, 1, 2])
def test_small_lists_are_byte_exact(tmp_path, count):
    source = write_json_file(tmp_path / "raw.json", EDGE_RECORDS[:count], indent=4)
    out = tmp_path / "out.json"
    llava.convert([source], out)
    assert out.read_bytes() == snippet_bytes(source, tmp_path)


def test_options_and_subsampling_keep_the_snippets_layout(tmp_path):
    source = write_json_file(tmp_path / "raw.json", EDGE_RECORDS)
    out = tmp_path / "out.json"
    options = llava.ConvertOptions(max_records=4, seed=1, drop_image_key=True)
    llava.convert([source], out, options=options)
    records = json.loads(out.read_bytes())
    assert len(records) == 4 and out.read_bytes() == json.dumps(records, indent=4).encode()


def test_output_is_a_json_list_and_empty_list_works(tmp_path):
    source = write_json_file(tmp_path / "raw.json", [])
    out = tmp_path / "out.json"
    stats = llava.convert([source], out, stats_path=tmp_path / "stats.json")
    assert out.read_text() == "[]"  # as json.dump writes an empty list
    assert stats["records_out"] == 0 and stats["rounds_mean"] is None
    saved = json.loads((tmp_path / "stats.json").read_text())
    assert saved["provenance"]["stage"] == "convert_text_only"
    assert {k: v for k, v in saved.items() if k != "provenance"} == stats


def test_bom_and_surrounding_whitespace_are_accepted(tmp_path):
    source = tmp_path / "raw.json"
    source.write_bytes(b"\xef\xbb\xbf \n\t" + json.dumps(EDGE_RECORDS[:2]).encode() + b"\n\n ")
    out = tmp_path / "out.json"
    llava.convert([source], out)
    assert read_output(out)[0]["conversations"][0]["value"].startswith("\nWhat are")


# -- validation -----------------------------------------------------------------------

GOOD = {"id": "ok", "conversations": [turn("human", "hi"), turn("gpt", "hello")]}

INVALID_CASES = {
    "top-level-object": ('{"id": "x"}', ["top level is an object"]),
    "top-level-string": ('"x"', ["top level is a string"]),
    "empty-file": ("", ["empty file"]),
    "record-not-object": (json.dumps([GOOD, 5]), ["record 1:", "must be an object, got a number"]),
    "missing-conversations": (
        json.dumps([GOOD, {"id": "r1"}]),
        ["record 1 (id 'r1')", "field 'conversations'", "missing"],
    ),
    "conversations-not-list": (
        json.dumps([{"id": 3, "conversations": "hi"}]),
        ["record 0 (id 3)", "field 'conversations'", "must be a list, got a string"],
    ),
    "conversations-empty": (
        json.dumps([{"id": "e", "conversations": []}]),
        ["record 0 (id 'e')", "field 'conversations'", "empty list"],
    ),
    "turn-not-object": (
        json.dumps([{"id": "t", "conversations": [turn("human", "a"), "b"]}]),
        ["field 'conversations[1]'", "turn must be an object, got a string"],
    ),
    "turn-without-from": (
        json.dumps([GOOD, GOOD, {"id": "f", "conversations": [{"value": "a"}]}]),
        ["record 2 (id 'f')", "field 'conversations[0].from'", "missing"],
    ),
    "turn-without-value": (
        json.dumps([{"id": "v", "conversations": [{"from": "human"}]}]),
        ["field 'conversations[0].value'", "missing"],
    ),
    "value-not-string": (
        json.dumps([{"id": "n", "conversations": [turn("human", "a"), {"from": "gpt", "value": None}]}]),
        ["field 'conversations[1].value'", "must be a string, got null"],
    ),
    "unknown-role": (
        json.dumps([{"id": "u", "conversations": [turn("user", "a")]}]),
        ["field 'conversations[0].from'", "unknown role 'user'"],
    ),
    "bad-id": (
        json.dumps([{"id": [1], "conversations": [turn("human", "a")]}]),
        ["record 0:", "field 'id'", "must be a string or an integer, got a list"],
    ),
    "bool-id": (
        json.dumps([{"id": True, "conversations": [turn("human", "a")]}]),
        ["field 'id'", "got a boolean"],
    ),
    "truncated-inside-record": (
        json.dumps([GOOD, GOOD])[:-20],
        ["record 1:", "truncated JSON", "ends inside this record"],
    ),
    "truncated-after-comma": (json.dumps([GOOD]) [:-1] + ", ", ["record 1:", "truncated JSON"]),
    "truncated-no-bracket": (json.dumps([GOOD])[:-1], ["truncated JSON", "without the closing ']'"]),
    "malformed": ('[{"id": 1,, "x": 2}]', ["record 0:", "malformed JSON at byte 10 (line 1)"]),
    "missing-comma": (json.dumps([GOOD]) [:-1] + " {} ]", ["malformed JSON", "expected ',' or ']'"]),
    "trailing-data": (json.dumps([GOOD]) + " []", ["data after the closing ']'"]),
    "trailing-comma": (json.dumps([GOOD])[:-1] + ",]", ["record 1:", "malformed JSON"]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(INVALID_CASES))
def test_invalid_input_fails_with_one_line_and_no_output(tmp_path, capsys, case):
    content, expected_parts = INVALID_CASES[case]
    source = tmp_path / "bad.json"
    source.write_text(content, encoding="utf-8")
    out, stats = tmp_path / "out" / "data.json", tmp_path / "out" / "data.stats.json"
    code, err = run_cli(
        ["--input", str(source), "--output", str(out), "--stats", str(stats)], capsys
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {source}: ")
    for part in expected_parts:
        assert part in lines[0]
    assert not out.exists() and not stats.exists()
    assert list((tmp_path / "out").iterdir()) == []  # no temporary file left behind


SCHEMA_CASES = ["record-not-object", "missing-conversations", "conversations-not-list",
                "conversations-empty", "turn-not-object", "turn-without-from",
                "turn-without-value", "value-not-string", "unknown-role", "bad-id", "bool-id"]  # fmt: skip


@pytest.mark.parametrize("case", SCHEMA_CASES)
def test_training_rejects_what_conversion_rejects_with_the_same_line(tmp_path, case):
    """One schema (sbt.records): both training loaders fail on the converter's line."""
    from sbt.lazy_records import read_records
    from sbt.tokenize_chat import load_records

    source = tmp_path / "bad.json"
    source.write_text(INVALID_CASES[case][0], encoding="utf-8")
    errors = []
    for load in (
        lambda path: llava.convert([path], tmp_path / "o.json"),
        load_records,
        read_records,
    ):
        with pytest.raises(InputError) as caught:
            load(source)
        errors.append(str(caught.value))
    assert errors[0] == errors[1] == errors[2]


def test_invalid_utf8_and_missing_file(tmp_path, capsys):
    source = tmp_path / "bad.json"
    source.write_bytes(b'[{"id": "\xff", "conversations": []}]')
    code, err = run_cli(["--input", str(source), "--output", str(tmp_path / "o.json")], capsys)
    assert code == 2 and "not valid UTF-8 at byte 9" in err
    code, err = run_cli(["--input", str(tmp_path / "nope.json"), "--output", "o.json"], capsys)
    assert code == 2 and "nope.json: no such file" in err


def test_byte_offset_counts_multibyte_characters(tmp_path):
    text = (
        '[\n{"id": "é猫", "conversations": [{"from": "human", "value": "x"}]},\n{"id": 2 "a": 1}\n]'
    )
    source = tmp_path / "bad.json"
    source.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        llava.convert([source], tmp_path / "o.json")
    offset = len(text[: text.index('"a"')].encode("utf-8"))  # where the comma is missing
    assert f"byte {offset} (line 3)" in str(caught.value)
    assert "record 1:" in str(caught.value)


def test_script_exits_2_as_a_process(tmp_path):
    source = tmp_path / "bad.json"
    source.write_text(json.dumps([{"id": "x", "conversations": [turn("robot", "hi")]}]))
    out = tmp_path / "o.json"
    done = subprocess.run(
        [sys.executable, "-m", "sbt.convert", "--input", str(source), "--output", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: {source}: record 0 (id 'x'): field 'conversations[0].from': "
        "unknown role 'robot' (expected 'human' or 'gpt')"
    )
    assert not out.exists()


def test_failure_keeps_a_previous_output_untouched(tmp_path):
    source = write_json_file(tmp_path / "bad.json", [GOOD, {"id": "b"}])
    out = tmp_path / "o.json"
    out.write_text("previous")
    with pytest.raises(InputError):
        llava.convert([source], out)
    assert out.read_text() == "previous"


# -- statistics -----------------------------------------------------------------------


def test_statistics_on_hand_written_records(tmp_path):
    records = [
        {"id": "a", "image": "a.jpg", "conversations": [
            turn("human", "<image>\nWhat?"), turn("gpt", "A cat."),  # 6 + 6 chars
            turn("human", "Color <image>?"), turn("gpt", "Gray.")]},  # 14 + 5 chars, 1 tag left
        {"id": 1, "conversations": [
            turn("gpt", "Hi!"), turn("human", "Hello"), turn("gpt", "  ")]},  # gpt first, empty
        {"id": "a", "image": "b.jpg", "conversations": [
            turn("human", "<image><image>"), turn("gpt", "Two.")]},  # two tags, empty after
        {"id": "1", "conversations": [turn("human", "Only a question")]},  # no round
    ]  # fmt: skip
    source = write_json_file(tmp_path / "raw.json", records)
    stats_path = tmp_path / "stats.json"
    stats = llava.convert([source], tmp_path / "out.json", stats_path=stats_path)
    human_chars = [6, 14, 5, 0, 15]
    assistant_chars = [6, 5, 3, 2, 4]
    assert stats == {
        **stats,
        "records_in": 4,
        "records_out": 4,
        "skipped_invalid": 0,
        "skipped": [],
        "rounds_total": 4,
        "rounds_mean": 1.0,
        "records_with_image": 2,
        "records_without_image": 2,
        "image_tags_removed": 3,
        "image_tags_left_in_later_turns": 1,
        "first_turn_from_gpt": 1,
        "empty_messages": 2,
        "human_messages": 5,
        "assistant_messages": 5,
        "mean_chars_human": round(sum(human_chars) / 5, 4),
        "mean_chars_assistant": round(sum(assistant_chars) / 5, 4),
        "duplicate_ids": {"count": 1, "first": ["a"]},  # 1 and "1" are different ids
        "subsample": None,
    }
    assert stats["options"] == {
        "strip_newline": False,
        "all_turns": False,
        "drop_image_key": False,
        "skip_invalid": False,
        "max_records": None,
        "seed": 0,
    }
    assert stats["sources"] == [
        {
            "path": str(source),
            "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
            "bytes": source.stat().st_size,
            "records": 4,
            "skipped_invalid": 0,
        }
    ]
    saved = json.loads(stats_path.read_text())
    assert saved["image_tags_removed"] == 3 and "packages" in saved["provenance"]


def test_duplicate_listing_is_capped_but_count_exact(tmp_path, monkeypatch):
    monkeypatch.setattr(llava, "MAX_LISTED_DUPLICATES", 2)
    records = [{**GOOD, "id": f"d{n % 5}"} for n in range(20)]
    stats = llava.convert([write_json_file(tmp_path / "r.json", records)], tmp_path / "o.json")
    assert stats["duplicate_ids"] == {"count": 15, "first": ["d0", "d1"]}


def test_cli_prints_summary_and_writes_stats(tmp_path, capsys):
    source = write_json_file(tmp_path / "raw.json", EDGE_RECORDS)
    stats = tmp_path / "s.json"
    code, err = run_cli(
        ["--input", str(source), "--output", str(tmp_path / "o.json"), "--stats", str(stats)],
        capsys,
    )
    assert code == 0
    assert "11 records in, 11 out" in err and "tags removed 11" in err
    assert json.loads(stats.read_text())["records_out"] == 11


def test_progress_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(llava, "PROGRESS_EVERY", 100)
    source = write_json_file(tmp_path / "raw.json", list(generate_records(350, seed=2)))
    calls = []
    llava.convert([source], tmp_path / "o.json", progress=lambda n, b: calls.append((n, b)))
    assert [n // 100 for n, _ in calls] == [1, 2, 3]
    assert all(b > 0 for _, b in calls)


# -- options --------------------------------------------------------------------------


def test_strip_newline(tmp_path):
    source = write_json_file(tmp_path / "raw.json", EDGE_RECORDS)
    out = tmp_path / "o.json"
    stats = llava.convert([source], out, options=llava.ConvertOptions(strip_newline=True))
    produced = read_output(out)
    assert [r["conversations"][0]["value"] for r in produced][:5] == [
        "What are the colors of the bus in the image?",
        "Where is the cat sitting?",
        "Look at  and tell me",
        "Compare both.",
        "First?",
    ]
    assert produced[5] == EDGE_RECORDS[5]  # no tag: untouched, even its whitespace
    assert produced[4]["conversations"][2]["value"] == "And this <image> one?"
    assert stats["options"]["strip_newline"] is True


def test_all_turns(tmp_path):
    source = write_json_file(tmp_path / "raw.json", EDGE_RECORDS, indent=2)
    out = tmp_path / "o.json"
    stats = llava.convert([source], out, options=llava.ConvertOptions(all_turns=True))
    produced = read_output(out)
    later = [t["value"] for t in produced[4]["conversations"]]
    assert later == ["\nFirst?", "Yes.", "And this  one?", "Also  yes."]
    assert stats["image_tags_left_in_later_turns"] == 0
    assert stats["image_tags_removed"] == 13
    assert produced[10]["note"] == "keep this <image>"  # only turns change
    assert not any("<image>" in t["value"] for r in produced for t in r["conversations"])


def test_drop_image_key(tmp_path):
    source = write_json_file(tmp_path / "raw.json", EDGE_RECORDS)
    out = tmp_path / "o.json"
    stats = llava.convert([source], out, options=llava.ConvertOptions(drop_image_key=True))
    produced = read_output(out)
    assert not any("image" in record for record in produced)
    assert list(produced[8]) == ["id", "extra", "conversations", "zz_last"]
    assert stats["records_with_image"] == 8  # counted from the source records
    assert stats["image_tags_removed"] == 11


def test_skip_invalid_counts_and_lists(tmp_path, monkeypatch):
    monkeypatch.setattr(llava, "MAX_LISTED", 3)
    bad = [
        5,
        {"id": "nc"},
        {"id": "role", "conversations": [turn("system", "x")]},
        {"id": 9, "conversations": [turn("human", 1)]},
        {"id": "empty", "conversations": []},
    ]
    records = [GOOD, *bad, {**GOOD, "id": "ok2"}]
    source = write_json_file(tmp_path / "raw.json", records)
    out = tmp_path / "o.json"
    stats = llava.convert([source], out, options=llava.ConvertOptions(skip_invalid=True))
    assert [r["id"] for r in read_output(out)] == ["ok", "ok2"]
    assert stats["records_in"] == 7 and stats["records_out"] == 2
    assert stats["skipped_invalid"] == 5
    assert stats["sources"][0]["skipped_invalid"] == 5
    assert stats["skipped"] == [
        {"file": str(source), "index": 1, "id": None,
         "reason": "record must be an object, got a number"},
        {"file": str(source), "index": 2, "id": "nc", "reason": "field 'conversations': missing"},
        {"file": str(source), "index": 3, "id": "role",
         "reason": "field 'conversations[0].from': unknown role 'system' (expected 'human' or 'gpt')"},
    ]  # fmt: skip


def test_skip_invalid_still_fails_on_broken_json(tmp_path):
    source = tmp_path / "raw.json"
    source.write_text(json.dumps([GOOD, GOOD])[:-5])
    with pytest.raises(InputError, match="truncated JSON"):
        llava.convert(
            [source], tmp_path / "o.json", options=llava.ConvertOptions(skip_invalid=True)
        )


def test_subsampling_is_seeded_and_keeps_order(tmp_path):
    records = [{**GOOD, "id": n} for n in range(50)]
    source = write_json_file(tmp_path / "raw.json", records)

    def sample(seed: int, name: str) -> tuple[bytes, dict]:
        out = tmp_path / name
        options = llava.ConvertOptions(max_records=10, seed=seed)
        stats = llava.convert([source], out, options=options)
        return out.read_bytes(), stats

    first, stats = sample(3, "a.json")
    again, _ = sample(3, "b.json")
    other, _ = sample(4, "c.json")
    assert first == again and first != other
    ids = [record["id"] for record in json.loads(first)]
    assert len(ids) == 10 and ids == sorted(ids) and len(set(ids)) == 10
    assert stats["records_out"] == 10 and stats["records_in"] == 50
    assert stats["rounds_total"] == 10
    assert stats["subsample"] == {
        "max_records": 10,
        "seed": 3,
        "records_before": 50,
        "applied": True,
    }


def test_subsample_larger_than_input_keeps_everything(tmp_path):
    source = write_json_file(tmp_path / "raw.json", EDGE_RECORDS)
    out = tmp_path / "o.json"
    stats = llava.convert([source], out, options=llava.ConvertOptions(max_records=1000))
    assert read_output(out) == run_published_snippet(source, tmp_path)
    assert stats["subsample"]["applied"] is False and stats["records_out"] == 11


def test_subsampling_applies_after_validation(tmp_path):
    records = [GOOD, {"id": "bad"}, {**GOOD, "id": "ok2"}]
    source = write_json_file(tmp_path / "raw.json", records)
    options = llava.ConvertOptions(max_records=2, skip_invalid=True)
    stats = llava.convert([source], tmp_path / "o.json", options=options)
    assert stats["subsample"]["records_before"] == 2 and stats["records_out"] == 2


def test_several_inputs_are_concatenated_in_order(tmp_path, capsys):
    sources = [
        write_json_file(tmp_path / "conversation.json", EDGE_RECORDS[:4], indent=4),
        write_json_file(tmp_path / "detail.json", []),
        write_json_file(tmp_path / "complex.json", EDGE_RECORDS[4:], ensure_ascii=False),
    ]
    out = tmp_path / "o.json"
    stats = llava.convert(sources, out)
    expected = [r for s in sources for r in run_published_snippet(s, tmp_path)]
    assert read_output(out) == expected
    assert [s["records"] for s in stats["sources"]] == [4, 0, 7]
    assert [s["path"] for s in stats["sources"]] == [str(s) for s in sources]
    assert stats["records_in"] == 11

    broken = write_json_file(tmp_path / "broken.json", [GOOD, {"id": "x", "conversations": 1}])
    code, err = run_cli(
        ["--input", str(sources[0]), str(broken), "--output", str(tmp_path / "z.json")], capsys
    )
    assert code == 2
    assert f"error: {broken}: record 1 (id 'x'): field 'conversations'" in err
    assert not (tmp_path / "z.json").exists()


def test_cli_options_reach_the_converter(tmp_path, capsys):
    source = write_json_file(tmp_path / "raw.json", EDGE_RECORDS)
    stats_path = tmp_path / "s.json"
    args = [
        "--input",
        str(source),
        "--output",
        str(tmp_path / "o.json"),
        "--stats",
        str(stats_path),
    ]
    flags = ["--strip-newline", "--all-turns", "--drop-image-key", "--skip-invalid"]
    code, _ = run_cli([*args, *flags, "--max-records", "5", "--seed", "7", "--quiet"], capsys)
    assert code == 0
    assert json.loads(stats_path.read_text())["options"] == {
        "strip_newline": True,
        "all_turns": True,
        "drop_image_key": True,
        "skip_invalid": True,
        "max_records": 5,
        "seed": 7,
    }
    with pytest.raises(SystemExit):
        convert_text_only.parse_args([*args, "--max-records", "-1"])


def test_convert_record_reports_invalid_records():
    record = {"id": "x", "conversations": [turn("human", "<image>\nHi"), turn("gpt", "Yo")]}
    counts = llava.convert_record(record)
    assert record["conversations"][0]["value"] == "\nHi"
    assert counts["tags_removed"] == 1 and counts["rounds"] == 1
    with pytest.raises(ValueError, match=r"conversations\[0\].value"):
        llava.convert_record({"conversations": [{"from": "human", "value": 3}]})


# -- larger inputs ---------------------------------------------------------------------


def mixed_records(count: int, seed: int) -> list:
    """Generated records with the edge cases mixed in."""
    records = list(generate_records(count, seed=seed))
    step = count // len(EDGE_RECORDS) + 1
    for number, edge in enumerate(EDGE_RECORDS):
        records.insert(5 + number * step, json.loads(json.dumps(edge)))
    return records


@pytest.mark.parametrize("layout", [{"indent": 4}, {"ensure_ascii": False}])
def test_mixed_records_match_snippet(tmp_path, layout):
    records = mixed_records(600, seed=11)
    records[450]["conversations"][1]["value"] += " ünïcödé ✓ 猫 \U0001f600"
    source = write_json_file(tmp_path / "raw.json", records, **layout)
    stats = llava.convert([source], tmp_path / "o.json")
    assert read_output(tmp_path / "o.json") == run_published_snippet(source, tmp_path)
    assert stats["sources"][0]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert stats["duplicate_ids"]["count"] > 0


def test_escaped_tags_among_many_records_and_several_inputs(tmp_path):
    escaped = (
        '{"id": "esc%d", "conversations": [{"from": "human", "value": "\\u003cimage>\\nQ?"},'
        ' {"from": "gpt", "value": "\\ud800 <image>"}]}'
    )
    records = [json.dumps(r) for r in mixed_records(300, seed=3)]
    records[200:200] = [escaped % n for n in range(3)]
    first = tmp_path / "first.json"
    first.write_text("[\n" + ",\n".join(records) + "\n]", encoding="utf-8")
    second = write_json_file(tmp_path / "second.json", mixed_records(200, seed=4), indent=2)
    llava.convert([first, second], tmp_path / "o.json")
    expected = run_published_snippet(first, tmp_path) + run_published_snippet(second, tmp_path)
    assert read_output(tmp_path / "o.json") == expected


def test_skipped_records_are_listed_in_file_order(tmp_path, monkeypatch):
    monkeypatch.setattr(llava, "MAX_LISTED", 3)
    records = mixed_records(400, seed=8)
    for position in (10, 300, 320, 380):
        records[position] = {"id": f"bad{position}", "conversations": "not a list"}
    source = write_json_file(tmp_path / "raw.json", records, indent=4)
    options = llava.ConvertOptions(skip_invalid=True)
    stats = llava.convert([source], tmp_path / "o.json", options=options)
    assert stats["skipped_invalid"] == 4
    assert [entry["index"] for entry in stats["skipped"]] == [10, 300, 320]


def break_late(text: str, how: str) -> str:
    """Spoil a pretty-printed list near its end."""
    at = text.rindex('"from": "gpt"', 0, len(text) - 3000)
    if how == "invalid-record":
        return text[:at] + '"from": "robot"' + text[at + len('"from": "gpt"') :]
    if how == "malformed":
        return text[:at] + '"from" "gpt"' + text[at + len('"from": "gpt"') :]
    if how == "truncated":
        return text[:at]
    if how == "trailing-data":
        return text + " {}"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["invalid-record", "malformed", "truncated", "trailing-data"])
def test_late_errors_name_their_record(tmp_path, how):
    text = json.dumps(mixed_records(400, seed=9), indent=4)
    source = tmp_path / "bad.json"
    source.write_text(break_late(text, how), encoding="utf-8")
    out = tmp_path / "out" / "o.json"
    with pytest.raises(InputError) as caught:
        llava.convert([source], out)
    assert list(out.parent.iterdir()) == []  # no output, no temporary file
    late = re.search(r": record (\d+)", str(caught.value))
    assert int(late.group(1)) > 300 if late else "after the closing ']'" in str(caught.value)


def test_late_invalid_utf8(tmp_path):
    data = json.dumps(mixed_records(300, seed=2), indent=4).encode()
    source = tmp_path / "bad.json"
    at = len(data) - 2000
    source.write_bytes(data[:at] + b"\xff" + data[at + 1 :])
    with pytest.raises(InputError, match=f"not valid UTF-8 at byte {at}$"):
        llava.convert([source], tmp_path / "o.json")
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + data[:at] + b"\xff" + data[at + 1 :])
    with pytest.raises(InputError, match=f"not valid UTF-8 at byte {at + 3}$"):
        llava.convert([bom], tmp_path / "o.json")


STATS_OF_COUNTERS = {
    "records": "records_out",
    "with_image": "records_with_image",
    "tags_removed": "image_tags_removed",
    "tags_left_later": "image_tags_left_in_later_turns",
    "first_from_gpt": "first_turn_from_gpt",
    "empty_messages": "empty_messages",
    "rounds": "rounds_total",
    "human_messages": "human_messages",
    "assistant_messages": "assistant_messages",
}


def test_totals_equal_the_sum_of_records(tmp_path):
    records = [json.loads(json.dumps(r)) for r in mixed_records(300, seed=16)]
    records.insert(120, {"id": "broken", "conversations": [turn("human", 3)]})
    source = write_json_file(tmp_path / "raw.json", records)
    for options in (llava.ConvertOptions(), llava.ConvertOptions(all_turns=True)):
        skipping = llava.ConvertOptions(**{**asdict(options), "skip_invalid": True})
        stats = llava.convert([source], tmp_path / "o.json", options=skipping)
        valid = [json.loads(json.dumps(r)) for r in records[:120] + records[121:]]
        per_record = [llava.convert_record(r, options) for r in valid]
        totals = {name: sum(c[name] for c in per_record) for name in llava.COUNTERS}
        assert {name: stats[key] for name, key in STATS_OF_COUNTERS.items()} == {
            name: totals[name] for name in STATS_OF_COUNTERS
        }
        human = round(totals["human_chars"] / totals["human_messages"], 4)
        assistant = round(totals["assistant_chars"] / totals["assistant_messages"], 4)
        assert (stats["mean_chars_human"], stats["mean_chars_assistant"]) == (human, assistant)
        assert [r.get("id") for r in read_output(tmp_path / "o.json")] == [
            r.get("id") for r in valid
        ]
    # A record that would lose a tag but proves invalid counts no removed tag.
    broken_late = {"id": "b", "conversations": [turn("human", "<image>\nHi"), turn("bot", "x")]}
    source = write_json_file(tmp_path / "late.json", [dict(GOOD), broken_late])
    options = llava.ConvertOptions(skip_invalid=True)
    stats = llava.convert([source], tmp_path / "o.json", options=options)
    assert stats["records_out"] == 1 and stats["image_tags_removed"] == 0


def test_duplicate_ids_are_counted_in_file_order(tmp_path, monkeypatch):
    monkeypatch.setattr(llava, "MAX_LISTED_DUPLICATES", 4)
    batches = [["a", None, 1, "b"], ["c", "d", None], ["c", "1", "e", "e"], [1, "a", "f", "a"]]
    ids = [rid for batch in batches for rid in batch]
    no_id = {"conversations": GOOD["conversations"]}
    records = [no_id if rid is None else {**GOOD, "id": rid} for rid in ids]
    stats = llava.convert([write_json_file(tmp_path / "r.json", records)], tmp_path / "o.json")
    # In order: "c" (seen in batch 2), "e" (twice in batch 3), 1 and "a" (batch 1), "a" again.
    assert stats["duplicate_ids"] == {"count": 5, "first": ["c", "e", 1, "a"]}


def test_bench_runs_and_compares_outputs(tmp_path, capsys):
    import bench_convert

    args = ["--records", "300", "--repeat", "1", "--workdir", str(tmp_path)]
    assert bench_convert.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "first turn from gpt" in lines[0] and "without image" in lines[0]
    assert "outputs parse to identical content: yes" in lines
    assert "outputs are byte-identical: yes" in lines
    assert re.fullmatch(r"time ratio: [\d.]+ \(.*target <= 1\.5\): (PASS|FAIL)", lines[-2])
    assert re.fullmatch(r"memory ratio: [\d.]+ \(.*target <= 3\.0\): (PASS|FAIL)", lines[-1])
    assert list(tmp_path.iterdir()) == []  # its temporary folder is gone
