"""The multimodal arm's foundation: sbt.mm_model, sbt.mm_data and the shapes demo.

Everything is built here, in temporary directories: the shapes demo (sbt.demo.shapes), a
tiny LLaMA backbone whose tokenizer is trained on the demo's own text (a tokenizer trained
on other text can leave untrainable pieces), and a tiny CLIP tower (56 px, 16 patches).
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from sbt import mm_data, mm_export, mm_model  # noqa: E402
from sbt.templates import get_template  # noqa: E402
from sbt.tokenize_chat import IGNORE_INDEX  # noqa: E402

TEMPLATE = get_template("v1")
MAX_LENGTH = 256


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from sbt.demo.shapes import write_shapes_demo

    torch.set_num_threads(1)
    return write_shapes_demo(
        tmp_path_factory.mktemp("shapes") / "demo", pretrain=48, instruct=48, evaluation=8
    )


@pytest.fixture(scope="module")
def backbone(tmp_path_factory, shapes):
    from sbt.demo.backbone import build_tiny_backbone

    corpus = [shapes / "pretrain_chat.json", shapes / "instruct.json"]
    return build_tiny_backbone(corpus, tmp_path_factory.mktemp("mm_backbone") / "tiny")


@pytest.fixture(scope="module")
def tower(tmp_path_factory):
    from sbt.demo.shapes import build_tiny_vision_tower

    return build_tiny_vision_tower(tmp_path_factory.mktemp("tower") / "clip")


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory, backbone, tower):
    model, processor = mm_model.build_llava(backbone, tower, TEMPLATE, max_length=MAX_LENGTH)
    return mm_model.save_llava(model, processor, tmp_path_factory.mktemp("llava") / "model")


def records(shapes, name="instruct.json"):
    return json.loads((shapes / name).read_text(encoding="utf-8"))


def instruct_features(model, tokenizer, recs, **kwargs):
    return mm_data.instruct_records(
        recs,
        tokenizer,
        TEMPLATE,
        MAX_LENGTH,
        image_token_id=model.config.image_token_id,
        num_image_tokens=mm_model.num_image_tokens(model.config.vision_config),
        **kwargs,
    )[0]


def pretrain_features(model, tokenizer, recs, study):
    return mm_data.pretrain_records(
        recs,
        tokenizer,
        MAX_LENGTH,
        image_token_id=model.config.image_token_id,
        num_image_tokens=mm_model.num_image_tokens(model.config.vision_config),
        study=study,
    )[0]


def batch(features, shapes, processor, count=4):
    dataset = mm_data.ImageDataset(features[:count], shapes / "images", processor.image_processor)
    collate = mm_data.ImageCollator(processor.tokenizer.pad_token_id)
    return collate([dataset[i] for i in range(len(dataset))])


def train(model, features, shapes, processor, tmp_path, *, steps, lr, batch_size=4):
    """A few steps of the HF Trainer with the stock AdamW (weight decay 0, as the study)."""
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        per_device_train_batch_size=batch_size,
        max_steps=steps,
        learning_rate=lr,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
    )
    dataset = mm_data.ImageDataset(features, shapes / "images", processor.image_processor)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=mm_data.ImageCollator(processor.tokenizer.pad_token_id),
    )
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_projector_is_one_linear_layer_and_reloads_with_stock_classes(llava_dir, shapes):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    # Stock classes only: what any later step (or a person) loads.
    model = LlavaForConditionalGeneration.from_pretrained(str(llava_dir))
    processor = AutoProcessor.from_pretrained(str(llava_dir))
    assert model.config.projector_hidden_act == "linear"
    assert model.config.vision_feature_layer == -2
    assert model.config.vision_feature_select_strategy == "default"
    projector = model.model.multi_modal_projector
    x = torch.randn(2, 5, model.config.vision_config.hidden_size)
    weight, bias = projector.linear_1.weight, projector.linear_1.bias
    assert torch.equal(projector(x), x @ weight.T + bias)
    assert torch.equal(projector.linear_2.weight, torch.eye(weight.shape[0]))
    assert not projector.linear_2.bias.any()

    features = instruct_features(model, processor.tokenizer, records(shapes)[:2])
    inputs = batch(features, shapes, processor, count=2)
    with torch.no_grad():
        before = model(**inputs).logits
    model.save_pretrained(llava_dir.parent / "again")
    again = LlavaForConditionalGeneration.from_pretrained(str(llava_dir.parent / "again"))
    with torch.no_grad():
        assert torch.equal(again(**inputs).logits, before)


def test_image_features_are_the_second_to_last_layer_without_cls(llava_dir, shapes):
    model, processor = mm_model.load_llava(llava_dir)
    pixels = batch(
        instruct_features(model, processor.tokenizer, records(shapes)[:1]), shapes, processor
    )["pixel_values"]
    with torch.no_grad():
        got = torch.cat(model.model.get_image_features(pixels).pooler_output)
        hidden = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states
        want = model.model.multi_modal_projector.linear_1(hidden[-2][:, 1:])[0]
    assert got.shape[0] == mm_model.num_image_tokens(model.config.vision_config) == 16
    assert torch.allclose(got, want, atol=1e-6)


def test_new_token_rows_as_the_study_initialised_them(llava_dir, backbone):
    from transformers import LlamaForCausalLM

    model, processor = mm_model.load_llava(llava_dir)
    original = LlamaForCausalLM.from_pretrained(str(backbone))
    ids = mm_model.token_ids(processor.tokenizer)
    old = original.get_input_embeddings().weight.shape[0]
    assert [ids[t] for t in ("<image>", "<im_start>", "<im_end>")] == [old, old + 1, old + 2]
    for new, orig in (
        (model.get_input_embeddings().weight, original.get_input_embeddings().weight),
        (model.get_output_embeddings().weight, original.get_output_embeddings().weight),
    ):
        assert torch.equal(new[:old], orig)
        mean = new[: old + 1].mean(dim=0)
        assert torch.allclose(new[old + 1], mean) and torch.allclose(new[old + 2], mean)


def test_im_start_end_strip_whitespace_like_the_study_tokenizer(llava_dir):
    _, processor = mm_model.load_llava(llava_dir)
    tokenizer = processor.tokenizer
    tokens = tokenizer.convert_ids_to_tokens(
        tokenizer("USER: <im_start><image><im_end>\nWhat is it?")["input_ids"]
    )
    at = tokens.index("<im_start>")
    # transformers 4.31 stripped both sides: no "▁" before, no newline after.
    assert tokens[at - 1] == ":" and tokens[at + 1 : at + 3] == ["<image>", "<im_end>"]
    assert tokens[at + 3] == "▁What"


def test_expansion_equals_llava_processor(llava_dir, shapes):
    from PIL import Image

    model, processor = mm_model.load_llava(llava_dir)
    recs = records(shapes)[:12]
    assert any(r["conversations"][0]["value"].endswith("<image>") for r in recs)
    for wrap in (True, False):
        features = instruct_features(model, processor.tokenizer, recs, wrap=wrap)
        for record, feature in zip(recs, features, strict=True):
            text = TEMPLATE.render(mm_data.place_image(record["conversations"], wrap=wrap)).text
            with Image.open(shapes / "images" / record["image"]) as image:
                expected = processor(text=text, images=image.convert("RGB"), return_tensors="pt")
            assert feature["input_ids"] == expected["input_ids"][0].tolist()
            pixels = mm_data.load_pixels(
                shapes / "images" / record["image"], processor.image_processor
            )
            assert torch.equal(pixels, expected["pixel_values"][0])


def test_labels_are_assistant_only_and_image_tokens_ignored(llava_dir, shapes):
    model, processor = mm_model.load_llava(llava_dir)
    tokenizer = processor.tokenizer
    recs = records(shapes)[:12]
    image_id = model.config.image_token_id
    for record, feature in zip(recs, instruct_features(model, tokenizer, recs), strict=True):
        ids, labels = feature["input_ids"], feature["labels"]
        assert ids.count(image_id) == 16
        assert all(
            label == IGNORE_INDEX for i, label in zip(ids, labels, strict=True) if i == image_id
        )
        trained = tokenizer.decode([label for label in labels if label != IGNORE_INDEX])
        answers = [t["value"] for t in record["conversations"] if t["from"] == "gpt"]
        assert trained == "".join(f"{a}</s>" for a in answers).replace("</s>", "</s> ").rstrip()


def test_pretrain_features_study_and_clean(llava_dir, shapes):
    model, processor = mm_model.load_llava(llava_dir)
    tokenizer = processor.tokenizer
    ids = mm_model.token_ids(tokenizer)
    recs = records(shapes, "pretrain_chat.json")[:6]
    study = pretrain_features(model, tokenizer, recs, study=True)
    clean = pretrain_features(model, tokenizer, recs, study=False)
    for record, s, c in zip(recs, study, clean, strict=True):
        caption = record["conversations"][1]["value"]
        # study: <s> <image>x16 caption \n, no <im_start>/<im_end>, first caption token untrained
        assert ids["<im_start>"] not in s["input_ids"] and ids["<im_end>"] not in s["input_ids"]
        assert s["input_ids"][1:17] == [ids["<image>"]] * 16
        assert s["labels"][17] == IGNORE_INDEX
        assert tokenizer.decode(s["input_ids"][17:]) == caption + "\n"
        assert tokenizer.decode([t for t in s["labels"] if t != IGNORE_INDEX]) == tokenizer.decode(
            s["input_ids"][18:]
        )
        # clean: <im_start> image <im_end>, the whole caption and newline trained
        assert c["input_ids"][1] == ids["<im_start>"] and c["input_ids"][18] == ids["<im_end>"]
        assert tokenizer.decode([t for t in c["labels"] if t != IGNORE_INDEX]) == caption + "\n"


def changed(before, model):
    return {
        name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())
    }


def test_stage1_changes_only_the_projector_and_the_two_new_rows(llava_dir, shapes, tmp_path):
    model, processor = mm_model.load_llava(llava_dir)
    ids = mm_model.token_ids(processor.tokenizer)
    handle = mm_model.freeze_for_stage1(model, processor.tokenizer)
    before = snapshot(model)
    features = pretrain_features(
        model, processor.tokenizer, records(shapes, "pretrain_chat.json"), False
    )
    train(model, features, shapes, processor, tmp_path, steps=3, lr=1e-2)
    handle.remove()
    embed = "model.language_model.embed_tokens.weight"
    assert changed(before, model) == {
        "model.multi_modal_projector.linear_1.weight",
        "model.multi_modal_projector.linear_1.bias",
        embed,
    }
    rows = (before[embed] != model.get_input_embeddings().weight.detach()).any(dim=1)
    assert rows.nonzero().flatten().tolist() == [ids["<im_start>"], ids["<im_end>"]]


def test_stage1_with_the_study_prompts_moves_no_embedding_row(llava_dir, shapes, tmp_path):
    # The study's stage-1 prompts have no <im_start>/<im_end>: their rows get no gradient.
    model, processor = mm_model.load_llava(llava_dir)
    handle = mm_model.freeze_for_stage1(model, processor.tokenizer)
    before = snapshot(model)
    features = pretrain_features(
        model, processor.tokenizer, records(shapes, "pretrain_chat.json"), True
    )
    train(model, features, shapes, processor, tmp_path, steps=2, lr=1e-2)
    handle.remove()
    assert changed(before, model) == {
        "model.multi_modal_projector.linear_1.weight",
        "model.multi_modal_projector.linear_1.bias",
    }


def test_lora_trains_the_study_parameters(llava_dir):
    model, _ = mm_model.load_llava(llava_dir)
    peft_model = mm_model.wrap_lora(model, r=4, alpha=16)
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    lora = [name for name in trainable if "lora_" in name]
    assert lora and all(".language_model." in name for name in lora)
    assert {name.split(".lora_")[0].rsplit(".", 1)[1] for name in lora} == set(
        mm_model.LORA_TARGETS
    )
    others = sorted(name for name in trainable if "lora_" not in name)
    assert others == [
        "base_model.model.lm_head.modules_to_save.default.weight",
        "base_model.model.model.language_model.embed_tokens.modules_to_save.default.weight",
        "base_model.model.model.multi_modal_projector.modules_to_save.default.linear_1.bias",
        "base_model.model.model.multi_modal_projector.modules_to_save.default.linear_1.weight",
    ]
    model, _ = mm_model.load_llava(llava_dir)
    without = mm_model.wrap_lora(model, r=4, train_embeddings=False)
    others = [n for n, p in without.named_parameters() if p.requires_grad and "lora_" not in n]
    assert all("multi_modal_projector" in name and "linear_1" in name for name in others)


def test_load_study_projector(llava_dir, tmp_path):
    model, _ = mm_model.load_llava(llava_dir)
    embeddings = model.get_input_embeddings().weight
    output_rows = model.get_output_embeddings().weight.detach().clone()
    linear_1 = model.model.multi_modal_projector.linear_1
    # A file as the study's stage 1 wrote it (train.py safe_save_model_for_hf_trainer).
    study = {
        "model.mm_projector.weight": torch.randn_like(linear_1.weight),
        "model.mm_projector.bias": torch.randn_like(linear_1.bias),
        "model.embed_tokens.weight": torch.randn_like(embeddings),
    }
    torch.save(study, tmp_path / "mm_projector.bin")
    old_rows = embeddings.detach().clone()
    mm_export.load_study_projector(model, tmp_path / "mm_projector.bin")
    assert torch.equal(linear_1.weight, study["model.mm_projector.weight"])
    assert torch.equal(linear_1.bias, study["model.mm_projector.bias"])
    assert torch.equal(embeddings[-2:], study["model.embed_tokens.weight"][-2:])
    assert torch.equal(embeddings[:-2], old_rows[:-2])
    assert torch.equal(model.get_output_embeddings().weight, output_rows)

    # The two-row form, and our own writer round-trips.
    two = {**study, "model.embed_tokens.weight": torch.ones(2, embeddings.shape[1])}
    torch.save(two, tmp_path / "two.bin")
    mm_export.load_study_projector(model, tmp_path / "two.bin")
    assert torch.equal(embeddings[-2:], two["model.embed_tokens.weight"])
    mm_export.save_study_projector(model, tmp_path / "ours.bin")
    saved = torch.load(tmp_path / "ours.bin", weights_only=True)
    assert sorted(saved) == sorted(study)
    assert torch.equal(saved["model.embed_tokens.weight"], embeddings.detach())

    from sbt.common import InputError

    bad = {**study, "model.embed_tokens.weight": torch.ones(3, embeddings.shape[1])}
    torch.save(bad, tmp_path / "bad.bin")
    with pytest.raises(InputError, match="unexpected model.embed_tokens.weight shape"):
        mm_export.load_study_projector(model, tmp_path / "bad.bin")


def test_extracted_language_model_gives_the_same_text_logits(llava_dir, tmp_path):
    from transformers import AutoTokenizer, LlamaForCausalLM

    model, processor = mm_model.load_llava(llava_dir)
    out = mm_export.extract_language_model(llava_dir, tmp_path / "lm")
    language_model = LlamaForCausalLM.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert len(tokenizer) == len(processor.tokenizer)
    text = "USER: What color is the circle? ASSISTANT: The circle is red.</s>"
    ids = torch.tensor([processor.tokenizer(text)["input_ids"]])
    assert tokenizer(text)["input_ids"] == ids[0].tolist()
    with torch.no_grad():
        assert torch.equal(language_model(input_ids=ids).logits, model(input_ids=ids).logits)


def test_stage1_then_stage2_end_to_end(backbone, tower, shapes, tmp_path):
    """Stage 1 on captions, its projector file into a fresh model, stage 2 full fine-tuning:
    the loss falls in both (the learnability of images is a later, longer test)."""
    model, processor = mm_model.build_llava(backbone, tower, TEMPLATE, max_length=MAX_LENGTH)
    handle = mm_model.freeze_for_stage1(model, processor.tokenizer)
    captions = pretrain_features(
        model, processor.tokenizer, records(shapes, "pretrain_chat.json"), True
    )
    losses = train(model, captions, shapes, processor, tmp_path / "s1", steps=24, lr=2e-2)
    handle.remove()
    assert sum(losses[-4:]) < sum(losses[:4])
    mm_export.save_study_projector(model, tmp_path / "mm_projector.bin")

    stage2, processor = mm_model.build_llava(backbone, tower, TEMPLATE, max_length=MAX_LENGTH)
    mm_export.load_study_projector(stage2, tmp_path / "mm_projector.bin")
    assert torch.equal(
        stage2.model.multi_modal_projector.linear_1.weight,
        model.model.multi_modal_projector.linear_1.weight,
    )
    stage2.model.vision_tower.requires_grad_(False)  # the study's tower stays frozen
    features = instruct_features(stage2, processor.tokenizer, records(shapes))
    losses = train(stage2, features, shapes, processor, tmp_path / "s2", steps=24, lr=3e-3)
    assert sum(losses[-4:]) < 0.8 * sum(losses[:4])
    assert torch.equal(
        stage2.model.multi_modal_projector.linear_2.weight,
        torch.eye(stage2.config.text_config.hidden_size),
    )


def test_repeated_ids_bad_records_and_one_token_captions(llava_dir, shapes):
    from sbt.common import InputError

    model, processor = mm_model.load_llava(llava_dir)
    tokenizer = processor.tokenizer
    first, second = records(shapes)[:2]
    # LLaVA files repeat an id for another conversation about the same image.
    twin = {**second, "id": first["id"]}
    features = instruct_features(model, tokenizer, [first, twin])
    assert [f["image"] for f in features] == [first["image"], second["image"]]
    assert [f["id"] for f in features] == [first["id"], first["id"]]

    broken = {**second, "id": "broken", "conversations": [*second["conversations"], "oops"]}
    with pytest.raises(
        InputError,
        match=r"record 1 \(id 'broken'\): field 'conversations\[\d+\]': turn must be an object",
    ):
        instruct_features(model, tokenizer, [first, broken])
    untagged = {**second, "id": "untagged", "conversations": second["conversations"][1:]}
    with pytest.raises(InputError, match=r"expected <image> in exactly one turn, found 0"):
        instruct_features(model, tokenizer, [untagged])

    # A one-token caption under the study's stage-1 quirk: only its newline is trained.
    short = records(shapes, "pretrain_chat.json")[0]
    short = {**short, "conversations": [short["conversations"][0], {"from": "gpt", "value": "A"}]}
    kept, skips = mm_data.pretrain_records(
        [short],
        tokenizer,
        MAX_LENGTH,
        image_token_id=model.config.image_token_id,
        num_image_tokens=16,
        study=True,
    )
    trained = [t for t in kept[0]["labels"] if t != IGNORE_INDEX]
    assert tokenizer.convert_ids_to_tokens(trained) == ["<0x0A>"] and not any(skips.values())
