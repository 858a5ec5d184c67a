#!/usr/bin/env bash
# One torchrun per SLURM task, the tasks meeting in a c10d rendezvous (multi-node training).
# Started by srun inside a train job (src/sbt/launch.py builds that line):
#   srun --nodes=N --ntasks=N --ntasks-per-node=1 ... bash scripts/torchrun_slurm.sh N G -m sbt.train ARGS
#   N  torchrun agents in all (one per node), G  processes (GPUs) per agent
# The rendezvous endpoint is the first host of $SLURM_JOB_NODELIST, its id the job id, its
# port 29500 + (job id mod 1000) so that two jobs sharing a first node do not meet.
# Overrides (e.g. for launchers other than srun, see docs/slurm.md): SBT_RDZV_HOST,
# SBT_RDZV_PORT, SBT_RDZV_ID; TORCHRUN (default: torchrun).
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 NNODES NPROC_PER_NODE SCRIPT|-m MODULE [ARGS...]" >&2
    exit 2
fi
nnodes=$1
nproc=$2
shift 2
job=${SBT_RDZV_ID:-${SLURM_JOB_ID:?not inside a SLURM job: set SBT_RDZV_ID and SBT_RDZV_HOST}}
if [ -z "${SBT_RDZV_HOST:-}" ]; then
    SBT_RDZV_HOST=$(scontrol show hostnames "${SLURM_JOB_NODELIST:?no SLURM_JOB_NODELIST}" | head -n 1)
fi
port=${SBT_RDZV_PORT:-$((29500 + job % 1000))}
exec "${TORCHRUN:-torchrun}" \
    --nnodes="$nnodes" \
    --nproc_per_node="$nproc" \
    --rdzv_backend=c10d \
    --rdzv_endpoint="$SBT_RDZV_HOST:$port" \
    --rdzv_id="$job" \
    "$@"
