"""The study's released checkpoints (LLaVA-1.x format) evaluated as the language models they hold.

The study's LLaVA code saved its models (`PahaII/MM-*`) as `LlavaLlamaForCausalLM`:
`config.json` has `model_type: "llava"` and flat multimodal keys (`mm_vision_tower`,
`mm_hidden_size`, `mm_use_im_start_end`, ...), and the weights are a LLaMA's plus
`model.mm_projector.*` (and, when saved without FSDP, `model.vision_tower.*`), usually as
pickled `pytorch_model*.bin`. transformers 5 maps `model_type: llava` to its own multimodal
class (nested `text_config`/`vision_config`), so such a checkpoint does not load as it is.

Without images, LLaVA's forward is the LLaMA forward (`prepare_inputs_labels_for_multimodal`
returns the inputs unchanged), and the study's MMLU script loaded these checkpoints with
`LlamaForCausalLM.from_pretrained` (the vision weights ignored). So we evaluate the language
model as `LlamaForCausalLM`: `language_model_view` builds a temporary folder with the same
files (symbolic links, no copy of the weights) and a `config.json` rewritten to
`model_type: "llama"` / `LlamaForCausalLM` without the `mm_*` keys. lm-eval then loads it
like any model directory, with its dtype, device and PEFT handling unchanged; the vision
weights are unexpected keys that transformers skips. A LoRA adapter applies on top as usual.

Pickled weights run code when loaded: a checkpoint that ships only `.bin` files (model or
adapter) is refused with one line unless `allow_pickle_weights` is set.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sbt.common import input_error

LLAVA_ARCHITECTURE = "LlavaLlamaForCausalLM"
# config.json keys LLaVA-1.x adds besides the `mm_*` ones (llava/train/train.py).
LLAVA_CONFIG_KEYS = (
    "use_mm_proj",
    "tune_mm_mlp_adapter",
    "freeze_mm_mlp_adapter",
    "image_aspect_ratio",
    "image_grid_pinpoints",
)
VISION_WEIGHT_PREFIXES = ("model.mm_projector.", "model.vision_tower.")
SAFE_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")


def log(message: str) -> None:
    print(f"[checkpoints] {message}", file=sys.stderr, flush=True)


def local_dir(model: str) -> Path | None:
    """The folder holding a model: the path itself, or its snapshot in the HF cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    for name in ("config.json", "adapter_config.json"):
        try:
            found = try_to_load_from_cache(model, name)
        except ValueError:  # not a repo id (e.g. a missing local path)
            return None
        if isinstance(found, str):
            return Path(found).parent
    return None


def read_config(folder: Path) -> dict[str, Any] | None:
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise input_error(path, f"unreadable model config: {exc}") from None
    return config if isinstance(config, dict) else None


def is_llava_checkpoint(config: dict[str, Any] | None) -> bool:
    """A LLaVA-1.x (study-era) checkpoint: flat mm_* keys, not transformers' nested llava."""
    return (
        isinstance(config, dict)
        and config.get("model_type") == "llava"
        and LLAVA_ARCHITECTURE in (config.get("architectures") or [])
        and "text_config" not in config
    )


def llama_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(LLaMA config.json content, the keys dropped): LLaVA's own keys removed."""
    dropped = sorted(k for k in config if k.startswith("mm_") or k in LLAVA_CONFIG_KEYS)
    kept = {k: v for k, v in config.items() if k not in dropped}
    kept["model_type"] = "llama"
    kept["architectures"] = ["LlamaForCausalLM"]
    return kept, dropped


def weight_files(folder: Path, safe_stem: str, pickle_stem: str) -> tuple[list[str], list[str]]:
    """(safetensors, pickled) weight files in `folder`, sharded ones included."""
    names = sorted(p.name for p in folder.iterdir())
    safe = [n for n in names if n.startswith(safe_stem) and n.endswith(SAFE_SUFFIX)]
    pickled = [n for n in names if n.startswith(pickle_stem) and n.endswith(PICKLE_SUFFIXES)]
    return safe, pickled


def require_safe_weights(
    model: str, folder: Path, stems: tuple[str, str], what: str, allowed: bool
) -> None:
    safe, pickled = weight_files(folder, *stems)
    if pickled and not safe and not allowed:
        raise input_error(
            model,
            f"{what} ships only pickled weights ({', '.join(pickled[:3])}), which can run code "
            "when loaded; if you trust it, set allow_pickle_weights: true "
            "(--allow-pickle-weights)",
        )


def check_adapter(adapter: str, *, allow_pickle_weights: bool) -> None:
    """A PEFT adapter with only adapter_model.bin is refused unless pickles are allowed."""
    folder = local_dir(adapter)
    if folder is not None:
        stems = ("adapter_model", "adapter_model")
        require_safe_weights(adapter, folder, stems, "the adapter", allow_pickle_weights)


@contextmanager
def language_model_view(
    model: str, *, allow_pickle_weights: bool = False
) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """Yield (what to load, info): `model` itself, or for a LLaVA-1.x checkpoint a
    temporary LLaMA view of it and a record of the conversion (for the result JSON)."""
    folder = local_dir(model)
    config = read_config(folder) if folder is not None else None
    if not is_llava_checkpoint(config):
        yield model, None
        return
    stems = ("model", "pytorch_model")
    require_safe_weights(model, folder, stems, "this LLaVA-1.x checkpoint", allow_pickle_weights)
    converted, dropped = llama_config(config)
    log(
        f"{model}: LLaVA-1.x checkpoint ({LLAVA_ARCHITECTURE}); evaluating its language model "
        f"as LlamaForCausalLM, the vision tower and projector ignored (dropped config keys: "
        f"{', '.join(dropped) or 'none'})"
    )
    with tempfile.TemporaryDirectory(prefix="sbt-llava-view-") as tmp:
        view = Path(tmp)
        for entry in sorted(folder.iterdir()):
            if entry.name != "config.json":
                (view / entry.name).symlink_to(entry.resolve())
        (view / "config.json").write_text(json.dumps(converted, indent=2) + "\n", encoding="utf-8")
        yield (
            str(view),
            {
                "format": "llava-1.x",
                "loaded_as": "LlamaForCausalLM",
                "ignored_weights": [f"{p}*" for p in VISION_WEIGHT_PREFIXES],
                "dropped_config_keys": dropped,
            },
        )
