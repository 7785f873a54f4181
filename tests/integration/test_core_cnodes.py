"""test_core_cnodes: the example and test C-nodes behave as documented, with a real erl node as gateway."""

import os
import signal
import time

import nodex_harness as nx
from nodex_harness import atom, tup

# Evaluated by file:script/1 on an erl node named GW; prints "OK name" / "FAIL name: detail" lines.
SCRIPT = r'''
Cookie = atom_to_list(erlang:get_cookie()),
Start = fun(Exe, Sname, Args) ->
    Port = open_port({spawn_executable, Exe},
                     [{args, [Sname, "127.0.0.1", Cookie, "@GW@" | Args]}, {line, 65536},
                      exit_status, stderr_to_stdout]),
    Ready = Sname ++ "@127.0.0.1 ready",
    Wait = fun W() ->
        receive
            {Port, {data, {eol, Ready}}} -> ok;
            {Port, {data, _}} -> W();
            {Port, {exit_status, S}} -> {exited, S}
        after 10000 -> timeout
        end
    end,
    {Port, Wait(), list_to_atom(Sname ++ "@127.0.0.1")}
end,
Recv = fun() -> receive M when not (is_tuple(M) andalso tuple_size(M) >= 2 andalso (is_port(element(1, M)) orelse is_port(element(2, M)))) -> M after 3000 -> timeout end end,
Call = fun(Node, Req) -> {nil, Node} ! Req, Recv() end,
Check = fun(Name, true) -> io:format("OK ~s~n", [Name]);
           (Name, Other) -> io:format("FAIL ~s: ~P~n", [Name, Other, 15]) end,
Is = fun(Name, Expected, Got) -> Check(Name, if Expected =:= Got -> true; true -> {expected, Expected, got, Got} end) end,
ExitOf = fun(Port) -> receive {Port, {exit_status, S}} -> S after 5000 -> still_running end end,

%% example_cnode
{EP, ok, EN} = Start("@EXAMPLE@", "@EX@", []),
Is("example_ping", {pong, <<"hello world">>}, Call(EN, {ping, <<"hello world">>})),
Big = {[1, 2.5, "str", <<7:3>>, make_ref(), self(), #{a => [b]}, -123456789012345678901234567890]},
Is("example_ping_any_term", {pong, Big}, Call(EN, {ping, Big})),
Is("example_unknown", {error, unknown_call}, Call(EN, hello)),
Is("example_bad_ping", {error, unknown_call}, Call(EN, {ping, 1, 2})),
erlang:disconnect_node(EN),
Is("example_exit_0_on_disconnect", 0, ExitOf(EP)),

%% test_cnode serve
{TP, ok, TN} = Start("@TEST@", "@T1@", ["serve"]),
Is("ping", {pong, x}, Call(TN, {ping, x})),
Is("sleep", {slept, a}, Call(TN, {sleep, 200, a})),
Is("unknown", {error, unknown_call}, Call(TN, what)),
{nil, TN} ! {noise, 3, n},
Is("noise", [{noise, 1}, {noise, 2}, {noise, 3}, {reply, {pong, n}}], [Recv(), Recv(), Recv(), Recv()]),
{nil, TN} ! {node_tagged, t},
Is("node_tagged", [{other, 1}, {TN, {pong, t}}], [Recv(), Recv()]),
Is("unsolicited_reply", ok, Call(TN, {unsolicited, 3})),
{nil, TN} ! {flood, 5, 1000},
Floods = [Recv() || _ <- lists:seq(1, 5)],
Is("flood", {lists:duplicate(5, binary:copy(<<"f">>, 1000)), {flooded, 5}}, {Floods, Recv()}),
Is("trailing", {pong, tr}, Call(TN, {trailing, tr})),
{nil, TN} ! {twice, w},
Is("twice", [{pong, w}, {pong, w}], [Recv(), Recv()]),
Helper = spawn(fun() -> receive M -> io:format("HELPER ~p~n", [M]) end end),
Me = self(),
Other = spawn(fun() -> receive M -> Me ! {via_other, M} end end),
{nil, TN} ! {reply_to, Other, rt},
Is("reply_to", {via_other, {pong, rt}}, Recv()),
exit(Helper, kill),
{big, _} = {big, 1},
Is("big", binary:copy(<<"b">>, 100000), Call(TN, {big, 100000})),
Ref = make_ref(),
{nil, TN} ! {'$gen_call', {self(), Ref}, {ping, g}},
Is("gen_call", {Ref, {pong, g}}, Recv()),
Ref2 = make_ref(),
{nil, TN} ! {'$gen_call', {self(), Ref2}, {noise, 1, g2}},
Is("gen_call_noise", [{noise, 1}, {Ref2, {reply, {pong, g2}}}], [Recv(), Recv()]),
{nil, TN} ! crash,
Is("crash_no_reply", timeout, Recv()),
CrashStatus = ExitOf(TP),
Check("crash_abort", CrashStatus =:= 134 orelse {status, CrashStatus}),

{XP, ok, XN} = Start("@TEST@", "@T2@", ["serve"]),
{nil, XN} ! {exit, 7},
Is("exit_code", 7, ExitOf(XP)),

{GP, ok, GN} = Start("@TEST@", "@T3@", []),
Is("default_mode_serve", {pong, d}, Call(GN, {ping, d})),
{nil, GN} ! garbage,
G = Recv(),
io:format("garbage gave ~p~n", [G]),
Is("garbage_drops_link", 0, ExitOf(GP)),

{SP, ok, SN} = Start("@TEST@", "@T4@", ["slow_ready", "300"]),
Is("slow_ready", {pong, s}, Call(SN, {ping, s})),
{HP, ok, HN} = Start("@TEST@", "@T5@", ["serve"]),
{nil, HN} ! hang,
timer:sleep(300),
[{os_pid, HPid}] = [X || X = {os_pid, _} <- erlang:port_info(HP)],
State = string:trim(os:cmd("ps -o stat= -p " ++ integer_to_list(HPid))),
Check("hang_stopped", lists:prefix("T", State) orelse {state, State}),
os:cmd("kill -9 " ++ integer_to_list(HPid)),
Is("hang_killed", 137, ExitOf(HP)),
erlang:disconnect_node(SN),
Is("slow_ready_exit_0", 0, ExitOf(SP)),

{_, R1, _} = Start("@TEST@", "@T6@", ["exit_before_ready"]),
Is("exit_before_ready", {exited, 3}, R1),
{_, R2, _} = Start("@TEST@", "@T7@", ["signal_before_ready"]),
Check("signal_before_ready", lists:member(R2, [{exited, 128 + 11}, {exited, 128 + 6}]) orelse R2),
{TOP, ok, TON} = Start("@TEST@", "@T9@", ["serve_to"]),
Is("serve_to_connect", true, net_kernel:connect_node(TON)),
Is("serve_to_call", {pong, to}, Call(TON, {ping, to})),
Is("serve_to_hidden", true, lists:member(TON, nodes(hidden))),
erlang:disconnect_node(TON),
Is("serve_to_exit_0", 0, ExitOf(TOP)),
{NP, R3, _} = Start("@TEST@", "@T8@", ["never_ready"]),
Is("never_ready", timeout, R3),
{os_pid, NPid} = erlang:port_info(NP, os_pid),
os:cmd("kill -9 " ++ integer_to_list(NPid)),
Is("never_ready_killed", 137, ExitOf(NP)),
done.
'''


def test_cnodes_behave_as_documented_against_real_erl(session, tmp_path):
    for exe in (nx.EXAMPLE_CNODE, nx.TEST_CNODE):
        assert os.access(exe, os.X_OK), f"{exe} not built"
    gw = nx.unique("nxgw")
    names = {f"@T{i}@": nx.unique("nxt") for i in range(1, 10)}
    script = SCRIPT.replace("@GW@", gw).replace("@EXAMPLE@", nx.EXAMPLE_CNODE)
    script = script.replace("@TEST@", nx.TEST_CNODE).replace("@EX@", nx.unique("nxex"))
    for k, v in names.items():
        script = script.replace(k, v)
    path = tmp_path / "cnodes.script"
    path.write_text(script)
    expr = (f'case file:script("{path}") of {{ok, R}} -> io:format("RESULT ~p~n", [R]); '
            f'E -> io:format("SCRIPT ERROR ~p~n", [E]) end')
    try:
        status, out = session.erl_eval(expr, timeout=90, name=gw)
    finally:
        # The C-nodes are the erl node's children: none may outlive the test.
        left = [p for n in names.values() for p in nx.pids_with_arg(n)]
        for pid in left:
            os.kill(pid, 9)
    print(out)
    assert not left, f"C-nodes survived: {left}"
    assert status == 0, out
    fails = [l for l in out.splitlines() if l.startswith("FAIL")]
    assert not fails, out
    assert "RESULT done" in out, out
    oks = [l for l in out.splitlines() if l.startswith("OK ")]
    assert len(oks) == 35, out


def test_cnode_output_is_capped_and_rate_limited_in_the_log(nodexd):
    """5000 lines in a burst: at most 100 a second reach the log, the rest are counted once the
    next line gets through; a 10 kB line is cut to 1 KiB with its length (14.16)."""
    d = nodexd([nx.test_cnode_spec("t")])
    d.wait_up("t")
    t0 = time.monotonic()
    r = d.call("t", tup(atom("print"), 5000, 100))
    assert r.status == 200 and r.json() == atom("printed"), r
    time.sleep(1.1)  # the next window: the count of what was held back is logged with it
    assert d.call("t", tup(atom("print"), 1, 10000)).status == 200
    nx.wait_until(lambda: "(10000 bytes)" in d.log_text(), 10, what="the long line")
    elapsed = time.monotonic() - t0
    text = d.log_text()
    logged = sum(1 for line in text.splitlines() if "[t] " + "o" * 100 in line)
    assert 0 < logged <= 100 * (int(elapsed) + 2), (logged, elapsed)
    assert "output lines not logged (over 100 a second)" in text
    long_line = next(line for line in text.splitlines() if "(10000 bytes)" in line)
    assert len(long_line) < 1200, len(long_line)


def test_control_messages_nodexd_ignores_are_counted_by_kind(nodexd):
    d = nodexd([nx.test_cnode_spec("t")])
    d.wait_up("t")
    assert d.info("t")["ignored_controls"] == {}
    for i in range(3):
        r = d.call("t", tup(atom("exit2"), i))
        assert r.status == 200 and r.json() == tup(atom("pong"), i), r
    assert d.info("t")["ignored_controls"] == {"exit2": 3}
    # kept across a reconnect: the counts of the closed connection stay the C-node's
    old = d.info("t")["os_pid"]
    os.kill(old, signal.SIGKILL)
    d.wait_new_pid("t", old)
    assert d.info("t")["ignored_controls"] == {"exit2": 3}
