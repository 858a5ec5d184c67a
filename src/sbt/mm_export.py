"""What leaves the multimodal model: the study's projector file and the plain language model.

The stage-1 result is exchanged in the study's own file format (`save_study_projector`,
`load_study_projector`: `mm_projector.bin`), so the study's released projectors load into a
model built by `sbt.mm_model.build_llava` too. `extract_language_model` writes the language
model as a plain `LlamaForCausalLM` directory for the text benchmarks.
"""

from __future__ import annotations

from pathlib import Path

from sbt.common import input_error

# Keys of the study's mm_projector.bin (train.py `safe_save_model_for_hf_trainer` with
# `tune_mm_mlp_adapter` and `use_im_start_end`: every parameter whose name holds
# `mm_projector` or `embed_tokens`).
STUDY_PROJECTOR_WEIGHT = "model.mm_projector.weight"
STUDY_PROJECTOR_BIAS = "model.mm_projector.bias"
STUDY_EMBED_TOKENS = "model.embed_tokens.weight"


def save_study_projector(model, path: str | Path) -> Path:
    """Stage 1's result in the study's `mm_projector.bin` format.

    `model.mm_projector.weight` / `.bias` (the projector) and `model.embed_tokens.weight`
    (the whole input embedding matrix, as the study saved it with `--mm_use_im_start_end`).
    """
    import torch

    projector = model.model.multi_modal_projector.linear_1
    state = {
        STUDY_PROJECTOR_WEIGHT: projector.weight.detach().cpu().clone(),
        STUDY_PROJECTOR_BIAS: projector.bias.detach().cpu().clone(),
        STUDY_EMBED_TOKENS: model.get_input_embeddings().weight.detach().cpu().clone(),
    }
    path = Path(path)
    torch.save(state, path)
    return path


def load_study_projector(model, path: str | Path) -> None:
    """Load a study-format `mm_projector.bin` (stage 1's output) into `model`.

    As the study's stage 2 did (llava_arch.py `initialize_vision_modules` and
    `initialize_vision_tokenizer` with `--pretrain_mm_mlp_adapter`): the projector from the
    keys holding `mm_projector`, and from `model.embed_tokens.weight` only the last two
    rows (`<im_start>`, `<im_end>`) into the input embeddings: the whole matrix when it has
    the model's shape, or a two-row matrix. The output embeddings keep their mean rows.
    Read with `weights_only=True` (tensors only, no pickled code).
    """
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise input_error(path, f"cannot read the projector file: {exc}") from None
    projector = {
        key.split("mm_projector.")[1]: value
        for key, value in state.items()
        if "mm_projector" in key
    }
    linear_1 = model.model.multi_modal_projector.linear_1
    if set(projector) != {"weight", "bias"}:
        raise input_error(path, f"expected mm_projector weight and bias, found {sorted(state)}")
    if projector["weight"].shape != linear_1.weight.shape:
        raise input_error(
            path,
            f"projector weight has shape {tuple(projector['weight'].shape)}, the model needs "
            f"{tuple(linear_1.weight.shape)} (another backbone or vision tower?)",
        )
    embeddings = model.get_input_embeddings().weight
    rows = state.get(STUDY_EMBED_TOKENS)
    if rows is None:
        raise input_error(path, f"no {STUDY_EMBED_TOKENS} (a study file with im_start/im_end has)")
    if rows.shape == embeddings.shape:
        rows = rows[-2:]
    elif rows.shape != (2, embeddings.shape[1]):
        raise input_error(
            path,
            f"unexpected {STUDY_EMBED_TOKENS} shape {tuple(rows.shape)}; the model has "
            f"{tuple(embeddings.shape)} and 2 new tokens",
        )
    with torch.no_grad():
        linear_1.weight.copy_(projector["weight"])
        linear_1.bias.copy_(projector["bias"])
        embeddings[-2:] = rows.to(embeddings.dtype)


def extract_language_model(model_or_dir, output: str | Path, tokenizer=None) -> Path:
    """The language model as a plain `LlamaForCausalLM` directory (weights and tokenizer).

    Text-only inputs never reach the vision tower or the projector, so this model gives the
    multimodal model's text logits exactly; the text benchmarks load it like any backbone.
    `model_or_dir` is a LlavaForConditionalGeneration (a LoRA model merged first) or a
    directory written by `save_llava`, whose tokenizer is then copied too.
    """
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM, LlavaForConditionalGeneration

    if isinstance(model_or_dir, (str, Path)):
        source = Path(model_or_dir)
        model = LlavaForConditionalGeneration.from_pretrained(str(source))
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(source))
    else:
        model = model_or_dir
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    # A shell without weights holding the model's own modules: no copy, no second model.
    with torch.device("meta"):
        language_model = LlamaForCausalLM(model.config.text_config)
    language_model.model = model.model.language_model
    language_model.lm_head = model.lm_head
    output = Path(output)
    language_model.save_pretrained(output)
    if tokenizer is not None:
        tokenizer.save_pretrained(output)
    return output
