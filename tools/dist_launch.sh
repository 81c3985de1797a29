#!/usr/bin/env bash
# The torchrun launch shared by tools/dist_train.sh and tools/dist_test.sh, which source this file:
#
#   dist_launch SCRIPT GPUS ARGS...
#
# runs `python -m torch.distributed.run ... tools/SCRIPT ARGS...` with GPUS processes on this node,
# the repository on PYTHONPATH (so tools/ imports from any directory). PYTHON (`python` on PATH)
# selects the interpreter.
#
# The rendezvous port: on one node without PORT, `torchrun --standalone` picks a free port itself,
# so any number of runs can share a machine. Multi-node runs (NNODES, NODE_RANK (0 on the master),
# MASTER_ADDR (127.0.0.1)) and runs given PORT use PORT (29500); on the master node a port that
# something already listens on ends the launch at once, with a message naming it.

dist_launch() {
    local script=$1 gpus=$2
    shift 2
    local root torchrun_args port
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    if [ "${NNODES:-1}" = 1 ] && [ -z "${PORT:-}" ]; then
        torchrun_args=(--standalone --nnodes=1 --nproc_per_node="$gpus")
    else
        port=${PORT:-29500}
        if [ "${NODE_RANK:-0}" = 0 ] && port_in_use "$port"; then
            echo "$(basename "$0"): rendezvous port $port is already in use on this node (another job or program" \
                 "listens on it); choose a free one with PORT=<port>$([ "${NNODES:-1}" = 1 ] &&
                 echo ', or unset PORT: torchrun then picks a free port itself' || echo ' on every node')" >&2
            return 1
        fi
        torchrun_args=(--nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}"
                    --nproc_per_node="$gpus" --master_port="$port")
    fi
    PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" \
    exec "${PYTHON:-python}" -m torch.distributed.run \
        "${torchrun_args[@]}" \
        "$root/tools/$script" \
        "$@"
}

# Whether something accepts connections on port $1 of this node (torchrun's rendezvous server listens
# on every address, so a listener on loopback or on all addresses blocks it). A listener too busy to
# answer within 5 s counts as one.
port_in_use() {
    local rc=0
    timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null || rc=$?
    [ "$rc" = 0 ] || [ "$rc" = 124 ]
}
