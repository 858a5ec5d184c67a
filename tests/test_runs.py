"""sbt.runs on a plain config dict: the run of each kind of evaluation job, no Snakemake."""

from __future__ import annotations

import pytest

from sbt.runs import Run, resolve_run, wildcards_of

CONFIG = {
    "backbones": {
        "tiny-llama2": {"model": "tiny", "dtype": "float32", "allow_pickle_weights": False},
        "llama2-7b": {"model": "meta-llama/Llama-2-7b-hf", "dtype": "bfloat16", "size_b": 7},
    },
    "external": {
        "mm-llama2": {
            "model": "PahaII/MM-LLaMA-2-7B-chat",
            "dtype": "float16",
            "size_b": 7,
            "backbone": "llama2-7b",
        },  # fmt: skip
        "adapter-only": {"model": "m", "adapter": "a", "dtype": "auto", "size_b": 3},
    },
    "evaluation": {"merged_lora": False},
}


def run(config=CONFIG, **wildcards) -> Run:
    return resolve_run(config, {"benchmark": "ethics_cm", **wildcards})


def test_base_model_of_a_demo_backbone():
    base = run(backbone="tiny-llama2")
    assert (base.path, base.model, base.adapter) == ("tiny-llama2/base", "results/backbones/tiny-llama2", None)  # fmt: skip
    assert (base.dtype, base.size_b, base.gpus) == ("float32", 0, 0)
    assert base.info == {"backbone": "tiny-llama2", "data": "", "method": "base"}
    assert base.settings is CONFIG["backbones"]["tiny-llama2"]


def test_fine_tuned_runs_full_lora_and_merged_lora():
    full = run(backbone="llama2-7b", data="textonly", method="full")
    assert full.path == "llama2-7b/textonly/full"
    assert (full.model, full.adapter) == ("results/models/llama2-7b/textonly/full", None)
    assert (full.dtype, full.size_b, full.gpus) == ("bfloat16", 7, 1)
    assert full.info == {"backbone": "llama2-7b", "data": "textonly", "method": "full"}

    lora = run(backbone="llama2-7b", data="textonly", method="lora")
    assert lora.model == "meta-llama/Llama-2-7b-hf"  # the base, with the adapter on top
    assert lora.adapter == lora.model_dir == "results/models/llama2-7b/textonly/lora"

    merged_config = {**CONFIG, "evaluation": {"merged_lora": True}}
    merged = run(merged_config, backbone="llama2-7b", data="textonly", method="lora")
    assert (merged.model, merged.adapter) == ("results/models/llama2-7b/textonly/lora.merged", None)  # fmt: skip


@pytest.mark.parametrize("method", ["mm_full", "mm_lora"])
def test_multimodal_runs_evaluate_the_extracted_language_model(method):
    mm = run(backbone="llama2-7b", data="llava80k", method=method)
    assert mm.path == f"llama2-7b/llava80k/{method}"
    assert mm.model == f"results/models/llama2-7b/llava80k/{method}/language_model"
    assert mm.adapter is None  # a LoRA run is merged into its LLaVA directory
    assert mm.model_input == mm.model_dir == f"results/models/llama2-7b/llava80k/{method}"
    assert mm.info == {"backbone": "llama2-7b", "data": "llava80k", "method": method}
    assert run(backbone="llama2-7b", data="textonly", method="full").model_input == (
        "results/models/llama2-7b/textonly/full"
    )


def test_external_checkpoints():
    ext = run(checkpoint="mm-llama2")
    assert (ext.path, ext.model, ext.adapter) == ("external/mm-llama2", "PahaII/MM-LLaMA-2-7B-chat", None)  # fmt: skip
    assert (ext.dtype, ext.size_b, ext.gpus) == ("float16", 7, 1)
    assert ext.info == {"backbone": "llama2-7b", "data": "", "method": "external", "name": "mm-llama2"}  # fmt: skip
    alone = run(checkpoint="adapter-only")
    assert alone.adapter == "a" and alone.info["backbone"] == "adapter-only"


def test_unknown_names_are_key_errors():
    with pytest.raises(KeyError):
        run(backbone="nope")
    with pytest.raises(KeyError):
        run(checkpoint="nope")


def test_a_run_path_gives_back_its_wildcards():
    for wildcards in ({"backbone": "llama2-7b"}, {"checkpoint": "mm-llama2"},
                      {"backbone": "llama2-7b", "data": "textonly", "method": "lora"}):  # fmt: skip
        assert wildcards_of(run(**wildcards).path) == wildcards
