"""test_sdk_examples: the SDK's example C-nodes (echo_sdk, zlib_cnode) through nodexd and real erl."""

import base64
import json
import os
import threading
import time
import zlib

import pytest

import nodex_harness as nx

ECHO_SDK = os.path.join(nx.BUILD_DIR, "echo_sdk")
ZLIB_CNODE = os.path.join(nx.BUILD_DIR, "zlib_cnode")
MIB = 1 << 20

pytestmark = pytest.mark.skipif(
    not (os.path.exists(ECHO_SDK) and os.path.exists(ZLIB_CNODE)),
    reason="SDK examples not built")


def spec(name, exe, *extra, **overrides):
    s = {
        "name": name,
        "executable": exe,
        "args": ["{sname}", "{hostname}", "{cookie}", "{gateway_sname}", *extra],
        "spawn_inactive_timeout_ms": int(5000 * nx.SLOW),
        "backoff_initial_ms": 50,
        "backoff_max_ms": 200,
        "shutdown_timeout_ms": 1000,
        "call_timeout_ms": int(10000 * nx.SLOW),
    }
    s.update(overrides)
    return s


def b64(data):
    return {"$binary": base64.b64encode(data).decode()}


def as_bytes(v):
    """A binary in nodexd's JSON: a string when it is UTF-8, else {"$binary": base64}."""
    if isinstance(v, str):
        return v.encode()
    assert isinstance(v, dict) and "$binary" in v, v
    return base64.b64decode(v["$binary"])


def zcall(d, name, op, data, conn=None):
    r = d.call(name, nx.tup(nx.atom(op), b64(data)), conn=conn, timeout=60)
    assert r.status == 200, r
    return r.json()


def ok_bytes(reply):
    assert reply["$tuple"][0] == nx.atom("ok"), reply
    return as_bytes(reply["$tuple"][1])


def payload(size, seed=1):
    """Half compressible text, half pseudo-random bytes: exercises both zlib paths."""
    text = (b"nodexd zlib C-node %d " % seed) * (size // 40 + 1)
    rnd = bytearray()
    x = seed * 2654435761 & 0xFFFFFFFF
    while len(rnd) < size - size // 2:
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        rnd += x.to_bytes(4, "little")
    return (text[: size // 2] + bytes(rnd))[:size]


# --- echo_sdk: the protocol -------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["raw", "gen_call", "to", "workers"])
def test_echo_sdk_modes(nodexd, mode):
    extra, over = [], {}
    if mode == "gen_call":
        over["protocol"] = "gen_call"
    if mode == "to":
        extra, over["direction"] = ["to"], "to"
    if mode == "workers":
        extra = ["workers", "3"]
    d = nodexd([spec("echo", ECHO_SDK, *extra, **over)])
    d.wait_up("echo")
    r = d.call("echo", nx.tup(nx.atom("ping"), "hello world"))
    assert r.status == 200 and r.body.decode() == nx.J(nx.tup(nx.atom("pong"), "hello world")), r
    r = d.call("echo", "{ping, [1, 2.5, <<7:3>>, #{a => b}]}",
               content_type="application/x-erlang-text")
    assert r.status == 200 and r.body.decode() == "{pong,[1,2.5,<<7:3>>,#{a => b}]}", r
    r = d.call("echo", "hello", content_type="application/x-erlang-text")
    assert r.status == 200 and r.body.decode() == "{error,unknown_call}", r
    assert d.info("echo")["direction"] == ("to" if mode == "to" else "back")


@pytest.mark.parametrize("workers", ["0", "2"])
def test_echo_sdk_answers_ticks_when_idle(nodexd, workers):
    """tick_time 1 s: an idle C-node must answer nodexd's ticks or be declared down."""
    d = nodexd([spec("echo", ECHO_SDK, "workers", workers)], node={"tick_time_ms": 1000})
    pid = d.wait_up("echo")["os_pid"]
    # Wait for 8 ticks (4 bytes each) to reach the idle C-node: nodexd sends one per 250 ms of
    # quiet and gives up on a peer silent for 1 s, so unanswered ticks would have cost it its
    # connection long before the eighth.
    start = nx.bytes_read(pid)
    nx.wait_until(lambda: nx.bytes_read(pid) >= start + 8 * 4, 20, what="8 ticks to arrive")
    info = d.info("echo")
    assert info["state"] == "up" and info["restarts"] == 0 and info["os_pid"] == pid, info
    r = d.call("echo", "{ping, idle}", content_type="application/x-erlang-text")
    assert r.status == 200 and r.body.decode() == "{pong,idle}", r


def test_echo_sdk_cookie_from_env(nodexd):
    """argv carries "-" instead of the cookie; the C-node reads $NODEX_COOKIE set by nodexd."""
    s = spec("echo", ECHO_SDK, env={"NODEX_COOKIE": "{cookie}"})
    s["args"] = ["{sname}", "{hostname}", "-", "{gateway_sname}"]
    d = nodexd([s])
    d.wait_up("echo")
    r = d.call("echo", "{ping, env}", content_type="application/x-erlang-text")
    assert r.status == 200 and r.body.decode() == "{pong,env}", r


def test_echo_sdk_usage_error_exits_2(nodexd):
    s = spec("echo", ECHO_SDK, restart="temporary")
    s["args"] = ["only-one-arg"]
    d = nodexd([s])
    info = d.wait_for_state("echo", "stopped", pred=lambda i: i.get("last_exit"))
    assert info["last_exit"] == "exit status 2", info


ERL_SCRIPT = r'''
Cookie = atom_to_list(erlang:get_cookie()),
[GwS, _] = string:split(atom_to_list(node()), "@"),
Sname = "@SNAME@",
Port = open_port({spawn_executable, "@EXE@"},
                 [{args, [Sname, "127.0.0.1", Cookie, GwS, "workers", "2"]}, {line, 65536},
                  exit_status, stderr_to_stdout]),
Ready = Sname ++ "@127.0.0.1 ready",
receive {Port, {data, {eol, Ready}}} -> ok after 10000 -> exit(no_ready_line) end,
N = list_to_atom(Sname ++ "@127.0.0.1"),
G = gen_server:call({nil, N}, {ping, via_gen_server}, 5000),
{nil, N} ! {ping, raw},
R = receive M -> M after 5000 -> timeout end,
G2 = gen_server:call({nil, N}, {ping, again}, 5000),
erlang:disconnect_node(N),
E = receive {Port, {exit_status, S}} -> S after 5000 -> still_running end,
io:format("RESULT ~p~n", [{G, R, G2, E}])
'''


def test_echo_sdk_with_real_erlang(session):
    """A real Erlang node as the gateway: gen_server:call works (its monitor and alias tag
    included), a raw send is answered to the sender, and disconnect_node makes it exit 0."""
    script = ERL_SCRIPT.replace("@SNAME@", nx.unique("sdkerl")).replace("@EXE@", ECHO_SDK)
    status, out = session.erl_eval(script.strip().rstrip("."), timeout=60)
    assert status == 0, out
    assert "RESULT {{pong,via_gen_server},{pong,raw},{pong,again},0}" in out, out


ZLIB_ERL_SCRIPT = r'''
Cookie = atom_to_list(erlang:get_cookie()),
[GwS, _] = string:split(atom_to_list(node()), "@"),
Sname = "@SNAME@",
Port = open_port({spawn_executable, "@EXE@"},
                 [{args, [Sname, "127.0.0.1", Cookie, GwS, "workers", "3"]}, {line, 65536},
                  exit_status, stderr_to_stdout]),
Ready = Sname ++ "@127.0.0.1 ready",
receive {Port, {data, {eol, Ready}}} -> ok after 10000 -> exit(no_ready_line) end,
N = list_to_atom(Sname ++ "@127.0.0.1"),
Data = crypto:strong_rand_bytes(1048576),
{ok, Z} = gen_server:call({nil, N}, {deflate, Data}, 10000),
A = (zlib:uncompress(Z) =:= Data),
B = (gen_server:call({nil, N}, {inflate, zlib:compress(Data)}, 10000) =:= {ok, Data}),
C = (gen_server:call({nil, N}, {crc32, Data}, 10000) =:= erlang:crc32(Data)),
D = gen_server:call({nil, N}, {inflate, <<"junk">>}, 10000),
{os_pid, OsPid} = erlang:port_info(Port, os_pid),
os:cmd("kill -TERM " ++ integer_to_list(OsPid)),
E = receive {Port, {exit_status, S}} -> S after 10000 -> still_running end,
io:format("RESULT ~p~n", [{A, B, C, D, E}])
'''


def test_zlib_with_real_erlang_and_sigterm(session):
    """erl checks our zlib against its own, then SIGTERM ends the C-node with status 0 (under
    ASan that includes LeakSanitizer finding nothing)."""
    script = ZLIB_ERL_SCRIPT.replace("@SNAME@", nx.unique("sdkz")).replace("@EXE@", ZLIB_CNODE)
    status, out = session.erl_eval(script.strip(), timeout=60)
    assert status == 0, out
    assert "RESULT {true,true,true,{error,data_error},0}" in out, out


# --- zlib_cnode: real work ----------------------------------------------------------------------

@pytest.fixture(params=["single", "workers"])
def zlib_node(request, nodexd):
    extra = ["workers", "4"] if request.param == "workers" else []
    d = nodexd([spec("zlib", ZLIB_CNODE, *extra, "max_inflate", str(4 * MIB))],
               http={"threads": 4})
    d.wait_up("zlib")
    return d


@pytest.mark.parametrize("size", [0, 1, 1000, 65537, MIB])
def test_zlib_round_trip(zlib_node, size):
    d = zlib_node
    data = payload(size, seed=size)
    compressed = ok_bytes(zcall(d, "zlib", "deflate", data))
    assert zlib.decompress(compressed) == data  # our deflate is real zlib format
    assert ok_bytes(zcall(d, "zlib", "inflate", compressed)) == data
    assert ok_bytes(zcall(d, "zlib", "inflate", zlib.compress(data, 9))) == data
    assert zcall(d, "zlib", "crc32", data) == zlib.crc32(data)
    assert zcall(d, "zlib", "adler32", data) == zlib.adler32(data)


def test_zlib_text_syntax_and_levels(zlib_node):
    d = zlib_node
    text = "application/x-erlang-text"
    r = d.call("zlib", '{crc32, <<"hello">>}', content_type=text)
    assert r.status == 200 and r.body.decode() == str(zlib.crc32(b"hello")), r
    r = d.call("zlib", "{deflate, <<\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\">>, 9}", content_type=text)
    assert r.status == 200 and r.body.decode().startswith("{ok,<<"), r
    r = d.call("zlib", "{deflate, <<\"x\">>, 10}", content_type=text)
    assert r.status == 200 and r.body.decode() == "{error,badarg}", r
    r = d.call("zlib", "version", content_type=text)
    assert r.status == 200 and r.body.decode() == '{ok,<<"%s">>}' % zlib.ZLIB_RUNTIME_VERSION, r


@pytest.mark.parametrize("bad, reason", [
    (b"definitely not zlib", "data_error"),
    (zlib.compress(b"abc" * 1000)[:-10], "truncated"),
    (b"", "truncated"),
    (zlib.compress(b"\0" * (5 * MIB)), "too_large"),  # over max_inflate (4 MiB)
])
def test_zlib_bad_input_is_error_reply(zlib_node, bad, reason):
    reply = zcall(zlib_node, "zlib", "inflate", bad)
    assert reply == nx.tup(nx.atom("error"), nx.atom(reason)), reply
    assert ok_bytes(zcall(zlib_node, "zlib", "inflate", zlib.compress(b"still fine"))) == \
        b"still fine"


def test_zlib_bad_requests(zlib_node):
    d = zlib_node
    for body in ['{inflate, "a list"}', "{crc32}", "{deflate, <<1:3>>}", "{nope, <<>>}",
                 "[1,2]", "nope", "{crc32, <<>>, 3}"]:
        r = d.call("zlib", body, content_type="application/x-erlang-text")
        assert r.status == 200 and r.body.decode() == "{error,badarg}", (body, r)


def test_zlib_exactly_max_inflate_is_fine(zlib_node):
    data = b"z" * (4 * MIB)
    assert ok_bytes(zcall(zlib_node, "zlib", "inflate", zlib.compress(data))) == data


def test_zlib_many_concurrent_calls(zlib_node):
    """16 clients x 12 calls of distinct payloads in flight at once: every reply is its own."""
    d = zlib_node
    errors = []

    def client(k):
        conn = d.connection(timeout=60)
        try:
            for j in range(12):
                data = payload(1000 + 997 * k + 31 * j, seed=k * 100 + j)
                op = ("deflate", "crc32", "inflate")[j % 3]
                if op == "deflate":
                    got = zlib.decompress(ok_bytes(zcall(d, "zlib", "deflate", data, conn)))
                    want = data
                elif op == "crc32":
                    got, want = zcall(d, "zlib", "crc32", data, conn), zlib.crc32(data)
                else:
                    got = ok_bytes(zcall(d, "zlib", "inflate", zlib.compress(data), conn))
                    want = data
                if got != want:
                    errors.append((k, j, op))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((k, repr(e)))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:5]
    info = d.info("zlib")
    assert info["state"] == "up" and info["restarts"] == 0 and info["dropped_messages"] == 0, info


def test_zlib_gen_call_protocol(nodexd):
    d = nodexd([spec("zlib", ZLIB_CNODE, "workers", "2", protocol="gen_call")])
    d.wait_up("zlib")
    data = payload(50000)
    assert ok_bytes(zcall(d, "zlib", "inflate", zlib.compress(data))) == data
    r = d.call("zlib", json.dumps(nx.tup(nx.atom("crc32"), b64(b"abc"))))
    assert r.status == 200 and r.json() == zlib.crc32(b"abc"), r
