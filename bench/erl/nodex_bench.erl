%% nodex_bench: the Erlang side of bench/run.sh (compiled with erlc into a temp dir).
%%
%% The seed's four cases, same workload {ping, <<"hello">>}, plus the baseline to beat:
%%   erl.local        local process round trip
%%   erl.remote       round trip to a process on a second Erlang node (echo_node/0 there)
%%   erl.cnode_direct {nil, CnodeNode} ! Req, receive the reply (one call at a time)
%%   erl.cnode_genserver  the same through a gen_server that owns the C-node (Nodex style)
%%   erl.cnode_direct_pN  N processes calling the same C-node directly, closed loop
%%
%% main/1 (from `erl -run nodex_bench main Exe RemoteNode DurationMs Procs OutFile`) starts the
%% example C-node as a port with the Nodex argv (it connects back to this node), prints
%% "cnode_os_pid N" on stdout, runs every case and writes the results as JSON to OutFile.
-module(nodex_bench).
-behaviour(gen_server).

-export([main/1, echo_node/0, start_cnode/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(REQ, {ping, <<"hello">>}).

main([Exe, RemoteStr, DurStr, ProcsStr, OutFile]) ->
    Dur = list_to_integer(DurStr),
    Procs = [list_to_integer(P) || P <- string:tokens(ProcsStr, ",")],
    Remote = list_to_atom(RemoteStr),
    {Port, CNode, OsPid} = start_cnode(Exe),
    io:format("cnode_os_pid ~p~n", [OsPid]),
    pong = net_adm:ping(Remote),
    Echo = spawn_link(fun echo_loop/0),
    {ok, Gs} = gen_server:start_link(?MODULE, CNode, []),
    Serial = [
        {<<"erl.local">>, fun() -> Echo ! {self(), ?REQ}, receive {pong, _} -> ok end end},
        {<<"erl.remote">>,
         fun() -> {nodex_bench_echo, Remote} ! {self(), ?REQ}, receive {pong, _} -> ok end end},
        {<<"erl.cnode_direct">>, fun() -> direct_call(CNode) end},
        {<<"erl.cnode_genserver">>, fun() -> {pong, _} = gen_server:call(Gs, ?REQ) end}
    ],
    R1 = [{Id, measure([F], Dur)} || {Id, F} <- Serial],
    R2 = [{<<"erl.cnode_direct_p", (integer_to_binary(N))/binary>>,
           measure(lists:duplicate(N, fun() -> direct_call(CNode) end), Dur)}
          || N <- Procs],
    ok = file:write_file(OutFile, json_obj([{Id, json_obj(Fields)} || {Id, Fields} <- R1 ++ R2])),
    %% Closing the port does not stop the C-node: it exits (status 0) when this node goes away.
    catch port_close(Port),
    halt(0);
main(Args) ->
    io:format(standard_error, "nodex_bench: bad arguments ~p~n", [Args]),
    halt(2).

%% The remote node: a registered echo process, then wait forever (the runner ends us by pid).
echo_node() ->
    register(nodex_bench_echo, spawn(fun echo_loop/0)),
    receive stop -> ok end.

echo_loop() ->
    receive
        {From, {ping, B}} -> From ! {pong, B}, echo_loop();
        _ -> echo_loop()
    end.

direct_call(CNode) ->
    {nil, CNode} ! ?REQ,
    receive {pong, _} -> ok after 5000 -> exit(cnode_timeout) end.

%% --- the C-node behind a gen_server (what Nodex does) --------------------------------------
init(CNode) -> {ok, CNode}.
handle_call(Req, _From, CNode) ->
    {nil, CNode} ! Req,
    receive {pong, _} = Reply -> {reply, Reply, CNode} after 5000 -> {stop, timeout, CNode} end.
handle_cast(_, S) -> {noreply, S}.
handle_info(_, S) -> {noreply, S}.

%% Starts the example C-node as a port with the Nodex argv; it connects back to this node.
%% Returns {Port, CNodeName, OsPid} once it printed its ready line (nodex_front uses it too).
start_cnode(Exe) ->
    [Self, Host] = string:split(atom_to_list(node()), "@"),
    Sname = Self ++ "_cn",
    Cookie = atom_to_list(erlang:get_cookie()),
    Port = open_port({spawn_executable, Exe},
                     [{args, [Sname, Host, Cookie, Self]}, {line, 1024}, exit_status, use_stdio]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    CNode = list_to_atom(Sname ++ "@" ++ Host),
    Ready = atom_to_list(CNode) ++ " ready",
    receive
        {Port, {data, {eol, Ready}}} -> {Port, CNode, OsPid};
        {Port, {exit_status, St}} -> exit({cnode_exited, St})
    after 10000 -> exit(cnode_not_ready)
    end.

%% --- measuring ---------------------------------------------------------------------------------
%% Every fun in Funs runs in its own process, in a closed loop, for DurMs after a warm-up of a
%% tenth of that. Each call is timed; throughput counts the calls of the measured window.
measure(Funs, DurMs) ->
    Parent = self(),
    Warm = max(50, DurMs div 10),
    Start = erlang:monotonic_time(microsecond) + Warm * 1000,
    End = Start + DurMs * 1000,
    Pids = [spawn_link(fun() -> Parent ! {self(), worker(F, Start, End, [])} end) || F <- Funs],
    Lats = lists:append([receive {P, L} -> L end || P <- Pids]),
    Sorted = lists:sort(Lats),
    N = length(Sorted),
    Secs = DurMs / 1000,
    [{<<"calls">>, N}, {<<"concurrency">>, length(Funs)},
     {<<"throughput_per_s">>, N / Secs},
     {<<"us_per_op">>, Secs * 1.0e6 / max(N, 1)},
     {<<"mean_us">>, lists:sum(Sorted) / max(N, 1)},
     {<<"p50_us">>, pct(Sorted, N, 0.50)}, {<<"p99_us">>, pct(Sorted, N, 0.99)}].

worker(F, Start, End, Acc) ->
    T0 = erlang:monotonic_time(nanosecond),
    F(),
    T1 = erlang:monotonic_time(nanosecond),
    Us = T1 div 1000,
    if
        Us >= End -> Acc;
        T0 div 1000 >= Start -> worker(F, Start, End, [(T1 - T0) / 1000 | Acc]);
        true -> worker(F, Start, End, Acc)
    end.

pct(_, 0, _) -> 0.0;
pct(Sorted, N, P) -> lists:nth(max(1, min(N, round(P * N))), Sorted).

%% --- minimal JSON ------------------------------------------------------------------------------
json_obj(Fields) ->
    ["{", lists:join(",", [["\"", K, "\":", json_val(V)] || {K, V} <- Fields]), "}"].
json_val(V) when is_integer(V) -> integer_to_list(V);
json_val(V) when is_float(V) -> float_to_list(V, [{decimals, 3}]);
json_val(V) -> V.
