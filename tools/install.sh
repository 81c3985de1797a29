#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and installs the pinned OpenMMLab stack.
#
# Idempotent: every step first checks whether its result is already importable, and a stamp keyed
# by the requirement files skips the whole run when nothing changed. Environment variables:
#   VENV            where the environment lives (default: .venv in the repository)
#   PYTHON          interpreter used to create it (default: python3)
#   FORCE_CUDA=1    build mmcv's CUDA ops (GPU machines with nvcc); CPU ops otherwise
#   MMCV_WHEELHOUSE extra folder holding prebuilt mmcv wheels, one sub-folder per torch version
#                   (torch-<X.Y.Z>/); default: ../shared/wheelhouse beside the repository
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PY="$VENV/bin/python"
REQ="$ROOT/requirements"
STAMP="$VENV/.mmincubation-stack"
MMCV_VERSION=2.1.0

step() { printf '\n==> %s\n' "$*"; }

if [ ! -x "$PY" ]; then
    step "creating virtual environment $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
fi

stamp_of_inputs() {
    cat "$REQ"/*.txt "$ROOT/setup.py" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1
}

stack_imports() {
    "$PY" - <<'EOF' >/dev/null 2>&1
import mmcv.ops, mmdet, mmengine, mmpretrain, mmseg, torchvision.ops, mmincubation  # noqa
EOF
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_of_inputs)" ] && stack_imports; then
    echo "mmincubation stack already installed in $VENV"
    exit 0
fi

pip_install() { "$PY" -m pip install --progress-bar on -c "$REQ/constraints.txt" "$@"; }

step "build tools (pip, setuptools<81, wheel, ninja)"
"$PY" -m pip install --progress-bar on "pip<26"
pip_install -r "$REQ/build.txt"

step "torch + torchvision"
if "$PY" -c "import torch, torchvision.ops; torchvision.ops.nms" >/dev/null 2>&1; then
    # A user's own matching pair (e.g. a CUDA build for their driver) is kept as it is.
    "$PY" -c "import torch, torchvision; print('keeping torch', torch.__version__, 'torchvision', torchvision.__version__)"
else
    pip_install -r "$REQ/torch.txt"
fi
TORCH_VERSION=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")

step "mmcv $MMCV_VERSION with compiled ops for torch $TORCH_VERSION"
if "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" >/dev/null 2>&1; then
    echo "mmcv $MMCV_VERSION with ops already importable"
else
    # pip's own wheel cache keys mmcv by its sdist only, so after a torch change it would reuse a
    # wheel built for another torch (undefined symbols at `import mmcv.ops`). Our cache is keyed by
    # the torch version instead, and pip's cache is bypassed for this package.
    WHEELS="$ROOT/.cache/wheels/torch-$TORCH_VERSION"
    SHARED="${MMCV_WHEELHOUSE:-$ROOT/../shared/wheelhouse}/torch-$TORCH_VERSION"
    mkdir -p "$WHEELS"
    FIND_LINKS="${PIP_FIND_LINKS:-} $WHEELS"
    [ -d "$SHARED" ] && FIND_LINKS="$FIND_LINKS $SHARED" && echo "using prebuilt wheels in $SHARED"
    export PIP_FIND_LINKS="$FIND_LINKS"
    if ! compgen -G "$WHEELS/mmcv-$MMCV_VERSION-*.whl" >/dev/null \
        && ! compgen -G "$SHARED/mmcv-$MMCV_VERSION-*.whl" >/dev/null; then
        echo "building mmcv from its sdist (about 23 minutes on 2 cores)"
        MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip wheel --no-deps --no-build-isolation \
            --no-cache-dir --no-binary mmcv -w "$WHEELS" "mmcv==$MMCV_VERSION"
    fi
    pip_install --no-build-isolation --no-cache-dir "mmcv==$MMCV_VERSION"
fi

step "mmengine, mmpretrain, mmdet, mmsegmentation, test tools and mmincubation (editable)"
pip_install -r "$REQ/mminstall.txt" -r "$REQ/runtime.txt" -r "$REQ/tests.txt"
pip_install --no-build-isolation --no-deps -e "$ROOT"

step "tree-crown photos for the own-data example (deepforest's data/, without its dependencies)"
pip_install --no-deps -r "$REQ/data.txt"

step "Fashion-MNIST (Debian's dataset-fashion-mnist) for the demo and the tests"
if [ -d /usr/share/datasets/fashion-mnist ]; then
    echo "found /usr/share/datasets/fashion-mnist"
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist
else
    echo "warning: install Debian's dataset-fashion-mnist or pass another data root to the configs" >&2
fi

step "checking the stack imports"
"$PY" - <<'EOF'
import mmcv, mmcv.ops, mmdet, mmengine, mmpretrain, mmseg, torch, torchvision  # noqa: F401
import mmincubation  # noqa: F401
print(f'torch {torch.__version__}, torchvision {torchvision.__version__}, mmcv {mmcv.__version__}, '
      f'mmengine {mmengine.__version__}, mmpretrain {mmpretrain.__version__}, '
      f'mmdet {mmdet.__version__}, mmseg {mmseg.__version__}')
EOF
stamp_of_inputs > "$STAMP"
