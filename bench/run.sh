#!/usr/bin/env bash
# bench/run.sh: builds what the benchmarks need (Release, in build-bench) and runs every case in
# one go on loopback: Erlang baselines, the raw ei floor, nodexd over HTTP and gRPC, the Erlang
# mochiweb front (the user's alternative), the HTTP and gRPC library ceilings (bench/http_echo,
# bench/grpc_echo), CPU per call, RSS, the term codec and a callgrind profile. Writes bench/results/<timestamp>/{results.json,results.md,chart.png,profile.txt} and a
# copy in bench/results/latest/. See bench/README.md.
#
#   bench/run.sh [--smoke] [--out DIR] [--build-dir DIR] [--no-build] [--no-profile]
#                [--duration SECONDS]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
build="$repo/build-bench"
out=""
do_build=1
pyargs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) pyargs+=(--smoke) ;;
    --out) out="$2"; shift ;;
    --build-dir) build="$2"; shift ;;
    --no-build) do_build=0 ;;
    --no-profile) pyargs+=(--no-profile) ;;
    --duration) pyargs+=(--duration "$2"); shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

for tool in erl erlc epmd wrk h2load python3; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found (scripts/deps.sh installs it)" >&2; exit 1; }
done
# the Erlang front (bench/erl/nodex_front.erl) runs on Debian's erlang-mochiweb and erlang-jiffy
erl -noshell -eval 'halt(case is_list(code:which(mochiweb_http)) andalso is_list(code:which(jiffy)) of true -> 0; false -> 1 end).' ||
  { echo "run.sh: mochiweb or jiffy not found (scripts/deps.sh installs erlang-mochiweb, erlang-jiffy)" >&2; exit 1; }

if [ "$do_build" = 1 ]; then
  # GCC's -O2 flow analysis raises truncation warnings that the default (-O0) builds do not see;
  # they are not errors of this build's concern, so they stay warnings here.
  mkdir -p "$build"
  if ! { cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release \
           "-DCMAKE_C_FLAGS=-g -Wno-error=format-truncation -Wno-error=stringop-truncation" &&
         cmake --build "$build" -j"$(nproc)" --target nodexd example_cnode term_bench raw_ei_bench \
           http_echo grpc_echo
       } >"$build/bench-build.log" 2>&1; then
    tail -40 "$build/bench-build.log" >&2
    echo "run.sh: build failed (full log: $build/bench-build.log)" >&2
    exit 1
  fi
fi

latest=""
if [ -z "$out" ]; then
  out="$here/results/$(date +%Y%m%d-%H%M%S)"
  latest="$here/results/latest"
fi
mkdir -p "$out"
rc=0
/usr/bin/python3 "$here/bench.py" --build-dir "$build" --out "$out" "${pyargs[@]}" || rc=$?
if [ -n "$latest" ] && [ -f "$out/results.json" ]; then
  rm -rf "$latest"
  cp -r "$out" "$latest"
fi
[ -f "$out/results.md" ] && echo "results: $out/results.md"
exit "$rc"
