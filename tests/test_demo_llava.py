"""The committed demo collection: deterministic, valid LLaVA schema, and the real files' mix."""

from __future__ import annotations

import json
import re
import statistics

import pytest

from sbt import llava
from sbt.demo import llava as make_demo_llava
from sbt.records import find_problem

DEMO = make_demo_llava.DEFAULT_OUTPUT


@pytest.fixture(scope="module")
def demo_records() -> list[dict]:
    return json.loads(DEMO.read_text(encoding="utf-8"))


def test_generator_is_deterministic_and_matches_the_committed_file(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert make_demo_llava.main(["--output", str(first)]) == 0
    assert make_demo_llava.main(["--output", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() == DEMO.read_bytes(), "rerun src/sbt/demo/llava.py"
    make_demo_llava.main(["--output", str(second), "--seed", "1"])
    assert first.read_bytes() != second.read_bytes()


def test_file_is_commit_sized_and_reads_like_json_load(demo_records):
    assert DEMO.stat().st_size < 300_000
    assert len(demo_records) == make_demo_llava.DEFAULT_RECORDS == 300
    assert [record for _, record in llava.iter_valid_records(DEMO)] == demo_records


def test_every_record_is_valid(demo_records):
    for index, record in enumerate(demo_records):
        assert find_problem(record) is None, (index, record)
        turns = record["conversations"]
        start = 1 if turns[0]["from"] == "gpt" else 0
        roles = [t["from"] for t in turns[start:]]
        assert roles == ["human", "gpt"] * (len(roles) // 2), record["id"]


def test_ids_and_images_look_like_coco(demo_records):
    with_image = [r for r in demo_records if "image" in r]
    for record in with_image:
        assert re.fullmatch(r"000000\d{6}\.jpg", record["image"])
        stem = record["image"].removesuffix(".jpg")
        assert record["id"] == stem or record["id"] == int(stem)
    int_ids = [r for r in with_image if isinstance(r["id"], int)]
    assert 0.03 * len(with_image) < len(int_ids) < 0.2 * len(with_image)
    ids = [r["id"] for r in demo_records]
    assert 0 < len(ids) - len(set(ids)) <= 10  # a few images with a second conversation


def test_tag_placement_and_record_mix(demo_records):
    with_image = [r for r in demo_records if "image" in r]
    first_turns = [r["conversations"][0]["value"] for r in with_image]
    at_start = sum(v.startswith("<image>\n") for v in first_turns)
    at_end = sum(v.endswith("\n<image>") for v in first_turns)
    assert all(v.count("<image>") == 1 for v in first_turns)
    assert at_start + at_end == len(with_image)
    assert at_start > 0.6 * len(with_image) and at_end > 0.1 * len(with_image)

    without_image = [r for r in demo_records if "image" not in r]
    assert 0.05 * len(demo_records) <= len(without_image) <= 0.15 * len(demo_records)
    assert not any("<image>" in t["value"] for r in without_image for t in r["conversations"])
    assert not any("<image>" in t["value"] for r in demo_records for t in r["conversations"][1:])
    gpt_first = [r for r in demo_records if r["conversations"][0]["from"] == "gpt"]
    assert 0.015 * len(demo_records) <= len(gpt_first) <= 0.04 * len(demo_records)


def test_rounds_and_answer_lengths(demo_records):
    rounds = [sum(t["from"] == "human" for t in r["conversations"]) for r in demo_records]
    assert set(rounds) == {1, 2, 3, 4}
    assert 2.4 <= statistics.mean(rounds) <= 3.0
    answer_words = [
        len(t["value"].split())
        for r in demo_records
        for t in r["conversations"]
        if t["from"] == "gpt"
    ]
    assert min(answer_words) <= 3
    assert 60 <= max(answer_words) <= 100
    assert 10 <= statistics.mean(answer_words) <= 40


def test_demo_converts_with_expected_statistics(tmp_path, demo_records):
    stats = llava.convert([DEMO], tmp_path / "out.json")
    with_image = sum("image" in r for r in demo_records)
    assert stats["records_out"] == 300
    assert stats["image_tags_removed"] == with_image
    assert stats["image_tags_left_in_later_turns"] == 0
    assert stats["records_with_image"] == with_image
    assert stats["first_turn_from_gpt"] >= 5
    assert stats["empty_messages"] == 0
    converted = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert not any("<image>" in t["value"] for r in converted for t in r["conversations"])


def test_record_maker_streams_any_number(tmp_path):
    records = list(make_demo_llava.generate_records(1000, seed=9))
    assert records == list(make_demo_llava.generate_records(1000, seed=9))
    assert all(find_problem(r) is None for r in records)
