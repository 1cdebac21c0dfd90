#!/usr/bin/env bash
# The public baseline for the selective scan: mamba-ssm's own CUDA kernels (Gu & Dao), which PyPI ships only as
# source. Fetches the pinned sdist into .whl (checked against its sha256), compiles its bfloat16 forward and
# real-weight backward kernels for sm_90 with the pinned nvcc (scripts/setup-cuda.sh) into DIR, and copies
# beside them what the GPU machine compiles there (mamba-ssm's own selective_scan.cpp, the pybind module, and
# its header) plus kernels/benches/mamba_ssm/ (our stubs for the instantiations not built, and the benchmark).
# The GPU machine has nvcc, ninja and torch, so kernels/benches/mamba_ssm/bench.py links the module there with
# torch.utils.cpp_extension (tens of seconds; the two kernel objects, about a minute each on 2 cores, come
# from here). Used by scripts/gpu-bundle.sh with MAMBA_SSM=1; run by scripts/gpu-run.sh `mamba`.
#
#   bash scripts/mamba-ssm-objects.sh DIR
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:?usage: mamba-ssm-objects.sh DIR}
VERSION=2.3.2.post1
SHA256=104cc47e9101e5401a675fa2b784f2952b9b037f3b1dd83b5ac544394e95d028
URL=https://files.pythonhosted.org/packages/af/48/aa7bec0efc7453fa0512276c0069c854bf684219050294266534bfef34bb/mamba_ssm-$VERSION.tar.gz
SDIST=.whl/mamba_ssm-$VERSION.tar.gz
mkdir -p .whl "$DIR"
if [ ! -f "$SDIST" ]; then
  curl -sSfL --retry 3 -o "$SDIST.part" "$URL"
  mv "$SDIST.part" "$SDIST"
fi
echo "$SHA256  $SDIST" | sha256sum -c --quiet - || { echo "mamba-ssm-objects: $SDIST does not match its pin" >&2; exit 1; }
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
tar -xzf "$SDIST" -C "$src" "mamba_ssm-$VERSION/csrc/selective_scan"
S=$src/mamba_ssm-$VERSION/csrc/selective_scan
PY=$PWD/.deps/py
CUDA_HOME=${CUDA_HOME:-$PY/nvidia/cu13}
NVCC=${WORKBENCH_NVCC:-$CUDA_HOME/bin/nvcc}
# mamba-ssm's setup.py flags for these files (sm_90 only)
FLAGS=(-O3 -std=c++17 -U__CUDA_NO_HALF_OPERATORS__ -U__CUDA_NO_HALF_CONVERSIONS__
  -U__CUDA_NO_BFLOAT16_OPERATORS__ -U__CUDA_NO_BFLOAT16_CONVERSIONS__ -U__CUDA_NO_BFLOAT162_OPERATORS__
  -U__CUDA_NO_BFLOAT162_CONVERSIONS__ --expt-relaxed-constexpr --expt-extended-lambda --use_fast_math
  -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -D_GLIBCXX_USE_CXX11_ABI=1
  -I"$PY/torch/include" -I"$PY/torch/include/torch/csrc/api/include" -I"$CUDA_HOME/include")
for f in selective_scan_fwd_bf16 selective_scan_bwd_bf16_real; do
  # objects are cached by the sdist's pin: the same pin gives the same object
  cache=.whl/mamba-ssm-$VERSION-$f.o
  [ -f "$cache" ] || { "$NVCC" "${FLAGS[@]}" -c "$S/$f.cu" -o "$cache.part" && mv "$cache.part" "$cache"; }
  cp "$cache" "$DIR/$f.o"
done
cp "$S/selective_scan.cpp" "$S/selective_scan.h" "$DIR/"
cp kernels/benches/mamba_ssm/stubs.cpp kernels/benches/mamba_ssm/bench.py kernels/benches/gpu_timing.py "$DIR/"
echo "mamba-ssm-objects: mamba-ssm $VERSION's bfloat16 selective scan kernels in $DIR"
