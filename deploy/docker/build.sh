#!/usr/bin/env bash
# Configures (unless already configured), builds and installs nodex into PREFIX; the Dockerfile and
# tests/integration/test_deploy_install.py both run it. Usage: build.sh BUILD_DIR PREFIX
# Environment: DESTDIR (staging root, honoured by cmake --install), NODEX_BUILD_TYPE
# (default RelWithDebInfo), NODEX_STRIP=1 (strip installed binaries), NODEX_JOBS (default nproc).
set -euo pipefail
if [ "$#" -ne 2 ]; then
  echo "usage: $0 BUILD_DIR PREFIX" >&2
  exit 2
fi
build_dir=$1
prefix=$2
src_dir=$(cd "$(dirname "$0")/../.." && pwd)

if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  cmake -S "$src_dir" -B "$build_dir" -DCMAKE_BUILD_TYPE="${NODEX_BUILD_TYPE:-RelWithDebInfo}" \
    -DCMAKE_INSTALL_PREFIX="$prefix" >/dev/null
fi
cmake --build "$build_dir" -j"${NODEX_JOBS:-$(nproc)}"
install_flags=(--prefix "$prefix")
[ "${NODEX_STRIP:-0}" = 1 ] && install_flags+=(--strip)
cmake --install "$build_dir" "${install_flags[@]}"
