#!/usr/bin/env bash
# nodexd-trial-cert: makes a self-signed TLS certificate for trying the shipped container configs
# (not for production: clients must be given this very certificate to trust). Writes
# DIR/nodex_tls.crt (mode 0644) and DIR/nodex_tls.key (mode 0600; see docs/deploy.md for owners).
# Usage: nodexd-trial-cert DIR [NAME...]   NAMEs (DNS names or IP addresses) are added to the
# certificate's subject alternative names beside nodexd, localhost and 127.0.0.1.
# Environment: NODEX_TLS_DAYS (validity, default 30).
set -euo pipefail
if [ "$#" -lt 1 ]; then
  echo "usage: $0 DIR [NAME...]" >&2
  exit 2
fi
dir=$1
shift
sans="DNS:nodexd,DNS:localhost,IP:127.0.0.1"
for name in "$@"; do
  if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then
    sans+=",IP:$name"
  else
    sans+=",DNS:$name"
  fi
done
umask 077
mkdir -p "$dir"
# A self-signed certificate that is its own CA (clients name it as their CA file), EC P-256.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "${NODEX_TLS_DAYS:-30}" \
  -subj "/CN=nodexd trial" -keyout "$dir/nodex_tls.key" -out "$dir/nodex_tls.crt" \
  -addext "subjectAltName=$sans" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,digitalSignature,keyCertSign" -addext "extendedKeyUsage=serverAuth" \
  2>/dev/null
chmod 0644 "$dir/nodex_tls.crt"
echo "nodexd-trial-cert: $dir/nodex_tls.crt and $dir/nodex_tls.key for $sans" >&2
