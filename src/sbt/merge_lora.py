"""Merge a LoRA adapter into its base model and save one ordinary HF model directory.

The merged weights keep the requested dtype (the backbone's, e.g. bfloat16): the base is
loaded in that dtype and saved as it is, never silently upcast or downcast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sbt.common import TORCH_DTYPES, atomic_path, cli, input_error, provenance, write_json

DTYPES = ("auto", *TORCH_DTYPES)


def merge(model: str, adapter: str, output: str, dtype: str = "auto") -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype, use_safetensors=True)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(adapter if _has_tokenizer(adapter) else model)
    with atomic_path(output, directory=True) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(
            f"{tmp}/merge_info.json",
            provenance(base_model=model, adapter=adapter, dtype=str(merged.dtype)),
        )
    print(f"merged {adapter} into {model} -> {output} ({merged.dtype})", file=sys.stderr)


def _has_tokenizer(path: str) -> bool:
    return (Path(path) / "tokenizer_config.json").exists()


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="base model: HF id or directory")
    parser.add_argument("--adapter", required=True, help="PEFT adapter directory")
    parser.add_argument("--output", required=True, help="merged model directory")
    parser.add_argument("--dtype", default="auto", choices=DTYPES)
    args = parser.parse_args(argv)
    if not (Path(args.adapter) / "adapter_config.json").exists():
        raise input_error(args.adapter, "not a PEFT adapter directory", field="adapter_config.json")
    merge(args.model, args.adapter, args.output, args.dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
