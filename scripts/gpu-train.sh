#!/usr/bin/env bash
# Runs on the GPU machine (no Rust there): the GPU training path's tests and measurements from a bundle built
# with scripts/gpu-train-bundle.sh. Run from the repository root (the bytes task reads data/kjv.txt).
#
#   bash BUNDLE/gpu-train.sh BUNDLE [all|tests|bench|torch|torch-compile|scaling]...
#
#   tests          workbench/tests/gpu_train.rs (fused AdamW = plain, bf16 ~ fp32, prefetch, out of memory)
#   bench          workbench bench-train on the five ~125M presets, T=2048, batch 8
#   torch          scripts/bench_train_torch.py, eager (needs .whl/ with flash-linear-attention, fla-core, einops)
#   torch-compile  the same with torch.compile (transformer, gla, hyena, striped)
#   scaling        experiments/gpu-scaling.yaml on this machine's GPUs, report in OUT/gpu-scaling
#   profile        bench-train --profile on PROFILE_ARCH (default gla,transformer): where each step's GPU time
#                  goes (OUT/profile.md; the Chrome traces stay in /tmp/wb-profile, too large to ship)
#   speedup        the same sweep on cuda:0 alone (4 trials at once) and then on every GPU (4 trials per GPU),
#                  wall times in OUT/speedup.txt, the multi-GPU report in OUT/gpu-scaling
# TORCH_ARCH and TORCH_COMPILE_ARCH (comma-separated) narrow the PyTorch side's architectures.
# Output goes to $OUT (the device tool's folder) or BUNDLE/out. Exit status: non-zero if any part failed.
set -uo pipefail
BUNDLE=$(cd "${1:-.carry/gpu-train}" && pwd) || { echo "gpu-train: no bundle at ${1:-.carry/gpu-train}" >&2; exit 2; }
shift || true
WHAT=("${@:-all}")
OUT=${OUT:-$BUNDLE/out}
mkdir -p "$OUT"
TORCH_LIB=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")') || {
  echo "gpu-train: python3 cannot import torch on this machine" >&2
  exit 2
}
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export WORKBENCH_KERNELS_LIB="$BUNDLE/libworkbench_kernels.so"
{
  date -u '+%Y-%m-%d %H:%M:%S UTC'
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  nproc
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
wants() { for w in "${WHAT[@]}"; do [ "$w" = all ] || [ "$w" = "$1" ] && return 0; done; return 1; }
status=0
# Each part may run at most STEP_LIMIT seconds (default 1800): one stuck part must not eat the others' time.
step() { local name=$1; shift; local t0=$SECONDS; timeout "${STEP_LIMIT:-1800}" "$@"; local rc=$?; echo "== $name: exit $rc, $((SECONDS - t0)) s" | tee -a "$OUT/steps.txt"; [ $rc = 0 ] || status=1; }
torch_side() {
  if [ -d .whl ] && [ ! -d /tmp/site/fla ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
  fi
  PYTHONPATH=/tmp/site python3 "$BUNDLE/bench_train_torch.py" "$@"
}
if wants tests; then
  step tests bash -c "'$BUNDLE/workbench-gpu-tests' --ignored --test-threads=1 --nocapture gpu_ 2>&1 | tee '$OUT/gpu-train-tests.log'; exit \${PIPESTATUS[0]}"
fi
if wants bench; then
  step bench bash -c "'$BUNDLE/workbench' bench-train --device cuda --json '$OUT/bench-train.json' > '$OUT/bench-train.md' 2> '$OUT/bench-train.log'; rc=\$?; cat '$OUT/bench-train.md'; exit \$rc"
fi
if wants torch; then
  step torch bash -c "$(declare -f torch_side); BUNDLE='$BUNDLE' torch_side --compile no --arch ${TORCH_ARCH:-transformer,hyena,striped,mamba,gla} --json '$OUT/bench-torch-eager.json' > '$OUT/bench-torch-eager.md' 2> '$OUT/bench-torch-eager.log'; rc=\$?; cat '$OUT/bench-torch-eager.md'; tail -3 '$OUT/bench-torch-eager.log'; exit \$rc"
fi
if wants torch-compile; then
  step torch-compile bash -c "$(declare -f torch_side); BUNDLE='$BUNDLE' torch_side --compile yes --arch ${TORCH_COMPILE_ARCH:-transformer,hyena,striped,gla} --json '$OUT/bench-torch-compile.json' > '$OUT/bench-torch-compile.md' 2> '$OUT/bench-torch-compile.log'; rc=\$?; cat '$OUT/bench-torch-compile.md'; tail -3 '$OUT/bench-torch-compile.log'; exit \$rc"
fi
if wants scaling; then
  step scaling bash -c "'$BUNDLE/workbench' sweep '$BUNDLE/gpu-scaling.yaml' --device cuda --out '$OUT/gpu-scaling' --force > '$OUT/gpu-scaling.log' 2>&1; rc=\$?; tail -5 '$OUT/gpu-scaling.log'; exit \$rc"
fi
if wants profile; then
  step profile bash -c "'$BUNDLE/workbench' bench-train --device cuda --arch '${PROFILE_ARCH:-gla,transformer}' --profile /tmp/wb-profile > '$OUT/profile.md' 2> '$OUT/profile.log'; rc=\$?; cat '$OUT/profile.md'; exit \$rc"
fi
if wants speedup; then
  gpus=$(nvidia-smi -L | wc -l)
  all=$(seq -s, -f 'cuda:%g' 0 $((gpus - 1)))
  sweep() { # NAME DEVICES JOBS
    local t0=$SECONDS
    "$BUNDLE/workbench" sweep "$BUNDLE/gpu-scaling.yaml" --device cuda --devices "$2" --jobs "$3" --out "$OUT/$1" --force > "$OUT/$1.log" 2>&1
    local rc=$?
    echo "$1: --devices $2 --jobs $3: exit $rc, $((SECONDS - t0)) s wall" | tee -a "$OUT/speedup.txt"
    return $rc
  }
  export -f sweep
  export BUNDLE OUT
  step speedup-1gpu bash -c "sweep gpu-scaling-1gpu cuda:0 4"
  step speedup-all bash -c "sweep gpu-scaling $all $((4 * gpus))"
fi
exit $status
