"""The study mode of the evaluation: lm-eval 0.4 made to score like the study's harness.

The study ran lm-eval v0.3 (commit b011af9, model `hf-causal-experimental`); lm-eval
0.4.13 differs in ways that move the numbers. Each difference is one setting (one
`evaluation` config key, one evaluate.py option), so a run can be study-faithful or use
today's lm-eval defaults:

| setting | study (v0.3) | lm-eval 0.4 |
|---|---|---|
| add_bos_token | false: no `<s>` before prompts | tokenizer default (LLaMA: `<s>`) |
| dtype | checkpoint: config.json `torch_dtype` (float32 when absent) | as configured |
| fewshot_sampler | v0.3: shuffle docs with Random(42), draw shots in that order | 0.4's own draw |
| task_config | study: v0.3 stop strings and metrics | the stock task YAMLs |

`task_config: study` changes the generated task YAMLs (which `include:` the stock ones):
truthfulqa_gen stops at "." and scores the stripped generation; gsm8k stops at ":",
"Question:" and "Question" and reports v0.3's strict `acc`; ethics_deontology,
ethics_justice and ethics_virtue also report v0.3's grouped exact match `em` (and
deontology uses v0.3's prompt join). Tasks v0.3 and 0.4 already agree on keep their stock
YAML. The functions lm-eval calls live in `sbt/lmeval_study_tasks.py`, copied beside the
YAMLs. The v0.3 encoding (context and continuation encoded as one string, the context's
trailing spaces moved to the continuation, no special tokens) is what 0.4's `hf` model
does with add_bos_token=False, so no model subclass is needed.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FEWSHOT_SAMPLERS = ("lm_eval", "v0.3")
TASK_CONFIGS = ("lm_eval", "study")
BOS_CHOICES = ("default", "true", "false")
TASKS_MODULE = "sbt_study_tasks"  # the file name (stem) beside the generated YAMLs
TASKS_SOURCE = Path(__file__).resolve().with_name("lmeval_study_tasks.py")


@dataclass(frozen=True)
class FunctionRef:
    """A `!function sbt_study_tasks.NAME` tag in a generated task YAML."""

    name: str

    @property
    def tag_value(self) -> str:
        return f"{TASKS_MODULE}.{self.name}"


def dump_task_yaml(overrides: Mapping[str, Any]) -> str:
    """A task YAML as text; FunctionRef values become `!function` tags."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(
        FunctionRef,
        lambda dumper, ref: dumper.represent_scalar("!function", ref.tag_value),
    )
    return yaml.dump(dict(overrides), Dumper=Dumper, sort_keys=False, default_flow_style=False)


def write_tasks_module(folder: str | Path) -> Path:
    """Copy the functions the `!function` tags name into the generated tasks folder."""
    target = Path(folder) / f"{TASKS_MODULE}.py"
    shutil.copyfile(TASKS_SOURCE, target)
    return target


# --------------------------------------------------------------------------- task overrides
def _ethics_em(aggregation: str) -> dict[str, Any]:
    return {
        "process_results": FunctionRef("ethics_process_results"),
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "em", "aggregation": FunctionRef(aggregation), "higher_is_better": True},
        ],
    }


# task -> YAML keys that replace the stock task's (task_config: study)
STUDY_TASK_OVERRIDES: dict[str, dict[str, Any]] = {
    # v0.3 truthfulqa.py: greedy_until(ctx, {"until": ["."]}); completion.strip(); BLEURT
    # is left out (it needs a model download; 0.4's stock task has it commented out too).
    "truthfulqa_gen": {
        "generation_kwargs": {"until": ["."], "do_sample": False},
        "process_results": FunctionRef("truthfulqa_gen_process_results"),
    },
    # v0.3 gsm8k.py: until [":", "Question:", "Question"]; acc = strict `#### N` match.
    "gsm8k": {
        "generation_kwargs": {"until": [":", "Question:", "Question"], "do_sample": False},
        "filter_list": None,
        "process_results": FunctionRef("gsm8k_process_results"),
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    },
    # v0.3 hendrycks_ethics.py: acc and em (groups of 4 / 5 by group_id).
    "ethics_deontology": {
        "doc_to_text": FunctionRef("ethics_deontology_doc_to_text"),
        **_ethics_em("ethics_em_4"),
    },
    "ethics_justice": _ethics_em("ethics_em_4"),
    "ethics_virtue": _ethics_em("ethics_em_5"),
}


@dataclass(frozen=True)
class StudyOptions:
    """The task-side settings (the model-side ones are model_args: add_bos_token, dtype)."""

    task_config: str = "lm_eval"
    fewshot_sampler: str = "lm_eval"

    def __post_init__(self) -> None:
        if self.task_config not in TASK_CONFIGS:
            raise ValueError(f"task_config must be one of {', '.join(TASK_CONFIGS)}")
        if self.fewshot_sampler not in FEWSHOT_SAMPLERS:
            raise ValueError(f"fewshot_sampler must be one of {', '.join(FEWSHOT_SAMPLERS)}")

    def overrides(self, task: str, shots: int) -> dict[str, Any]:
        """YAML keys that make stock task `task` (run with `shots` examples) study-like."""
        out: dict[str, Any] = {}
        if self.task_config == "study":
            out.update(STUDY_TASK_OVERRIDES.get(task, {}))
        if self.fewshot_sampler == "v0.3" and shots > 0:
            out["class"] = FunctionRef("StudyTask")
        return out


def effective_shots(stock_config: Mapping[str, Any], num_fewshot: int) -> int:
    """Examples per prompt: a stock config that fixes 0 shots keeps 0 (as lm-eval does)."""
    fixed = stock_config.get("num_fewshot")
    return 0 if fixed == 0 else num_fewshot


def apply_overrides(local_task: Any, options: StudyOptions, num_fewshot: int) -> bool:
    """Merge the study overrides into a planned LocalTask; True when there were any."""
    extra = options.overrides(local_task.name, effective_shots(local_task.config, num_fewshot))
    local_task.overrides.update(extra)
    local_task.config.update(extra)
    return bool(extra)


def plan_study_tasks(names: Sequence[str], options: StudyOptions, num_fewshot: int) -> list[Any]:
    """Generated YAMLs (stock dataset, study overrides) for the tasks that need one.

    Used without local data files; tasks without overrides (and groups such as mmlu) are
    not generated and run as lm-eval's stock tasks.
    """
    from sbt.lmeval_tasks import LocalTask, stock_config, stock_entry

    if options == StudyOptions():
        return []
    planned = []
    for name in names:
        entry = stock_entry(name)
        kind = getattr(getattr(entry, "kind", None), "name", "")
        if kind not in ("TASK", "PY_TASK") or not entry.yaml_path or "group" in entry.cfg:
            continue  # groups, tags and Python-only tasks run as lm-eval's stock ones
        stock = stock_config(name)
        extra = options.overrides(name, effective_shots(stock, num_fewshot))
        if not extra:
            continue
        yaml_path = Path(entry.yaml_path).resolve()
        overrides = {"include": str(yaml_path), "task": name, **extra}
        config = {**stock, **{k: v for k, v in overrides.items() if k != "include"}}
        planned.append(LocalTask(name, yaml_path, overrides, config))
    return planned


# --------------------------------------------------------------------------- model side
def bos_model_arg(choice: str) -> bool | None:
    """--add-bos-token value -> the `hf` model's add_bos_token (None: tokenizer default)."""
    if choice not in BOS_CHOICES:
        raise ValueError(f"add_bos_token must be one of {', '.join(BOS_CHOICES)}")
    return {"default": None, "true": True, "false": False}[choice]


def checkpoint_dtype(model: str) -> str:
    """The dtype v0.3 loaded `model` in when given none: its config's torch_dtype.

    v0.3 `_get_dtype(None, config)` returns `config.torch_dtype`, and from_pretrained with
    torch_dtype=None loads float32; so a config without a dtype means float32. (0.4's
    dtype="auto" would instead take the weights' dtype in that case.) config.json is read
    as plain JSON, so any model_type (e.g. the study's "llava" checkpoints) works, from a
    local directory or the HF cache.
    """
    from sbt.checkpoints import local_dir, read_config
    from sbt.common import input_error

    folder = local_dir(model)
    config = read_config(folder) if folder is not None else None
    if config is None:
        raise input_error(model, "no config.json to read the checkpoint's dtype from")
    value = config.get("torch_dtype") or config.get("dtype")
    if not value or value == "auto":
        return "float32"
    return str(value).removeprefix("torch.")
