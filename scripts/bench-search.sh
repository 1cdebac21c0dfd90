#!/usr/bin/env bash
# The search benchmark of BENCHMARKS.md ("Search strategies"): measures issue 6's two goals on CPU.
#
#   scripts/bench-search.sh [OUT_DIR] [SEEDS...]     # default: runs/bench-search, seeds 0 1 2
#
# 1. ASHA vs the full grid on experiments/search-asha.yaml: the best candidate each finds and the FLOPs
#    ASHA spends as a fraction of the grid's (goal: the same best, at most 1/3 of the FLOPs).
# 2. Evolution vs random search on experiments/search-evolution.yaml (MQAR), the same FLOP budget, one run
#    per search seed (goal: evolution's best at least as good as random's, for every seed).
# Sweeps run with --jobs 2 (two one-thread trial processes); rerunning reuses finished trials (--resume).
# Prints the tables BENCHMARKS.md holds. Needs python3 (for reading search.json) and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/bench-search}
shift || true
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(0 1 2)
wb=target/release/workbench
[ -x "$wb" ] || { echo "bench-search: build first (make build)" >&2; exit 1; }
mkdir -p "$out"

sweep() { # space dir
  local start=$SECONDS
  "$wb" sweep "$1" --out "$2" --force --resume --jobs 2 >"$2.log" 2>&1 || { tail -n 20 "$2.log" >&2; exit 1; }
  echo $((SECONDS - start)) >"$2.seconds"
}

# 1. ASHA against the grid.
sed 's/^search: .*/search: {strategy: grid}/' experiments/search-asha.yaml >"$out/grid.yaml"
sweep "$out/grid.yaml" "$out/grid"
sweep experiments/search-asha.yaml "$out/asha"

# 2. Evolution against random search over the same genome space and FLOP budget.
for s in "${seeds[@]}"; do
  sed "s/^  seed: 0$/  seed: $s/" experiments/search-evolution.yaml >"$out/evolution-$s.yaml"
  sed -e 's/^  strategy: evolution$/  strategy: random/' -e 's/^  population: 6$/  n: 24/' -e '/^  generations: /d' \
    "$out/evolution-$s.yaml" >"$out/random-$s.yaml"
  sweep "$out/evolution-$s.yaml" "$out/evolution-$s"
  sweep "$out/random-$s.yaml" "$out/random-$s"
done

python3 - "$out" "${seeds[@]}" <<'EOF'
import json, sys
out, seeds = sys.argv[1], sys.argv[2:]
def load(d):
    return json.load(open(f"{out}/{d}/search.json")), open(f"{out}/{d}.seconds").read().strip()
def best(s):
    b = min(s["best"], key=lambda b: b["eval_loss"])
    return b
grid, tg = load("grid")
asha, ta = load("asha")
bg, ba = best(grid), best(asha)
print("| search | best candidate | eval loss | trials (completed) | FLOPs | of the grid's | wall |")
print("|---|---|---|---|---|---|---|")
for name, s, b, t in [("grid", grid, bg, tg), ("ASHA", asha, ba, ta)]:
    done = sum(1 for x in s["trials"] if x["fate"] == "completed")
    print(f"| {name} | {b['label']} | {b['eval_loss']:.4f} | {len(s['trials'])} ({done}) | {s['flops_spent']:.3e} "
          f"| {100 * s['fraction_of_grid']:.1f}% | {t} s |")
same = bg["id"] == ba["id"]
print(f"\nASHA found {'the same' if same else 'a different'} best candidate, with "
      f"{100 * asha['fraction_of_grid']:.1f}% of the grid's FLOPs (goal: same, at most 33.3%).\n")
print("| seed | evolution: best | eval loss | FLOPs | random: best | eval loss | FLOPs | evolution at least as good |")
print("|---|---|---|---|---|---|---|---|")
wins = 0
for s in seeds:
    e, te = load(f"evolution-{s}")
    r, tr = load(f"random-{s}")
    be, br = best(e), best(r)
    ok = be["eval_loss"] <= br["eval_loss"]
    wins += ok
    print(f"| {s} | {be['label']} | {be['eval_loss']:.4f} | {e['flops_spent']:.3e} | {br['label']} | "
          f"{br['eval_loss']:.4f} | {r['flops_spent']:.3e} | {'yes' if ok else 'no'} |")
print(f"\nEvolution was at least as good as random search for {wins} of {len(seeds)} seeds.")
EOF
