#!/usr/bin/env bash
# The CUDA checks, in one command on a machine with one GPU (about 6 minutes on an H200):
#   1. benchmarks/gpu_check.py: the bf16 matmul ceiling, a ViT-B/16 bf16 training step with MFU, module 1's
#      hybrid and the full model under FSDP on one GPU (and MMEngine's FSDPStrategy), MAE ViT-B incubation
#      step against the E2E MAE step;
#   2. benchmarks/step_cost.py on configs/incubate_vit_b.py: every phase network's bf16 step (meta, the 4
#      hybrids, the full model) with peak memory, the hybrid/E2E ratios beside the ideal ones, and module 1
#      through MMEngine Runners with and without our hooks;
#   3. the demo pipeline's meta model and one module incubation through tools/train.py on CUDA.
# Usage: bash benchmarks/gpu_check.sh [RESULTS_DIR]   (PYTHON=... picks the interpreter)
# The demo reads Fashion-MNIST's .gz files from FASHION_MNIST_SOURCE (default: Debian's package folder).
# A machine without the OpenMMLab packages can use pure-Python wheels of mmengine and mmpretrain and an mmcv
# built without its compiled ops (MMCV_WITH_OPS=0 pip wheel mmcv==2.1.0): nothing here needs mmcv.ops.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${1:-benchmarks/results/gpu_check}
PY=${PYTHON:-python3}
SOURCE=${FASHION_MNIST_SOURCE:-/usr/share/datasets/fashion-mnist}
export PYTHONUNBUFFERED=1
mkdir -p "$RESULTS"
status=0

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
$PY -c "import torch, mmengine, mmcv, mmpretrain; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'mmengine', mmengine.__version__, 'mmcv', mmcv.__version__, 'mmpretrain', mmpretrain.__version__)" || exit 1

echo "== 1/3 gpu_check.py"
$PY benchmarks/gpu_check.py --out "$RESULTS/gpu_check.json" || status=1

echo "== 2/3 step cost of every phase network, ViT-B/16 K=4, batch 64, bf16"
$PY benchmarks/step_cost.py configs/incubate_vit_b.py --batch 64 --device cuda --amp --runner \
    --iters 10 --warmup 3 || status=1
cp benchmarks/results/step_cost_incubate_vit_b_cuda.json benchmarks/results/step_cost_incubate_vit_b_cuda.png \
    "$RESULTS/" 2>/dev/null

echo "== 3/3 the demo's meta model and module 1 through tools/train.py on CUDA"
WORK=work_dirs/gpu_check_demo
OPTIONS=(train_dataloader.dataset.source_root="$SOURCE" val_dataloader.dataset.source_root="$SOURCE"
         test_dataloader.dataset.source_root="$SOURCE")
for phase in "meta" "incubate --module 1"; do
    # shellcheck disable=SC2086  (the phase and its module are two words)
    $PY tools/train.py configs/incubate_demo_fashion_mnist.py --phase $phase --work-dir "$WORK" \
        --cfg-options "${OPTIONS[@]}" > "$RESULTS/demo_${phase%% *}.log" 2>&1 || { status=1; tail -20 "$RESULTS/demo_${phase%% *}.log"; }
    grep -E "phase [0-9]+/|accuracy/top1|Epoch\(val\)|Error" "$RESULTS/demo_${phase%% *}.log" | tail -6
done
exit $status
