#!/usr/bin/env bash
# The paper's GPU paths on one NVIDIA GPU, without network (no downloads), as one prepared
# run with a fixed time bound (GPU_CHECK_TOTAL, 450 s: under 8 minutes with the start-up).
# Each case runs in its own process through the workflow's own code, on random-initialised
# LLaMA shapes, and prints step time, tokens/s, peak GPU memory, MFU and the loss:
#   1. full-1b-zero2  full fine-tuning, 1B (TinyLlama's shape), DeepSpeed ZeRO-2 (the paper's)
#   2. lora-7b-zero2  LoRA r=64 of the 7B shape (LLaMA-2-7B's), DeepSpeed ZeRO-2 (the paper's)
#   3. full-1b-fsdp   full fine-tuning, 1B, FSDP full_shard
#   4. eval-1b-bf16   lm-eval (sbt.evaluate) in bf16 on the GPU, a local task file
# then one table of all cases with the MFU targets (7B LoRA >= 45%, 1B full >= 35% on an
# H100/H200) as PASS/FAIL. Results: GPU_CHECK_OUT/<case>.json, .log (results/gpu_check).
# Usage: scripts/gpu_check.sh [--dry-run] [options for python -m sbt.gpu_check, e.g. --steps 10]
#   --dry-run          print the cases, their commands and time limits; run nothing
#   PYTHON             a Python with a CUDA build of torch and DeepSpeed (default: python3)
#   GPU_CHECK_TOTAL    seconds for all cases together (default 450); each case also has
#                      its own limit (below) and gets at most what is left of the total
# Exit status: 0 every case ran (finite, falling loss; MFU targets are reported, not
# enforced), 1 a case failed or ran out of time, 3 no CUDA GPU visible (checked first).
set -euo pipefail
cd "$(dirname "$0")/.."
# The checkout's package, also where the GPU environment did not install it (pip install -e .).
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python3}
OUT=${GPU_CHECK_OUT:-results/gpu_check}
TOTAL=${GPU_CHECK_TOTAL:-450}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

dry=0
extra=()
probe=() # versions and device only; exits 3 without CUDA (unless --allow-cpu, for tests)
for arg in "$@"; do
    case "$arg" in
    --dry-run) dry=1 ;;
    --allow-cpu) probe=(--allow-cpu) && extra+=("$arg") ;;
    *) extra+=("$arg") ;;
    esac
done

# name | launcher | seconds at most | sbt.gpu_check arguments
CASES=(
    "full-1b-zero2|torchrun|100|--method full --shape 1b --sharding zero2"
    "lora-7b-zero2|torchrun|200|--method lora --shape 7b --sharding zero2"
    "full-1b-fsdp|torchrun|80|--method full --shape 1b --sharding fsdp"
    "eval-1b-bf16|python|60|--method eval --shape 1b"
)

command_of() { # launcher, then the case's arguments: the command line as an array in CMD
    local launcher=$1
    shift
    CMD=("$PYTHON")
    [ "$launcher" = torchrun ] && CMD+=(-m torch.distributed.run --standalone --nproc_per_node=1)
    CMD+=(-m sbt.gpu_check "$@")
}

if [ "$dry" -eq 1 ]; then
    echo "gpu check: ${#CASES[@]} cases within $TOTAL s in all; results in $OUT/"
    for entry in "${CASES[@]}"; do
        IFS='|' read -r name launcher limit case_args <<<"$entry"
        # shellcheck disable=SC2086  # the case's arguments are words
        command_of "$launcher" $case_args --case "$name" --output "$OUT/$name.json" \
            ${extra[@]+"${extra[@]}"}
        echo "$name (at most $limit s): timeout $limit ${CMD[*]}"
    done
    exit 0
fi

"$PYTHON" -m sbt.gpu_check ${probe[@]+"${probe[@]}"}
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv,noheader
fi
mkdir -p "$OUT"
start=$SECONDS
for entry in "${CASES[@]}"; do
    IFS='|' read -r name launcher limit case_args <<<"$entry"
    rm -f "$OUT/$name.json" "$OUT/$name.status" "$OUT/$name.log"
    left=$((TOTAL - (SECONDS - start)))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 20 ]; then
        echo "$name: skipped, the $TOTAL s of the check are used up" | tee "$OUT/$name.log" >&2
        echo "skipped" >"$OUT/$name.status"
        continue
    fi
    # shellcheck disable=SC2086
    command_of "$launcher" $case_args --case "$name" --output "$OUT/$name.json" \
        ${extra[@]+"${extra[@]}"}
    echo "== $name (at most $limit s)"
    set +e
    timeout --kill-after=10 "$limit" "${CMD[@]}" 2>&1 | tee "$OUT/$name.log"
    status=${PIPESTATUS[0]}
    set -e
    echo "$status" >"$OUT/$name.status"
    [ "$status" -eq 0 ] || echo "$name failed (exit $status$([ "$status" -eq 124 ] &&
        echo ", out of time")); log: $OUT/$name.log" >&2
done
echo
echo "gpu check finished in $((SECONDS - start)) s (bound $TOTAL s); results in $OUT/"
"$PYTHON" -m sbt.gpu_check --summarize "$OUT"
