#!/usr/bin/env python
"""Golden data for the study's MMLU: its own evaluate_mmlu.py logic on the demo MMLU files.

Runs in the study's software stack (the side environment of scripts/golden/side_env.sh:
transformers 4.31, slow SentencePiece LlamaTokenizer, pandas 2.0), with the study's code
read from a checkout or export of its repository given on the command line
(UCSC-VLAA/Sight-Beyond-Text; nothing of it is copied into this project):

    .golden-venv/bin/python scripts/golden/make_mmlu_golden.py --study /path/to/Sight-Beyond-Text
    .golden-venv/bin/python scripts/golden/make_mmlu_golden.py --study /path/to/Sight-Beyond-Text \
        --model tests/golden/eval_model --output tests/golden/mmlu_study_eval_model.json

(the first uses tests/golden/mmlu_model, built by scripts/golden/make_mmlu_model.py).

From `llava/eval/mmlu/evaluate_mmlu.py` it executes `format_subject`, `format_example`,
`gen_prompt` and `evaluate` (prompt, shot dropping, scoring), and from
`llava/eval/mmlu/mmlu_modeling.py` the model classes and `select_model`, exactly as
written; their import lines are replaced by the same names imported here, because the
module imports the study's LLaVA package and torchvision, which this stack does not need.
The driver loop is `main()`'s (sorted `*_test.csv` subjects, `pd.read_csv(..., header=None)`,
`dev[:ntrain]`, the mean over all questions), without its category tables, which need
all 57 subjects. The model is wrapped only to record each prompt and generation.

Writes tests/golden/mmlu_study.json: accuracy, per-question generation / correctness /
shots / prompt hash and length, package versions, and sha256 of the study's two files,
of the model files and of the data files.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import sys
from argparse import Namespace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUDY_FILES = ("llava/eval/mmlu/evaluate_mmlu.py", "llava/eval/mmlu/mmlu_modeling.py")
EVAL_FUNCTIONS = ("get_choices", "format_subject", "format_example", "gen_prompt", "evaluate")


def portable(path: Path) -> str:
    """A path relative to the repository (no machine paths in the golden file)."""
    path = path.resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def definitions(source: str, names: tuple[str, ...] | None = None) -> ast.Module:
    """The module's top-level function and class definitions (all, or those named)."""
    tree = ast.parse(source)
    body = [
        node
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef))
        and (names is None or node.name in names)
    ]
    if names is not None and {n.name for n in body} != set(names):
        raise SystemExit(f"error: the study's file lacks {set(names) - {n.name for n in body}}")
    return ast.Module(body=body, type_ignores=[])


def study_namespace(study: Path) -> dict:
    """The study's MMLU functions and model classes, executed from its own source."""
    import numpy as np
    import pandas as pd
    import torch
    import torch.nn as nn
    import transformers
    from peft import PeftModel
    from pydantic import BaseModel
    from transformers import (
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
        LlamaTokenizer,
        PreTrainedModel,
        PreTrainedTokenizer,
    )

    namespace = {
        "__name__": "study_mmlu",
        "np": np,
        "pd": pd,
        "torch": torch,
        "nn": nn,
        "transformers": transformers,
        "PeftModel": PeftModel,
        "BaseModel": BaseModel,
        "AutoModel": AutoModel,
        "AutoModelForCausalLM": AutoModelForCausalLM,
        "AutoModelForSeq2SeqLM": AutoModelForSeq2SeqLM,
        "AutoTokenizer": AutoTokenizer,
        "LlamaConfig": LlamaConfig,
        "LlamaForCausalLM": LlamaForCausalLM,
        "LlamaTokenizer": LlamaTokenizer,
        "PreTrainedModel": PreTrainedModel,
        "PreTrainedTokenizer": PreTrainedTokenizer,
        "LlavaLlamaForCausalLM": None,  # model_name "llava" only; the study's script used "llama"
        "Optional": __import__("typing").Optional,
        "Tuple": __import__("typing").Tuple,
        "Path": Path,
        "download_url": None,  # GPTQ models only
    }
    modeling = (study / STUDY_FILES[1]).read_text(encoding="utf-8")
    exec(compile(definitions(modeling), STUDY_FILES[1], "exec", dont_inherit=True), namespace)
    evaluate = (study / STUDY_FILES[0]).read_text(encoding="utf-8")
    exec(
        compile(definitions(evaluate, EVAL_FUNCTIONS), STUDY_FILES[0], "exec", dont_inherit=True),
        namespace,
    )
    return namespace


class Recorder:
    """The study's model with every run() recorded (prompt and generated text)."""

    def __init__(self, model) -> None:
        self.model = model
        self.calls: list[tuple[str, str]] = []

    def check_valid_length(self, text: str) -> bool:
        return self.model.check_valid_length(text)

    def run(self, prompt: str, **kwargs) -> str:
        generated = self.model.run(prompt, **kwargs)
        self.calls.append((prompt, generated))
        return generated


def shots_in(prompt: str, end: str) -> int:
    """Dev examples in a prompt: each carries "\\nAnswer: X\\n\\n" before the question."""
    return prompt[: len(prompt) - len(end)].count("\nAnswer: ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True, help="checkout/export of Sight-Beyond-Text")
    parser.add_argument("--model", default=str(ROOT / "tests/golden/mmlu_model"))
    parser.add_argument("--data-dir", default=str(ROOT / "resources/demo/benchmarks/mmlu"))
    parser.add_argument("--output", default=str(ROOT / "tests/golden/mmlu_study.json"))
    parser.add_argument("--ntrain", type=int, default=5)
    args = parser.parse_args(argv)
    study, model_dir, data_dir = Path(args.study), Path(args.model), Path(args.data_dir)

    import numpy as np
    import pandas as pd
    import torch

    torch.manual_seed(0)
    ns = study_namespace(study)
    # As eval_mmlu.sh: --model_name llama, main()'s max_input_length=2048, max_output_length=2.
    model = ns["select_model"](
        model_name="llama",
        model_path=str(model_dir),
        max_input_length=2048,
        max_output_length=2,
        device="cpu",
    )
    recorder = Recorder(model)
    run_args = Namespace(data_dir=str(data_dir), ntrain=args.ntrain)
    subjects = sorted(
        f.split("_test.csv")[0] for f in os.listdir(data_dir / "test") if "_test.csv" in f
    )
    questions, all_cors, per_subject = [], [], {}
    for subject in subjects:
        dev_df = pd.read_csv(data_dir / "dev" / f"{subject}_dev.csv", header=None)[: args.ntrain]
        test_df = pd.read_csv(data_dir / "test" / f"{subject}_test.csv", header=None)
        start = len(recorder.calls)
        cors, acc, _ = ns["evaluate"](run_args, subject, recorder, dev_df, test_df)
        all_cors.append(cors)
        per_subject[subject] = float(acc)
        tokenizer = model.tokenizer
        for i, (prompt, generated) in enumerate(recorder.calls[start:]):
            end = ns["format_example"](test_df, i, include_answer=False)
            questions.append(
                {
                    "subject": subject,
                    "index": i,
                    "answer": str(test_df.iloc[i, test_df.shape[1] - 1]),
                    "generated": generated,
                    "correct": bool(cors[i]),
                    "shots": shots_in(prompt, end),
                    "prompt_tokens": len(tokenizer(prompt).input_ids),
                    "prompt_sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
                }
            )
    accuracy = float(np.mean(np.concatenate(all_cors)))

    import peft
    import pydantic
    import sentencepiece
    import tokenizers
    import transformers

    document = {
        "what": "the study's MMLU (evaluate_mmlu.py, model_name llama) on the demo MMLU files",
        "accuracy": accuracy,
        "n_questions": len(questions),
        "per_subject": per_subject,
        "ntrain": args.ntrain,
        "questions": questions,
        "tokenizer_class": type(model.tokenizer).__name__,
        "model_dtype": str(next(model.model.parameters()).dtype),
        "versions": {
            "python": sys.version.split()[0],
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "sentencepiece": sentencepiece.__version__,
            "torch": torch.__version__,
            "pandas": pd.__version__,
            "numpy": np.__version__,
            "peft": peft.__version__,
            "pydantic": pydantic.VERSION,
        },
        "study_files": {name: sha256(study / name) for name in STUDY_FILES},
        "fixtures": {
            portable(path): sha256(path)
            for folder in (model_dir, data_dir)
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        },
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(output)
    print(
        f"accuracy {accuracy:.4f} over {len(questions)} questions; wrote {output}", file=sys.stderr
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
