#!/usr/bin/env bash
# The test command: set up (idempotent) and run the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./hack/setup.sh
. .venv/bin/activate
ruff check .
mypy shared wire model registry host reconciler driftless schemas
exec python -m pytest -q -p no:cacheprovider "$@"
