#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler (nvcc, from PyPI) into the project-local folder .deps/py, beside the
# torch wheel that scripts/setup-libtorch.sh puts there. Idempotent: a stamp file records the pins.
#
# Why these pins (see ../shared/gpu/README.md): the H200 machine runs driver 580 (CUDA 13.0) with nvcc 13.0.88
# and torch 2.11.0+cu130. nvcc 13.0.88 needs nvvm (cicc, libdevice), crt (host headers) and cccl (libcu++)
# of the same release; left to itself pip pulls nvvm/crt 13.5, whose PTX 9.5 the 13.0 ptxas rejects. So all
# four are pinned and installed with --no-deps.
#
# pip --target refuses to merge into an existing top-level folder (and with --upgrade it would replace
# .deps/py/nvidia, deleting the CUDA runtime that libtorch_cpu.so needs), so the wheels go to a scratch
# folder first and are copied in; their files do not overlap with the runtime's. About 100 MB to download,
# 264 MB on disk.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-libtorch.sh
DEST=.deps/py
PINS="nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85"
STAMP=$DEST/.installed-cuda-13.0.88
NVCC=$DEST/nvidia/cu13/bin/nvcc
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$PINS" ] || [ ! -x "$NVCC" ]; then
  PY=${PYTHON:-python3}
  command -v "$PY" >/dev/null || { echo "setup-cuda: python3 with pip is needed" >&2; exit 1; }
  echo "setup-cuda: installing the CUDA 13.0 compiler ($PINS) into $DEST" >&2
  SCRATCH=$(mktemp -d "$DEST/.cuda-install.XXXXXX")
  trap 'rm -rf "$SCRATCH"' EXIT
  # shellcheck disable=SC2086 # PINS is a list of requirements
  "$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --no-compile --target "$SCRATCH" $PINS
  cp -a "$SCRATCH"/. "$DEST"/
  echo "$PINS" > "$STAMP"
fi
# The check: the compiler runs and is the pinned release.
if ! "$NVCC" --version | grep -q "release 13.0, V13.0.88"; then
  echo "setup-cuda: $NVCC is not nvcc 13.0.88:" >&2
  "$NVCC" --version >&2 || true
  exit 1
fi
