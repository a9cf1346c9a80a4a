#!/usr/bin/env bash
# The test command (CI runs it through .ci/run): set-up (scripts/bootstrap.sh), lint,
# type checks, then every test, including the integration tests against real servers
# on 127.0.0.1 (SeaweedFS, fake-gcs-server, Azurite, nginx), which the test session
# starts and stops itself.
# usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
echo "== ruff"; .venv/bin/ruff check storage_init tests benchmarks scripts hatch_build.py
.venv/bin/ruff format --check storage_init tests benchmarks scripts hatch_build.py
echo "== hadolint"; .venv/bin/hadolint Dockerfile.distroless
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/pytest "$@"
