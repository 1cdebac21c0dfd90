#!/usr/bin/env bash
# Installs the Debian packages the Slurm executor's test needs (workbench/tests/slurm.rs brings up a
# one-node Slurm on loopback with scripts/slurm-up.sh): slurmctld, slurmd, slurm-client, munge.
# Idempotent and quiet when they are there; needs root (CI runs as root). Without root it says what is
# missing and the Slurm test skips itself with a message.
set -euo pipefail
missing=()
for cmd in slurmctld slurmd sbatch squeue scancel munged; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "setup: ${missing[*]} missing; install Debian's slurmctld slurmd slurm-client munge to run the Slurm test" >&2
  exit 0
fi
echo "setup: installing slurmctld slurmd slurm-client munge (Debian) for the Slurm executor's test" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi
