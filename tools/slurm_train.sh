#!/usr/bin/env bash
# Training on a SLURM cluster with srun, mmpretrain's interface:
#
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] \
#       tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [tools/train.py args]
#   GPUS=16 tools/slurm_train.sh gpu vitb configs/incubate_vit_b.py --phase finetune
#
# One task per GPU; MMEngine's slurm launcher reads the rank and master node from SLURM's variables.
# The rendezvous port is derived from SLURM_JOB_ID and SLURM_STEP_ID (mmincubation/launcher.py), so
# jobs and job steps sharing a node do not collide; MASTER_PORT forces one. A port that another
# program holds ends the job with an error naming it; ranks that cannot meet give up after
# RENDEZVOUS_TIMEOUT seconds (300). WORK_DIR (mmpretrain's 4th argument) is optional:
# without it tools/train.py uses --work-dir or work_dirs/<config name>. To run a whole incubation
# pipeline as dependent jobs (modules in parallel), see tools/slurm_incubate.sh.
set -euo pipefail

if [ $# -lt 3 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG [WORK_DIR] [tools/train.py args]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
PY_ARGS=()
if [ $# -gt 0 ] && [[ $1 != -* ]]; then
    PY_ARGS+=(--work-dir "$1")
    shift
fi
PY_ARGS+=("$@")
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 8 ? GPUS : 8))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

set -x
# SRUN_ARGS is split into words on purpose (several srun options in one variable).
# shellcheck disable=SC2086
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "$PYTHON" -u "$ROOT/tools/train.py" "$CONFIG" --launcher slurm "${PY_ARGS[@]}"
