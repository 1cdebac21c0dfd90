#!/usr/bin/env bash
# Collects what a GPU machine without Rust needs into .carry/gpu (git-ignored; DEST=... for another folder),
# after `make build-cuda`:
#   kernels-gpu-tests       the kernels' GPU tests (kernels/tests/gpu/)
#   kernels-gpu-bench       the short convolution's benchmark (kernels/benches/short_conv_gpu.rs)
#   kernels-gpu-scan-bench  the selective scan's benchmark (kernels/benches/selective_scan_gpu.rs)
#   kernels-gpu-chunk-bench chunked linear attention's benchmark (kernels/benches/chunk_linear_gpu.rs)
#   kernels-gpu-longconv-bench Hyena's gated FFT long convolution's benchmark (kernels/benches/long_conv_gpu.rs)
#   profile-chunk-linear    chunked linear attention's launches and block steps in clock cycles
#                           (kernels/csrc/tools/profile_chunk_linear.cu, a diagnostic: gpu-run.sh steps)
#   profile-short-conv      the short convolution's kernels alone, over launch shapes
#                           (kernels/csrc/tools/profile_short_conv.cu, a diagnostic: gpu-run.sh convprof)
#   profile-selective-scan  the selective scan's kernels alone, both dtypes
#                           (kernels/csrc/tools/profile_selective_scan.cu, a diagnostic: gpu-run.sh scanprof)
#   profile-long-conv       the tensor-core long convolution's kernels alone
#                           (kernels/csrc/tools/profile_long_conv.cu, a diagnostic: gpu-run.sh lcprof)
#   libworkbench_kernels.so the CUDA kernels (sm_90)
#   workbench               the CLI, built with the kernels (for training runs with --device cuda)
#   kernel-parity.yaml      the training parity check (gpu-run.sh parity)
#   fla_bench.py, gpu_timing.py fla-core's Triton kernels timed with the same protocol (gpu-run.sh fla), with
#                           .whl/fla_core-0.6.0-py3-none-any.whl when present (`pip download --no-deps
#                           fla-core==0.6.0 -d .whl`; its one need, einops, is on the GPU image)
#   mamba_ssm/              with MAMBA_SSM=1: mamba-ssm's selective scan kernels, the public baseline for ours
#                           (scripts/mamba-ssm-objects.sh: fetches its pinned sdist, compiles two kernel
#                           objects; gpu-run.sh mamba links and times them there)
#   gpu-run.sh              what to run there: `bash scripts/gpu-run.sh .carry/gpu` (or the copy here)
#   base-profile-*          with BASELINE=REV (a commit): the three profilers built from REV's kernels/csrc,
#                           which gpu-run.sh's scanprof, convprof and steps run beside the current ones, so
#                           one device call gives a before and after on the same machine
# Binaries are stripped; the bundle is a few tens of MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
DEST=${DEST:-.carry/gpu}
# The path of the executable cargo built for a target (from its JSON messages).
executable() {
  python3 -c '
import json, sys
exe = [m["executable"] for m in map(json.loads, sys.stdin)
       if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]]
print(exe[-1])' "$1"
}
TESTS=$("$CARGO" test --release -p kernels --features cuda --test gpu --no-run --message-format=json | executable gpu)
BENCH=$("$CARGO" bench -p kernels --features cuda --bench short_conv_gpu --no-run --message-format=json | executable short_conv_gpu)
CHUNK_BENCH=$("$CARGO" bench -p kernels --features cuda --bench chunk_linear_gpu --no-run --message-format=json | executable chunk_linear_gpu)
SCAN_BENCH=$("$CARGO" bench -p kernels --features cuda --bench selective_scan_gpu --no-run --message-format=json | executable selective_scan_gpu)
LONGCONV_BENCH=$("$CARGO" bench -p kernels --features cuda --bench long_conv_gpu --no-run --message-format=json | executable long_conv_gpu)
rm -rf "$DEST"
mkdir -p "$DEST"
cp "$TESTS" "$DEST/kernels-gpu-tests"
cp "$BENCH" "$DEST/kernels-gpu-bench"
cp "$SCAN_BENCH" "$DEST/kernels-gpu-scan-bench"
cp "$CHUNK_BENCH" "$DEST/kernels-gpu-chunk-bench"
cp "$LONGCONV_BENCH" "$DEST/kernels-gpu-longconv-bench"
cp target/release/libworkbench_kernels.so target/release/profile-chunk-linear target/release/profile-short-conv \
  target/release/profile-selective-scan target/release/profile-long-conv "$DEST/"
cp target/release/libworkbench_kernels.so target/release/workbench "$DEST/"
cp scripts/gpu-run.sh experiments/kernel-parity.yaml kernels/benches/fla_bench.py kernels/benches/gpu_timing.py "$DEST/"
# fla-core's wheel for the public comparison (gpu-run.sh fla), when it was downloaded into .whl
cp .whl/fla_core-0.6.0-py3-none-any.whl "$DEST/" 2>/dev/null || true
if [ "${MAMBA_SSM:-0}" = 1 ]; then
  bash scripts/mamba-ssm-objects.sh "$DEST/mamba_ssm"
fi
if [ -n "${BASELINE:-}" ]; then
  CUDA_HOME=${WORKBENCH_CUDA_HOME:-.deps/py/nvidia/cu13}
  NVCC=${WORKBENCH_NVCC:-$CUDA_HOME/bin/nvcc}
  base=$(mktemp -d)
  git archive "$BASELINE" kernels/csrc | tar -x -C "$base"
  for tool in "$base"/kernels/csrc/tools/profile_*.cu; do
    name=base-$(basename "$tool" .cu | tr _ -)
    # the flags build.rs gives the tools (host_test_args with -O3)
    "$NVCC" -std=c++17 -O3 -gencode=arch=compute_90,code=sm_90 -I"$base/kernels/csrc" -I"$CUDA_HOME/include" \
      -L"$CUDA_HOME/lib" "$tool" -o "$DEST/$name" 2>&1 | grep -v "spill\|^ptxas info\|^$" || true
    [ -x "$DEST/$name" ] || { echo "gpu-bundle: $name from $BASELINE did not build" >&2; exit 1; }
  done
  rm -rf "$base"
fi
strip "$DEST/kernels-gpu-tests" "$DEST/kernels-gpu-bench" "$DEST/kernels-gpu-scan-bench" "$DEST/kernels-gpu-chunk-bench" \
  "$DEST/kernels-gpu-longconv-bench" "$DEST/profile-chunk-linear" "$DEST/profile-short-conv" "$DEST/profile-selective-scan" "$DEST/workbench" "$DEST/libworkbench_kernels.so"
du -ch "$DEST"/* | sed 's/^/gpu-bundle: /'
