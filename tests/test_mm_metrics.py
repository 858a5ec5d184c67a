"""POPE and VQAv2 scoring (sbt.mm_metrics) against hand-computed values, in both modes.

Each of the study's quirks is exercised in `study` mode and shown to differ in `clean`
mode (the official scripts' behaviour). The `study` mode was checked against the study's
own llava/eval/mmoverall/pope_metric.py and vqa_metric.py on random inputs when it was
written (same numbers); those files are not part of this project, so the values here are
worked out by hand from the rules in the module docstring.
"""

from __future__ import annotations

import math

import pytest

from sbt import mm_metrics

POPE_GENERATIONS = [
    "Yes, there is a cat.",  # yes
    "No###",  # study: the word "No###" is not "No" -> yes; clean: cut at ### -> no
    "No.",  # no
    "There is not a cat in the image.",  # "not" -> no
    "Yes###",  # yes
    "no",  # no
]
POPE_LABELS = ["yes", "no", "no", "no", "yes", "yes"]


def test_pope_study_mode_reads_the_raw_generation():
    scores = mm_metrics.pope_scores(POPE_GENERATIONS, POPE_LABELS, "study")
    # predicted: y y n n y n -> TP 2 (0, 4), FP 1 (1), TN 2 (2, 3), FN 1 (5)
    assert (scores["tp"], scores["fp"], scores["tn"], scores["fn"]) == (2, 1, 2, 1)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["yes_ratio"] == pytest.approx(3 / 6)


def test_pope_clean_mode_cuts_at_the_stop_string():
    scores = mm_metrics.pope_scores(POPE_GENERATIONS, POPE_LABELS, "clean")
    # "No###" -> "No" -> no: TP 2, FP 0, TN 3, FN 1
    assert (scores["tp"], scores["fp"], scores["tn"], scores["fn"]) == (2, 0, 3, 1)
    assert scores["accuracy"] == pytest.approx(5 / 6)
    assert scores["precision"] == pytest.approx(1.0)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(0.8)
    assert scores["yes_ratio"] == pytest.approx(2 / 6)


def test_pope_answer_rule_is_word_based():
    # First sentence only, commas dropped, whole words No / not / no.
    assert mm_metrics.pope_answer("No, there is none.") == "no"
    assert mm_metrics.pope_answer("Yes. No.") == "yes"
    assert mm_metrics.pope_answer("Nope") == "yes"
    assert mm_metrics.pope_answer("I do not see one") == "no"
    assert mm_metrics.pope_answer("NO") == "yes"


def test_pope_without_yes_answers():
    # The study's script divides by zero here; nan stands for that, clean reports 0.
    study = mm_metrics.pope_scores(["No.", "No."], ["yes", "no"], "study")
    clean = mm_metrics.pope_scores(["No.", "No."], ["yes", "no"], "clean")
    assert math.isnan(study["precision"]) and math.isnan(study["f1"])
    assert clean["precision"] == 0.0 and clean["f1"] == 0.0
    assert study["accuracy"] == clean["accuracy"] == 0.5


UNANIMOUS_YES = ["yes"] * 10


@pytest.mark.parametrize(
    ("generation", "humans", "study", "clean"),
    [
        # The study maps to "Yes" and does not lower-case it when the humans agree.
        ("Yes", UNANIMOUS_YES, 0.0, 1.0),
        # Substring yes/no: "eyes" makes it "Yes", normalised since the humans disagree.
        ("yes, the eyes are open", ["yes"] * 7 + ["no"] * 3, 1.0, 0.0),
        # "snow" holds "no".
        ("snow", ["snow"] * 10, 0.0, 1.0),
        # Number words become digits only when the humans disagree (study).
        ("two", ["2"] * 10, 0.0, 1.0),
        ("two", ["2"] * 9 + ["3"], 1.0, 1.0),
        # Cut at the stop strings in both modes.
        ("red###Question: what", ["red"] * 10, 1.0, 1.0),
        # Leave-one-out: 2 x red left out -> 1/3; 8 x blue left out -> 2/3.
        ("red", ["red"] * 2 + ["blue"] * 8, 0.6, 0.6),
    ],
)
def test_vqa_question_accuracy(generation, humans, study, clean):
    study_score = mm_metrics.vqa_score([generation], [humans], "study") / 100
    clean_score = mm_metrics.vqa_score([generation], [humans], "clean") / 100
    assert study_score == pytest.approx(study, abs=5e-5)
    assert clean_score == pytest.approx(clean)


def test_vqa_overall_rounding():
    generations = ["red", "Yes", "blue"]
    humans = [["red"] * 2 + ["blue"] * 8, UNANIMOUS_YES, ["blue"] * 10]
    # per question: 0.6, 0 / 1, 1 -> study 160/3 rounded, clean 260/3
    assert mm_metrics.vqa_score(generations, humans, "study") == 53.33
    assert mm_metrics.vqa_score(generations, humans, "clean") == pytest.approx(260 / 3)


def test_vqa_normalisation_tables():
    assert mm_metrics.process_digit_article("The Two dogs") == "2 dogs"
    assert mm_metrics.process_digit_article("dont") == "don't"
    assert mm_metrics.process_punctuation("a, b") == "a b"
    assert mm_metrics.process_punctuation("3.5") == "3.5"
    assert mm_metrics.process_punctuation("end.") == "end"
    assert mm_metrics.study_vqa_answer("No, it is not.") == "No"
    assert mm_metrics.study_vqa_answer("Answer: red") == ""


def test_bad_mode_and_sizes():
    with pytest.raises(ValueError, match="mode must be one of study, clean"):
        mm_metrics.vqa_score(["a"], [["a"]], "official")
    with pytest.raises(ValueError, match="one generation per label"):
        mm_metrics.pope_scores(["yes"], [], "study")


# ---- Captions (pycocoevalcap: Java's PTB tokenizer and METEOR run for real) -------------
CAPTION_REFS = [["A red circle on a white background."], ["Two blue squares, side by side!"]]


def test_caption_exact_match_scores_the_maximum():
    """A prediction equal to its one reference: BLEU-4, ROUGE-L 100; CIDEr-D 10 (1000 in
    the study's percent), since every n-gram is unique to its image (idf log 2 > 0) and
    the tf-idf vectors are equal, their cosine 1 at each n, times 10."""
    scores = mm_metrics.caption_scores(
        ["a red circle on a white background", "two blue squares side by side"], CAPTION_REFS
    )
    assert set(scores) == set(mm_metrics.CAPTION_METRICS)
    assert scores["bleu_4"] == pytest.approx(100, abs=1e-4)
    assert scores["rouge_l"] == pytest.approx(100)
    assert scores["cider"] == pytest.approx(1000)
    assert scores["meteor"] > 90


def test_caption_bleu_by_hand_and_the_studys_quirks():
    """BLEU-1 of "a red circle" against the 7-word reference: every word matches, brevity
    penalty exp(1 - 7/3); the PTB tokenizer lower-cases and drops punctuation."""
    refs = [CAPTION_REFS[0]]
    short = mm_metrics.caption_scores(['A "Red" circle.'], refs, "clean")
    assert short["bleu_1"] == pytest.approx(100 * math.exp(1 - 7 / 3), rel=1e-6)
    # study: the raw continuation, "###" and what follows scored as words: 3 of 5 match
    # (the PTB tokenizer splits "###" into one token "###"; "Human" is the fifth).
    study = mm_metrics.caption_scores(["A red circle###Human"], refs, "study")
    assert study["bleu_1"] == pytest.approx(100 * 3 / 5 * math.exp(1 - 7 / 5), rel=1e-6)
    # clean: cut at the stop string, so the same as the short caption.
    clean = mm_metrics.caption_scores(["A red circle###Human"], refs, "clean")
    assert clean["bleu_1"] == pytest.approx(short["bleu_1"])
    # study drops every '"' (evaluate.py), which the tokenizer would drop anyway.
    assert mm_metrics.study_caption('say "cheese"') == "say cheese"


def test_caption_scoring_refuses_bad_input():
    with pytest.raises(ValueError, match="one generation per image"):
        mm_metrics.caption_scores(["a"], CAPTION_REFS)
    with pytest.raises(ValueError, match="at least one reference"):
        mm_metrics.caption_scores(["a"], [[]])


# ---- MME ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("Yes", "yes"),
        (" no ", "no"),
        ("Yes, there is.", "yes"),  # "yes," is not "yes": its first 4 characters hold it
        ("No###", "no"),
        ("Not at all", "no"),  # "not " holds "no"
        ("The answer is yes", "other"),  # neither in "the "
        ("", "other"),
    ],
)
def test_mme_answer_rule(text, answer):
    assert mm_metrics.mme_answer(text) == answer


def test_mme_scores_by_hand():
    """Two tasks. existence: image a both right, image b one of two -> acc 3/4 = 75, acc+
    1/2 = 50, score 125. color: one image, both wrong ("other" counts wrong) -> 0.
    Perception 125 + 0; no Cognition task -> None."""
    generations = ["Yes.", "No", "Yes", "Yes", "maybe", "It is"]
    labels = ["Yes", "No", "Yes", "No", "Yes", "No"]
    tasks = ["existence"] * 4 + ["color"] * 2
    images = ["a", "a", "b", "b", "c", "c"]
    scores = mm_metrics.mme_scores(generations, labels, tasks, images)
    assert scores["tasks"]["existence"] == {"acc": 75.0, "acc_plus": 50.0, "score": 125.0}
    assert scores["tasks"]["color"] == {"acc": 0.0, "acc_plus": 0.0, "score": 0.0}
    assert scores["perception"] == 125.0 and scores["cognition"] is None


def test_mme_study_mode_drops_newlines_as_its_result_file_did():
    """The study wrote each prediction on one line (newlines and tabs removed), so "Y\\nes"
    read "yes"; clean mode reads the text cut at the stop strings, where it is "other"."""
    args = (["Y\nes"], ["Yes"], ["count"], ["a"])
    assert mm_metrics.mme_scores(*args, "study")["tasks"]["count"]["acc"] == 100.0
    assert mm_metrics.mme_scores(*args, "clean")["tasks"]["count"]["acc"] == 0.0
