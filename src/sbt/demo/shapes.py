#!/usr/bin/env python
"""A seeded synthetic image collection for the multimodal arm, and a tiny CLIP vision tower.

Images are small PNGs of one or two coloured shapes (circle, square, triangle; red, green,
blue, yellow) on a plain background (white, black, purple, orange), drawn with Pillow. From
them, in the study's file formats:

- `pretrain_chat.json`: stage-1 captions in the schema of LLaVA's CC3M-595K `chat.json`
  (`id`/`image` like `GCC_train_000000000`, a brief-description request with `<image>` before
  or after it, the caption as the answer);
- `instruct.json`: stage-2 question answering in the LLaVA instruction schema (`<image>\\n`
  opening the first human turn, 1-3 rounds: background colour, shape colour, count and
  presence, answered in one word as VQA answers are, and a description; in half the
  records one of them asked in MME's yes/no wording instead);
- `pope.json` (JSON Lines, as POPE's `coco_pope_*.json`): "Is there a ... in the image?"
  with `label` yes/no, half each; `vqa_questions.json` / `vqa_annotations.json`: VQAv2's
  question and annotation files (ten answers per question, some annotators disagreeing);
  `caption_test.json` / `caption_train.json`: caption files in the study's format (a list
  of {"image_name", "captions"}), three references per image, for the evaluation images
  and for the stage-1 images (the demonstrations' pool);
- `mme/`: MME's layout (a folder per task, `<id>.jpg` beside `<id>.txt`, two lines
  `question<TAB>Yes|No` per image, one true and one false) for three Perception tasks on
  the evaluation images: existence, count and color (the background's).

The evaluation images are drawn apart from the training images. Same seed, same bytes.
`build_tiny_vision_tower` writes a randomly initialised `CLIPVisionModel` (56 px, 14 px
patches: 16 patch tokens) with its image processor config, loadable like
`openai/clip-vit-large-patch14`.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from sbt.common import atomic_path, cli, write_json

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 40),
}
SHAPES = ("circle", "square", "triangle")
# No grey: the control image (sbt.mm_evaluate --image constant) is mid-grey.
BACKGROUNDS = {
    "white": (255, 255, 255),
    "black": (20, 20, 20),
    "purple": (130, 50, 160),
    "orange": (245, 140, 30),
}
NUMBER_WORDS = {1: "one", 2: "two"}
# The kind of request CC3M-595K's chat.json pairs with a caption (LLaVA's brief prompts).
BRIEF_PROMPTS = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Give a short and clear explanation of the subsequent image.",
    "Share a concise interpretation of the image provided.",
    "Summarize the visual content of the image.",
)
# Requests for a description in the instruction data (LLaVA's detailed-description prompts
# vary the same way); the second is the study's caption request (its evaluate.py).
DESCRIBE_PROMPTS = ("Describe the image.", "Please provide a description of the picture.")
DEFAULT_SEED = 7120
IMAGE_SIZE = 56
# (background colour, [(colour, shape), ...]): what one image shows.
Scene = tuple[str, list[tuple[str, str]]]


def draw(scene: Scene, size: int, rng: random.Random):
    """A square image of the background colour, each (colour, shape) in its own part."""
    from PIL import Image, ImageDraw

    background, shapes = scene
    image = Image.new("RGB", (size, size), BACKGROUNDS[background])
    pen = ImageDraw.Draw(image)
    slot = size // len(shapes)
    for index, (color, shape) in enumerate(shapes):
        extent = rng.randint(slot * 5 // 10, slot * 8 // 10)
        left = index * slot + rng.randint(0, slot - extent)
        top = rng.randint(0, size - extent)
        box = (left, top, left + extent - 1, top + extent - 1)
        fill = COLORS[color]
        if shape == "circle":
            pen.ellipse(box, fill=fill)
        elif shape == "square":
            pen.rectangle(box, fill=fill)
        else:
            pen.polygon([(left + extent // 2, top), (box[2], box[3]), (left, box[3])], fill=fill)
    return image


def caption(scene: Scene) -> str:
    background, shapes = scene
    text = " and ".join(f"a {color} {shape}" for color, shape in shapes)
    return f"{text[0].upper()}{text[1:]} on a {background} background."


def references(scene: Scene) -> list[str]:
    """Reference captions of a scene, as several annotators would write them."""
    background, shapes = scene
    text = caption(scene)
    listed = " and ".join(f"a {color} {shape}" for color, shape in shapes)
    return [text, f"A {background} background with {listed}.", f"The image shows {listed}."]


def random_scene(rng: random.Random) -> Scene:
    kinds = rng.sample(SHAPES, rng.choice((1, 2)))
    return rng.choice(sorted(BACKGROUNDS)), [(rng.choice(sorted(COLORS)), k) for k in kinds]


def word(text: str) -> str:
    """A one-word answer as the instruction data gives it: "Green."."""
    return f"{text.capitalize()}."


MME_TASKS = ("existence", "count", "color")


def mme_questions(scene: Scene, task: str, rng: random.Random) -> list[tuple[str, str]]:
    """An MME image's two questions: one answered Yes, one No (MME's wording)."""
    background, shapes = scene
    if task == "existence":  # a scene has one or two of the three shapes
        present, absent = sorted(kinds(scene)), sorted(set(SHAPES) - kinds(scene))
        pair = (f"a {rng.choice(present)}", f"a {rng.choice(absent)}")
        template = "Is there {} in this image?"
    elif task == "count":
        others = [n for n in NUMBER_WORDS if n != len(shapes)]
        pair = (NUMBER_WORDS[len(shapes)], NUMBER_WORDS[rng.choice(others)])
        template = "Are there {} shapes in this image?"
    else:
        pair = (background, rng.choice(sorted(set(BACKGROUNDS) - {background})))
        template = "Is the background {} in this image?"
    suffix = " Please answer yes or no."
    return [(template.format(pair[0]) + suffix, "Yes"), (template.format(pair[1]) + suffix, "No")]


def qa_rounds(scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
    """Questions about one image and their answers (shuffled, 1-3 of them)."""
    background, shapes = scene
    color, kind = rng.choice(shapes)
    asked = rng.choice(SHAPES)
    description = caption(scene)
    rounds = [
        ("What color is the background?", word(background)),
        (f"What color is the {kind}?", word(color)),
        ("How many shapes are there in the image?", word(NUMBER_WORDS[len(shapes)])),
        (f"Is there a {asked} in the image?", word("yes" if asked in kinds(scene) else "no")),
        (
            rng.choice(DESCRIBE_PROMPTS),
            f"The image shows {description[0].lower()}{description[1:]}",
        ),
    ]
    if rng.random() < 0.5:  # some in MME's yes/no wording instead, true or false
        task = rng.choice(MME_TASKS)
        question, answer = mme_questions(scene, task, rng)[rng.randrange(2)]
        rounds[{"color": 0, "count": 2, "existence": 3}[task]] = (question, word(answer))
    rng.shuffle(rounds)
    return rounds[: rng.randint(1, 3)]


def kinds(scene: Scene) -> set[str]:
    return {kind for _, kind in scene[1]}


def with_image_tag(text: str, rng: random.Random) -> str:
    """`<image>` before the text (most records) or after it, as in LLaVA's files."""
    return f"{text}\n<image>" if rng.random() < 0.25 else f"<image>\n{text}"


def vqa_answers(truth: str, others: list[str], rng: random.Random) -> list[str]:
    """Ten annotators' answers: all agree, or (a quarter of questions) two disagree."""
    answers = [truth] * 10
    if rng.random() < 0.25:
        for position in rng.sample(range(10), 2):
            answers[position] = rng.choice(others)
    return answers


def vqa_entry(scene: Scene, question_id: int, image_id: int, rng: random.Random):
    """One VQAv2 question and its annotation about an image (half of them the background
    colour, which even a random tower tells apart; then a shape's colour, count, presence)."""
    background, shapes = scene
    color, kind = rng.choice(shapes)
    choice = rng.randrange(6)
    if choice >= 3:
        question, qtype, atype = "What color is the background?", "what color is the", "other"
        truth, others = background, [c for c in BACKGROUNDS if c != background]
    elif choice == 0:
        question, qtype, atype = f"What color is the {kind}?", "what color is the", "other"
        truth, others = color, [c for c in COLORS if c != color]
    elif choice == 1:
        question, qtype, atype = "How many shapes are there in the image?", "how many", "number"
        truth, others = str(len(shapes)), ["1", "2", "3"]
        others.remove(truth)
    else:
        asked = rng.choice(SHAPES)
        question, qtype, atype = f"Is there a {asked} in the image?", "is there a", "yes/no"
        truth = "yes" if asked in kinds(scene) else "no"
        others = ["no" if truth == "yes" else "yes"]
    answers = vqa_answers(truth, others, rng)
    annotation = {
        "question_id": question_id,
        "image_id": image_id,
        "question_type": qtype,
        "answer_type": atype,
        "multiple_choice_answer": max(set(answers), key=answers.count),
        "answers": [
            {"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
            for i, a in enumerate(answers)
        ],
    }
    return {"image_id": image_id, "question": question, "question_id": question_id}, annotation


def write_shapes_demo(
    output: str | Path,
    *,
    pretrain: int = 200,
    instruct: int = 200,
    evaluation: int = 60,
    seed: int = DEFAULT_SEED,
    image_size: int = IMAGE_SIZE,
) -> Path:
    """Write images and the files described above into the directory `output`."""
    from PIL import Image

    rng = random.Random(seed)
    output = Path(output)
    with atomic_path(output, directory=True) as tmp:
        images = tmp / "images"
        images.mkdir()

        def new_image(name: str) -> Scene:
            scene = random_scene(rng)
            draw(scene, image_size, rng).save(images / name, format="PNG")
            return scene

        chat, train_captions, test_captions = [], [], []
        for i in range(pretrain):
            name = f"GCC_train_{i:09d}"
            scene = new_image(f"{name}.png")
            train_captions.append({"image_name": f"{name}.png", "captions": references(scene)})
            request = with_image_tag(rng.choice(BRIEF_PROMPTS), rng)
            chat.append(
                {
                    "id": name,
                    "image": f"{name}.png",
                    "conversations": [
                        {"from": "human", "value": request},
                        {"from": "gpt", "value": caption(scene)},
                    ],
                }
            )
        records = []
        for i in range(instruct):
            name = f"{i:012d}"
            scene = new_image(f"{name}.png")
            turns = []
            for position, (question, answer) in enumerate(qa_rounds(scene, rng)):
                value = with_image_tag(question, rng) if position == 0 else question
                turns += [{"from": "human", "value": value}, {"from": "gpt", "value": answer}]
            records.append({"id": name, "image": f"{name}.png", "conversations": turns})
        pope, questions, annotations = [], [], []
        mme_rng = random.Random(seed + 1)  # its own stream: the other files stay the same
        for i in range(evaluation):
            image_id = 900000 + i
            name = f"eval_{image_id:012d}.png"
            scene = new_image(name)
            task = MME_TASKS[i % len(MME_TASKS)]
            (tmp / "mme" / task).mkdir(parents=True, exist_ok=True)
            with Image.open(images / name) as drawn:  # MME's Perception images are JPEG
                drawn.convert("RGB").save(tmp / "mme" / task / f"{image_id}.jpg", quality=95)
            lines = [f"{q}\t{a}\n" for q, a in mme_questions(scene, task, mme_rng)]
            (tmp / "mme" / task / f"{image_id}.txt").write_text("".join(lines), encoding="utf-8")
            test_captions.append({"image_name": name, "captions": references(scene)})
            present = kinds(scene)
            # Alternate yes and no questions so that the labels are balanced.
            pool = sorted(present) if i % 2 == 0 else sorted(set(SHAPES) - present)
            asked = rng.choice(pool)
            pope.append(
                {
                    "question_id": i + 1,
                    "image": name,
                    "text": f"Is there a {asked} in the image?",
                    "label": "yes" if asked in present else "no",
                }
            )
            question, annotation = vqa_entry(scene, image_id * 10, image_id, rng)
            questions.append(question)
            annotations.append(annotation)
        write_json(tmp / "pretrain_chat.json", chat)
        write_json(tmp / "instruct.json", records)
        with open(tmp / "pope.json", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(line) + "\n" for line in pope)
        header = {"info": {}, "license": {}, "data_type": "shapes", "data_subtype": "val"}
        write_json(
            tmp / "vqa_questions.json",
            {**header, "task_type": "Open-Ended", "questions": questions},
        )
        write_json(tmp / "vqa_annotations.json", {**header, "annotations": annotations})
        write_json(tmp / "caption_test.json", test_captions)
        write_json(tmp / "caption_train.json", train_captions)
    return output


def build_tiny_vision_tower(
    output: str | Path,
    *,
    image_size: int = IMAGE_SIZE,
    patch_size: int = 14,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    seed: int = 0,
) -> Path:
    """A random-initialised CLIPVisionModel and its CLIP image processor, in `output`."""
    import torch
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        projection_dim=hidden_size,
    )
    output = Path(output)
    with atomic_path(output, directory=True) as tmp:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            CLIPVisionModel(config).save_pretrained(tmp)
        # The CLIP processor (resize the short side, centre crop, CLIP mean/std) at this size;
        # the Pillow backend, which needs no torchvision.
        processor = CLIPImageProcessorPil(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
        )
        processor.save_pretrained(tmp)
    return output


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="directory to create")
    parser.add_argument("--pretrain", type=int, default=200, help="stage-1 images (200)")
    parser.add_argument("--instruct", type=int, default=200, help="stage-2 images (200)")
    parser.add_argument("--evaluation", type=int, default=60, help="POPE/VQA images (60)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--tower", help="also write a tiny CLIP vision tower here")
    args = parser.parse_args(argv)
    write_shapes_demo(
        args.output,
        pretrain=args.pretrain,
        instruct=args.instruct,
        evaluation=args.evaluation,
        seed=args.seed,
    )
    print(f"wrote {args.output}")
    if args.tower:
        build_tiny_vision_tower(args.tower, seed=args.seed)
        print(f"wrote {args.tower}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
