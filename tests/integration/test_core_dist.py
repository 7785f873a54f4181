"""test_core_dist: connection directions, a real erl node seeing nodexd, and descriptors above 1024."""

import os
import signal
import socket
import subprocess
import threading
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
    r = d.request("POST", "/cnodes/ad/call?timeout_ms=60000&wait=false",
                  nx.J(tup(atom("ping"), "x")), {"Content-Type": "application/json"})
    assert r.status == 503, r  # told not to wait: refused at once, not held (504)
    # The default: a call made while the node is away waits for it to come back.
    held = []
    t = threading.Thread(target=lambda: held.append(
        d.call("ad", tup(atom("ping"), "held"), timeout_ms=60000, timeout=90)))
    t.start()
    nx.wait_until(lambda: d.info("ad")["waiting"] == 1, 10 * nx.SLOW, what="the call to wait")
    p2 = start_adoptee(session, sname)
    t.join(90)
    assert held and held[0].status == 200 and held[0].json() == tup(atom("pong"), "held"), held
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


def hold_connections(d, port, n):
    """Opens n idle TCP connections to nodexd's `port`; fails unless nodexd accepts them all."""
    socks = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection((nx.HOST, port), timeout=3))
    except OSError as e:
        for s in socks:
            s.close()
        raise AssertionError(f"connection {len(socks) + 1} to nodexd's port {port} failed ({e}): "
                             "nodexd stopped accepting") from None
    fd_dir = f"/proc/{d.proc.pid}/fd"
    count = 0

    def enough():
        nonlocal count
        count = len(os.listdir(fd_dir))
        return count > n

    try:
        nx.wait_until(enough, 10 * nx.SLOW, what="nodexd to accept the connections")
    except AssertionError:
        for s in socks:
            s.close()
        raise AssertionError(f"nodexd holds only {count} descriptors after {n} connections to "
                             f"port {port} (a connection limit near FD_SETSIZE?)") from None
    return socks


def check_calls_on_high_descriptors(d, old_pid):
    # A restarted C-node's connection lands above 1024; ticks and calls must work on it.
    os.kill(old_pid, signal.SIGKILL)
    d.wait_new_pid("t", old_pid)
    r = d.call("t", tup(atom("ping"), "high"), timeout_ms=5000)
    assert r.status == 200 and r.json() == tup(atom("pong"), "high"), r
    # Idle until nodexd's ticks on the high descriptor have reached the C-node twice.
    def ticks():
        r = d.call("t", atom("ticks"), timeout_ms=5000)
        assert r.status == 200, r
        return r.json()["$tuple"][1]
    first = ticks()
    # Asked less often than tick_time / 4, after which an idle connection gets its tick.
    nx.wait_until(lambda: ticks() >= first + 2, 20, interval=0.6,
                  what="two ticks on the high descriptor")
    r = d.call("t", tup(atom("sleep"), 200, "s"), timeout_ms=5000)
    assert r.status == 200 and r.json() == tup(atom("slept"), "s"), r
    assert d.proc.poll() is None, d.log_tail()
    assert d.info("t")["restarts"] == 1


def test_more_than_1024_http_connections_and_a_call_still_works(session, nodexd):
    d = nodexd([nx.test_cnode_spec("t")], node={"tick_time_ms": 1000}, nofile=4096,
               http={"connection_timeout_s": 120, "header_timeout_ms": 120000,
                     "max_connections_per_ip": 0})  # 1100 idle connections from one address
    old = d.wait_up("t")["os_pid"]
    socks = hold_connections(d, d.port, 1100)
    try:
        r = d.call("t", tup(atom("ping"), "new-connection"), timeout_ms=5000, timeout=10)
        assert r.status == 200 and r.json() == tup(atom("pong"), "new-connection"), r
        check_calls_on_high_descriptors(d, old)
    finally:
        for s in socks:
            s.close()


def still_open(sock):
    """True while the peer has neither closed nor reset `sock` (nothing is read from it)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def test_idle_distribution_connections_hold_no_descriptor_and_block_nothing(session, nodexd):
    # nodexd's distribution listener defers idle connections (TCP_DEFER_ACCEPT): hundreds of
    # peers that connect and say nothing cost nodexd no descriptor and no acceptor, and a
    # C-node restart still connects at once. (The above-1024 descriptor path is proven by the
    # HTTP test above, which pushes nodexd's descriptors past 1024.)
    d = nodexd([nx.test_cnode_spec("t")], node={"tick_time_ms": 1000}, nofile=4096)
    old = d.wait_up("t")["os_pid"]
    dist_port = session.epmd_port_of(d.sname)
    assert dist_port, "nodexd is not registered in epmd"
    fds_before = len(os.listdir(f"/proc/{d.proc.pid}/fd"))
    idle = [socket.create_connection((nx.HOST, dist_port), timeout=3) for _ in range(300)]
    try:
        # The restarted C-node's connection queues behind all 300 idle ones (the accept queue is
        # FIFO): once it is up, nodexd has dealt with every idle one, and none was closed to
        # make room (they were deferred, not accepted and timed out).
        os.kill(old, signal.SIGKILL)
        d.wait_new_pid("t", old, timeout=10)
        fds = len(os.listdir(f"/proc/{d.proc.pid}/fd"))
        assert fds < fds_before + 20, f"{fds - fds_before} descriptors for idle connections"
        assert all(still_open(s) for s in idle), "idle connections were closed before it came up"
        r = d.call("t", tup(atom("ping"), "x"), timeout_ms=5000)
        assert r.status == 200 and r.json() == tup(atom("pong"), "x"), r
    finally:
        for s in idle:
            s.close()


def test_idle_connection_to_distribution_port_does_not_block_cnode_connects(session, nodexd):
    # A peer that connects and never handshakes must not stall the acceptor (nor C-node restarts).
    d = nodexd([nx.test_cnode_spec("t")])
    old = d.wait_up("t")["os_pid"]
    dist_port = session.epmd_port_of(d.sname)
    idle = [socket.create_connection((nx.HOST, dist_port), timeout=3) for _ in range(3)]
    try:
        os.kill(old, signal.SIGKILL)
        d.wait_new_pid("t", old, timeout=10)
        # It came up while every idle peer was still held open: none had to time out first.
        assert all(still_open(s) for s in idle), "idle connections were closed before it came up"
        assert d.call("t", tup(atom("ping"), "x")).status == 200
    finally:
        for s in idle:
            s.close()


def test_erl_node_with_shorter_net_ticktime_than_ours_stays_connected(session, nodexd):
    # nodexd ticks idle links every tick_time/4 (here 10 s); an Erlang node with net_ticktime 2
    # expects traffic every 2 s. nodexd answers its ticks after a second of silence, so the
    # link holds; answering every tick would ping-pong with ei C-nodes instead.
    d = nodexd([nx.test_cnode_spec("t")], node={"tick_time_ms": 40000,
                                                 "peer_tick_time_ms": 40000})
    d.wait_up("t")
    node = d.node_name
    name = nx.unique("nxtick")
    script = (f"true = net_kernel:connect_node('{node}'), monitor_node('{node}', true), "
              f"R = receive {{nodedown, _}} -> down after 7000 -> up end, "
              f"io:format(\"LINK ~p~n\", [R]), halt(0).")
    argv = ["erl", "-noshell", "-name", f"{name}@{nx.HOST}", "-args_file", session.erl_args_file,
            "-kernel", "net_ticktime", "2", "-eval", script]
    p = session.spawn(argv, name, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = p.communicate(timeout=30 * nx.SLOW)
    out = out.decode(errors="replace")
    assert "LINK up" in out, out + d.log_tail()
    assert d.call("t", tup(atom("ping"), "x")).status == 200


def test_slow_handshakes_cannot_keep_a_cnode_from_connecting(session, nodexd):
    """Six connections that start a handshake and then send a byte every 2.5 s (issue 14.2):
    each handshake has a deadline for the whole exchange, so the acceptors are free again after
    it and the restarted C-node connects while the slow peers still trickle."""
    d = nodexd([nx.test_cnode_spec("t")])
    old = d.wait_up("t")["os_pid"]
    port = session.epmd_port_of(d.sname)
    socks = [socket.create_connection((nx.HOST, port), timeout=5) for _ in range(6)]
    for s in socks:
        s.sendall(b"\x00\x20N")  # a send_name announcing 32 bytes, then almost nothing
    stop = threading.Event()

    def trickle():
        while not stop.wait(2.5):
            for s in socks:
                try:
                    s.send(b"\x00")
                except OSError:
                    pass  # cut off by nodexd: the point

    th = threading.Thread(target=trickle)
    th.start()
    try:
        os.kill(old, signal.SIGKILL)
        d.wait_new_pid("t", old, timeout=20)  # the trickle alone would take 80 s per peer
        r = d.call("t", tup(atom("ping"), "through"))
        assert r.status == 200 and r.json() == tup(atom("pong"), "through"), r
    finally:
        stop.set()
        th.join()
        for s in socks:
            s.close()
