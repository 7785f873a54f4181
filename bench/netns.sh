#!/usr/bin/env bash
# bench/netns.sh: nodexd calling a C-node across a veth pair between two network namespaces it
# creates (nx-a-<pid>, nx-b-<pid>; 10.200.X.1/30 <-> 10.200.X.2/30, addresses that exist only
# inside them), beside the same pair on loopback in the root namespace, in one run. In B: an epmd
# and the C-node examples/echo_sdk in `to` mode as t@10.200.X.2 (it listens on its own address;
# tests/test_cnode serve_to listens on 127.0.0.1 only, unreachable from another namespace). In A:
# an epmd, nodexd (nodexd@10.200.X.1, `direction: adopt`, node t@10.200.X.2, HTTP on 127.0.0.1
# inside A) and the load client (bench/scale_load.c, {ping, <<"hello">>}) at concurrency 1 and 16.
# Results: bench/results/scale-netns-<timestamp>.{json,md}, latest-scale.md. Needs root
# (ip netns); every process is killed by pid and both namespaces are deleted on any exit.
# About 1 minute.
#
#   bench/netns.sh [--build-dir DIR] [--no-build] [--duration S] [--rounds N] [--out DIR]
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
    --duration|--rounds|--out) pyargs+=("$1" "$2"); shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "netns.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

source "$here/scale_common.sh"
scale_build "$build" "$do_build" nodexd echo_sdk

x=$(( $$ % 250 + 1 ))
ns_a="nx-a-$$" ns_b="nx-b-$$" veth_a="nxva$$" veth_b="nxvb$$"
ip_a="10.200.$x.1" ip_b="10.200.$x.2"
pidfile="$(mktemp /tmp/nodex-netns-pids.XXXXXX)"

cleanup() {
  scale_kill_pidfile "$pidfile"
  local ns pid
  for ns in "$ns_a" "$ns_b"; do
    # Anything still running inside our own namespaces was started by us: kill it by pid.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  done
  ip link del "$veth_a" 2>/dev/null || true
  ip netns del "$ns_a" 2>/dev/null || true
  ip netns del "$ns_b" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! ip netns add "$ns_a" 2>/dev/null; then
  echo "netns.sh: 'ip netns add' is not permitted here (needs root / CAP_SYS_ADMIN); nothing measured" >&2
  exit 3
fi
ip netns add "$ns_b"
ip link add "$veth_a" type veth peer name "$veth_b"
ip link set "$veth_a" netns "$ns_a"
ip link set "$veth_b" netns "$ns_b"
ip -n "$ns_a" addr add "$ip_a/30" dev "$veth_a"
ip -n "$ns_b" addr add "$ip_b/30" dev "$veth_b"
for ns in "$ns_a" "$ns_b"; do ip -n "$ns" link set lo up; done
ip -n "$ns_a" link set "$veth_a" up
ip -n "$ns_b" link set "$veth_b" up

/usr/bin/python3 "$here/scale.py" netns --build-dir "$build" --load "$build/scale_load" \
  --pidfile "$pidfile" --ns-a "$ns_a" --ns-b "$ns_b" --ip-a "$ip_a" --ip-b "$ip_b" "${pyargs[@]}"
