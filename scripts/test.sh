#!/usr/bin/env bash
# The test command (CI runs it through .ci/run): lint, type checks, then every test,
# including the integration tests against a real SeaweedFS S3 server on 127.0.0.1,
# which the test session starts and stops itself.
# usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
echo "== ruff"; .venv/bin/ruff check storage_init tests benchmarks scripts hatch_build.py
.venv/bin/ruff format --check storage_init tests benchmarks scripts hatch_build.py
echo "== hadolint"; .venv/bin/hadolint Dockerfile.distroless
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/pytest "$@"
