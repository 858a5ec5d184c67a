"""sbt.mm_evaluate: POPE and VQAv2 of a tiny LLaVA through lm-eval's hf-multimodal.

A tiny LLaVA is built in a temporary directory (a LLaMA backbone whose tokenizer is trained
on the shapes demo's text, a tiny CLIP tower, sbt.mm_model.build_llava) and evaluated on a
few of the demo's POPE and VQAv2 questions on the CPU.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest

torch = pytest.importorskip("torch")

from sbt import mm_evaluate, mm_metrics, mm_model, mm_questions  # noqa: E402
from sbt.templates import SYS_V1, get_template  # noqa: E402

QUESTIONS = 6


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from sbt.demo.shapes import write_shapes_demo

    torch.set_num_threads(1)
    return write_shapes_demo(
        tmp_path_factory.mktemp("shapes") / "demo", pretrain=32, instruct=32, evaluation=QUESTIONS
    )


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory, shapes):
    from sbt.demo.backbone import build_tiny_backbone
    from sbt.demo.shapes import build_tiny_vision_tower

    root = tmp_path_factory.mktemp("mm_eval_model")
    corpus = [shapes / "pretrain_chat.json", shapes / "instruct.json"]
    backbone = build_tiny_backbone(corpus, root / "backbone")
    tower = build_tiny_vision_tower(root / "tower")
    model, processor = mm_model.build_llava(backbone, tower, get_template("v1"), max_length=256)
    return mm_model.save_llava(model, processor, root / "llava")


def pope_args(shapes, llava_dir, out, *extra):
    return [
        "--model", str(llava_dir), "--task", "pope", "--questions", str(shapes / "pope.json"),
        "--images", str(shapes / "images"), "--output", str(out), "--device", "cpu", *extra,
    ]  # fmt: skip


def vqa_args(shapes, llava_dir, out, *extra, questions=None):
    questions = questions or shapes / "vqa_questions.json"
    return [
        "--model", str(llava_dir), "--task", "vqav2", "--questions", str(questions),
        "--annotations", str(shapes / "vqa_annotations.json"),
        "--images", str(shapes / "images"), "--output", str(out), "--device", "cpu", *extra,
    ]  # fmt: skip


def read_lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_task_yamls_are_found_by_task_manager():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(mm_evaluate.TASK_DIR), include_defaults=False)
    assert {"sbt_pope", "sbt_vqav2"} <= set(manager.all_tasks)


def test_v0_prompt_is_the_studys_conversation():
    prompt = mm_questions.v0_prompt("Is there a cat?", [("Q1?", "a1")])
    assert prompt.startswith(mm_questions.V0_SYSTEM + "###Human: What are the key differences")
    assert prompt.endswith(
        "social instability.\n###Human: Q1?###Assistant: a1###"
        "Human: <im_start><image><im_end>\nIs there a cat?###Assistant:"
    )


def test_template_prompt_is_the_training_rendering_up_to_the_answer():
    demos = [("Q1?", "A1.")]
    v1 = mm_questions.template_prompt(get_template("v1"), "Is there a cat?", demos)
    assert v1 == (
        f"{SYS_V1} USER: Q1? ASSISTANT: A1.</s>"
        "USER: <im_start><image><im_end>\nIs there a cat? ASSISTANT:"
    )
    llama_2 = mm_questions.template_prompt(get_template("llava_llama_2"), "Is there a cat?")
    assert llama_2.startswith("[INST] <<SYS>>\n") and llama_2.endswith(
        "<im_start><image><im_end>\nIs there a cat? [/INST]"
    )
    # What the model saw before a trained answer: rendering the answer after the prompt
    # gives the training text.
    conversation = [
        {"from": "human", "value": "<im_start><image><im_end>\nIs there a cat?"},
        {"from": "gpt", "value": "No."},
    ]
    assert get_template("llava_llama_2").render(conversation).text.startswith(llama_2 + " No.")


def test_training_prompt_reads_the_runs_template(tmp_path, shapes, llava_dir, capsys):
    out = tmp_path / "out.json"
    args = vqa_args(shapes, llava_dir, out, "--mode", "clean", "--prompt", "training")
    assert mm_evaluate.main(args) == 2  # save_llava alone records no training template
    line = one_error_line(capsys)
    assert f"{llava_dir / 'training_info.json'}: field 'template'" in line
    run = shutil.copytree(llava_dir, tmp_path / "run")
    (run / "training_info.json").write_text('{"template": "v1"}', encoding="utf-8")
    args[args.index("--model") + 1] = str(run)
    docs = mm_evaluate.plan_docs(mm_evaluate.parse_args(args))
    assert all(doc["template"] == "v1" for doc in docs)
    assert docs[0]["prompt"].startswith(SYS_V1) and docs[0]["prompt"].endswith(" ASSISTANT:")
    assert docs[0]["prompt"].count("USER:") == 1 + mm_questions.VQA_DEMONSTRATIONS
    assert mm_evaluate.benchmark_name(mm_evaluate.parse_args(args)) == (
        "vqav2_clean_training_prompt"
    )
    (run / "training_info.json").write_text('{"template": "chat_template"}', encoding="utf-8")
    assert mm_evaluate.main(args) == 2
    assert "need a built-in template, not 'chat_template'" in one_error_line(capsys)
    assert not out.exists()


def test_constant_image_is_grey_of_the_same_size(shapes):
    from sbt.lmeval_tasks_mm import utils

    path = next((shapes / "images").glob("eval_*.png"))
    real = utils.doc_to_image({"image": str(path), "image_setting": "real"})[0]
    constant = utils.doc_to_image({"image": str(path), "image_setting": "constant"})[0]
    assert constant.size == real.size
    assert constant.getcolors() == [(real.width * real.height, utils.CONSTANT_GREY)]
    assert len(real.getcolors()) > 1
    # The study's generation ended at the first "###", which it kept.
    assert utils.generated("No###Human: x###") == "No###"
    assert utils.generated("yes it is") == "yes it is"


def test_pope_study_mode(tmp_path, shapes, llava_dir):
    out, log = tmp_path / "pope.json", tmp_path / "pope.jsonl"
    args = pope_args(shapes, llava_dir, out, "--mode", "study", "--log-samples", str(log))
    run_info = '{"backbone": "tiny", "method": "mm"}'
    assert mm_evaluate.main([*args, "--benchmark", "pope_random", "--run-info", run_info]) == 0
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["benchmark"] == "pope_random" and document["tasks"] == ["pope_random"]
    assert document["mode"] == "study" and document["image"] == "real"
    assert document["n_samples"] == {"pope_random": {"original": QUESTIONS, "effective": QUESTIONS}}
    assert document["run"] == {"backbone": "tiny", "method": "mm"}
    assert document["config"]["seed"] == 42 and "provenance" in document
    metrics = document["metrics"]
    assert set(metrics) == {f"pope_random/{m}" for m in mm_evaluate.POPE_METRICS}
    for value in metrics.values():
        assert value is None or 0 <= value <= 1
    samples = read_lines(log)
    assert [s["question_id"] for s in samples] == list(range(1, QUESTIONS + 1))
    expected = mm_metrics.pope_scores(
        [s["generation"] for s in samples], [s["label"] for s in samples], "study"
    )
    for name in mm_evaluate.POPE_METRICS:
        want = expected[name]
        got = metrics[f"pope_random/{name}"]
        assert got == (None if math.isnan(want) else pytest.approx(want))
    # What aggregate reads: the standard result document.
    from sbt.results import read_result_document

    description, values, _ = read_result_document(out)
    assert description["backbone"] == "tiny" and set(values) == set(metrics)


def test_vqa_clean_mode_with_constant_images(tmp_path, shapes, llava_dir):
    out, log = tmp_path / "vqa.json", tmp_path / "vqa.jsonl"
    args = vqa_args(shapes, llava_dir, out, "--mode", "clean", "--image", "constant")
    assert mm_evaluate.main([*args, "--limit", "4", "--log-samples", str(log)]) == 0
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["mode"] == "clean" and document["image"] == "constant"
    assert document["config"]["decoding"] == "greedy"
    # Its own benchmark name, so its metrics never collide with the study/real ones.
    assert document["benchmark"] == "vqav2_clean_constant" and document["task"] == "vqav2"
    assert document["n_samples"]["vqav2_clean_constant"]["effective"] == 4
    assert set(document["metrics"]) == {"vqav2_clean_constant/accuracy"}
    samples = read_lines(log)
    assert len(samples) == 4 and {s["image_setting"] for s in samples} == {"constant"}
    # Three text demonstrations before the image turn, as the study's --additional_shots 3.
    assert samples[0]["prompt"].count("###Human:") == 5
    expected = mm_metrics.vqa_score(
        [s["generation"] for s in samples], [s["answers"] for s in samples], "clean"
    )
    accuracy = document["metrics"]["vqav2_clean_constant/accuracy"]
    assert 0 <= accuracy <= 1
    assert accuracy == pytest.approx(expected / 100)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def test_missing_image_file(tmp_path, shapes, llava_dir, capsys):
    copy = shutil.copytree(shapes, tmp_path / "demo")
    record = json.loads((copy / "pope.json").read_text(encoding="utf-8").splitlines()[2])
    (copy / "images" / record["image"]).unlink()
    out = tmp_path / "out.json"
    assert mm_evaluate.main(pope_args(copy, llava_dir, out, "--mode", "study")) == 2
    line = one_error_line(capsys)
    assert str(copy / "pope.json") in line and "record 2 (id 3)" in line
    assert "field 'image'" in line and "image file not found" in line
    assert not out.exists()


def test_missing_field(tmp_path, shapes, llava_dir, capsys):
    lines = (shapes / "pope.json").read_text(encoding="utf-8").splitlines()
    broken = json.loads(lines[1])
    del broken["text"]
    lines[1] = json.dumps(broken)
    questions = tmp_path / "pope.json"
    questions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.json"
    args = pope_args(shapes, llava_dir, out, "--mode", "clean")
    args[args.index("--questions") + 1] = str(questions)
    assert mm_evaluate.main(args) == 2
    line = one_error_line(capsys)
    assert f"{questions}: record 1 (id 2): field 'text': missing" in line
    assert not out.exists()

    document = json.loads((shapes / "vqa_questions.json").read_text(encoding="utf-8"))
    del document["questions"][0]["image_id"]
    vqa_questions = tmp_path / "vqa_questions.json"
    vqa_questions.write_text(json.dumps(document), encoding="utf-8")
    args = vqa_args(shapes, llava_dir, out, "--mode", "study", questions=vqa_questions)
    assert mm_evaluate.main(args) == 2
    assert "record 0 (id 9000000): field 'image_id': missing" in one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    ("task", "extra", "expected"),
    [
        ("gqa", [], "unknown task 'gqa'"),
        ("caption", [], "--demonstrations: needed with --task caption"),
        ("pope", ["--samples", "3"], "--samples: only --task vqav2"),
    ],
)
def test_bad_task_arguments(tmp_path, shapes, llava_dir, capsys, task, extra, expected):
    out = tmp_path / "out.json"
    args = pope_args(shapes, llava_dir, out, "--mode", "study", *extra)
    args[args.index("--task") + 1] = task
    assert mm_evaluate.main(args) == 2
    assert expected in one_error_line(capsys)
    assert not out.exists()


def test_image_content_reaches_the_model(tmp_path, shapes, llava_dir):
    """Through lm-eval's own path (task doc -> doc_to_image -> hf-multimodal's encoding ->
    the model), a real image and the constant one give different logits. (The tiny random
    tower barely tells images apart, so the generated text may not differ.)"""
    from lm_eval.models.hf_vlms import HFMultimodalLM

    lm = HFMultimodalLM(pretrained=str(llava_dir), dtype="float32", batch_size=1, device="cpu")
    last_logits = {}
    for setting in mm_evaluate.IMAGE_SETTINGS:
        args = mm_evaluate.parse_args(
            pope_args(shapes, llava_dir, tmp_path / "unused.json", "--mode", "study")
            + ["--image", setting, "--limit", "1"]
        )
        docs = mm_evaluate.plan_docs(args)
        folder = tmp_path / setting
        folder.mkdir()
        task = mm_evaluate.load_task("pope", docs, folder)
        doc = task.test_docs()[0]
        assert task.doc_to_text(doc) == docs[0]["prompt"]
        encoding = lm.tok_batch_multimodal_encode([task.doc_to_text(doc)], [task.doc_to_image(doc)])
        images = {k: v for k, v in encoding.items() if k not in ("input_ids", "attention_mask")}
        assert set(images) == {"pixel_values"}
        last_logits[setting] = lm._model_multimodal_call(encoding["input_ids"], images)[0, -1]
    assert not torch.equal(last_logits["real"], last_logits["constant"])


# ---- The study's draws, against its own loop ------------------------------------------
# Written as llava/eval/mmoverall/evaluate.py does it: setup_seed's global generators,
# get_random_indices, prepare_eval_samples_and_dataset, sample_batch_demos_from_query_set
# and get_prompt, with batch size 1.


def study_vqa_loop(dataset, num_samples, query_set_size, seed):
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    np.random.seed(seed)  # get_random_indices
    indices = np.random.choice(len(dataset), num_samples + query_set_size, replace=False)
    in_context = [dataset[i] for i in indices[:query_set_size]]
    evaluated = [dataset[i] for i in indices[query_set_size:]]
    demos = [random.sample(in_context, 3) for _ in evaluated]
    return evaluated, demos


def study_caption_loop(test, demo_dataset, query_set_size, seed):
    import random

    import numpy as np

    random.seed(seed)  # the study left it unseeded here; this project seeds it
    np.random.seed(seed)
    indices = np.random.choice(len(demo_dataset), query_set_size, replace=False)
    in_context = [demo_dataset[i] for i in indices]
    demos = []
    for sample in test:
        chosen = random.sample(in_context, 3)
        demos.append([np.random.choice(s["captions"]).strip() for s in chosen])
        np.random.choice(sample["captions"])  # get_prompt(batch[i], train=False)
    return demos


def test_vqa_study_draw_is_the_studys(tmp_path):
    docs = [
        {"question_id": i, "question": f"Question {i}?", "answers": [f"a{i}", "x"], "image": ""}
        for i in range(3000)
    ]
    evaluated, pool = mm_questions.study_vqa_draw(docs, 500, 42, tmp_path / "q.json")
    assert len(pool) == mm_questions.VQA_QUERY_SET == 2048 and len(evaluated) == 500
    mm_questions.add_prompts("vqav2", evaluated, 42, pool=pool)
    want_docs, want_demos = study_vqa_loop(docs, 500, 2048, 42)
    assert [d["question_id"] for d in evaluated] == [d["question_id"] for d in want_docs]
    for doc, demos in zip(evaluated, want_demos, strict=True):
        assert doc["prompt"] == mm_questions.v0_prompt(
            doc["question"], [(d["question"], d["answers"][0]) for d in demos]
        )
    with pytest.raises(Exception, match="needs 7048"):
        mm_questions.study_vqa_draw(docs, 5000, 42, tmp_path / "q.json")


def test_caption_demonstrations_are_the_studys():
    pool = [{"question_id": f"p{i}", "captions": [f"cap {i} a ", f"cap {i} b"]} for i in range(60)]
    test = [{"question_id": f"t{i}", "captions": ["x", "y", "z"]} for i in range(8)]
    mm_questions.add_prompts("caption", test, 42, pool=pool)
    # The pool has fewer than the study's 5000: all of it, in drawn order.
    for doc, demos in zip(test, study_caption_loop(test, pool, 60, 42), strict=True):
        want = [(mm_questions.CAPTION_REQUEST, caption) for caption in demos]
        assert doc["prompt"] == mm_questions.v0_prompt(mm_questions.CAPTION_REQUEST, want)


def test_caption_clean_mode(tmp_path, shapes, llava_dir):
    out, log = tmp_path / "caption.json", tmp_path / "caption.jsonl"
    args = [
        "--model", str(llava_dir), "--task", "caption",
        "--questions", str(shapes / "caption_test.json"),
        "--demonstrations", str(shapes / "caption_train.json"),
        "--images", str(shapes / "images"), "--output", str(out), "--device", "cpu",
        "--mode", "clean", "--log-samples", str(log),
    ]  # fmt: skip
    assert mm_evaluate.main(args) == 0
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["benchmark"] == "caption_clean" and document["num_fewshot"] == 3
    metrics = document["metrics"]
    assert set(metrics) == {f"caption_clean/{m}" for m in ("bleu_4", "meteor", "rouge_l", "cider")}
    samples = read_lines(log)
    assert len(samples) == QUESTIONS and all(len(s["captions"]) == 3 for s in samples)
    # Three text demonstrations, then the image with the same request.
    assert samples[0]["prompt"].count("###Human: " + mm_questions.CAPTION_REQUEST) == 3
    assert samples[0]["prompt"].endswith(f"<im_end>\n{mm_questions.CAPTION_REQUEST}###Assistant:")
    expected = mm_metrics.caption_scores(
        [s["generation"] for s in samples], [s["captions"] for s in samples], "clean"
    )
    for name in ("bleu_4", "meteor", "rouge_l", "cider"):
        assert metrics[f"caption_clean/{name}"] == pytest.approx(expected[name] / 100)


def test_study_draw_larger_than_the_file(tmp_path, shapes, llava_dir, capsys):
    out = tmp_path / "out.json"
    assert (
        mm_evaluate.main(vqa_args(shapes, llava_dir, out, "--mode", "study", "--samples", "5")) == 2
    )
    line = one_error_line(capsys)
    assert f"{QUESTIONS} questions: the study's draw of 5 plus a pool of 2048" in line
    assert not out.exists()


def test_mme_clean_mode(tmp_path, shapes, llava_dir):
    out, log = tmp_path / "mme.json", tmp_path / "mme.jsonl"
    args = [
        "--model", str(llava_dir), "--task", "mme", "--questions", str(shapes / "mme"),
        "--images", str(shapes / "mme"), "--output", str(out), "--device", "cpu",
        "--mode", "clean", "--log-samples", str(log),
    ]  # fmt: skip
    assert mm_evaluate.main(args) == 0
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["benchmark"] == "mme_clean" and document["num_fewshot"] == 0
    samples = read_lines(log)
    # Two questions per evaluation image, each image in one of the three demo tasks.
    assert len(samples) == 2 * QUESTIONS
    assert {s["mme_task"] for s in samples} == {"existence", "count", "color"}
    assert [s["label"] for s in samples[:2]] == ["Yes", "No"]
    expected = mm_metrics.mme_scores(
        *([s[k] for s in samples] for k in ("generation", "label", "mme_task", "image")), "clean"
    )
    metrics = document["metrics"]
    assert metrics["mme_clean/perception"] == pytest.approx(expected["perception"] / 100)
    assert "mme_clean/cognition" not in metrics  # no Cognition task in the demo
    assert document["mme_tasks"] == expected["tasks"]
    # The image file each question read: MME's Perception images are JPEG.
    assert all(s["image"].endswith(".jpg") for s in samples)


def test_mme_question_line_without_a_label(tmp_path, shapes, llava_dir, capsys):
    copy = shutil.copytree(shapes / "mme", tmp_path / "mme")
    broken = next((copy / "count").glob("*.txt"))
    broken.write_text("How many shapes are there?\n", encoding="utf-8")
    out = tmp_path / "out.json"
    args = ["--model", str(llava_dir), "--task", "mme", "--questions", str(copy),
            "--images", str(copy), "--output", str(out), "--mode", "study"]  # fmt: skip
    assert mm_evaluate.main(args) == 2
    line = one_error_line(capsys)
    assert str(broken) in line and "line 1: expected 'question<TAB>Yes|No'" in line
    assert not out.exists()
