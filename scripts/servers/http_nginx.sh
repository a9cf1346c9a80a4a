#!/usr/bin/env bash
# nginx (Debian) serving $STATE/www on 127.0.0.1, with byte ranges and ETags.
# usage: http_nginx.sh start|stop
#   TLS_CERT/TLS_KEY (optional): also listen with TLS, on a second port.
#   start writes $STATE/env with HTTP_BASE_URL (and HTTPS_BASE_URL), HTTP_ROOT.
# Files and every parent directory must be world-readable: when started as root
# the workers run as 'nobody'.
set -euo pipefail
. "$(dirname "$0")/common.sh"
STATE=${STATE_DIR:-$ROOT/state/nginx}
case "${1:-}" in
start)
  mkdir -p "$STATE/www" "$STATE/tmp"; chmod 755 "$STATE" "$STATE/www"
  read -r P S <<<"$(freeports 2)"
  tls=""
  if [ -n "${TLS_CERT:-}" ]; then
    tls="server { listen 127.0.0.1:$S ssl; root $STATE/www; etag on; max_ranges 1;
                  ssl_certificate $TLS_CERT; ssl_certificate_key $TLS_KEY; }"
  fi
  cat > "$STATE/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $STATE/nginx.pid;
error_log $STATE/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on; tcp_nopush on; sendfile_max_chunk 2m;
    keepalive_requests 10000;
    default_type application/octet-stream;
    client_body_temp_path $STATE/tmp/body; proxy_temp_path $STATE/tmp/proxy;
    fastcgi_temp_path $STATE/tmp/fastcgi; uwsgi_temp_path $STATE/tmp/uwsgi;
    scgi_temp_path $STATE/tmp/scgi;
    server {
        listen 127.0.0.1:$P;
        root $STATE/www;
        etag on;          # "mtime-size", a strong validator (not an MD5)
        max_ranges 1;     # one range -> 206
        location /redirect/ { rewrite ^/redirect/(.*)\$ /\$1 redirect; }
        location /private/ {
            if (\$http_authorization != "Bearer test-token") { return 403; }
        }
    }
    $tls
}
CONF
  # -e: the error log before the config is read (the default needs root).
  nginx -e "$STATE/error.log" -p "$STATE" -c "$STATE/nginx.conf" > "$STATE/nginx.out" 2>&1 &
  echo $! > "$STATE/pid"
  wait_until 10 curl -so /dev/null "http://127.0.0.1:$P/" || { cat "$STATE/error.log"; exit 1; }
  {
    printf 'export HTTP_BASE_URL=http://127.0.0.1:%s HTTP_ROOT=%s/www\n' "$P" "$STATE"
    [ -n "$tls" ] && printf 'export HTTPS_BASE_URL=https://127.0.0.1:%s\n' "$S"
  } > "$STATE/env"
  cat "$STATE/env" ;;
stop) stop_pid "$STATE/pid" ;;   # the master's PID; TERM stops the workers too
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
