"""The evaluated models of a study, each resolved once from a job's wildcards.

A run is a backbone's base model, one of our fine-tuning runs (backbone x data x method),
or an external checkpoint (a released model evaluated as it is). Every evaluation rule
function in workflow/rules/eval_benchmark.smk and eval_plan.smk reads the one `Run` of its job instead of asking
which wildcards it has; this module needs no Snakemake, so it is tested on plain dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

RESULTS = "results"
EXTERNAL = "external"  # path part of the external checkpoints' results
BASE = "base"
# The multimodal arm's stage-2 methods (sbt.mm_train --stage finetune --method full|lora)
# and the folder of the language model each run's LLaVA directory holds (sbt.mm_train).
MM_METHODS = ("mm_full", "mm_lora")
LANGUAGE_MODEL_DIR = "language_model"


@dataclass(frozen=True)
class Run:
    """One evaluated model and what its evaluation jobs need to know about it."""

    path: str  # below results/eval/: "<backbone>/base", "<b>/<data>/<method>", "external/<c>"
    model: str  # what lm-eval loads: a directory or a hub id
    adapter: str | None  # a LoRA adapter loaded on top of `model`
    dtype: str  # the run's weight dtype (the backbone's, or the checkpoint's entry)
    size_b: float  # billions of parameters (0 for the tiny demo backbones): resources
    gpus: int  # 0 on the CPU-only demo backbones, else 1
    settings: Mapping  # its config entry: backbones.<b> or external.<c>
    info: Mapping  # recorded in each result: backbone, data, method (and name)

    @property
    def model_input(self) -> str:
        """The rule output that holds `model`: a multimodal run's language model is a folder
        inside its LLaVA directory, which is what the workflow can depend on."""
        suffix = f"/{LANGUAGE_MODEL_DIR}"
        if self.info.get("method") in MM_METHODS and self.model.endswith(suffix):
            return self.model.removesuffix(suffix)
        return self.model

    @property
    def model_dir(self) -> str:
        """Where our own runs' weights are (results/models/<path>); not for base/external."""
        return f"{RESULTS}/models/{self.path}"


def is_tiny(config: Mapping, backbone: str) -> bool:
    return config["backbones"][backbone]["model"] == "tiny"


def backbone_model(config: Mapping, backbone: str) -> str:
    """Where a backbone's base weights come from: the built demo model, or an id/path."""
    if is_tiny(config, backbone):
        return f"{RESULTS}/backbones/{backbone}"
    return config["backbones"][backbone]["model"]


def backbone_size_b(config: Mapping, backbone: str) -> float:
    return 0 if is_tiny(config, backbone) else config["backbones"][backbone]["size_b"]


def wildcards_of(path: str) -> dict[str, str]:
    """The wildcards of the evaluation job of a run's path (the inverse of Run.path)."""
    parts = path.split("/")
    if parts[0] == EXTERNAL:
        return {"checkpoint": parts[1]}
    if len(parts) == 2:
        return {"backbone": parts[0]}
    return {"backbone": parts[0], "data": parts[1], "method": parts[2]}


def resolve_run(config: Mapping, wildcards: Mapping[str, str]) -> Run:
    """The run of a job from its wildcards: `checkpoint`; or `backbone` with `data` and
    `method`; or `backbone` alone (its base model). Other wildcards (benchmark) are ignored.
    """
    if "checkpoint" in wildcards:
        name = wildcards["checkpoint"]
        entry = config["external"][name]
        info = {"backbone": entry.get("backbone", name), "data": "", "method": EXTERNAL}
        return Run(
            path=f"{EXTERNAL}/{name}",
            model=entry["model"],
            adapter=entry.get("adapter"),
            dtype=entry["dtype"],
            size_b=entry["size_b"],
            gpus=1,
            settings=entry,
            info={**info, "name": name},
        )
    backbone = wildcards["backbone"]
    entry = config["backbones"][backbone]
    method = wildcards.get("method", BASE)
    data = wildcards.get("data", "") if method != BASE else ""
    path = f"{backbone}/{BASE}" if method == BASE else f"{backbone}/{data}/{method}"
    base = backbone_model(config, backbone)
    model, adapter = base, None
    if method == "full":
        model = f"{RESULTS}/models/{path}"
    elif method in MM_METHODS:  # the text benchmarks read the extracted language model
        model = f"{RESULTS}/models/{path}/{LANGUAGE_MODEL_DIR}"
    elif method == "lora" and config["evaluation"]["merged_lora"]:
        model = f"{RESULTS}/models/{path}.merged"
    elif method == "lora":
        adapter = f"{RESULTS}/models/{path}"
    return Run(
        path=path,
        model=model,
        adapter=adapter,
        dtype=entry["dtype"],
        size_b=backbone_size_b(config, backbone),
        gpus=0 if is_tiny(config, backbone) else 1,
        settings=entry,
        info={"backbone": backbone, "data": data, "method": method},
    )
