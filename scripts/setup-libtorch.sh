#!/usr/bin/env bash
# Installs libtorch for tch into the project-local folder .deps/py (no virtual environment, no Python import).
#
# We take the torch 2.11.0 wheel from PyPI with --no-deps, plus the two CUDA runtime libraries that
# libtorch_cpu.so links at load time (libcudart.so.13, libcupti.so.13). That is about 1.3 GB instead of the
# 4.6 GB a plain `pip install torch` pulls (cuBLAS, cuDNN, NCCL, ...), and it is all a CPU run needs.
# A GPU machine uses its own torch install at run time (see README, "GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.deps/py
STAMP=$DEST/.installed-torch-2.11.0
if [ -f "$STAMP" ]; then exit 0; fi
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || { echo "setup-libtorch: python3 with pip is needed" >&2; exit 1; }
mkdir -p "$DEST"
echo "setup-libtorch: installing torch 2.11.0 (CPU libraries only) into $DEST" >&2
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps --no-compile --target "$DEST" --upgrade \
  torch==2.11.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
test -f "$DEST/torch/lib/libtorch_cpu.so"
test -d "$DEST/nvidia/cu13/lib"
touch "$STAMP"
