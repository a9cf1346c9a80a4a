#!/usr/bin/env bash
# Azurite (Blob service only) on 127.0.0.1, from npm (scripts/bootstrap.sh installs
# azurite@3.35.0 into .servers/azurite: 3.36+ needs Node >= 21, Debian 12 has 20).
# usage: azure_azurite.sh start|stop
#   -> $STATE/env: AZURE_STORAGE_CONNECTION_STRING (pieces also as AZURITE_*)
# With TLS_CERT and TLS_KEY (PEM files) it serves https and accepts OAuth Bearer
# tokens (--oauth basic: Azurite checks issuer, audience and lifetime, not signatures).
set -euo pipefail
. "$(dirname "$0")/common.sh"
STATE=${STATE_DIR:-$ROOT/state/azurite}
AZURITE=${AZURITE:-$ROOT/azurite/node_modules/.bin/azurite-blob}
# Azurite's well-known development account (public, documented by Microsoft).
ACCOUNT=devstoreaccount1
KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
case "${1:-}" in
start)
  mkdir -p "$STATE/data"
  read -r P <<<"$(freeports 1)"
  # --skipApiVersionCheck: azure-storage-blob 12.31 sends an x-ms-version newer than
  # Azurite 3.35 knows (400 without it). --disableTelemetry: no off-box traffic.
  SCHEME=http; TLS=()
  if [ -n "${TLS_CERT:-}" ]; then
    SCHEME=https; TLS=(--cert "$TLS_CERT" --key "$TLS_KEY" --oauth basic)
  fi
  "$AZURITE" --blobHost 127.0.0.1 --blobPort "$P" --location "$STATE/data" "${TLS[@]}" \
    --skipApiVersionCheck --disableTelemetry --silent > "$STATE/server.log" 2>&1 &
  echo $! > "$STATE/pid"
  # Any HTTP answer means it listens (an unauthenticated list is refused: 401/403).
  wait_until 60 sh -c "curl -sk -o /dev/null -w '%{http_code}' '$SCHEME://127.0.0.1:$P/$ACCOUNT?comp=list' | grep -q 40" \
    || { cat "$STATE/server.log"; exit 1; }
  ENDPOINT="$SCHEME://127.0.0.1:$P/$ACCOUNT"
  {
    printf "export AZURE_STORAGE_CONNECTION_STRING='DefaultEndpointsProtocol=$SCHEME;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;'\n" "$ACCOUNT" "$KEY" "$ENDPOINT"
    printf "export AZURITE_ACCOUNT=%s AZURITE_KEY=%s AZURITE_ENDPOINT=%s\n" "$ACCOUNT" "$KEY" "$ENDPOINT"
  } > "$STATE/env"
  cat "$STATE/env" ;;
stop) stop_pid "$STATE/pid" ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
