"""Helpers of the sbt_pope / sbt_vqav2 / sbt_caption / sbt_mme tasks: the image of a prepared
document, the text the study scored, and whole-set scores (sbt.mm_metrics) as lm-eval
aggregations.

Whole-set scores are not means of per-document values (POPE's precision, recall and F1 are
ratios of counts, CIDEr weighs n-grams by every image's references, MME's accuracy+ pairs
an image's questions), so each document passes (generation, target, mode, ...) through and
the aggregation scores the list at once.
"""

from __future__ import annotations

import math

from sbt import mm_metrics

# The control's image: one mid-grey colour, the real image's size.
CONSTANT_GREY = (128, 128, 128)
# The study's stop string under conversation v0 (get_model_output.py: conv.sep).
STOP = "###"
POPE_METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")
CAPTION_METRICS = ("bleu_4", "meteor", "rouge_l", "cider")  # sbt_caption.yaml's metric_list
MME_METRICS = ("perception", "cognition")


def doc_to_image(doc: dict) -> list:
    from PIL import Image

    with Image.open(doc["image"]) as opened:
        image = opened.convert("RGB")
    if doc["image_setting"] == "constant":
        image = Image.new("RGB", image.size, CONSTANT_GREY)
    return [image]


def generated(text: str) -> str:
    """What the study's generation returned: it stopped once "###" was generated
    (KeywordsStoppingCriteria) and kept it; here generation runs on to the token limit,
    so the text after the first "###" is dropped (the same tokens were sampled up to it)."""
    head, sep, _ = text.partition(STOP)
    return head + sep


def pope_results(doc: dict, results: list) -> dict:
    item = (generated(results[0]), doc["target"], doc["mode"])
    return dict.fromkeys(POPE_METRICS, item)


def vqa_results(doc: dict, results: list) -> dict:
    return {"accuracy": (generated(results[0]), doc["answers"], doc["mode"])}


def caption_results(doc: dict, results: list) -> dict:
    item = (generated(results[0]), doc["captions"], doc["mode"])
    return dict.fromkeys(CAPTION_METRICS, item)


def mme_results(doc: dict, results: list) -> dict:
    item = (generated(results[0]), doc["target"], doc["mme_task"], doc["image"], doc["mode"])
    return dict.fromkeys(MME_METRICS, item)


def _pope(items: list, name: str) -> float:
    generations, labels, modes = zip(*items, strict=True)
    return mm_metrics.pope_scores(generations, labels, modes[0])[name]


def pope_accuracy(items: list) -> float:
    return _pope(items, "accuracy")


def pope_precision(items: list) -> float:
    return _pope(items, "precision")


def pope_recall(items: list) -> float:
    return _pope(items, "recall")


def pope_f1(items: list) -> float:
    return _pope(items, "f1")


def pope_yes_ratio(items: list) -> float:
    return _pope(items, "yes_ratio")


def vqa_accuracy(items: list) -> float:
    """A fraction (mm_metrics.vqa_score is in percent, the study's unit)."""
    generations, answers, modes = zip(*items, strict=True)
    return mm_metrics.vqa_score(generations, answers, modes[0]) / 100


def _caption(items: list, name: str) -> float:
    """A fraction, as lm-eval's (mm_metrics.caption_scores is in percent, the study's
    unit); the set is scored once for all four metrics (caption_scores caches it)."""
    generations, references, modes = zip(*items, strict=True)
    return mm_metrics.caption_scores(generations, references, modes[0])[name] / 100


def caption_bleu_4(items: list) -> float:
    return _caption(items, "bleu_4")


def caption_meteor(items: list) -> float:
    return _caption(items, "meteor")


def caption_rouge_l(items: list) -> float:
    return _caption(items, "rouge_l")


def caption_cider(items: list) -> float:
    return _caption(items, "cider")


def _mme(items: list, name: str) -> float:
    """The type's sum of task scores / 100 (nan when no task of the type was evaluated)."""
    generations, labels, tasks, images, modes = zip(*items, strict=True)
    value = mm_metrics.mme_scores(generations, labels, tasks, images, modes[0])[name]
    return math.nan if value is None else value / 100


def mme_perception(items: list) -> float:
    return _mme(items, "perception")


def mme_cognition(items: list) -> float:
    return _mme(items, "cognition")
