#!/usr/bin/env bash
# nodexd-healthcheck: exits 0 when GET /healthz (or $1) answers 200. HTTPS by default (the shipped
# container config serves TLS), through `openssl s_client` (the image's openssl package); plain
# HTTP through bash's /dev/tcp. Like kubelet's HTTPS probes it does not verify the certificate: it
# sends no token and nothing secret, and only asks whether this nodexd answers.
# Environment: NODEX_HEALTH_HOST (default 127.0.0.1), NODEX_HEALTH_PORT (default 8080),
# NODEX_HEALTH_SCHEME (https, the default, or http).
set -euo pipefail
host=${NODEX_HEALTH_HOST:-127.0.0.1}
port=${NODEX_HEALTH_PORT:-8080}
scheme=${NODEX_HEALTH_SCHEME:-https}
path=${1:-/healthz}
printf -v request 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$host"

case $scheme in
  https)
    # -quiet: no session dump, and the answer is read to the end after the request is sent.
    # -verify_quiet: an unverified (e.g. self-signed) certificate is not an error here.
    errors=$(mktemp)
    trap 'rm -f "$errors"' EXIT
    status=$(printf '%s' "$request" |
      timeout 5 openssl s_client -quiet -verify_quiet -connect "$host:$port" 2>"$errors" |
      head -n1) || true
    [ -n "$status" ] || status="no answer: $(head -n1 "$errors")"
    ;;
  http)
    exec 3<>"/dev/tcp/$host/$port"
    printf '%s' "$request" >&3
    IFS= read -r -t 5 status <&3
    exec 3<&-
    ;;
  *)
    echo "nodexd-healthcheck: NODEX_HEALTH_SCHEME must be https or http, not $scheme" >&2
    exit 2
    ;;
esac
case $status in
  "HTTP/1."?" 200 "*) exit 0 ;;
  *) echo "nodexd-healthcheck: $scheme $path: ${status%$'\r'}" >&2; exit 1 ;;
esac
