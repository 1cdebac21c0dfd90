#!/usr/bin/env bash
# Brings up a one-node Slurm on loopback for tests, entirely inside STATE_DIR (no systemd, no /etc):
# its own munge key and socket, slurm.conf, spool and log folders, slurmctld and slurmd started by hand.
#
#   scripts/slurm-up.sh STATE_DIR       # prints `export SLURM_CONF=STATE_DIR/slurm.conf` on success
#   SLURM_CONF=STATE_DIR/slurm.conf sbatch ...; squeue; ...
#   scripts/slurm-down.sh STATE_DIR     # cancels every job and stops every daemon this script started
#
# Needs root and Debian's slurmctld, slurmd, slurm-client and munge (scripts/setup-slurm.sh). Every wait
# has a timeout (SLURM_UP_TIMEOUT seconds, default 60); on failure it stops what it started, prints the
# daemons' logs and exits 1.
set -euo pipefail
state=${1:?usage: slurm-up.sh STATE_DIR}
timeout=${SLURM_UP_TIMEOUT:-60}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$state"
state=$(cd "$state" && pwd)
for cmd in munged slurmctld slurmd sinfo python3; do
  command -v "$cmd" >/dev/null 2>&1 || { echo "slurm-up: $cmd not found in PATH (run scripts/setup-slurm.sh as root)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "slurm-up: needs root (slurmd runs jobs as their user)" >&2; exit 1; }

fail() {
  echo "slurm-up: $*" >&2
  for f in "$state"/log/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done
  bash "$here/slurm-down.sh" "$state" >&2 || true
  exit 1
}

mkdir -p "$state/munge" "$state/ctld" "$state/d" "$state/log"
chmod 700 "$state/munge"
# munge: a key and socket of our own.
dd if=/dev/urandom of="$state/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$state/munge/munge.key"
munged --force --socket="$state/munge/munge.socket" --key-file="$state/munge/munge.key" \
  --pid-file="$state/munge/munged.pid" --log-file="$state/log/munged.log" --seed-file="$state/munge/munged.seed" \
  || fail "munged did not start"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ctld_port=$(free_port)
d_port=$(free_port)
host=$(hostname -s)
# The node line as slurmd detects this machine, with the address pinned to loopback.
node=$(slurmd -C | head -n 1)
cat >"$state/slurm.conf" <<CONF
ClusterName=workbench-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/munge/munge.socket
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=600
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$state/slurm.conf"
slurmctld -f "$SLURM_CONF" -i || fail "slurmctld did not start"
slurmd -f "$SLURM_CONF" || fail "slurmd did not start"

# Wait until the node is idle.
start=$SECONDS
while :; do
  st=$(sinfo -h -o %T 2>/dev/null | head -n 1 || true)
  [ "$st" = idle ] && break
  (( SECONDS - start > timeout )) && fail "the node did not become idle within ${timeout}s (state: ${st:-none})"
  sleep 0.2
done
echo "export SLURM_CONF=$SLURM_CONF"
