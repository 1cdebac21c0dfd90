#!/usr/bin/env bash
# Installs whatever is missing for building, running and testing the workbench. Idempotent and quiet
# when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-libtorch.sh
bash scripts/setup-corpus.sh
# Headless Chromium for the report's browser tests (Debian package; needs root, as CI has).
if ! command -v chromium >/dev/null 2>&1 && [ -z "${CHROMIUM:-}" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing chromium (Debian) for the report's browser tests" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: chromium is missing; install Debian's chromium (or set CHROMIUM) to run the browser tests" >&2
  fi
fi
# Slurm for the Slurm executor's test (workbench/tests/slurm.rs; Debian packages, needs root).
bash scripts/setup-slurm.sh
