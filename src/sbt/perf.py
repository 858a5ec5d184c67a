"""Training performance arithmetic shared by sbt.gpu_check and scripts/bench_train.py.

Three things, defined once:

- `SHAPES`: LLaMA-architecture model shapes by name (the shapes of real checkpoints; the
  scripts build them with random weights);
- `peak_bf16_tflops`: the dense bf16 tensor-core peak of a GPU, told apart by the name
  `torch.cuda.get_device_name()` reports and, where one name covers two boards, by the
  number of streaming multiprocessors (`peak_for_mfu`: that, or a peak the user gave);
- `flops_per_token` and `mfu`: model FLOPs utilisation, in the convention of PaLM
  (Chowdhery et al. 2022, appendix B) that torchtitan and nanoGPT also use:

      FLOPs per trained token = 6 N + 12 L d T

  N: parameters that take part in matrix multiplications (every parameter except the
  input embedding table, which is a lookup; the output layer counts); L: layers; d: hidden
  size (heads x head dimension); T: the attention span of the token (the sequence length;
  for packed or variable-length batches sum(len^2) / sum(len), the per-token average).
  6N is the forward (2N) plus the backward for activations (2N) and weights (2N); 12 L d T
  is attention's scores and weighted sums, forward and backward, counted without causal
  masking, as in PaLM, so numbers compare with published MFU. With LoRA the frozen weights
  get no weight gradient: 4 N_frozen + 6 N_adapter (+ the same attention term).
  Recomputation (gradient checkpointing) is not counted: this is MFU, not HFU.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# LlamaConfig fields of each shape (untied embeddings, as LLaMA). Parameter counts are the
# published ones of the checkpoints (tests/test_gpu_check.py checks them).
SHAPES: dict[str, dict[str, int]] = {
    "1b": {  # TinyLlama-1.1B (TinyLlama/TinyLlama-1.1B-...): 1,100,048,384 parameters
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 22,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "vocab_size": 32000,
        "max_position_embeddings": 2048,
    },
    "7b": {  # LLaMA-2-7B (meta-llama/Llama-2-7b-hf): 6,738,415,616 parameters
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
    },
    "tiny": {  # the demo backbones' size, for trying the scripts on a CPU
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "vocab_size": 1000,
        "max_position_embeddings": 2048,
    },
}

# Dense (no structured sparsity) bf16 tensor-core peak, TFLOP/s per GPU, from NVIDIA's data
# sheets (the sparse figures there are twice these). Checked in order: the first entry
# whose every word occurs in the device name wins, so specific names come first.
#   H100 SXM5 989.4, H100 PCIe 756, H100 NVL 835: "NVIDIA H100 Tensor Core GPU" datasheet
#   H200 SXM 989.4, H200 NVL 835: "NVIDIA H200 Tensor Core GPU" datasheet
#   GH200 989.4 (the H100/H200 of the Grace Hopper superchip): GH200 datasheet
#   H800 SXM 989.4, H800 PCIe 756: as the H100 boards (export variants, same tensor cores)
#   B200 2250, B100 1750: "NVIDIA HGX B200/B100" datasheet (4.5 and 3.5 PFLOP/s sparse)
#   A100 SXM4 and PCIe 312 (both boards, 40 and 80 GB): "NVIDIA A100 Tensor Core GPU"
#   A800 312: as A100;  A40 149.7, A10 125, A10G 70 (AWS's A10 variant, Amazon's figure),
#   L40S 362.05, L40 181.05, L4 121: the respective datasheets
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.4),
    ("H200 NVL", 835.0),
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM5: "NVIDIA H100 80GB HBM3"
    ("H800 PCIe", 756.0),
    ("H800", 989.4),
    ("B200", 2250.0),
    ("B100", 1750.0),
    ("A100", 312.0),  # "NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe", "A100-PCIE-40GB"
    ("A800", 312.0),
    ("L40S", 362.05),
    ("L40", 181.05),
    ("A40", 149.7),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("L4", 121.0),
)
# Streaming multiprocessors of the H100 boards, for a name that says only "H100": the SXM5
# board and the NVL have 132, the PCIe board 114 (H100 datasheet / Hopper whitepaper).
H100_PCIE_SMS = 114


def _tokens(device_name: str) -> set[str]:
    """Lower-case words of a device name, split at spaces and dashes."""
    return set(re.split(r"[\s\-]+", device_name.lower())) - {""}


def peak_bf16_tflops(device_name: str, sm_count: int | None = None) -> float | None:
    """Dense bf16 peak (TFLOP/s) of one GPU by its name; None when it is not in the table.

    Names as torch reports them: "NVIDIA H100 80GB HBM3" (SXM5), "NVIDIA H100 PCIe",
    "NVIDIA H100 NVL", "NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe". `sm_count`
    (`multi_processor_count` of the device properties) tells an H100 PCIe board from an
    SXM5 one where the name does not say which.
    """
    tokens = _tokens(device_name)
    if sm_count == H100_PCIE_SMS and {"h100", "h800"} & tokens and "nvl" not in tokens:
        tokens.add("pcie")
    for key, tflops in PEAK_BF16_TFLOPS:
        if _tokens(key) <= tokens:
            return tflops
    return None


def peak_for_mfu(
    device_name: str, sm_count: int | None = None, given: float | None = None
) -> float | None:
    """The peak MFU divides by: `given` (a --peak-tflops option) if set, else the table's."""
    return given or peak_bf16_tflops(device_name, sm_count)


def llama_param_count(shape: Mapping[str, int], tie_word_embeddings: bool = False) -> int:
    """Parameters of LlamaForCausalLM of this shape: embeddings, layers, final norm, head."""
    hidden, inter = shape["hidden_size"], shape["intermediate_size"]
    head_dim = shape.get("head_dim") or hidden // shape["num_attention_heads"]
    q_out = shape["num_attention_heads"] * head_dim
    kv_out = shape.get("num_key_value_heads", shape["num_attention_heads"]) * head_dim
    attention = hidden * q_out + 2 * hidden * kv_out + q_out * hidden
    per_layer = attention + 3 * hidden * inter + 2 * hidden  # MLP and two RMSNorm weights
    embeddings = shape["vocab_size"] * hidden * (1 if tie_word_embeddings else 2)
    return embeddings + shape["num_hidden_layers"] * per_layer + hidden


def lora_param_count(shape: Mapping[str, int], r: int) -> int:
    """LoRA parameters (A: r x in, B: out x r) on the 7 linear layers of every decoder layer."""
    hidden, inter = shape["hidden_size"], shape["intermediate_size"]
    head_dim = shape.get("head_dim") or hidden // shape["num_attention_heads"]
    q_out = shape["num_attention_heads"] * head_dim
    kv_out = shape.get("num_key_value_heads", shape["num_attention_heads"]) * head_dim
    linear = [
        (hidden, q_out),
        (hidden, kv_out),
        (hidden, kv_out),
        (q_out, hidden),
        (hidden, inter),
        (hidden, inter),
        (inter, hidden),
    ]
    return shape["num_hidden_layers"] * sum(r * (fan_in + fan_out) for fan_in, fan_out in linear)


def matmul_params(shape: Mapping[str, int], tie_word_embeddings: bool = False) -> int:
    """N of the formula: every parameter but the input embedding table (a lookup)."""
    return (
        llama_param_count(shape, tie_word_embeddings) - shape["vocab_size"] * shape["hidden_size"]
    )


def flops_per_token(
    matmul_params: int,
    layers: int,
    hidden: int,
    attention_span: float,
    adapter_params: int = 0,
    lora: bool = False,
) -> float:
    """Model FLOPs per trained token, 6N + 12 L d T (module docstring).

    `matmul_params`: N of the base model (without an adapter); `adapter_params`: LoRA's
    parameters, trained; `lora`: the base weights are frozen (no weight gradients).
    `attention_span`: T, the sequence length (or sum(len^2)/sum(len) of the batches).
    """
    base = (4.0 if lora else 6.0) * matmul_params
    return base + 6.0 * adapter_params + 12.0 * layers * hidden * attention_span


def mfu(flops_token: float, tokens_per_second: float, peak_tflops: float, gpus: int = 1) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak of all GPUs used."""
    return flops_token * tokens_per_second / (peak_tflops * 1e12 * gpus)
