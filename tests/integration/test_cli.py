"""The C command-line client `nodex` (clients/c) against a live nodexd over gRPC."""

import os
import signal
import subprocess
import time

import pytest

import clients_harness as ch
import nodex_harness as nx

CLI = ch.NODEX_CLI


@pytest.fixture(scope="module")
def gw(session):
    assert os.path.exists(CLI), f"{CLI} not built (add_subdirectory(clients/c))"
    d = ch.start_standard(session, extra={
        "grpc": {"listen": f"{nx.HOST}:0"},
        "erlang_nodes": {"ready_timeout_ms": int(30000 * nx.SLOW)},
    })
    try:
        yield d
    finally:
        d.close()


def run(d, *args, timeout=60.0, target=None):
    argv = [CLI, "--target", target or d.grpc_target, *args]
    return subprocess.run(argv, capture_output=True, text=True, env=d.env,
                          timeout=timeout * nx.SLOW)


def ok(d, *args, **kw):
    r = run(d, *args, **kw)
    assert r.returncode == 0, f"nodex {' '.join(args)}: exit {r.returncode}\n{r.stderr}"
    return r.stdout


def test_call_prints_the_reply_in_erlang_text(gw):
    assert ok(gw, "call", "example", '{ping, <<"hi">>}') == '{pong,<<"hi">>}\n'


def test_call_round_trips_every_type(gw):
    term = ('{all,[1,-7,123456789012345678901234567890,-9223372036854775809,1.5,'
            '<<>>,<<1,2,3:5>>,<<"é"/utf8>>,"abc",[a|b],{},#{},#{k => [v],{1,2} => #{}},'
            "'hello world',true,[]]}")
    assert ok(gw, "call", "test", "{ping, " + term + "}") == "{pong," + term + "}\n"


def test_self_is_the_calls_own_pid(gw):
    assert ok(gw, "call", "test", "{reply_to, self(), done}.") == "{pong,done}\n"


def test_cast_prints_nothing(gw):
    assert ok(gw, "cast", "example", "{ping, 1}") == ""


def test_stream_prints_every_message_then_the_reply(gw):
    out = ok(gw, "stream", "tagged", '{noise, 2, <<"s">>}').splitlines()
    assert out[:2] == ["{noise,1}", "{noise,2}"] and len(out) == 3
    assert out[2] in ('{pong,<<"s">>}', '{reply,{pong,<<"s">>}}')


def test_list_and_get(gw):
    rows = [line.split() for line in ok(gw, "list").splitlines()]
    by_name = {r[0]: r for r in rows}
    assert {"example", "test", "tagged", "victim"} <= set(by_name)
    assert by_name["example"][1] == "up" and int(by_name["example"][3]) > 0
    info = dict(line.split(": ", 1) for line in ok(gw, "get", "example").splitlines()
                if ": " in line)
    assert info["name"] == "example" and info["state"] == "up" and int(info["os_pid"]) > 0
    assert info["protocol"] == "raw"


def test_grpc_errors_exit_1_with_status_on_stderr(gw):
    r = run(gw, "call", "nosuch", "x")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("NOT_FOUND: ") and "nosuch" in r.stderr
    r = run(gw, "get", "nosuch")
    assert r.returncode == 1 and r.stderr.startswith("NOT_FOUND: ")


def test_timeout_is_deadline_exceeded(gw, tmp_path):
    # The C-node holds the call until the file exists, which is after the CLI has given up.
    release = tmp_path / "release"
    try:
        r = run(gw, "--timeout", "300", "call", "test", f'{{wait_file, <<"{release}">>, z}}')
        assert r.returncode == 1 and r.stderr.startswith("DEADLINE_EXCEEDED: "), r.stderr
    finally:
        release.touch()


def test_unreachable_target_is_unavailable(gw):
    r = run(gw, "--timeout", "3000", "list", target="127.0.0.1:1")
    assert r.returncode == 1
    assert r.stderr.split(":")[0] in ("UNAVAILABLE", "DEADLINE_EXCEEDED"), r.stderr


@pytest.mark.parametrize("args", [
    [], ["frobnicate"], ["call"], ["call", "example"], ["call", "example", "{bad"],
    ["call", "example", "X"], ["rpc", "n@h", "m", "f", "notalist"], ["--timeout", "x", "list"],
    ["--timeout", "0", "list"], ["--bogus", "list"], ["watch", "--nope"], ["spawn", "0"],
    ["list", "extra"], ["load", "n@h", "m", "/nonexistent.beam"],
])
def test_usage_errors_exit_2(gw, args):
    r = run(gw, *args)
    assert r.returncode == 2, (args, r.returncode, r.stderr)
    assert r.stderr and r.stdout == ""


def test_help_exits_0():
    r = subprocess.run([CLI, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "usage: nodex" in r.stdout


def test_watch_prints_events_until_interrupted(gw):
    p = subprocess.Popen([CLI, "--target", gw.grpc_target, "watch", "--current"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=gw.env)
    try:
        lines = []

        def read_until(pred, what):
            deadline = time.monotonic() + 20 * nx.SLOW
            while time.monotonic() < deadline:
                line = p.stdout.readline()
                assert line, f"watch ended early; stderr: {p.stderr.read()}"
                fields = dict(f.split("=", 1) for f in line.split(" reason=")[0].split())
                lines.append(fields)
                if pred(fields):
                    return fields
            raise AssertionError(f"no event: {what}; got {lines}")

        first = read_until(lambda f: f["name"] == "victim", "victim current state")
        assert first["state"] == "up" and first["kind"] == "cnode"
        ok(gw, "cast", "victim", "crash")
        read_until(lambda f: f["name"] == "victim" and f["state"] in ("down", "restarting"),
                   "victim down")
        up = read_until(lambda f: f["name"] == "victim" and f["state"] == "up", "victim up")
        assert up["os_pid"] != first["os_pid"] and int(up["seq"]) > int(first["seq"])
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=10 * nx.SLOW) == 0
    finally:
        nx.end_process(p)
        p.stdout.close()
        p.stderr.close()


def test_nodes_rpc_and_load(gw, tmp_path):
    node = ok(gw, "--timeout", "60000", "spawn", "1").strip()
    assert node.startswith("child") and "@" in node
    try:
        rows = {r.split()[0]: r.split() for r in ok(gw, "nodes").splitlines()}
        assert rows[node][1:3] == ["connected", "child"]
        assert ok(gw, "rpc", node, "erlang", "node", "[]") == f"'{node}'\n"
        assert ok(gw, "rpc", node, "lists", "reverse", "[[1, 2, 3]]") == "[3,2,1]\n"
        assert ok(gw, "rpc", node, "erlang", "is_pid", "[self()]") == "true\n"
        pid = ok(gw, "rpc", node, "erlang", "whereis", "[init]").strip()
        assert pid.startswith("#Pid<")  # printed as ETF, parses back byte-exact
        assert ok(gw, "rpc", node, "erlang", "is_process_alive", f"[{pid}]") == "true\n"
        r = run(gw, "rpc", node, "nosuchmod", "f", "[]")
        assert r.returncode == 1 and r.stderr.startswith("badrpc: {'EXIT',"), r.stderr
        src = tmp_path / "nxcli_mod.erl"
        src.write_text("-module(nxcli_mod).\n-export([hi/1]).\nhi(X) -> {hi, X}.\n")
        subprocess.run(["erlc", "-o", str(tmp_path), str(src)], check=True)
        assert ok(gw, "load", node, "nxcli_mod", str(tmp_path / "nxcli_mod.beam")) == ""
        assert ok(gw, "rpc", node, "nxcli_mod", "hi", "[<<\"x\">>]") == '{hi,<<"x">>}\n'
    finally:
        ok(gw, "--timeout", "30000", "stop", node)


def test_restart_starts_a_cnode_again(gw):
    old = gw.wait_up("example")["os_pid"]
    assert ok(gw, "restart", "example") == "example: restart requested\n"
    gw.wait_new_pid("example", old)
    assert ok(gw, "call", "example", '{ping, <<"again">>}') == '{pong,<<"again">>}\n'
    r = run(gw, "restart", "nosuch")
    assert r.returncode == 1 and r.stderr.startswith("NOT_FOUND: ")
