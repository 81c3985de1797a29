#!/usr/bin/env bash
# Distributed training with torchrun (`python -m torch.distributed.run`), mmpretrain's interface:
#
#   tools/dist_train.sh CONFIG GPUS [tools/train.py args]
#   tools/dist_train.sh configs/incubate_vit_b.py 8 --phase incubate --module 2
#
# On one node torchrun picks a free rendezvous port itself (PORT=N forces one), so several runs can
# share a machine. Multi-node: run on every node with NNODES, NODE_RANK (0 on the master), MASTER_ADDR
# and PORT set (a PORT already in use on the master node stops the launch with a message naming it),
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 PORT=29500 tools/dist_train.sh CONFIG 8
# PYTHON selects the interpreter (default: `python` on PATH). The launch itself: tools/dist_launch.sh.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [tools/train.py args]" >&2
    exit 2
fi
# shellcheck source=tools/dist_launch.sh
source "$(dirname "${BASH_SOURCE[0]}")/dist_launch.sh"
dist_launch train.py "$2" "$1" --launcher pytorch "${@:3}"
