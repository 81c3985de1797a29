#!/usr/bin/env bash
# Distributed evaluation with torchrun (`python -m torch.distributed.run`), mmpretrain's interface:
#
#   tools/dist_test.sh CONFIG CHECKPOINT GPUS [tools/test.py args]
#   tools/dist_test.sh configs/incubate_vit_b.py work_dirs/incubate_vit_b/finetune/finetuned.pth 8
#
# The rendezvous port (free on one node, PORT to force one) and multi-node runs (NNODES, NODE_RANK,
# MASTER_ADDR, PORT) as for tools/dist_train.sh (see tools/dist_launch.sh).
set -euo pipefail

if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [tools/test.py args]" >&2
    exit 2
fi
# shellcheck source=tools/dist_launch.sh
source "$(dirname "${BASH_SOURCE[0]}")/dist_launch.sh"
dist_launch test.py "$3" "$1" "$2" --launcher pytorch "${@:4}"
