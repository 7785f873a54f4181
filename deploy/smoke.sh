#!/usr/bin/env bash
# Smoke test of a running deployment: one HTTPS call through nodexd into the example C-node, and
# nodexd seen as a hidden node by the plain Erlang node (asked over rpc). Runs inside compose:
#   docker compose -f deploy/compose.yaml run --rm smoke
# Environment: NODEX_URL (default https://nodexd:8080), NODEX_CA_FILE (PEM CA certificates that
# verify nodexd's certificate, e.g. the self-signed one itself; default: the system's), NODEX_NODE (nodexd@nodexd), ERLANG_NODE
# (erlang@erlang), ERL_NAME_FLAG (-sname|-name), SMOKE_NAME (this probe's node name),
# ERLANG_COOKIE_FILE (/run/secrets/erlang_cookie), NODEX_TOKEN_FILE (the bearer token, if nodexd
# requires one), SMOKE_TIMEOUT (seconds, default 60).
# shellcheck disable=SC2016  # JSON "$tuple"/"$atom" keys are literal
set -euo pipefail
url=${NODEX_URL:-https://nodexd:8080}
tls=()
[ -z "${NODEX_CA_FILE:-}" ] || tls=(--cacert "$NODEX_CA_FILE")
export NODEX_NODE=${NODEX_NODE:-nodexd@nodexd}
export ERLANG_NODE=${ERLANG_NODE:-erlang@erlang}
export SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-60}
cookie_file=${ERLANG_COOKIE_FILE:-/run/secrets/erlang_cookie}

fail() {
  echo "smoke: FAIL: $*" >&2
  exit 1
}

# 1. nodexd ready (all C-nodes up).
deadline=$((SECONDS + SMOKE_TIMEOUT))
until [ "$(curl -s "${tls[@]}" -o /dev/null -w '%{http_code}' "$url/readyz")" = 200 ]; do
  [ "$SECONDS" -lt "$deadline" ] || fail "$url/readyz did not answer 200 within ${SMOKE_TIMEOUT}s"
  sleep 1
done
echo "smoke: $url/readyz 200"

# 2. A call through nodexd into the example C-node.
want='{"$tuple":[{"$atom":"pong"},"smoke"]}'
auth=()
if [ -n "${NODEX_TOKEN_FILE:-}" ]; then
  # a header file keeps the token out of argv (visible in /proc/PID/cmdline)
  hdr=$(mktemp)
  printf 'Authorization: Bearer %s\n' "$(head -n1 "$NODEX_TOKEN_FILE")" >"$hdr"
  auth=(-H "@$hdr")
fi
got=$(curl -sS "${tls[@]}" -X POST "$url/cnodes/example/call" -H 'content-type: application/json' \
  "${auth[@]}" -d '{"$tuple":[{"$atom":"ping"},"smoke"]}') || fail "POST $url/cnodes/example/call"
[ -z "${hdr:-}" ] || rm -f "$hdr"
[ "$got" = "$want" ] || fail "call answered $got, expected $want"
echo "smoke: call -> $got"

# 3. nodexd is a hidden node of the Erlang node's cluster (rpc into the Erlang node).
HOME=$(mktemp -d)
export HOME
trap 'rm -rf "$HOME"' EXIT
install -m 0400 "$cookie_file" "$HOME/.erlang.cookie"
erl -noshell "${ERL_NAME_FLAG:--sname}" "${SMOKE_NAME:-smoke$$}" -eval '
    Nodexd = list_to_atom(os:getenv("NODEX_NODE")),
    Erlang = list_to_atom(os:getenv("ERLANG_NODE")),
    Deadline = erlang:monotonic_time(second) + list_to_integer(os:getenv("SMOKE_TIMEOUT")),
    Check = fun Loop() ->
        Hidden = rpc:call(Erlang, erlang, nodes, [hidden]),
        case is_list(Hidden) andalso lists:member(Nodexd, Hidden) of
            true ->
                io:format("smoke: ~s sees ~s in nodes(hidden)~n", [Erlang, Nodexd]),
                halt(0);
            false ->
                erlang:monotonic_time(second) < Deadline orelse begin
                    io:format(standard_error, "smoke: FAIL: ~s nodes(hidden) = ~p~n",
                              [Erlang, Hidden]),
                    halt(1)
                end,
                timer:sleep(1000),
                Loop()
        end
    end,
    Check().'
echo "smoke: OK"
