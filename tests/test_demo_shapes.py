"""The shapes demo (sbt.demo.shapes): deterministic files in the study's formats, a tower."""

from __future__ import annotations

import json

from sbt.demo.shapes import build_tiny_vision_tower, main, write_shapes_demo

FILES = ("pretrain_chat.json", "instruct.json", "pope.json", "vqa_questions.json")


def contents(directory):
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_same_seed_same_bytes(tmp_path):
    first = write_shapes_demo(tmp_path / "a", pretrain=6, instruct=6, evaluation=4)
    second = write_shapes_demo(tmp_path / "b", pretrain=6, instruct=6, evaluation=4)
    other = write_shapes_demo(tmp_path / "c", pretrain=6, instruct=6, evaluation=4, seed=1)
    assert contents(first) == contents(second)
    assert contents(first) != contents(other)
    assert len(list((first / "images").iterdir())) == 16


def test_formats(tmp_path):
    demo = write_shapes_demo(tmp_path / "demo", pretrain=20, instruct=20, evaluation=10)
    images = {path.name for path in (demo / "images").iterdir()}
    chat = json.loads((demo / "pretrain_chat.json").read_text())
    for record in chat:
        human, gpt = record["conversations"]
        assert record["image"] == record["id"] + ".png" and record["image"] in images
        assert human["from"] == "human" and "<image>" in human["value"]
        assert gpt["from"] == "gpt" and gpt["value"].endswith(".")
    instruct = json.loads((demo / "instruct.json").read_text())
    for record in instruct:
        turns = record["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert [("<image>" in t["value"]) for t in turns].count(True) == 1
        assert "<image>" in turns[0]["value"] and record["image"] in images
    pope = [json.loads(line) for line in (demo / "pope.json").read_text().splitlines()]
    assert [p["label"] for p in pope].count("yes") == 5
    assert all(p["image"] in images and p["text"].startswith("Is there a") for p in pope)
    questions = json.loads((demo / "vqa_questions.json").read_text())["questions"]
    annotations = json.loads((demo / "vqa_annotations.json").read_text())["annotations"]
    assert [q["question_id"] for q in questions] == [a["question_id"] for a in annotations]
    assert all(len(a["answers"]) == 10 for a in annotations)
    for file in FILES:
        assert (demo / file).stat().st_size > 0


def test_tiny_tower_loads_like_a_hub_tower(tmp_path):
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, CLIPVisionModel

    tower = build_tiny_vision_tower(tmp_path / "tower")
    model = CLIPVisionModel.from_pretrained(str(tower))
    processor = AutoImageProcessor.from_pretrained(str(tower))
    pixels = processor(images=Image.new("RGB", (80, 60), (255, 0, 0)), return_tensors="pt")
    assert pixels["pixel_values"].shape == (1, 3, 56, 56)
    with torch.no_grad():
        hidden = model(**pixels, output_hidden_states=True).hidden_states
    assert hidden[-2].shape == (1, 1 + 16, 32)


def test_cli(tmp_path, capsys):
    assert main(["--output", str(tmp_path / "d"), "--pretrain", "2", "--instruct", "2",
                 "--evaluation", "2", "--tower", str(tmp_path / "t")]) == 0  # fmt: skip
    assert (tmp_path / "t" / "config.json").is_file()
    assert f"wrote {tmp_path / 'd'}" in capsys.readouterr().out
