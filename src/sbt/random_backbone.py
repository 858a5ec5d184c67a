"""Random-initialised LLaMA-shaped backbones of the `sbt.perf.SHAPES`, for sbt.gpu_check.

Nothing is downloaded: the config is the shape's, the weights are random (seed 0), and
the tokenizer is a small SentencePiece one trained on the words of the records the check
trains on (`sbt.demo.llava.filler_records`) and on the LLaMA-2 template's text.
"""

from __future__ import annotations

from pathlib import Path

from sbt.demo.llava_phrases import FILLER_QUESTION, FILLER_WORDS
from sbt.perf import SHAPES, llama_param_count


def llama_config(shape: str):
    """The LlamaConfig of a shape in sbt.perf.SHAPES (untied embeddings, as LLaMA's)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        **SHAPES[shape],
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        use_cache=False,
    )


def build_backbone(shape: str, dtype: str, output: Path) -> int:
    """Random-initialised LlamaForCausalLM of `shape` plus a LLaMA-style tokenizer; params."""
    import torch
    from transformers import LlamaForCausalLM

    from sbt.demo.backbone import train_sentencepiece, write_tokenizer
    from sbt.templates import SYS_LLAMA_2

    config = llama_config(shape)
    corpus = [
        " ".join(FILLER_WORDS),
        SYS_LLAMA_2,
        f"{FILLER_QUESTION.format(0)} [INST] <<SYS>> [/INST]",
    ]
    tokenizer_model = train_sentencepiece(corpus * 20, min(2000, config.vocab_size))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):  # initialising 7B on the GPU takes seconds, not minutes
        model = LlamaForCausalLM._from_config(config, dtype=getattr(torch, dtype))
    params = sum(p.numel() for p in model.parameters())
    if params != llama_param_count(SHAPES[shape]):
        raise RuntimeError(
            f"{shape}: {params} parameters, formula says {llama_param_count(SHAPES[shape])}"
        )
    model.save_pretrained(output)
    # The tokenizer files a LLaMA checkout has (the demo backbones' builder writes them).
    write_tokenizer(tokenizer_model, output, model_max_length=config.max_position_embeddings)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return params
