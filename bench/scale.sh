#!/usr/bin/env bash
# bench/scale.sh: nodexd at scale (Release build in build-scale). 1,000 supervised C-nodes
# (tests/test_cnode serve) in one config: start-up time to all up, RSS per C-node, descriptors,
# then 10,000 calls in flight at once over 10,000 HTTP keep-alive connections (bench/scale_load.c),
# every reply checked; then an `instances: 1` vs `2` pool of the single-threaded example_cnode
# under 64 connections. Results: bench/results/scale-<timestamp>.{json,md}, latest-scale.md.
# PASS/FAIL per target on stdout; exit 1 when any target fails. About 1.5 minutes.
#
#   bench/scale.sh [--build-dir DIR] [--no-build] [--count N] [--calls-per-cnode N] [--out DIR]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
build="$repo/build-scale"
do_build=1
pyargs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build="$2"; shift ;;
    --no-build) do_build=0 ;;
    --count|--calls-per-cnode|--out|--sleep-ms|--pool-duration|--http-threads|--max-connections)
      pyargs+=("$1" "$2"); shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "scale.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

source "$here/scale_common.sh"
scale_build "$build" "$do_build" nodexd test_cnode example_cnode

# 10,000 client connections and ~13,000 descriptors in nodexd (1,000 x connection + 2 pipes,
# 10,000 HTTP connections): raise the hard limit where we may, nodexd raises its soft limit itself.
ulimit -Hn 65536 2>/dev/null || true
ulimit -Sn "$(ulimit -Hn)"

pidfile="$(mktemp /tmp/nodex-scale-pids.XXXXXX)"
trap 'scale_kill_pidfile "$pidfile"' EXIT
trap 'exit 130' INT TERM

/usr/bin/python3 "$here/scale.py" scale --build-dir "$build" --load "$build/scale_load" \
  --pidfile "$pidfile" "${pyargs[@]}"
