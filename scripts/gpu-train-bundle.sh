#!/usr/bin/env bash
# Collects what a GPU machine without Rust needs to check and measure the GPU training path into
# .carry/gpu-train (git-ignored), after `make build-cuda`:
#   workbench                the CLI built with the CUDA library (bench-train, sweep --device cuda)
#   libworkbench_kernels.so  our kernels and the training helpers (fused AdamW, autocast dtype, memory stats)
#   workbench-gpu-tests      workbench/tests/gpu_train.rs (the `gpu_*` tests)
#   bench_train_torch.py     the PyTorch side of the throughput comparison
#   gpu-scaling.yaml         the isoFLOP study sized for one H200
#   gpu-train.sh             what to run there: `bash .carry/gpu-train/gpu-train.sh .carry/gpu-train [what]`
# The PyTorch side needs the flash-linear-attention wheels in .whl/ (see gpu-train.sh) and the corpus
# (data/kjv.txt): carry both with the bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
DEST=.carry/gpu-train
executable() {
  python3 -c '
import json, sys
exe = [m["executable"] for m in map(json.loads, sys.stdin)
       if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]]
print(exe[-1])' "$1"
}
TESTS=$("$CARGO" test --release -p workbench --features kernels/cuda --test gpu_train --no-run --message-format=json | executable gpu_train)
"$CARGO" build --release -p workbench --features kernels/cuda
rm -rf "$DEST"
mkdir -p "$DEST"
cp "$TESTS" "$DEST/workbench-gpu-tests"
cp target/release/libworkbench_kernels.so target/release/workbench "$DEST/"
cp scripts/bench_train_torch.py scripts/gpu-train.sh experiments/gpu-scaling.yaml "$DEST/"
strip "$DEST/workbench-gpu-tests" "$DEST/workbench" "$DEST/libworkbench_kernels.so"
du -ch "$DEST"/* | sed 's/^/gpu-train-bundle: /'
