#!/usr/bin/env bash
# Stops what scripts/slurm-up.sh STATE_DIR started: cancels every job, then stops slurmd, slurmctld and
# munged by the process ids in their pid files (nothing else). Every wait has a timeout.
set -uo pipefail
state=${1:?usage: slurm-down.sh STATE_DIR}
[ -d "$state" ] || exit 0
state=$(cd "$state" && pwd)
export SLURM_CONF="$state/slurm.conf"
if [ -f "$state/slurmctld.pid" ] && command -v scancel >/dev/null 2>&1; then
  timeout 10 scancel --full --quiet --user=root >/dev/null 2>&1 || true
  for _ in $(seq 50); do
    [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
    sleep 0.2
  done
fi
stop() { # pid file
  [ -f "$1" ] || return 0
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || { rm -f "$1"; return 0; }
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  rm -f "$1"
}
stop "$state/slurmd.pid"
stop "$state/slurmctld.pid"
stop "$state/munge/munged.pid"
exit 0
