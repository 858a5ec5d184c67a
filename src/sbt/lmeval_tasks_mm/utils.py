"""Helpers of the sbt_pope / sbt_vqav2 tasks: the image of a prepared document, the text
the study scored, and whole-set scores (sbt.mm_metrics) as lm-eval aggregations.

POPE's precision, recall and F1 are ratios of counts over the whole set, not means of
per-document values, so each document passes (generation, target, mode) through and the
aggregation scores the list at once.
"""

from __future__ import annotations

from sbt import mm_metrics

# The control's image: one mid-grey colour, the real image's size.
CONSTANT_GREY = (128, 128, 128)
# The study's stop string under conversation v0 (get_model_output.py: conv.sep).
STOP = "###"
POPE_METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")


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
