"""Integration tests of nodex.Gateway against a live nodexd (gRPC) with real C-nodes and Erlang."""

import os
import queue
import subprocess
import tempfile
import threading
import time

import grpc
import pytest

from nodex import (SELF, Atom, BadRpc, BitString, Charlist, Etf, Gateway, ImproperList, MapPairs,
                   NodexError, Pid, Ref)
from nodex.terms import _strict_eq

NESTED = (
    Atom("all"), 0, -1, 2**63 - 1, -(2**63), 2**64 + 1, -(10**30), 1.5, -0.0, b"", b"bin",
    bytes(range(256)), BitString(b"\x01\x02\x18", 21), [], [1, 2, 300], [Atom("a"), [b"b"]],
    ImproperList([1, 2], Atom("t")), (), (1, (2, (3,))), {}, {b"k": [1]},
    {(1, Atom("x")): {b"deep": (1.0,)}}, MapPairs([([1], Atom("list key"))]), True, False,
    Atom("with space"), Atom("ünï"),
)


def test_readme_example(gw):
    assert gw.call("example", (Atom("ping"), b"hello"), timeout=5.0) == (Atom("pong"), b"hello")


def test_str_goes_as_binary(gw):
    assert gw.call("example", (Atom("ping"), "héllo")) == (Atom("pong"), "héllo".encode())


def test_every_type_round_trips_through_a_cnode(gw):
    reply = gw.call("test", (Atom("ping"), NESTED), timeout=10.0)
    assert _strict_eq(reply, (Atom("pong"), NESTED)), reply


def test_charlist_comes_back_as_code_points(gw):
    assert gw.call("test", (Atom("ping"), Charlist("abc"))) == (Atom("pong"), [97, 98, 99])


def test_unknown_request(gw):
    assert gw.call("example", Atom("what")) == (Atom("error"), Atom("unknown_call"))


def test_etf_in_and_out(gw):
    # {ping, <<"x">>} as term_to_binary writes it
    req = Etf(b"\x83h\x02d\x00\x04pingm\x00\x00\x00\x01x")
    reply = gw.call("example", req, as_etf=True)
    assert isinstance(reply, Etf) and reply[0] == 131
    assert gw.call("example", req) == (Atom("pong"), b"x")


def test_self_pid_receives_the_reply(gw):
    assert gw.call("test", (Atom("reply_to"), SELF, b"rt")) == (Atom("pong"), b"rt")


def test_unknown_cnode_is_not_found(gw):
    with pytest.raises(NodexError) as e:
        gw.call("nosuch", Atom("x"))
    assert e.value.code == grpc.StatusCode.NOT_FOUND and e.value.code_name == "NOT_FOUND"
    assert e.value.message


def test_timeout_is_deadline_exceeded(gw):
    t0 = time.monotonic()
    with pytest.raises(NodexError) as e:
        gw.call("test", (Atom("sleep"), 3000, b"z"), timeout=0.3)
    assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 2.5


def test_self_pid_in_cast_is_an_error_or_accepted(gw):
    # A cast has no call pid: the server must answer, not hang (either refusal or acceptance).
    try:
        gw.cast("test", (Atom("ping"), SELF), timeout=5.0)
    except NodexError as e:
        assert e.code == grpc.StatusCode.INVALID_ARGUMENT


def test_cast_and_counters(gw):
    before = gw.get_cnode("example").calls_total
    gw.cast("example", (Atom("ping"), b"cast"))
    gw.call("example", (Atom("ping"), b"after"))
    assert gw.get_cnode("example").calls_total >= before + 1


def test_list_and_get_cnodes(gw):
    names = {c.name for c in gw.list_cnodes()}
    assert {"example", "test", "tagged"} <= names
    info = gw.get_cnode("example")
    assert info.state == "up" and info.os_pid > 0 and "@" in info.node
    assert info.direction in ("back", "to", "adopt") and info.protocol in ("raw", "gen_call")
    with pytest.raises(NodexError) as e:
        gw.get_cnode("nosuch")
    assert e.value.code == grpc.StatusCode.NOT_FOUND


def test_call_stream_yields_every_message_then_the_reply(gw):
    msgs = list(gw.call_stream("tagged", (Atom("noise"), 3, b"s"), timeout=10.0))
    assert [m.final for m in msgs] == [False, False, False, True]
    assert [m.message for m in msgs[:3]] == [(Atom("noise"), i) for i in (1, 2, 3)]
    # the reply as the filter answers it, or as the message that passed the filter
    assert msgs[-1].message in ((Atom("pong"), b"s"), (Atom("reply"), (Atom("pong"), b"s")))


def test_call_stream_unknown_cnode(gw):
    with pytest.raises(NodexError) as e:
        list(gw.call_stream("nosuch", Atom("x")))
    assert e.value.code == grpc.StatusCode.NOT_FOUND


def test_concurrent_calls_each_get_their_own_reply(gw):
    errors = []

    def worker(i):
        try:
            for j in range(20):
                r = gw.call("test", (Atom("ping"), (i, j)), timeout=10.0)
                assert r == (Atom("pong"), (i, j)), r
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def test_watch_sees_a_crash_and_restart(gw, nodexd):
    events = queue.Queue()
    stream = gw.watch(include_current=True, timeout=60.0)

    def pump():
        try:
            for ev in stream:
                events.put(ev)
        except NodexError as e:
            events.put(e)

    threading.Thread(target=pump, daemon=True).start()
    try:
        def next_event(pred, what):
            deadline = time.monotonic() + 20.0
            while time.monotonic() < deadline:
                try:
                    ev = events.get(timeout=0.5)
                except queue.Empty:
                    continue
                assert not isinstance(ev, Exception), ev
                if pred(ev):
                    return ev
            raise AssertionError(f"no event: {what}")

        first = next_event(lambda e: e.kind == "cnode" and e.name == "victim", "victim current")
        old_pid = gw.get_cnode("victim").os_pid
        assert first.state == "up"
        gw.cast("victim", Atom("crash"))
        next_event(lambda e: e.name == "victim" and e.state in ("down", "restarting"),
                   "victim down")
        up = next_event(lambda e: e.name == "victim" and e.state == "up", "victim up again")
        assert up.os_pid != old_pid and up.seq > first.seq and up.time_ms > 0
    finally:
        stream.cancel()


def test_node_operations_rpc_and_load_module(gw, tmp_path):
    nodes = gw.spawn_nodes(1, timeout=60.0)
    assert len(nodes) == 1
    node = nodes[0]
    try:
        listed = {n.node: n for n in gw.list_nodes()}
        assert node in listed and listed[node].child and listed[node].connected
        assert gw.rpc(node, "erlang", "node", []) == Atom(node)
        assert gw.rpc(node, "lists", "reverse", [[1, 2, 3]]) == [3, 2, 1]
        assert gw.rpc(node, "erlang", "list_to_binary", [Charlist("hé")]) == "hé".encode("latin-1")
        assert gw.rpc(node, "erlang", "element", [2, (Atom("a"), 2**70)]) == 2**70

        # opaque terms come back byte-exact and are usable again
        pid = gw.rpc(node, "erlang", "whereis", [Atom("init")])
        assert isinstance(pid, Pid) and pid.etf[0] == 131
        assert gw.rpc(node, "erlang", "is_pid", [pid]) is True
        ref = gw.rpc(node, "erlang", "make_ref", [])
        assert isinstance(ref, Ref) and gw.rpc(node, "erlang", "is_reference", [ref]) is True

        with pytest.raises(BadRpc) as e:
            gw.rpc(node, "nosuchmod", "f", [])
        assert isinstance(e.value.reason, tuple) and e.value.reason[0] == Atom("EXIT")

        src = tmp_path / "nxclient_mod.erl"
        src.write_text("-module(nxclient_mod).\n-export([hello/1]).\nhello(X) -> {hello, X}.\n")
        subprocess.run(["erlc", "-o", str(tmp_path), str(src)], check=True)
        beam = (tmp_path / "nxclient_mod.beam").read_bytes()
        gw.load_module(node, "nxclient_mod", beam, timeout=30.0)
        assert gw.rpc(node, "nxclient_mod", "hello", [b"w"]) == (Atom("hello"), b"w")
    finally:
        gw.stop_node(node, timeout=30.0)
    # StopNode answers once the stop has begun; the node leaves the cluster shortly after.
    t0 = time.monotonic()
    while node in {n.node for n in gw.list_nodes() if n.connected}:
        assert time.monotonic() - t0 < 15.0, f"{node} still connected after stop_node"
        time.sleep(0.05)
    print(f"{node} disconnected {time.monotonic() - t0:.2f}s after stop_node returned")


def test_gateway_context_manager(nodexd):
    with Gateway(nodexd.grpc_target) as g:
        assert g.call("example", (Atom("ping"), 1)) == (Atom("pong"), 1)


def test_unreachable_gateway_is_unavailable():
    with Gateway("127.0.0.1:1") as g:
        with pytest.raises(NodexError) as e:
            g.list_cnodes(timeout=2.0)
    assert e.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_readme_examples_run(nodexd):
    """The README's example, run as a script against this nodexd."""
    readme = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")).read()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace('"localhost:50051"', repr(nodexd.grpc_target))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "readme_example.py")
        with open(path, "w") as f:
            f.write(code)
        src = os.path.join(os.path.dirname(os.path.dirname(__file__)), "src")
        r = subprocess.run(["/usr/bin/python3", path], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=src), timeout=60)
    assert r.returncode == 0, r.stderr
    assert "(Atom('pong'), b'hello')" in r.stdout
