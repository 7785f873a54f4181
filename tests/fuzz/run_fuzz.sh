#!/bin/sh
# run_fuzz.sh: builds the libFuzzer targets with clang in build-fuzz and runs each for N seconds.
# Usage: tests/fuzz/run_fuzz.sh [SECONDS] [TARGET...]   (default 30 s, every fuzz_*.c target)
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-30}
[ $# -gt 0 ] && shift
build="$root/build-fuzz"
# fuzzer-no-link instruments nodex_core too, so libFuzzer sees coverage inside the codec.
CC=${CC:-clang} cmake -S "$root" -B "$build" -DNODEX_FUZZ=ON -DNODEX_SANITIZE=ON \
    -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link -g -O1" >/dev/null
targets=${*:-$(cd "$root/tests/fuzz" && ls fuzz_*.c | sed 's/\.c$//')}
cmake --build "$build" -j2 --target $targets >/dev/null
for t in $targets; do
    work="$build/corpus/$t"   # new inputs land here; the committed corpus stays small
    mkdir -p "$work"
    echo "== $t for ${secs}s"
    "$build/tests/$t" -max_total_time="$secs" -max_len=4096 -timeout=10 \
        -artifact_prefix="$build/$t-" "$work" "$root/tests/fuzz/corpus/$t"
done
