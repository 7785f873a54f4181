#!/usr/bin/env bash
# Builds everything twice (plain, and with AddressSanitizer + UBSan) and runs every test in both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc)
status=0
for variant in build build-asan; do
  flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
  [ "$variant" = build-asan ] && flags+=(-DNODEX_SANITIZE=ON)
  echo "== $variant: configure and build"
  cmake -S . -B "$variant" "${flags[@]}" >/dev/null
  cmake --build "$variant" -j"$jobs"
  echo "== $variant: ctest"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  (cd "$variant" && ctest --output-on-failure -j"$jobs") || status=1
done
exit $status
