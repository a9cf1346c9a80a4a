#!/usr/bin/env bash
# The demo: start a local S3 server (SeaweedFS on 127.0.0.1), seed a sample model
# the way current AWS SDKs upload it, download it with storage-init, print the summary
# and how every file was verified, then stop the server.
# usage: scripts/demo.sh [SHARD_MiB]     (default: two shards of 256 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
SHARD_MIB=${1:-256}
WORK=$PWD/.demo
export STATE_DIR=$WORK/seaweedfs SERVERS_PY=$PWD/.venv/bin/python
mkdir -p "$WORK"
scripts/servers/s3_seaweedfs.sh start >/dev/null
trap 'scripts/servers/s3_seaweedfs.sh stop' EXIT
# shellcheck disable=SC1091
. "$STATE_DIR/env"

echo "== seeding a sample model (2 x ${SHARD_MIB} MiB shards + small files) into s3://$S3_BUCKET/demo/llama"
.venv/bin/python - "$WORK/model" "$SHARD_MIB" <<'PY'
import os, sys
from pathlib import Path
from benchmarks.seed import make_model, seed_sdk
root = make_model(Path(sys.argv[1]), shard_bytes=int(sys.argv[2]) << 20, shards=2)
seed_sdk(root, f"s3://{os.environ['S3_BUCKET']}/demo/llama", os.environ)
PY

echo "== storage-init s3://$S3_BUCKET/demo/llama $WORK/models/llama"
rm -rf "$WORK/models"
.venv/bin/storage-init "s3://$S3_BUCKET/demo/llama" "$WORK/models/llama" --report "$WORK/report.json"

echo "== per-file verification (from $WORK/report.json)"
.venv/bin/python - "$WORK/report.json" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
for pair in data["pairs"]:
    for f in pair["files"]:
        print(f"  {f['path']:<42} {f['size']:>12,} B  {f['verification']:<12} {'ok' if f['verified'] else 'size only'}")
PY
echo "== the same command again: files already in place are skipped"
.venv/bin/storage-init "s3://$S3_BUCKET/demo/llama" "$WORK/models/llama"
# The manifest is storage-init's own (hidden) record for reruns, not a model file.
diff -r -x .storage-init-manifest.jsonl "$WORK/model" "$WORK/models/llama" && echo "== identical to the source files"
