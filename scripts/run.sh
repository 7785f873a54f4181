#!/usr/bin/env bash
# Builds nodexd and runs it with the example C-node on the embedded default config.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target nodexd example_cnode nodex_cli
exec build/nodexd "$@"
