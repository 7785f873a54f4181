#!/usr/bin/env bash
# newer_otp.sh: nodexd against a newer OTP than Debian 12's (OTP 25): Debian 13's Erlang (OTP 27)
# in a debootstrap chroot, on loopback, both directions. Not part of CI (it downloads Debian 13).
# Usage (root): tests/compat/newer_otp.sh [BUILD_DIR]   (default build/; the chroot is kept in
# /var/tmp/nodex-trixie for the next run)
# shellcheck disable=SC2016 # JSON bodies with "$atom"/"$tuple" keys are meant literally
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
chroot_dir=/var/tmp/nodex-trixie
[ "$(id -u)" -eq 0 ] || { echo "newer_otp: run as root (debootstrap, chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
if [ ! -x "$chroot_dir/usr/bin/erl" ]; then
  debootstrap --variant=minbase --include=erlang-base trixie "$chroot_dir" http://deb.debian.org/debian
fi
otp=$(chroot "$chroot_dir" erl -noshell -eval 'io:format("~s",[erlang:system_info(otp_release)]),halt().')
echo "chroot OTP $otp"

work=$(mktemp -d)
pids=()
cleanup() {
  status=$?
  [ "$status" -eq 0 ] || { echo "FAIL ($status); nodexd log:"; cat "$work/nodexd.log"; }
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cookie=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
epmd_port=$((20000 + RANDOM % 20000))
http_port=$((40000 + RANDOM % 20000))
export ERL_EPMD_PORT=$epmd_port NODEX_COOKIE=$cookie HOME=$work
epmd -port "$epmd_port" & pids+=($!)
sleep 0.5
cat > "$work/nodexd.yaml" <<YAML
node:
  name: "nodexd_compat@127.0.0.1"
http:
  listen: "127.0.0.1:$http_port"
grpc:
  listen: "127.0.0.1:0"
cnodes:
  - name: example
    executable: $build/example_cnode
YAML
"$build/nodexd" --config "$work/nodexd.yaml" > "$work/nodexd.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -fs "localhost:$http_port/readyz" >/dev/null && break; sleep 0.1; done

# OTP $otp calls in: a node in the chroot connects to nodexd and to the C-node through it.
echo "-setcookie $cookie" > "$chroot_dir/tmp/compat.args"
chroot "$chroot_dir" env ERL_EPMD_PORT="$epmd_port" HOME=/tmp erl -noshell -name "otp${otp}@127.0.0.1" \
  -args_file /tmp/compat.args -eval "
    pong = net_adm:ping('nodexd_compat@127.0.0.1'),
    timer:sleep(60000)." & pids+=($!)
for _ in $(seq 300); do
  grep -q "node otp${otp}@127.0.0.1 connected" "$work/nodexd.log" && break
  sleep 0.1
done
grep -q "node otp${otp}@127.0.0.1 connected" "$work/nodexd.log"
echo "OTP $otp -> nodexd: connected"
# nodexd calls out: rpc into the OTP $otp node.
reply=$(curl -s -X POST "localhost:$http_port/nodes/otp${otp}@127.0.0.1/rpc" \
  -d '{"module":"erlang","function":"system_info","args":[{"$atom":"otp_release"}]}')
echo "nodexd -> OTP $otp rpc: $reply"
# otp_release is a charlist: "27" renders as [50,55]
want=$(printf '[%d,%d]' "'${otp:0:1}" "'${otp:1:1}")
[ "$reply" = "$want" ]
curl -fs -X POST "localhost:$http_port/cnodes/example/call" -d '{"$tuple":[{"$atom":"ping"},"x"]}'
echo
echo "PASS: OTP $otp <-> nodexd (OTP $(erl -noshell -eval 'io:format("~s",[erlang:system_info(otp_release)]),halt().') ei)"
