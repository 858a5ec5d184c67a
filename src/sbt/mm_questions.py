"""The question files of the multimodal benchmarks, checked, and the study's prompts.

`read_pope` and `read_vqa` turn a POPE question file or a VQAv2 question + annotation file
into documents (question, image path, answers), raising one InputError line naming the
file, record and field (or the missing image) before any model loads; `add_prompts` gives
each the prompt the study's llava/eval/mmoverall scripts built (conversation v0, the image
first in the question's turn, VQAv2 with 3 text-only demonstrations), or the same turns in
the run's training template (`template_prompt`, the opt-in `prompt: training`).
"""

from __future__ import annotations

import random
import re
from glob import escape as glob_escape
from pathlib import Path

import numpy as np

from sbt.common import input_error, read_json_file
from sbt.templates import SYS_V0, Template

# evaluate.py --additional_shots 3: text-only (question, first answer) turns before VQAv2's.
VQA_DEMONSTRATIONS = 3
# evaluate.py evaluate_vqa: the demonstrations' pool, drawn with the evaluated questions.
VQA_QUERY_SET = 2048
# evaluate.py evaluate_coco_flickr: its caption request, and the pool of demonstration
# images drawn from the demonstration (train) file.
CAPTION_REQUEST = "Please provide a description of the picture."
CAPTION_QUERY_SET = 5000
# evaluate.py --max_generation_length 10 (the task YAMLs' max_gen_toks).
MAX_NEW_TOKENS = 10
# llava/conversation.py conv_vicuna_v0 (conv_templates["v0"]): system prompt and its one
# example exchange, separator "###", roles Human / Assistant (SeparatorStyle.SINGLE).
V0_SYSTEM = SYS_V0  # the same system text as the training template "v0"
V0_EXAMPLE = (
    ("Human", "What are the key differences between renewable and non-renewable energy sources?"),
    (
        "Assistant",
        "Renewable energy sources are those that can be replenished naturally in a relatively "
        "short amount of time, such as solar, wind, hydro, geothermal, and biomass. "
        "Non-renewable energy sources, on the other hand, are finite and will eventually be "
        "depleted, such as coal, oil, and natural gas. Here are some key differences between "
        "renewable and non-renewable energy sources:\n"
        "1. Availability: Renewable energy sources are virtually inexhaustible, while "
        "non-renewable energy sources are finite and will eventually run out.\n"
        "2. Environmental impact: Renewable energy sources have a much lower environmental "
        "impact than non-renewable sources, which can lead to air and water pollution, "
        "greenhouse gas emissions, and other negative effects.\n"
        "3. Cost: Renewable energy sources can be more expensive to initially set up, but they "
        "typically have lower operational costs than non-renewable sources.\n"
        "4. Reliability: Renewable energy sources are often more reliable and can be used in "
        "more remote locations than non-renewable sources.\n"
        "5. Flexibility: Renewable energy sources are often more flexible and can be adapted "
        "to different situations and needs, while non-renewable sources are more rigid and "
        "inflexible.\n"
        "6. Sustainability: Renewable energy sources are more sustainable over the long term, "
        "while non-renewable sources are not, and their depletion can lead to economic and "
        "social instability.\n",
    ),
)
V0_SEP = "###"
# get_model_output.py with mm_use_im_start_end: the image opens the question's turn.
IMAGE_PREFIX = "<im_start><image><im_end>\n"
# A 12-digit COCO image id at the end of a file name (COCO_val2014_000000000042.jpg).
IMAGE_ID = re.compile(r"(\d{12})\.[A-Za-z]+$")


def v0_prompt(question: str, demonstrations: list[tuple[str, str]] = ()) -> str:
    """conv_vicuna_v0.get_prompt() after the study's appends: the demonstrations' turns,
    then the image and the question, then "Assistant:" to generate after."""
    messages = [*V0_EXAMPLE]
    for asked, answered in demonstrations:
        messages += [("Human", asked), ("Assistant", answered)]
    messages.append(("Human", IMAGE_PREFIX + question))
    text = V0_SYSTEM + V0_SEP
    for role, message in messages:
        text += f"{role}: {message}{V0_SEP}"
    return text + "Assistant:"


def template_prompt(
    template: Template, question: str, demonstrations: list[tuple[str, str]] = ()
) -> str:
    """The same turns as `v0_prompt` in a training template, up to where the model answers.

    The conversation is rendered with a placeholder answer to the question; the prompt is
    the text before that answer's trained span (the role tag included, as in training), so
    it is what the model saw before each answer it was trained on.
    """
    turns = []
    for asked, answered in demonstrations:
        turns += [{"from": "human", "value": asked}, {"from": "gpt", "value": answered}]
    turns += [
        {"from": "human", "value": IMAGE_PREFIX + question},
        {"from": "gpt", "value": "answer"},
    ]
    rendered = template.render(turns)
    return rendered.text[: rendered.trained_spans[-1][0]]


# --------------------------------------------------------------------------- input files
def _field(path: Path, record: object, index: int, name: str, kind: type) -> object:
    record_id = None
    if isinstance(record, dict):
        record_id = record.get("question_id", record.get("image_name"))
    if not isinstance(record, dict) or name not in record:
        raise input_error(path, "missing", index=index, record_id=record_id, field=name)
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise input_error(
            path,
            f"expected {kind.__name__}, got {value!r}",
            index=index,
            record_id=record_id,
            field=name,
        )
    return value


def _existing_image(path: Path, image: Path, index: int, record_id: object) -> str:
    if not image.is_file():
        raise input_error(
            path, f"image file not found: {image}", index=index, record_id=record_id, field="image"
        )
    return str(image.resolve())


def read_pope(questions: Path, images: Path) -> list[dict]:
    """POPE's JSON Lines (coco_pope_*.json): question_id, image, text, label."""
    records = _records(questions)
    docs = []
    for index, record in enumerate(records):
        question_id = _field(questions, record, index, "question_id", (int, str))
        text = _field(questions, record, index, "text", str)
        label = _field(questions, record, index, "label", str)
        name = _field(questions, record, index, "image", str)
        image = _existing_image(questions, images / name, index, question_id)
        docs.append(
            {"question_id": question_id, "question": text.strip(), "target": label, "image": image}
        )
    return docs


def _records(path: Path) -> list:
    """POPE files are JSON Lines under a .json name; read them line by line."""
    records = read_json_file(path, lines=True)
    if not records:
        raise input_error(path, "no questions")
    return records


def image_index(images: Path) -> dict[int, Path]:
    """Image id -> file, by the 12-digit id ending a file name (COCO's naming)."""
    if not images.is_dir():
        raise input_error(images, "image directory not found")
    found = {}
    for path in images.iterdir():
        match = IMAGE_ID.search(path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def read_vqa(questions: Path, annotations: Path, images: Path) -> list[dict]:
    """VQAv2's question file and annotation file, joined by question_id (as VQADataset)."""
    question_doc = read_json_file(questions)
    annotation_doc = read_json_file(annotations)
    question_list = _field(questions, question_doc, None, "questions", list)
    annotation_list = _field(annotations, annotation_doc, None, "annotations", list)
    answers_by_id = {}
    for index, record in enumerate(annotation_list):
        question_id = _field(annotations, record, index, "question_id", int)
        answers = _field(annotations, record, index, "answers", list)
        texts = []
        for answer in answers:
            if not isinstance(answer, dict) or not isinstance(answer.get("answer"), str):
                raise input_error(
                    annotations,
                    f"each answer needs a string 'answer', got {answer!r}",
                    index=index,
                    record_id=question_id,
                    field="answers",
                )
            texts.append(answer["answer"])
        answers_by_id[question_id] = texts
    by_image = image_index(images)
    if not question_list:
        raise input_error(questions, "no questions", field="questions")
    docs = []
    for index, record in enumerate(question_list):
        question_id = _field(questions, record, index, "question_id", int)
        question = _field(questions, record, index, "question", str)
        image_id = _field(questions, record, index, "image_id", int)
        if question_id not in answers_by_id:
            raise input_error(
                questions,
                f"no annotation with this question_id in {annotations}",
                index=index,
                record_id=question_id,
                field="question_id",
            )
        if image_id not in by_image:
            raise input_error(
                questions,
                f"no file for image {image_id} (…{image_id:012d}.<ext>) in {images}",
                index=index,
                record_id=question_id,
                field="image_id",
            )
        docs.append(
            {
                "question_id": question_id,
                "question": question.strip(),
                "answers": answers_by_id[question_id],
                "image": str(by_image[image_id].resolve()),
            }
        )
    return docs


def read_captions(path: Path, images: Path | None = None) -> list[dict]:
    """The study's caption files (mscoco_test.json, flickr30k_train.json, ...): a list of
    {"image_name", "captions": [...]}; with `images`, each image must exist there."""
    records = read_json_file(path)
    if not isinstance(records, list) or not records:
        raise input_error(path, "expected a non-empty list of {image_name, captions} records")
    docs = []
    for index, record in enumerate(records):
        name = _field(path, record, index, "image_name", str)
        captions = _field(path, record, index, "captions", list)
        if not captions or not all(isinstance(c, str) for c in captions):
            raise input_error(
                path,
                "expected a non-empty list of strings",
                index=index,
                record_id=name,
                field="captions",
            )
        doc = {"question_id": name, "captions": captions}
        if images is not None:
            doc["image"] = _existing_image(path, images / name, index, name)
        docs.append(doc)
    return docs


def read_mme(root: Path, images: Path) -> list[dict]:
    """MME's folders as the study read them (eval_datasets.py `MmeDataset`), one per task
    of mm_metrics.MME_TASKS that `root` has: either `questions_answers_YN/<id>.txt` beside
    `images/<id>.<ext>`, or `<id>.txt` beside `<id>.<ext>`; each line `question<TAB>Yes|No`.
    The image is looked up under `images` with the same layout: `.jpg` for Perception and
    `.png` for Cognition as the study named them, else the one file of that stem."""
    from sbt.mm_metrics import MME_TASKS

    if not root.is_dir():
        raise input_error(root, "MME folder not found")
    docs = []
    for kind, tasks in MME_TASKS.items():
        for task in tasks:
            folder = root / task
            if not folder.is_dir():
                continue
            split = (folder / "questions_answers_YN").is_dir()
            texts = folder / "questions_answers_YN" if split else folder
            for text_file in sorted(texts.glob("*.txt")):
                image_dir = images / task / ("images" if split else "")
                image = _mme_image(image_dir, text_file.stem, kind, text_file)
                lines = [ln for ln in text_file.read_text(encoding="utf-8").splitlines() if ln]
                for number, line in enumerate(lines, start=1):
                    question, tab, label = line.partition("\t")
                    if not tab or label.strip().lower() not in ("yes", "no"):
                        raise input_error(
                            text_file, f"line {number}: expected 'question<TAB>Yes|No'"
                        )
                    docs.append(
                        {
                            "question_id": f"{task}/{text_file.stem}/{number}",
                            "question": question.strip(),
                            "target": label.strip(),
                            "mme_task": task,
                            "image": image,
                        }
                    )
    if not docs:
        raise input_error(root, "no MME task folder (existence, count, ..., code_reasoning)")
    return docs


def _mme_image(folder: Path, stem: str, kind: str, questions: Path) -> str:
    named = folder / f"{stem}{'.jpg' if kind == 'Perception' else '.png'}"
    found = [named] if named.is_file() else sorted(folder.glob(f"{glob_escape(stem)}.*"))
    found = [path for path in found if path.suffix.lower() != ".txt"]
    if len(found) != 1:
        raise input_error(questions, f"no image {named.name} (or one {stem}.*) in {folder}")
    return str(found[0].resolve())


def study_vqa_draw(docs: list[dict], samples: int, seed: int, path: Path):
    """The study's VQAv2 subset: `samples` questions and the demonstrations' pool of 2048,
    drawn together (get_random_indices: np.random.seed, np.random.choice without
    replacement; the pool first). Returns (evaluated questions in drawn order, pool)."""
    wanted = samples + VQA_QUERY_SET
    if wanted > len(docs):
        raise input_error(
            path,
            f"{len(docs)} questions: the study's draw of {samples} plus a pool of "
            f"{VQA_QUERY_SET} needs {wanted}",
        )
    indices = np.random.RandomState(seed).choice(len(docs), wanted, replace=False)
    return [docs[i] for i in indices[VQA_QUERY_SET:]], [docs[i] for i in indices[:VQA_QUERY_SET]]


def add_prompts(
    task: str,
    docs: list[dict],
    seed: int,
    template: Template | None = None,
    pool: list[dict] | None = None,
) -> None:
    """The prompt of each document (the study's v0 prompt, or in `template`), with the
    task's demonstrations drawn with `seed` as the study drew them.

    VQAv2: 3 (question, first answer) turns per question, random.sample from `pool` (the
    study's 2048, see study_vqa_draw), or without a pool from every other question of the
    file, so a small file works and every question of it is evaluated.

    Captions: `pool` is the demonstration file's records. The study drew 5000 of them with
    np.random.choice (all of them here if the file has fewer), then for each image 3 with
    random.sample, each with one of its captions by np.random.choice, and one more
    np.random.choice over the image's own captions that it discarded; the same calls on
    the same generators here, so the same demonstrations for the same files.
    """
    rng = random.Random(seed)
    numpy_rng = np.random.RandomState(seed)
    if task == "caption":
        size = min(CAPTION_QUERY_SET, len(pool))
        pool = [pool[i] for i in numpy_rng.choice(len(pool), size, replace=False)]
    for index, doc in enumerate(docs):
        demonstrations = []
        if task == "vqav2":
            others = pool or [other for position, other in enumerate(docs) if position != index]
            chosen = rng.sample(others, min(VQA_DEMONSTRATIONS, len(others)))
            demonstrations = [(o["question"], o["answers"][0].strip()) for o in chosen]
        elif task == "caption":
            chosen = rng.sample(pool, min(VQA_DEMONSTRATIONS, len(pool)))
            demonstrations = [
                (CAPTION_REQUEST, str(numpy_rng.choice(o["captions"])).strip()) for o in chosen
            ]
            numpy_rng.choice(doc["captions"])  # the study's get_prompt(train=False) drew one
            doc["question"] = CAPTION_REQUEST
        if template is None:
            doc["prompt"] = v0_prompt(doc["question"], demonstrations)
        else:
            doc["prompt"] = template_prompt(template, doc["question"], demonstrations)


def default_annotations(questions: Path) -> Path:
    """The annotation file beside a VQAv2 question file ("questions" -> "annotations")."""
    return questions.with_name(questions.name.replace("questions", "annotations"))
