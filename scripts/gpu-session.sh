#!/usr/bin/env bash
# One device call on a two-GPU H200 machine, after `make gpu-bundle gpu-train-bundle` here (carry .carry/gpu,
# .carry/gpu-train and data): the kernels' GPU tests and benchmarks on GPU 0, then bench-train --profile there;
# the isoFLOP sweep (experiments/gpu-scaling.yaml) on GPU 1;
# then the same sweep on both GPUs. Small files only come back: $OUT/final.tgz. Time limits per part (s):
# KT (kernels, default 110), PT (profile, 80), ST (one-GPU sweep, 160), S2 (two-GPU sweep, 100).
set -u
K=$(cd .carry/gpu && pwd); T=$(cd .carry/gpu-train && pwd); R=$OUT
mkdir -p $R/k $R/t $R/s
TORCH_LIB=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")')
sweep() { # NAME DEVICES JOBS LIMIT
  local t0=$SECONDS
  LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" WORKBENCH_KERNELS_LIB=$T/libworkbench_kernels.so \
    timeout $4 $T/workbench sweep $T/gpu-scaling.yaml --device cuda --devices $2 --jobs $3 --out $R/s/$1 --force > $R/s/$1.log 2>&1
  echo "$1: --devices $2 --jobs $3: exit $?, $((SECONDS - t0)) s wall" | tee -a $R/speedup.txt
}
(
  export CUDA_VISIBLE_DEVICES=0
  OUT=$R/k timeout ${KT:-110} bash $K/gpu-run.sh $K tests chunk longconv > $R/k/run.log 2>&1; echo "== kernels exit $?" >> $R/k/run.log
  OUT=$R/t STEP_LIMIT=${PT:-80} PROFILE_ARCH=gla,hyena,transformer bash $T/gpu-train.sh $T profile > $R/t/run.log 2>&1
) &
CUDA_VISIBLE_DEVICES=1 sweep gpu-scaling-1gpu cuda:0 4 ${ST:-160}
wait
sweep gpu-scaling cuda:0,cuda:1 8 ${S2:-100}
cd "$R" || exit 1
find . -size -3M -type f \( -name '*.md' -o -name '*.log' -o -name '*.txt' -o -name '*.json' -o -name '*.jsonl' -o -name '*.html' -o -name '*.yaml' \) | tar czf final.tgz -T -
find . -mindepth 1 -maxdepth 1 ! -name final.tgz -exec rm -rf {} +
