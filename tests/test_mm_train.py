"""`python -m sbt.mm_train`: stage 1 then stage 2 (full and LoRA) on the shapes demo, each
output loaded with stock classes; bad input stops before any model is loaded."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from sbt import mm_questions, mm_train  # noqa: E402

HPARAMS = {
    "max_steps": 3,
    "per_device_train_batch_size": 4,
    "learning_rate": 2e-3,
    "bf16": False,
    "tf32": False,
    "save_steps": 2,
    "logging_steps": 1,
    "model_max_length": 256,
    "lora": {"r": 4},
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from sbt.demo.backbone import build_tiny_backbone
    from sbt.demo.shapes import build_tiny_vision_tower, write_shapes_demo

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("mm_train")
    shapes = write_shapes_demo(root / "shapes", pretrain=16, instruct=16, evaluation=4)
    corpus = [shapes / "pretrain_chat.json", shapes / "instruct.json"]
    return {
        "shapes": shapes,
        "backbone": build_tiny_backbone(corpus, root / "backbone"),
        "tower": build_tiny_vision_tower(root / "tower"),
    }


def argv(demo, stage, data, output, *extra, hparams=HPARAMS):
    return [
        "--stage",
        stage,
        "--backbone",
        str(demo["backbone"]),
        "--tower",
        str(demo["tower"]),
        "--data",
        str(demo["shapes"] / data),
        "--images",
        str(demo["shapes"] / "images"),
        "--output",
        str(output),
        "--hparams",
        json.dumps(hparams),
        *extra,
    ]


@pytest.fixture(scope="module")
def projector(demo, tmp_path_factory):
    output = tmp_path_factory.mktemp("stage1") / "mm_pretrain"
    assert mm_train.main(argv(demo, "pretrain", "pretrain_chat.json", output)) == 0
    return output / mm_train.PROJECTOR_FILE


def test_stage1_writes_a_study_projector_file(projector):
    state = torch.load(projector, weights_only=True)
    assert set(state) == {
        "model.mm_projector.weight",
        "model.mm_projector.bias",
        "model.embed_tokens.weight",
    }
    info = json.loads((projector.parent / "training_info.json").read_text())
    assert info["stage"] == "pretrain" and info["global_step"] == 3
    assert info["hparams"]["learning_rate"] == 2e-3
    assert (projector.parent / "loss.csv").read_text().startswith("step,loss,learning_rate")
    assert not projector.parent.with_name("mm_pretrain.checkpoints").exists()


@pytest.mark.parametrize("method", ["full", "lora"])
def test_stage2_writes_stock_llava_and_language_model(demo, projector, tmp_path, method):
    from transformers import AutoProcessor, LlamaForCausalLM, LlavaForConditionalGeneration

    output = tmp_path / method
    extra = ["--method", method, "--template", "v1", "--projector", str(projector)]
    assert mm_train.main(argv(demo, "finetune", "instruct.json", output, *extra)) == 0
    model = LlavaForConditionalGeneration.from_pretrained(str(output))
    processor = AutoProcessor.from_pretrained(str(output))
    language_model = LlamaForCausalLM.from_pretrained(str(output / mm_train.LANGUAGE_MODEL_DIR))
    assert not any("lora" in name for name, _ in model.named_parameters())  # merged
    ids = torch.tensor([processor.tokenizer("USER: Hi ASSISTANT: Hello</s>")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(language_model(input_ids=ids).logits, model(input_ids=ids).logits)
    info = json.loads((output / "training_info.json").read_text())
    assert info["method"] == method and info["template"] == "v1"
    assert ("lora" in info["hparams"]) == (method == "lora")
    assert info["projector_sha256"]


def test_bad_input_stops_before_loading(demo, tmp_path, capsys):
    records = json.loads((demo["shapes"] / "instruct.json").read_text())
    missing = [records[0], {**records[1], "image": "nowhere.png"}]
    bad_turn = [records[0], {**records[1], "conversations": [{"from": "robot", "value": "x"}]}]
    cases = {
        "missing.json": (missing, "record 1 (id '000000000001'): field 'image': image file"),
        "schema.json": (bad_turn, "record 1 (id '000000000001'): field 'conversations[0].from'"),
    }
    for name, (content, expected) in cases.items():
        data = demo["shapes"] / name
        data.write_text(json.dumps(content))
        args = argv(demo, "finetune", name, tmp_path / name, "--template", "v1")
        args[args.index("--backbone") + 1] = str(tmp_path / "not_loaded")  # never reached
        assert mm_train.main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {data}: {expected}"), err
        assert len(err.splitlines()) == 1
        assert not (tmp_path / name).exists()
    decay = argv(
        demo, "pretrain", "pretrain_chat.json", tmp_path / "s1", hparams={"weight_decay": 0.1}
    )
    assert mm_train.main(decay) == 2
    assert "stage 1 needs weight_decay 0" in capsys.readouterr().err
    fsdp = argv(
        demo, "pretrain", "pretrain_chat.json", tmp_path / "s1", hparams={"fsdp": "full_shard"}
    )
    assert mm_train.main(fsdp) == 2
    assert "field 'fsdp': FSDP is not supported here" in capsys.readouterr().err


def test_prefetch_unzips_an_archive_into_its_folder(tmp_path):
    """prefetch_mm_archive's step: a zip's single top folder (train2017/) is dropped."""
    import zipfile

    from sbt.prefetch import unpack

    archive = tmp_path / "train2017.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("train2017/000000000009.jpg", b"jpeg")
        zipped.writestr("train2017/000000000025.jpg", b"jpeg")
    unpack(archive, tmp_path / "images")
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        "000000000009.jpg",
        "000000000025.jpg",
    ]


def test_prefetch_takes_one_member_out_of_a_zip(tmp_path, capsys):
    """prefetch_mm with `member`: VQAv2's zips hold one JSON file each."""
    import zipfile

    from sbt import prefetch

    archive = tmp_path / "v2_Questions_Val_mscoco.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("v2_OpenEnded_mscoco_val2014_questions.json", '{"questions": []}')
    output = tmp_path / "vqav2/questions.json"
    url = archive.as_uri()
    member = "v2_OpenEnded_mscoco_val2014_questions.json"
    assert prefetch.main(["--url", url, "--output", str(output), "--member", member]) == 0
    assert output.read_text() == '{"questions": []}'
    assert [p.name for p in output.parent.iterdir()] == ["questions.json"]  # nothing left over
    missing = tmp_path / "missing.json"
    assert prefetch.main(["--url", url, "--output", str(missing), "--member", "nope.json"]) == 2
    assert "no member 'nope.json'" in capsys.readouterr().err
    assert not missing.exists()


def test_karpathy_split_in_the_studys_caption_format(tmp_path, capsys):
    """rule karpathy_split: one split of Karpathy's file as {image_name, captions}; train
    takes restval too."""
    from sbt import caption_splits

    def image(name, split, *raw):
        return {"filename": name, "split": split, "sentences": [{"raw": r} for r in raw]}

    karpathy = tmp_path / "dataset_coco.json"
    images = [
        image("COCO_val2014_000000000042.jpg", "test", "A cat. ", "A cat on a mat."),
        image("COCO_train2014_000000000009.jpg", "train", "Two dogs."),
        image("COCO_val2014_000000000073.jpg", "restval", "A bus."),
        image("COCO_val2014_000000000074.jpg", "val", "A car."),
    ]
    karpathy.write_text(json.dumps({"images": images, "dataset": "coco"}), encoding="utf-8")
    out = tmp_path / "coco_test.json"
    argv = ["--karpathy", str(karpathy), "--output", str(out)]
    assert caption_splits.main([*argv, "--split", "test"]) == 0
    assert json.loads(out.read_text()) == [
        {"image_name": "COCO_val2014_000000000042.jpg", "captions": ["A cat.", "A cat on a mat."]}
    ]
    assert caption_splits.main([*argv, "--split", "train"]) == 0
    assert [r["image_name"][-8:] for r in json.loads(out.read_text())] == ["0009.jpg", "0073.jpg"]
    # the study's reader takes the result
    (tmp_path / "COCO_val2014_000000000042.jpg").write_bytes(b"")
    assert caption_splits.main([*argv, "--split", "test"]) == 0
    assert mm_questions.read_captions(out, tmp_path)[0]["question_id"].endswith("0042.jpg")
    del images[1]["sentences"]
    karpathy.write_text(json.dumps({"images": images}), encoding="utf-8")
    bad = tmp_path / "bad.json"
    assert caption_splits.main(["--karpathy", str(karpathy), "--split", "train",
                                "--output", str(bad)]) == 2  # fmt: skip
    assert "record 1: field 'sentences': missing" in capsys.readouterr().err
    assert not bad.exists()
