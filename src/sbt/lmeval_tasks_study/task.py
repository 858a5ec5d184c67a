"""The lm-eval task class of `mmlu_study` (the study's MMLU); the logic is in sbt.mmlu_study.

lm-eval imports this file through `mmlu_study.yaml` (`class: !function task.MMLUStudy`).
"""

from __future__ import annotations

from collections.abc import Callable

import datasets
from lm_eval.api.task import ConfigurableTask

from sbt.mmlu_study import (
    MAX_NEW_TOKENS,
    NTRAIN,
    TASK_NAME,
    TASK_VERSION,
    fit_prompt,
    is_correct,
    load_mmlu,
    load_tokenizer,
)


class MMLUStudy(ConfigurableTask):
    """Prompts built per question with the study's shot-dropping rule; `acc` as it scored.

    Also reports `shots`: the mean number of dev examples the prompts kept (5 unless some
    prompts were longer than 2048 tokens).
    """

    VERSION = TASK_VERSION

    def __init__(self, config: dict | None = None) -> None:
        config = dict(config or {})
        metadata = {"version": TASK_VERSION, **(config.get("metadata") or {})}
        settings = {
            "task": config.get("task") or TASK_NAME,
            "dataset_path": TASK_NAME,  # read by `download` below, not by `datasets`
            "dataset_kwargs": dict(config.get("dataset_kwargs") or {}),
            "test_split": "test",
            "fewshot_split": "dev",
            "output_type": "generate_until",
            "doc_to_text": "question",
            "doc_to_target": "answer",
            "generation_kwargs": {
                "until": [],  # only EOS stops it, as in model.generate
                "max_gen_toks": MAX_NEW_TOKENS,
                "do_sample": False,
                "temperature": 0.0,
            },
            "num_fewshot": config.get("num_fewshot", NTRAIN),
            "process_results": self.process_results,  # ours: no metric looked up by name
            "metric_list": [
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                {"metric": "shots", "aggregation": "mean", "higher_is_better": True},
            ],
            "metadata": metadata,
        }
        self._tokenizer = None
        self._shots: dict[tuple[str, int], int] = {}
        super().__init__(config=settings)

    def download(self, dataset_kwargs: dict | None = None, **kwargs) -> None:
        data_dir = (dataset_kwargs or {}).get("data_dir")
        if not data_dir:
            raise ValueError(f"{TASK_NAME} needs dataset_kwargs.data_dir (data.tar's data/)")
        test, dev = load_mmlu(data_dir)
        self._dev = dev
        self.dataset = {
            "test": datasets.Dataset.from_list(test),
            "dev": datasets.Dataset.from_list([r for s in sorted(dev) for r in dev[s]]),
        }

    def count_tokens(self, text: str) -> int:
        """Tokens as the study counted them: `len(tokenizer(text).input_ids)`."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.config.metadata or {})
        return len(self._tokenizer(text).input_ids)

    def fewshot_context(
        self,
        doc: dict,
        num_fewshot: int,
        system_instruction: str | None = None,
        apply_chat_template: bool = False,
        fewshot_as_multiturn: bool = False,
        chat_template: Callable[..., str] | None = None,
        gen_prefix: str | None = None,
    ) -> str:
        if system_instruction or apply_chat_template:
            raise ValueError(f"{TASK_NAME} is the study's plain prompt: no system or chat template")
        dev_rows = self._dev[doc["subject"]]
        if num_fewshot > len(dev_rows):
            raise ValueError(
                f"{TASK_NAME}: {num_fewshot} shots asked, but subject {doc['subject']} has "
                f"{len(dev_rows)} dev rows"
            )
        prompt, kept = fit_prompt(doc, dev_rows, num_fewshot, self.count_tokens)
        self._shots[(doc["subject"], doc["index"])] = kept
        return prompt

    def process_results(self, doc: dict, results: list[str]) -> dict[str, float]:
        return {
            "acc": float(is_correct(results[0], doc["answer"])),
            "shots": float(self._shots[(doc["subject"], doc["index"])]),
        }
