"""test_core_dist: connection directions, a real erl node seeing nodexd, and descriptors above 1024."""

import os
import signal
import socket
import subprocess
import time

import nodex_harness as nx
from nodex_harness import atom, tup


def test_direction_to_connects_to_a_published_cnode(nodexd):
    d = nodexd([nx.test_cnode_spec("to", "serve_to", direction="to")])
    info = d.wait_up("to")
    assert info["direction"] == "to"
    r = d.call("to", tup(atom("ping"), "to"))
    assert r.status == 200 and r.json() == tup(atom("pong"), "to"), r
    # Restarted after a kill, and nodexd connects to the new incarnation.
    os.kill(info["os_pid"], signal.SIGKILL)
    d.wait_new_pid("to", info["os_pid"])
    r = d.call("to", tup(atom("ping"), "again"))
    assert r.status == 200 and r.json() == tup(atom("pong"), "again"), r


def start_adoptee(session, sname):
    """Runs test_cnode serve_to ourselves (not nodexd's child) and waits for its ready line."""
    log = session.log_path(f"{sname}-{time.monotonic_ns()}")
    with open(log, "wb") as f:
        p = session.spawn([nx.TEST_CNODE, sname, nx.HOST, session.cookie, "unused", "serve_to"],
                          sname, stdout=f, stderr=subprocess.STDOUT)
    ready = f"{sname}@{nx.HOST} ready"
    nx.wait_until(lambda: ready in open(log).read().splitlines() or p.poll() is not None,
                  10 * nx.SLOW, what="the adopted node's ready line")
    assert p.poll() is None, open(log).read()
    return p


def test_direction_adopt_connects_and_reconnects_after_restart(session, nodexd):
    sname = nx.unique("nxad")
    p = start_adoptee(session, sname)
    d = nodexd([{"name": "ad", "direction": "adopt", "node": f"{sname}@{nx.HOST}",
                 "backoff_initial_ms": 50, "backoff_max_ms": 200, "connect_timeout_ms": 500}])
    info = d.wait_up("ad")
    assert info["direction"] == "adopt" and info["os_pid"] is None, info
    r = d.call("ad", tup(atom("ping"), "a1"))
    assert r.status == 200 and r.json() == tup(atom("pong"), "a1"), r
    nx.end_process(p, signal.SIGKILL)
    nx.wait_until(lambda: d.info("ad")["state"] != "up", 5, what="adopted node to be seen down")
    r = d.call("ad", tup(atom("ping"), "x"), timeout_ms=3000)
    assert r.status == 503 and r.elapsed < 1.0, r
    p2 = start_adoptee(session, sname)
    d.wait_up("ad", timeout=10)
    r = d.call("ad", tup(atom("ping"), "a2"))
    assert r.status == 200 and r.json() == tup(atom("pong"), "a2"), r
    nx.end_process(p2)


def test_real_erl_node_sees_nodexd_as_hidden(session, nodexd):
    d = nodexd([nx.test_cnode_spec("t")])
    d.wait_up("t")
    node = d.node_name
    status, out = session.erl_eval(
        f"C = net_kernel:connect_node('{node}'), "
        f"H = lists:member('{node}', nodes(hidden)), V = lists:member('{node}', nodes()), "
        f"Self = self(), spawn(fun() -> Self ! {{ping, net_adm:ping('{node}')}} end), "
        f"P = receive {{ping, X}} -> X after 5000 -> no_answer end, "
        f"io:format(\"CONNECT ~p HIDDEN ~p VISIBLE ~p PING ~p~n\", [C, H, V, P])")
    assert status == 0, out
    assert "CONNECT true HIDDEN true VISIBLE false" in out, out + d.log_tail()
    assert "PING pong" in out, "net_adm:ping (net_kernel is_auth gen_call) unanswered: " + out
    # nodexd is still fine after the erl node went away.
    assert d.call("t", tup(atom("ping"), "x")).status == 200


def test_wrong_cookie_erl_node_is_refused(session, nodexd, tmp_path):
    d = nodexd([nx.test_cnode_spec("t")])
    d.wait_up("t")
    args = tmp_path / "bad.args"
    args.write_text("-setcookie WRONGCOOKIE\n")
    p = subprocess.run(["erl", "-noshell", "-name", f"{nx.unique('nxbad')}@{nx.HOST}",
                        "-args_file", str(args), "-eval",
                        f"io:format(\"PING ~p~n\", [net_adm:ping('{d.node_name}')]), halt()."],
                       env=session.env, capture_output=True, text=True, timeout=30 * nx.SLOW)
    assert "PING pang" in p.stdout, p.stdout + p.stderr
    assert d.call("t", tup(atom("ping"), "x")).status == 200


def test_more_than_1024_descriptors(session, nodexd):
    d = nodexd([nx.test_cnode_spec("t")], node={"tick_time_ms": 1000}, nofile=4096,
               http={"connection_timeout_s": 120})
    old = d.wait_up("t")["os_pid"]
    socks = []
    try:
        for _ in range(1100):
            s = socket.create_connection((nx.HOST, d.port), timeout=5)
            socks.append(s)
        nfds = nx.wait_until(
            lambda: (lambda n: n if n > 1100 else None)(len(os.listdir(f"/proc/{d.proc.pid}/fd"))),
            10 * nx.SLOW, what="nodexd to hold over 1100 descriptors")
        print(f"nodexd holds {nfds} descriptors")
        # A call on a new HTTP connection (fd > 1024 in nodexd).
        r = d.call("t", tup(atom("ping"), "high"), timeout_ms=5000)
        assert r.status == 200 and r.json() == tup(atom("pong"), "high"), r
        # A restarted C-node's connection now lands above 1024 too; ticks and calls must work on it.
        os.kill(old, signal.SIGKILL)
        d.wait_new_pid("t", old)
        r = d.call("t", tup(atom("ping"), "high2"), timeout_ms=5000)
        assert r.status == 200 and r.json() == tup(atom("pong"), "high2"), r
        time.sleep(2.5)  # idle for more than two tick times
        r = d.call("t", tup(atom("sleep"), 200, "s"), timeout_ms=5000)
        assert r.status == 200 and r.json() == tup(atom("slept"), "s"), r
        assert d.proc.poll() is None, d.log_tail()
        assert d.info("t")["restarts"] == 1
    finally:
        for s in socks:
            s.close()
