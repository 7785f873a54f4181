#!/usr/bin/env bash
# Installs the Debian 12 packages the nodexd image needs at run time (run as root, in the image).
# `runtime-deps.sh --list` prints them; the install test checks the names and that they cover
# every shared library nodexd and the example C-nodes link against.
set -euo pipefail

packages=(
  libmicrohttpd12   # HTTP server (libmicrohttpd.so.12)
  libgnutls30       # HTTPS and certificate checks (libgnutls.so.30)
  libyaml-0-2       # configuration parser (libyaml-0.so.2)
  libgrpc29         # gRPC server (libgrpc.so.29, libgpr.so.29)
  libprotobuf-c1    # gRPC messages (libprotobuf-c.so.1)
  openssl           # nodexd-healthcheck's HTTPS probe (s_client); nodexd-trial-cert
  erlang-base       # epmd, which nodexd starts when none answers (ei itself is linked statically)
  tini              # PID 1: forwards signals and reaps orphans (epmd -daemon, C-nodes)
)

if [ "${1:-}" = --list ]; then
  printf '%s\n' "${packages[@]}"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
rm -rf /var/lib/apt/lists/*
