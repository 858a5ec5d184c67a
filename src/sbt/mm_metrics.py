"""POPE, VQAv2 and caption scores, each as the study computed it (`study`) and as officially
defined (`clean`).

The study scored both from its own copies of the scripts (llava/eval/mmoverall/ of
github.com/UCSC-VLAA/Sight-Beyond-Text) on the text its `EvalModel.get_outputs`
(get_model_output.py) returns: the generated continuation, decoded with special tokens
skipped and cut nowhere, so it ends with the stop string (`"###"` under the `v0` conversation
the eval scripts pass) whenever generation stopped on it.

POPE. `pope_metric.py` is the official POPE `evaluate.py` (github.com/RUCAIBox/POPE) line
for line: keep the text before the first `.`, drop commas, split on single spaces, and the
answer is "no" if one of the words is exactly `No`, `not` or `no`, else "yes". Both modes
use that rule. They differ in the text it reads: `study` reads the raw continuation, so a
bare `No###` (no full stop) is the word `No###` and counts as "yes"; `clean` cuts the
continuation at the stop strings first. Precision with no "yes" answer at all is a
ZeroDivisionError in the study (nan here); 0 in `clean`.

VQAv2. `study`: `postprocess_vqa_generation` (vqa_metric.py) cuts at the first
`Question`/`Answer`/`###`/`</s>` and then maps any answer with the substring `yes`/`Yes` to
`"Yes"`, else any with `no`/`No` to `"No"` (so "eyes" -> "Yes", "snow" -> "No"); its
`VQAEval.evaluate` (the OpenFlamingo copy) normalises the prediction and the ten human
answers only when the humans disagree, so with ten unanimous "yes" the study's "Yes"
scores 0, and "two" against a unanimous "2" scores 0; overall rounded to 2 decimals.
`clean`: the official VQA evaluation (github.com/GT-Vision-Lab/VQA, vqaEval.py): cut at the
same stop strings, no yes/no mapping, the prediction always normalised (punctuation,
number words, articles, contractions), the human answers' punctuation normalised when they
disagree; both modes score min(#matching humans among the other nine / 3, 1) averaged
over the ten leave-one-out subsets.

MME. `mme_metric.py` is MME's own `calculation.py`: the answer is the lower-cased text if
it is "yes" or "no", else "yes" or "no" if its first 4 characters hold one (in that order),
else "other" (wrong either way); per task, accuracy over the questions plus accuracy+ (the
share of images whose two questions are both right), times 100; Perception sums 8 tasks
and Cognition 4 (landmark and artwork left out, as the study did). `study` reads the
prediction as the study wrote it to its result lines (tabs and newlines removed, stripped),
so `"Yes###"` still reads "yes" from its prefix; `clean` cuts at the stop strings first.

Captions (COCO, Flickr30k). The study's `coco_metric.py` is COCO's caption evaluation
(pycocoevalcap): the Stanford PTB tokenizer (Java; lower case, punctuation dropped) on the
predictions and the references, then BLEU-1..4, METEOR (Java), ROUGE-L, CIDEr-D and SPICE,
each times 100. `study` scores the raw continuation with `"` removed (evaluate.py
`.replace('"', "")`, so a `###` the model generated is scored as words); `clean` cuts it at
the stop strings first. SPICE is left out in both: it downloads Stanford CoreNLP models at
its first run, which an offline machine cannot.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import shutil
import sys
from collections.abc import Sequence

MODES = ("study", "clean")
# What get_outputs' generations may run on into (the study's stop string for conv `v0` is
# "###"; the others are vqa_metric.py's cut list).
STOP_STRINGS = ("Question", "Answer", "###", "</s>")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")


def cut_generation(text: str) -> str:
    """The text before the first stop string (vqa_metric.py's `re.split(..., 1)[0]`)."""
    return re.split("|".join(map(re.escape, STOP_STRINGS)), text, maxsplit=1)[0]


# ---- POPE -----------------------------------------------------------------------------


def pope_answer(text: str) -> str:
    """ "yes" or "no" by the official POPE rule (pope_metric.py = POPE evaluate.py)."""
    if text.find(".") != -1:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def pope_scores(generations: Sequence[str], labels: Sequence[str], mode: str = "study") -> dict:
    """Accuracy, precision, recall, F1 and yes-ratio ("yes" is the positive class), and the
    counts. Labels other than "no" count as "yes", as in the study's script."""
    _check_mode(mode)
    if len(generations) != len(labels) or not labels:
        raise ValueError("need one generation per label, and at least one")
    texts = generations if mode == "study" else [cut_generation(g) for g in generations]
    predicted = [pope_answer(text) == "yes" for text in texts]
    truth = [label != "no" for label in labels]
    tp = sum(p and t for p, t in zip(predicted, truth, strict=True))
    fp = sum(p and not t for p, t in zip(predicted, truth, strict=True))
    tn = sum(not p and not t for p, t in zip(predicted, truth, strict=True))
    fn = sum(not p and t for p, t in zip(predicted, truth, strict=True))
    undefined = math.nan if mode == "study" else 0.0
    precision = tp / (tp + fp) if tp + fp else undefined
    recall = tp / (tp + fn) if tp + fn else undefined
    if math.isnan(precision) or math.isnan(recall):
        f1 = math.nan
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else undefined
    return {
        "accuracy": (tp + tn) / len(labels),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": sum(predicted) / len(predicted),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


# ---- VQAv2 ----------------------------------------------------------------------------

# The official tables (vqaEval.py; the study's copy has the same ones).
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}  # fmt: skip
MANUAL_MAP = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = ("a", "an", "the")
# Both scripts' regex, its `(?!<=\d)` a mistyped look-behind kept as it is.
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
PUNCT = (";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@",
         "`", ",", "?", "!")  # fmt: skip


def process_punctuation(text: str) -> str:
    """vqaEval.py `processPunctuation`."""
    out = text
    for p in PUNCT:
        if (p + " " in text or " " + p in text) or re.search(COMMA_STRIP, text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # The scripts pass re.UNICODE as `count` (its value 32): at most 32 replacements.
    return PERIOD_STRIP.sub("", out, re.UNICODE)


def process_digit_article(text: str) -> str:
    """vqaEval.py `processDigitArticle`: lower case, number words to digits, no articles,
    contractions restored."""
    words = [MANUAL_MAP.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in ARTICLES]
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def study_vqa_answer(generation: str) -> str:
    """vqa_metric.py `postprocess_vqa_generation`: cut, then the yes/no substring mapping."""
    text = cut_generation(generation)
    if "Yes" in text or "yes" in text:
        return "Yes"
    if "No" in text or "no" in text:
        return "No"
    return text


def _clean_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_accuracy(answer: str, human_answers: Sequence[str], mode: str = "study") -> float:
    """One question's accuracy (0..1) for an already extracted answer.

    min(#other humans giving the answer / 3, 1), averaged over leaving each human out.
    """
    _check_mode(mode)
    if not human_answers:
        raise ValueError("a VQA question needs its human answers")
    answer = _clean_whitespace(answer)
    humans = [_clean_whitespace(h) for h in human_answers]
    disagree = len(set(humans)) > 1
    if mode == "study":
        # vqa_metric.py VQAEval.evaluate: everything normalised only if the humans disagree.
        if disagree:
            humans = [process_digit_article(process_punctuation(h)) for h in humans]
            answer = process_digit_article(process_punctuation(answer))
    else:
        # GT-Vision-Lab vqaEval.py: the answer always, the humans' punctuation if they disagree.
        answer = process_digit_article(process_punctuation(answer))
        if disagree:
            humans = [process_punctuation(h) for h in humans]
    scores = []
    for left_out in range(len(humans)):
        others = humans[:left_out] + humans[left_out + 1 :]
        scores.append(min(1.0, sum(other == answer for other in others) / 3))
    return sum(scores) / len(scores)


def vqa_score(
    generations: Sequence[str], human_answers: Sequence[Sequence[str]], mode: str = "study"
) -> float:
    """VQAv2 accuracy in percent over the questions, from the raw generations."""
    _check_mode(mode)
    if len(generations) != len(human_answers) or not generations:
        raise ValueError("need one generation per question, and at least one")
    extract = study_vqa_answer if mode == "study" else cut_generation
    scores = [
        vqa_accuracy(extract(generation), humans, mode)
        for generation, humans in zip(generations, human_answers, strict=True)
    ]
    mean = 100 * sum(scores) / len(scores)
    # The study reports VQAEval's accuracy["overall"], rounded to 2 decimals.
    return round(mean, 2) if mode == "study" else mean


# ---- Captions -------------------------------------------------------------------------

# pycocoevalcap's scorer names (COCOEvalCap.eval keys) -> this package's metric names.
CAPTION_SCORERS = {
    "Bleu_1": "bleu_1", "Bleu_2": "bleu_2", "Bleu_3": "bleu_3", "Bleu_4": "bleu_4",
    "METEOR": "meteor", "ROUGE_L": "rouge_l", "CIDEr": "cider",
}  # fmt: skip
CAPTION_METRICS = tuple(CAPTION_SCORERS.values())


def study_caption(generation: str) -> str:
    """evaluate.py `evaluate_coco_flickr`: the continuation with every `"` removed."""
    return generation.replace('"', "")


def require_java() -> None:
    """The PTB tokenizer and METEOR are Java programs run by pycocoevalcap."""
    if shutil.which("java") is None:
        raise RuntimeError(
            "caption scoring needs a Java runtime on PATH (pycocoevalcap's PTB tokenizer and "
            "METEOR are Java programs); install one, e.g. Debian's default-jre-headless"
        )


def caption_scores(
    generations: Sequence[str], references: Sequence[Sequence[str]], mode: str = "study"
) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr-D in percent (the study's unit), over the set."""
    _check_mode(mode)
    if len(generations) != len(references) or not generations:
        raise ValueError("need one generation per image, and at least one")
    if any(not humans for humans in references):
        raise ValueError("every image needs at least one reference caption")
    extract = study_caption if mode == "study" else cut_generation
    return dict(
        _cached_caption_scores(
            tuple(extract(g) for g in generations), tuple(tuple(r) for r in references)
        )
    )


@functools.lru_cache(maxsize=4)  # each lm-eval aggregation asks for one metric of a set
def _cached_caption_scores(
    predictions: tuple[str, ...], references: tuple[tuple[str, ...], ...]
) -> tuple[tuple[str, float], ...]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    require_java()
    # Keyed by position: the study's keys were image names, one prediction per image.
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize(
        {i: [{"caption": c} for c in humans] for i, humans in enumerate(references)}
    )
    res = tokenizer.tokenize({i: [{"caption": p}] for i, p in enumerate(predictions)})
    scorers = [
        (Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]),
        (Meteor(), ["METEOR"]),
        (Rouge(), ["ROUGE_L"]),
        (Cider(), ["CIDEr"]),
    ]
    scores = {}
    with contextlib.redirect_stdout(sys.stderr):  # Bleu prints its counts
        for scorer, names in scorers:
            score, _ = scorer.compute_score(gts, res)
            values = score if isinstance(score, list) else [score]
            scores.update(
                {CAPTION_SCORERS[n]: 100 * float(v) for n, v in zip(names, values, strict=True)}
            )
    return tuple(scores.items())


# ---- MME ------------------------------------------------------------------------------

# mme_metric.py eval_type_dict, landmark and artwork excluded as the study did.
MME_TASKS = {
    "Perception": ("existence", "count", "position", "color", "posters", "celebrity", "scene",
                   "OCR"),
    "Cognition": ("commonsense_reasoning", "numerical_calculation", "text_translation",
                  "code_reasoning"),
}  # fmt: skip


def mme_answer(text: str) -> str:
    """ "yes", "no" or "other" by MME's `parse_pred_ans`."""
    text = text.strip().lower()
    if text in ("yes", "no"):
        return text
    prefix = text[:4]
    return "yes" if "yes" in prefix else "no" if "no" in prefix else "other"


def mme_scores(
    generations: Sequence[str],
    labels: Sequence[str],
    tasks: Sequence[str],
    images: Sequence[str],
    mode: str = "study",
) -> dict:
    """Per task `acc`, `acc_plus` and `score` (percent); `perception` and `cognition`, the
    sums of the scores of the tasks present (None if none of a type is)."""
    _check_mode(mode)
    if not (len(generations) == len(labels) == len(tasks) == len(images)) or not labels:
        raise ValueError("need one generation, label, task and image per question")
    if mode == "study":  # evaluate.py's result line: tabs and newlines out, stripped
        texts = [g.replace("\t", "").replace("\n", "").strip() for g in generations]
    else:
        texts = [cut_generation(g) for g in generations]
    per_task: dict[str, dict] = {}
    for text, label, task, image in zip(texts, labels, tasks, images, strict=True):
        right = mme_answer(text) == label.strip().lower()
        counts = per_task.setdefault(task, {"right": 0, "questions": 0, "images": {}})
        counts["right"] += right
        counts["questions"] += 1
        counts["images"][image] = counts["images"].get(image, True) and right
    result: dict = {"tasks": {}}
    for task, counts in per_task.items():
        acc = 100 * counts["right"] / counts["questions"]
        acc_plus = 100 * sum(counts["images"].values()) / len(counts["images"])
        result["tasks"][task] = {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus}
    for kind, names in MME_TASKS.items():
        scores = [result["tasks"][t]["score"] for t in names if t in result["tasks"]]
        result[kind.lower()] = sum(scores) if scores else None
    return result
