#!/usr/bin/env bash
# The GPU check: on one GPU machine (about 8 minutes on an H200 before the data.decode=device run was added),
# run from the repository root:
#   bash scripts/gpu_check.sh [--out DIR] [--steps 300] [--images 4000]
# It builds ImageNet-like JPEGs, prepares litdata shards (mrl-prepare), trains the imagenet_mrl recipe on them
# (ResNet-50, bf16-mixed, channels-last; torch.compile off and on; the JPEGs decoded on the GPU, data.decode=device)
# printing images/s and the share of each step spent waiting for data, runs `make eval` (kNN on the GPU),
# `make embed --device cuda` and trainer=ddp on one GPU, and writes DIR/summary.json (default outputs/gpu_check/)
# with pass/fail per part. Exit status 0: all pass.
#   bash scripts/gpu_check.sh --dry-run [--out DIR]
# runs the same sequence on the CPU with tiny sizes (resnet10t, 3 steps); the test suite does, so it cannot rot.
#
# Without .venv (a machine with PyTorch, Lightning and timm but no network) it makes one that sees the system's
# packages and installs the project's other packages from the wheels in $MRL_WHEELS (default: wheels/), offline.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [[ ! -e .venv/.installed ]]; then
    wheels=${MRL_WHEELS:-wheels}
    echo "gpu_check: no .venv; making one on the system's packages, installing from $wheels/ offline" >&2
    "$PYTHON" -m venv --system-site-packages .venv
    if compgen -G "$wheels/*.whl" >/dev/null; then
        .venv/bin/python -m pip install --quiet --no-index --find-links "$wheels" "$wheels"/*.whl
    fi
    .venv/bin/python -m pip install --quiet --no-index --no-deps --no-build-isolation -e .
    touch .venv/.installed
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline WANDB_SILENT=true
exec .venv/bin/python -m mrl_testing.gpu_check --python "$PWD/.venv/bin/python" "$@"
