#!/usr/bin/env bash
# nodexd-healthcheck: exits 0 when GET /healthz (or $1) answers 200; bash only, no curl needed.
# Environment: NODEX_HEALTH_HOST (default 127.0.0.1), NODEX_HEALTH_PORT (default 8080).
set -euo pipefail
host=${NODEX_HEALTH_HOST:-127.0.0.1}
port=${NODEX_HEALTH_PORT:-8080}
path=${1:-/healthz}
exec 3<>"/dev/tcp/$host/$port"
printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$host" >&3
IFS= read -r -t 5 status <&3
exec 3<&-
case $status in
  "HTTP/1."?" 200 "*) exit 0 ;;
  *) echo "nodexd-healthcheck: $path: ${status%$'\r'}" >&2; exit 1 ;;
esac
