"""Unit tests of the study mode's pieces (sbt.lmeval_study, sbt.lmeval_study_tasks).

The end-to-end proof against the study's harness is tests/test_golden_eval.py; these pin
the pieces: the grouped exact match, the v0.3 few-shot draw, the study's BLEU, the dtype
read from a checkpoint, the generated YAML, and the em columns of the tables.
"""

from __future__ import annotations

import json
import math
import random

import pytest

from sbt import lmeval_study_tasks as study_tasks
from sbt.lmeval_study import FunctionRef, StudyOptions, checkpoint_dtype, dump_task_yaml
from sbt.results import RunResult, build_summary


def test_grouped_exact_match_is_v03s():
    # v0.3 sorts by group_id and cuts runs of 4; an incomplete last run is dropped
    items = [(1, True), (0, True), (1, True), (0, True), (0, True), (1, False)]
    items += [(0, True), (1, True), (2, True)]
    assert study_tasks.ethics_em_4(items) == 0.5  # group 0 all right, group 1 not
    assert study_tasks.ethics_em_5([(0, True)] * 5 + [(1, True)] * 4 + [(1, False)]) == 0.5
    assert math.isnan(study_tasks.ethics_em_4([(0, True)] * 3))  # no complete group


def test_ethics_process_results_acc_and_group():
    doc = {"label": 1, "group_id": 7}
    assert study_tasks.ethics_process_results(doc, [(-2.0, False), (-1.0, True)]) == {
        "acc": 1.0,
        "em": (7, True),
    }
    tie = study_tasks.ethics_process_results(doc, [(-1.0, False), (-1.0, False)])
    assert tie["acc"] == 0.0  # a tie is the first choice, as v0.3's argmax / `>`


def test_v03_sampler_reproduces_the_v03_draw():
    """The same documents as v0.3's evaluator: shuffle the eval docs, then sample in order."""
    eval_docs = [{"q": f"e{i}"} for i in range(13)]
    train = [{"q": f"t{i}"} for i in range(20)]
    rnd = random.Random()
    rnd.seed(42)
    shuffled = list(eval_docs)
    rnd.shuffle(shuffled)
    v03 = {doc["q"]: rnd.sample(train, 8) for doc in shuffled}

    sampler = study_tasks.V03Sampler(train, n_eval_docs=len(eval_docs))
    sampler.set_rnd(1234)  # lm-eval's seed does not matter
    for doc_id, doc in enumerate(eval_docs):
        sampler.doc_id = doc_id
        assert sampler.sample(8) == v03[doc["q"]]


def test_gsm8k_strict_answer():
    doc = {"answer": "So 1,000 in all.\n#### 1,000"}
    assert study_tasks.gsm8k_process_results(doc, [" ... #### 1000"])["acc"] == 1.0
    assert study_tasks.gsm8k_process_results(doc, [" ... #### 1000."])["acc"] == 0.0
    assert study_tasks.gsm8k_process_results(doc, [" 1000"])["acc"] == 0.0


def test_study_bleu_smooths_a_generation_without_matches():
    # sacrebleu 1.5.0 (the study's) gives 3.2836...; sacrebleu 2 would give 0
    no_match = study_tasks.study_bleu(
        [["A spider has six legs."]], ["Nothing matches in this rather long answer"]
    )
    assert no_match == pytest.approx(3.283637368030198, rel=1e-12)
    same = study_tasks.study_bleu([["A spider has six legs."]], ["A spider has eight legs."])
    assert same == pytest.approx(37.99178428257963)  # matches as sacrebleu 1.5 and 2.x


def test_checkpoint_dtype(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(dtype="bfloat16").save_pretrained(tmp_path / "bf16")
    assert checkpoint_dtype(str(tmp_path / "bf16")) == "bfloat16"
    (tmp_path / "none").mkdir()
    config = LlamaConfig().to_dict()
    config.pop("dtype", None)
    config.pop("torch_dtype", None)
    (tmp_path / "none" / "config.json").write_text(json.dumps(config))
    assert checkpoint_dtype(str(tmp_path / "none")) == "float32"


def test_overrides_and_yaml():
    study = StudyOptions(task_config="study", fewshot_sampler="v0.3")
    gsm8k = study.overrides("gsm8k", 8)
    assert gsm8k["generation_kwargs"]["until"] == [":", "Question:", "Question"]
    assert gsm8k["class"] == FunctionRef("StudyTask")
    assert "class" not in study.overrides("gsm8k", 0)
    assert StudyOptions().overrides("gsm8k", 8) == {}
    text = dump_task_yaml({"task": "ethics_virtue", **study.overrides("ethics_virtue", 0)})
    assert "aggregation: !function sbt_study_tasks.ethics_em_5" in text.replace("'", "")
    with pytest.raises(ValueError):
        StudyOptions(task_config="v0.3")


def test_tables_show_em_beside_acc():
    run = RunResult(
        "b",
        "",
        "base",
        "",
        {"ethics_virtue/acc": 82.5, "ethics_virtue/em": 12.5, "gsm8k/acc": 28.6},
        {},
    )
    labels = [column.key for column in build_summary([run]).columns]
    assert labels.index("ETHICS virtue em") == labels.index("ETHICS virtue") + 1
    assert "GSM8K acc" in labels
