"""The study's multimodal model (LLaVA v1 recipe) expressed with stock transformers classes.

The study's `LlavaLlamaForCausalLM` (llava/model/llava_arch.py, llava/train/train.py) is a
LLaMA with a CLIP vision tower and one `nn.Linear` projector (`model.mm_projector`) whose
outputs replace the `<image>` placeholder. Here it is a stock `LlavaForConditionalGeneration`:

| study | here |
|---|---|
| `CLIPVisionTower`, `hidden_states[-2][:, 1:]` (`--mm_vision_select_layer -2`, `patch`) | `vision_tower`, `vision_feature_layer=-2`, `vision_feature_select_strategy="default"` |
| `mm_projector = nn.Linear(mm_hidden, hidden)` | `multi_modal_projector`: `linear_1`, `act` = `"linear"` (identity), `linear_2` frozen identity with zero bias |
| `IMAGE_TOKEN_INDEX = -200` in the ids, one per image | `<image>`, an added token, repeated once per patch (`image_token_id`) |
| `<im_patch>` added first (`mm_use_im_patch_token`, never in a prompt) | `<image>` added first (never embedded: features replace it) |
| `<im_start>`, `<im_end>` added, rows set to the mean (`--mm_use_im_start_end True`) | the same two tokens, the same mean rows |

The projector is kept as the stock module (replacing it breaks a stock reload): with
`linear_2` an identity that no optimiser touches, `linear_2(act(linear_1(x))) = linear_1(x)`
exactly, so the model is the study's single linear projector and survives
`save_pretrained` / `from_pretrained` with stock classes.

Stage 1 (`freeze_for_stage1`): everything frozen but `linear_1` and the input-embedding rows
of `<im_start>` / `<im_end>` (a gradient mask on the embedding matrix; the study makes the
whole matrix trainable and detaches every other position's embedding, which trains the
same rows). Stage 2: the whole LLM and the projector (full), or LoRA (`wrap_lora`).
What leaves this model (the study-format projector file, the plain language model) is in
`sbt.mm_export`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sbt.common import input_error

IMAGE_TOKEN = "<image>"
IM_START_TOKEN = "<im_start>"
IM_END_TOKEN = "<im_end>"
# What the study's CLIPVisionTower selects: the second-to-last layer, patches without CLS.
VISION_FEATURE_LAYER = -2
VISION_FEATURE_SELECT_STRATEGY = "default"
# The CLS token the tower adds before the patches; LlavaProcessor needs it counted.
NUM_ADDITIONAL_IMAGE_TOKENS = 1
# The study's LoRA targets (train.py `find_all_linear_names`, run before the vision modules
# exist, so only the LLM's linear layers; lm_head excluded).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def add_image_tokens(tokenizer) -> int:
    """Add `<image>`, `<im_start>`, `<im_end>` (in this order) as special tokens.

    `<image>` is a plain added token: the study never tokenizes it (it splits the prompt at
    `<image>` and tokenizes each piece, llava/mm_utils.py `tokenizer_image_token`), and a
    token that does not touch the text around it gives the same pieces. `<im_start>` /
    `<im_end>` eat the whitespace on both sides: the study added them with
    `tokenizer.add_tokens([...], special_tokens=True)`, and transformers 4.31's slow
    tokenizer strips the text on both sides of such a token ("We strip left and right by
    default" in `PreTrainedTokenizer.tokenize`), so `"USER: <im_start>"` ends in `":"` and
    the `"\\n"` after `<im_end>` disappears. Returns the number of tokens added.
    """
    from tokenizers import AddedToken

    tokens = [
        AddedToken(IMAGE_TOKEN, special=True, normalized=False),
        AddedToken(IM_START_TOKEN, special=True, normalized=False, lstrip=True, rstrip=True),
        AddedToken(IM_END_TOKEN, special=True, normalized=False, lstrip=True, rstrip=True),
    ]
    added = 0
    for token in tokens:  # one at a time, so the ids follow this order
        added += tokenizer.add_tokens([token], special_tokens=True)
    return added


def token_ids(tokenizer) -> dict[str, int]:
    """The ids of the three multimodal tokens (ValueError if one is missing)."""
    ids = {}
    for token in (IMAGE_TOKEN, IM_START_TOKEN, IM_END_TOKEN):
        found = tokenizer.convert_tokens_to_ids(token)
        if found is None or found == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {token} token; call add_image_tokens first")
        ids[token] = found
    return ids


def resize_like_study(language_model, tokenizer, *, seed: int = 0) -> None:
    """Grow the LLaMA's embeddings by the three added tokens as the study did.

    The study resized twice (llava_arch.py `initialize_vision_tokenizer`): once for
    `<im_patch>`, whose rows transformers 4.31 initialised like any weight (normal, std
    `initializer_range`), then for `<im_start>`/`<im_end>`, whose input and output rows are set
    to the mean of all rows before them (the `<im_patch>` row included). `<image>` takes the
    place of `<im_patch>` here.
    """
    import torch

    ids = token_ids(tokenizer)
    first = ids[IMAGE_TOKEN]
    old_rows = language_model.get_input_embeddings().weight.shape[0]
    if first != old_rows or sorted(ids.values()) != list(range(first, first + 3)):
        raise ValueError(
            f"the tokenizer's {len(tokenizer) - 3} tokens before {IMAGE_TOKEN} do not match the "
            f"model's {old_rows} embedding rows; the study's resizing needs them equal"
        )
    language_model.resize_token_embeddings(first + 3, mean_resizing=False)
    std = language_model.config.initializer_range
    generator = torch.Generator().manual_seed(seed)
    for matrix in (language_model.get_input_embeddings(), language_model.get_output_embeddings()):
        weight = matrix.weight.data
        noise = torch.randn(weight.shape[1], generator=generator, dtype=torch.float32) * std
        weight[first] = noise.to(weight.dtype)
        weight[first + 1 : first + 3] = weight[: first + 1].float().mean(dim=0).to(weight.dtype)


def llava_config(text_config, vision_config, image_token_id: int):
    """The LlavaConfig of the study's model around these two configs."""
    from transformers import LlavaConfig

    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    return LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=image_token_id,
        image_seq_length=patches,
        projector_hidden_act="linear",
        vision_feature_layer=VISION_FEATURE_LAYER,
        vision_feature_select_strategy=VISION_FEATURE_SELECT_STRATEGY,
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
    )


def single_linear_projector(model, *, seed: int = 0) -> None:
    """Make `multi_modal_projector` the study's one `nn.Linear`.

    `linear_1` gets `nn.Linear`'s own initialisation (what the study's fresh `mm_projector`
    had, seeded here); `linear_2` becomes the identity with zero bias and is frozen, so it
    stays the identity through every optimiser step.
    """
    import torch

    projector = model.model.multi_modal_projector
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        projector.linear_1.reset_parameters()
    freeze_identity(projector)


def freeze_identity(projector) -> None:
    """Set `linear_2` to the identity with zero bias and freeze it."""
    import torch

    linear_2 = projector.linear_2
    with torch.no_grad():
        linear_2.weight.copy_(torch.eye(linear_2.weight.shape[0], dtype=linear_2.weight.dtype))
        if linear_2.bias is not None:
            linear_2.bias.zero_()
    linear_2.requires_grad_(False)


def num_image_tokens(vision_config) -> int:
    """Placeholder tokens per image: the tower's patches (its CLS token not used)."""
    return (vision_config.image_size // vision_config.patch_size) ** 2


def build_processor(tokenizer, image_processor, vision_config):
    """A LlavaProcessor that expands `<image>` to exactly the tower's patch count."""
    from transformers import LlavaProcessor

    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy=VISION_FEATURE_SELECT_STRATEGY,
        num_additional_image_tokens=NUM_ADDITIONAL_IMAGE_TOKENS,
        image_token=IMAGE_TOKEN,
    )


def build_llava(
    backbone: str | Path,
    vision_tower: str | Path,
    template,
    *,
    max_length: int = 2048,
    legacy: bool | str = "auto",
    seed: int = 0,
    dtype: str | None = None,
) -> tuple[Any, Any]:
    """The study's LLaVA from a LLaMA directory and a CLIP vision tower directory.

    Returns `(model, processor)`; `processor.tokenizer` is the backbone's tokenizer set up
    for `template` (`sbt.tokenize_chat.load_tokenizer`) with the three multimodal tokens
    added. The language model's weights are the backbone's (embeddings grown as the study
    did), the tower's are the tower's; only `linear_1` is new.
    """
    import torch
    from transformers import (
        AutoImageProcessor,
        CLIPVisionModel,
        LlamaForCausalLM,
        LlavaForConditionalGeneration,
    )

    from sbt.tokenize_chat import load_tokenizer

    tokenizer, added = load_tokenizer(str(backbone), template, max_length, legacy=legacy)
    if added:
        raise input_error(backbone, "templates that add a pad token (v0) are not supported here")
    add_image_tokens(tokenizer)
    torch_dtype = getattr(torch, dtype) if dtype else None
    try:
        language_model = LlamaForCausalLM.from_pretrained(str(backbone), dtype=torch_dtype)
        tower = CLIPVisionModel.from_pretrained(str(vision_tower), dtype=torch_dtype)
        image_processor = AutoImageProcessor.from_pretrained(str(vision_tower))
    except (OSError, ValueError) as exc:
        raise input_error(backbone, f"cannot load the backbone or vision tower: {exc}") from None
    resize_like_study(language_model, tokenizer, seed=seed)
    config = llava_config(language_model.config, tower.config, token_ids(tokenizer)[IMAGE_TOKEN])
    # A shell without weights; the loaded modules go in as they are (no copy, no second 7B).
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.model.language_model = language_model.model
    model.lm_head = language_model.lm_head
    model.model.vision_tower = tower
    projector_type = type(model.model.multi_modal_projector)
    model.model.multi_modal_projector = projector_type(config).to(language_model.dtype)
    single_linear_projector(model, seed=seed)
    model.config.dtype = language_model.dtype
    return model, build_processor(tokenizer, image_processor, tower.config)


def save_llava(model, processor, output: str | Path) -> Path:
    """Model and processor (tokenizer and image processor included) into `output`."""
    output = Path(output)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    return output


def load_llava(path: str | Path, *, dtype: str | None = None) -> tuple[Any, Any]:
    """A directory written by `save_llava`: `(model, processor)`, `linear_2` frozen again."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    torch_dtype = getattr(torch, dtype) if dtype else None
    model = LlavaForConditionalGeneration.from_pretrained(str(path), dtype=torch_dtype)
    # requires_grad is not saved: freeze the identity again (its values are in the file).
    model.model.multi_modal_projector.linear_2.requires_grad_(False)
    return model, AutoProcessor.from_pretrained(str(path))


def freeze_for_stage1(model, tokenizer) -> Any:
    """Stage 1: train only the projector and the `<im_start>` / `<im_end>` input rows.

    Everything else is frozen (vision tower, LLM, lm_head, `linear_2`). The input embedding
    matrix stays one trainable parameter with a gradient mask (a hook) that zeroes every
    other row's gradient, so the model keeps its stock structure. With the study's AdamW
    and weight decay 0 (`--weight_decay 0.`) a row whose gradient is always zero does not
    move; weight decay would shrink the masked rows too, so stage 1 must run without it.
    Returns the hook handle (`.remove()` it to lift the mask).
    """
    import torch

    ids = token_ids(tokenizer)
    model.requires_grad_(False)
    model.model.multi_modal_projector.linear_1.requires_grad_(True)
    weight = model.get_input_embeddings().weight
    weight.requires_grad_(True)
    mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
    mask[[ids[IM_START_TOKEN], ids[IM_END_TOKEN]]] = 1
    return weight.register_hook(lambda grad: grad * mask.to(grad.dtype))


def wrap_lora(
    model,
    *,
    r: int = 64,
    alpha: int = 16,
    dropout: float = 0.05,
    train_embeddings: bool = True,
):
    """Stage 2 with LoRA as the study ran it (train_scripts/lora-lm-7b.sh, train.py).

    LoRA (r 64, alpha 16, dropout 0.05, no bias) on the LLM's seven linear layers, never
    on the vision tower or the projector; the projector trained in full. With
    `train_embeddings` (the study's behaviour) the input embeddings and lm_head are trained
    in full too: the study added LoRA first and resized the embeddings afterwards, and
    transformers 4.31's `resize_token_embeddings` made fresh, trainable modules (fixed in
    transformers PR #26865, 4.35); they were saved in `non_lora_trainables.bin` and loaded
    by its model builder. peft's copy of a module in `modules_to_save` is trainable as a
    whole, so `linear_2` (the identity) is frozen again afterwards.
    """
    from peft import LoraConfig, get_peft_model

    targets = "|".join(LORA_TARGETS)
    to_save = ["multi_modal_projector"]
    if train_embeddings:
        to_save += ["embed_tokens", "lm_head"]
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        bias="none",
        # A regex: the language model's layers only (the CLIP tower has q/k/v_proj too).
        target_modules=rf".*language_model\..*\.({targets})",
        modules_to_save=to_save,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    for name, module in peft_model.named_modules():
        if name.endswith("linear_2"):
            module.requires_grad_(False)
    return peft_model
