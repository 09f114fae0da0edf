#!/usr/bin/env bash
# Start the whole platform on this machine: set up (idempotent), then `driftless up`. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
./hack/setup.sh
. .venv/bin/activate
exec driftless up "$@"
