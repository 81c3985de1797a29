#!/usr/bin/env bash
# The torchrun launch shared by tools/dist_train.sh and tools/dist_test.sh, which source this file:
#
#   dist_launch SCRIPT GPUS ARGS...
#
# runs `python -m torch.distributed.run ... tools/SCRIPT ARGS...` with GPUS processes on this node,
# the repository on PYTHONPATH (so tools/ imports from any directory). Environment: NNODES (1),
# NODE_RANK (0, the master), MASTER_ADDR (127.0.0.1) and PORT (29500) for multi-node runs; PYTHON
# (`python` on PATH) selects the interpreter.

dist_launch() {
    local script=$1 gpus=$2
    shift 2
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" \
    exec "${PYTHON:-python}" -m torch.distributed.run \
        --nnodes="${NNODES:-1}" \
        --node_rank="${NODE_RANK:-0}" \
        --master_addr="${MASTER_ADDR:-127.0.0.1}" \
        --nproc_per_node="$gpus" \
        --master_port="${PORT:-29500}" \
        "$root/tools/$script" \
        "$@"
}
