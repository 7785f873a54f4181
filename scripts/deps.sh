#!/usr/bin/env bash
# Installs the Debian 12 packages nodexd needs to build, run and test (idempotent; run as root).
set -euo pipefail

packages=(
  build-essential cmake pkg-config     # toolchain
  erlang-nox erlang-dev                # erl, epmd, erlc and erl_interface (ei)
  libmicrohttpd-dev                    # HTTP server
  libgnutls28-dev                      # SHA-256 of bearer tokens; TLS for HTTPS (libmicrohttpd uses GnuTLS)
  openssl                              # the TLS tests make their CAs with the openssl CLI
  libyaml-dev                          # configuration file parser
  libcmocka-dev                        # unit tests
  zlib1g-dev                           # examples/zlib_cnode (the SDK's real-world example C-node)
  clang                                # libFuzzer drivers
  clang-format clang-tidy cppcheck     # lint gate (scripts/lint.sh, ctest lint.c)
  curl                                 # README example, smoke tests
  python3 python3-pytest               # integration tests
  python3-jsonschema                   # test_openapi: answers checked against docs/openapi.json (draft 2020-12)
  chromium python3-websocket           # test_status_page only: the page in headless Chromium over DevTools (big)
  libgrpc-dev                          # gRPC C core (grpc, gpr): the gRPC server
  libprotobuf-c-dev                    # protobuf-c runtime: gRPC message (un)packing
  protobuf-c-compiler                  # protoc-c: C code for proto/nodex/v1/nodex.proto
  python3-grpcio python3-protobuf      # gRPC integration tests and the Python client
  protobuf-compiler protobuf-compiler-grpc  # protoc: the descriptor set server reflection serves; + grpc_python_plugin: Python stubs
  grpc-proto                           # grpc.health.v1 and grpc.reflection.v1/v1alpha .proto files nodexd serves
  python3-prometheus-client            # test_observability parses /metrics with Prometheus' own parser
  yamllint                             # lint of deploy/ YAML (tests/integration/test_deploy_lint.py)
  shellcheck                           # lint of the shell scripts (same test)
  systemd                              # systemd-analyze verify of deploy/systemd (same test)
  wrk                                  # bench/run.sh: HTTP load (keep-alive, Lua POST bodies)
  nghttp2-client                       # bench/run.sh: h2load, gRPC unary load
  gnuplot-nox                          # bench/run.sh: chart.png
  valgrind                             # bench/run.sh: callgrind profile of nodexd under load
  erlang-mochiweb erlang-jiffy         # bench/run.sh: the Erlang HTTP front nodexd is measured against (bench/erl/nodex_front.erl)
)
# The Node.js client's tests need node and npm; the machine image ships Node 20 with npm, and
# Debian's nodejs + npm packages serve where it does not.
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
