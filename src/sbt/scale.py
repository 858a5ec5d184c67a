"""Settings for training on several GPUs: how FSDP wraps a backbone.

FSDP `full_shard auto_wrap` shards the model per decoder layer, so the Trainer has to know
the layer class (`LlamaDecoderLayer` for every LLaMA-family backbone of the study). The
class is read from the backbone's own model class (its `_no_split_modules`, the blocks
that must stay whole), so other architectures get their own layer class too.
"""

from __future__ import annotations

from sbt.common import input_error


def decoder_layer_classes(model: str, *, trust_remote_code: bool = False) -> list[str]:
    """Names of the blocks FSDP wraps one by one, e.g. ["LlamaDecoderLayer"].

    Empty for models whose class transformers does not know (remote code): the Trainer then
    falls back to the loaded model's own `_no_split_modules`.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise input_error(model, f"cannot read the model config: {exc}") from None
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    if model_class is None:
        return []
    return list(getattr(model_class, "_no_split_modules", None) or [])


def fsdp_config_for(
    model: str, *, gradient_checkpointing: bool, trust_remote_code: bool = False
) -> dict:
    """The Trainer's `fsdp_config` for `fsdp="full_shard auto_wrap"` on `model`.

    Activation checkpointing is left to FSDP itself (per wrapped layer): the Trainer's own
    gradient checkpointing on top of FSDP would gather every layer's weights once more in
    the backward pass.
    """
    config: dict = {"activation_checkpointing": gradient_checkpointing}
    layers = decoder_layer_classes(model, trust_remote_code=trust_remote_code)
    if layers:
        config["transformer_layer_cls_to_wrap"] = layers
    return config
