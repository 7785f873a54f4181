#!/usr/bin/env bash
# Runs the plain Erlang node of deploy/compose.yaml: joins nodexd (net_adm:ping until pong, again
# every 5 s so it rejoins after a restart) and stays up. The cookie comes from a secret file.
# Environment: ERLANG_NODE_NAME (default erlang), ERL_NAME_FLAG (-sname or -name, default -sname),
# NODEX_NODE (default nodexd@nodexd), ERLANG_COOKIE_FILE (default /run/secrets/erlang_cookie).
set -euo pipefail
cookie_file=${ERLANG_COOKIE_FILE:-/run/secrets/erlang_cookie}
export NODEX_NODE=${NODEX_NODE:-nodexd@nodexd}
HOME=$(mktemp -d)
export HOME
install -m 0400 "$cookie_file" "$HOME/.erlang.cookie"
exec erl -noshell "${ERL_NAME_FLAG:--sname}" "${ERLANG_NODE_NAME:-erlang}" -eval '
    Target = list_to_atom(os:getenv("NODEX_NODE")),
    Join = fun Loop(Was) ->
        Now = net_adm:ping(Target),
        Now =/= Was andalso io:format("~s: ~s~n", [Target, Now]),
        timer:sleep(case Now of pong -> 5000; pang -> 1000 end),
        Loop(Now)
    end,
    Join(none).'
