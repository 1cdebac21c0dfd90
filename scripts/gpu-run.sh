#!/usr/bin/env bash
# Runs on the GPU machine (no Rust, no network there): the CUDA kernels' GPU tests and benchmark from a
# bundle built here with `make gpu-bundle`.
#
#   bash scripts/gpu-run.sh [BUNDLE_DIR] [WHAT...]      (defaults: .carry/gpu, all)
#
# WHAT: any of `tests` (every gpu_ test; with WORKBENCH_CHUNK_LINEAR_KERNEL=1, so the chunked linear-attention
# kernel runs for every dtype and head dim the tests try), `conv` (the short convolution's benchmark), `scan` (the selective scan's
# benchmark), `chunk` (chunked linear attention's benchmark), `longconv` (Hyena's gated FFT long convolution's
# benchmark), `bench` (all four benchmarks), `parity` (experiments/kernel-parity.yaml trained with
# --kernels auto and --kernels reference, evaluation losses side by side), `all` (all of them), and, only
# when named, `fla` (kernels/benches/fla_bench.py: fla-core's Triton kernels with the same protocol; needs
# BUNDLE_DIR/fla_core-0.6.0-py3-none-any.whl and minutes of Triton autotuning), `mamba` (kernels/benches/mamba_ssm/bench.py: mamba-ssm's selective-scan CUDA kernels,
# linked here with torch's cpp_extension, checked against float64 and timed with the same protocol; needs a
# bundle built with MAMBA_SSM=1) and `steps` (chunked linear
# attention's launches and block steps in clock cycles, kernels/csrc/tools/profile_chunk_linear.cu, at
# STEPS_SHAPES="T:Dk[:Dv[:B:H]] ...", default "2048:128 2048:64 2048:96:192:8:4" (the last: GLA's training
# shape, 4 heads at d_model 768), and `convprof` (the short convolution's kernels alone over launch shapes,
# kernels/csrc/tools/profile_short_conv.cu), `scanprof` (the selective scan's kernels alone,
# kernels/csrc/tools/profile_selective_scan.cu) and `lcprof` (the tensor-core long convolution's kernels alone,
# kernels/csrc/tools/profile_long_conv.cu); scanprof, lcprof, convprof and steps also run the bundle's
# base-profile-* (BASELINE=REV make gpu-bundle) into *-base.md/.txt. SCAN_SKIP_BASELINE=1 makes `scan` skip the libtorch path; CHUNK_BENCH_FORMS=per_key (any of scalar, per_key, none) narrows `chunk`.
#
# The binaries were linked against the torch 2.11.0 wheel here; there they use that machine's own torch
# 2.11.0+cu130 through LD_LIBRARY_PATH. Logs go to $OUT (the device tool's output folder) or BUNDLE_DIR/out:
# machine.txt, gpu-tests.log, bench.md, convprof.md, scanprof.md, scan-bench.md, parity.txt, chunk-bench.md, longconv-bench.md, fla.md, mamba-ssm.md, steps.txt. Exit status: non-zero if any test failed or the benchmark failed.
set -uo pipefail
BUNDLE=$(cd "${1:-.carry/gpu}" && pwd) || { echo "gpu-run: no bundle at ${1:-.carry/gpu} (make gpu-bundle)" >&2; exit 2; }
shift || true
WHAT=" ${*:-all} "
want() {
  case "$WHAT" in *" all "* | *" $1 "*) return 0 ;; esac
  { [ "$1" = scan ] || [ "$1" = conv ] || [ "$1" = chunk ] || [ "$1" = longconv ]; } && [[ "$WHAT" == *" bench "* ]]
}
OUT=${OUT:-$BUNDLE/out}
mkdir -p "$OUT"
TORCH_LIB=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")') || {
  echo "gpu-run: python3 cannot import torch on this machine" >&2
  exit 2
}
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export WORKBENCH_KERNELS_LIB="$BUNDLE/libworkbench_kernels.so"
{
  date -u '+%Y-%m-%d %H:%M:%S UTC'
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
status=0
# A profiler, then its BASELINE build when the bundle has one (gpu-bundle.sh), appending to OUT/OUTFILE and
# OUT/OUTFILE's -base twin: `profiler NAME OUTFILE ARGS...`; `fresh OUTFILE` empties both first.
profiler() {
  local name=$1 out=$2
  shift 2
  "$BUNDLE/$name" "$@" 2>&1 | tee -a "$OUT/$out"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  if [ -x "$BUNDLE/base-$name" ]; then
    echo "(the baseline build: base-$name)" | tee -a "$OUT/${out%.*}-base.${out##*.}"
    "$BUNDLE/base-$name" "$@" 2>&1 | tee -a "$OUT/${out%.*}-base.${out##*.}"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
  fi
}
fresh() { : > "$OUT/$1"; : > "$OUT/${1%.*}-base.${1##*.}"; }
if want tests; then
  WORKBENCH_CHUNK_LINEAR_KERNEL=1 "$BUNDLE/kernels-gpu-tests" --ignored --test-threads=1 --nocapture gpu_ 2>&1 | tee "$OUT/gpu-tests.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
if want parity; then
  (
    rc=0
    for k in auto reference; do
      start=$(date +%s)
      "$BUNDLE/workbench" sweep "$BUNDLE/kernel-parity.yaml" --device cuda --kernels "$k" --out "/tmp/parity-$k" \
        --force > "/tmp/parity-$k.log" 2>&1 || { echo "parity: --kernels $k failed:"; tail -20 "/tmp/parity-$k.log"; rc=1; }
      echo "--kernels $k: $(( $(date +%s) - start )) s"
      # a kernel library that did not load would silently train on the reference path: show its warning
      cat /tmp/parity-"$k"/trials/*/stderr.log 2>/dev/null | grep -i "warning" | sort | uniq -c
    done
    python3 - <<'PY'
import glob, json, os
def losses(k):
    """Evaluation losses per trial (its spec's label), in curve order."""
    out = {}
    for d in sorted(glob.glob(f"/tmp/parity-{k}/trials/*/")):
        if not os.path.exists(d + "curve.jsonl"):
            continue
        label = json.load(open(d + "spec.json")).get("label", d)
        out[label] = [p["eval_loss"] for p in map(json.loads, open(d + "curve.jsonl")) if p.get("eval_loss") is not None]
    return out
a, r = losses("auto"), losses("reference")
for label in sorted(set(a) | set(r)):
    x, y = a.get(label, []), r.get(label, [])
    print(f"{label}")
    print("  eval loss, kernels auto:     ", " ".join(f"{v:.4f}" for v in x))
    print("  eval loss, kernels reference:", " ".join(f"{v:.4f}" for v in y))
    if x and len(x) == len(y):
        print(f"  max |auto - reference| = {max(abs(u - v) for u, v in zip(x, y)):.2e}")
PY
    exit $rc
  ) 2>&1 | tee "$OUT/parity.txt"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
if want scan; then
  "$BUNDLE/kernels-gpu-scan-bench" 2>&1 | tee "$OUT/scan-bench.md"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
if want chunk; then
  "$BUNDLE/kernels-gpu-chunk-bench" 2>&1 | tee "$OUT/chunk-bench.md"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
if want longconv; then
  "$BUNDLE/kernels-gpu-longconv-bench" 2>&1 | tee "$OUT/longconv-bench.md"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
if want conv; then
  "$BUNDLE/kernels-gpu-bench" 2>&1 | tee "$OUT/bench.md"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
if [[ "$WHAT" == *" steps "* ]]; then
  fresh steps.txt
  for shape in ${STEPS_SHAPES:-2048:128 2048:64 2048:96:192:8:4}; do
    profiler profile-chunk-linear steps.txt ${shape//:/ }
  done
fi
if [[ "$WHAT" == *" scanprof "* ]]; then
  fresh scanprof.md
  profiler profile-selective-scan scanprof.md
fi
if [[ "$WHAT" == *" lcprof "* ]]; then
  fresh lcprof.md
  profiler profile-long-conv lcprof.md
fi
if [[ "$WHAT" == *" convprof "* ]]; then
  fresh convprof.md
  profiler profile-short-conv convprof.md
fi
if [[ "$WHAT" == *" fla "* ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/fla-site "$BUNDLE"/fla_core-*.whl &&
    PYTHONPATH=/tmp/fla-site PYTHONUNBUFFERED=1 python3 "$BUNDLE/fla_bench.py" ${FLA_OPS:-} 2>&1 | tee "$OUT/fla.md"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
if [[ "$WHAT" == *" mamba "* ]]; then
  if [ -f "$BUNDLE/mamba_ssm/bench.py" ]; then
    PYTHONUNBUFFERED=1 python3 "$BUNDLE/mamba_ssm/bench.py" 2>&1 | tee "$OUT/mamba-ssm.md"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
  else
    echo "gpu-run: no $BUNDLE/mamba_ssm (build the bundle with MAMBA_SSM=1 make gpu-bundle)" >&2
    status=1
  fi
fi
exit $status
