#!/usr/bin/env bash
# GPU check for one NVIDIA GPU without network (no downloads): trains random-initialised
# LLaMA-shaped backbones for a few steps through the workflow's own training code and prints
# step time, tokens/s, peak GPU memory and MFU, with torch/CUDA versions and the device:
#   1. full fine-tuning of a 1B model, FSDP full_shard (torchrun, one process)
#   2. LoRA (r=64, every linear layer) of a 7B model in bf16 with gradient checkpointing
# Usage: scripts/gpu_check.sh [options for scripts/gpu_check.py, e.g. --steps 10]
#   PYTHON             a Python with a CUDA build of torch (default: python3)
#   GPU_CHECK_OUT      folder for the JSON results (default: results/gpu_check)
#   GPU_CHECK_TIMEOUT  seconds allowed per run (default: 210, so both cases end within 8 min
#                      unless the FSDP run fails fast and is repeated without sharding)
# Exits at once (status 3) when no CUDA GPU is visible.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${GPU_CHECK_OUT:-results/gpu_check}
LIMIT=${GPU_CHECK_TIMEOUT:-210}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

probe=() # versions and device only; exits 3 without CUDA (unless --allow-cpu, for tests)
for arg in "$@"; do [ "$arg" = --allow-cpu ] && probe=(--allow-cpu); done
"$PYTHON" scripts/gpu_check.py ${probe[@]+"${probe[@]}"}
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv,noheader
fi
mkdir -p "$OUT"
start=$SECONDS
status=0
full=(scripts/gpu_check.py --method full --output "$OUT/full-1b.json")
timeout "$LIMIT" "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 \
    "${full[@]}" --sharding fsdp "$@" || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 124 ]; then # failed, not timed out: try unsharded
    echo "full fine-tuning with FSDP failed (status $status): once more without sharding" >&2
    status=0
    timeout "$LIMIT" "$PYTHON" "${full[@]}" "$@" --sharding none || status=$?
fi
[ "$status" -eq 0 ] || echo "full fine-tuning check failed (status $status)" >&2
lora_status=0
timeout "$LIMIT" "$PYTHON" scripts/gpu_check.py --method lora --output "$OUT/lora-7b.json" "$@" ||
    lora_status=$?
[ "$lora_status" -eq 0 ] || { echo "LoRA check failed (status $lora_status)" >&2; status=$lora_status; }
echo "gpu check finished in $((SECONDS - start)) s; results in $OUT/"
exit "$status"
