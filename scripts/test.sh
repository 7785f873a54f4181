#!/usr/bin/env bash
# Builds everything twice (plain, and with AddressSanitizer + UBSan) and runs every test in both;
# then a ThreadSanitizer build runs the unit tests and the concurrency-heavy integration tests
# (ctest label tsan: gRPC, http.threads: 2, streams).
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
echo "== build-tsan: configure and build"
start=$(date +%s)
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNODEX_TSAN=ON >/dev/null
cmake --build build-tsan -j"$jobs"
echo "== build-tsan: ctest -L tsan"
# A report makes the process exit 66 (unit tests) or fails the test that ran nodexd (harness).
# tests/tsan/suppressions.txt says why each suppression is there.
export TSAN_OPTIONS="suppressions=$PWD/tests/tsan/suppressions.txt second_deadlock_stack=1"
(cd build-tsan && ctest --output-on-failure -j"$jobs" -L tsan) || status=1
echo "== build-tsan: $(($(date +%s) - start)) s"
exit $status
