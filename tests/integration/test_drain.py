"""test_drain: SIGTERM drains (not ready at once, listeners closed, calls in flight finish up to
shutdown.drain_ms, then the rest fail) on HTTP and gRPC; systemd's READY, STOPPING, WATCHDOG."""

import signal
import socket
import threading

import nodex_harness as nx
from nodex_harness import atom, tup
from test_grpc_server import GrpcNodexd, pb, A, I, T, P


def slow_http_call(d, ms, out, key):
    out[key] = d.call("t", tup(atom("sleep"), ms, atom(key)), timeout_ms=30000, timeout=60)


def start_with_a_call_in_flight(session, drain_ms, sleep_ms=20000):
    """A nodexd with shutdown.drain_ms and one HTTP call sleeping in C-node t: (d, thread, out)."""
    d = nx.Nodexd(session, [nx.test_cnode_spec("t")], extra={"shutdown": {"drain_ms": drain_ms}})
    d.start()
    d.wait_up("t")
    out = {}
    t = threading.Thread(target=slow_http_call, args=(d, sleep_ms, out, "h"))
    t.start()
    nx.wait_until(lambda: d.info("t")["in_flight"] == 1, 10 * nx.SLOW, what="in flight")
    return d, t, out


def connect_refused(port):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((nx.HOST, port))
        return False
    except ConnectionRefusedError:
        return True
    finally:
        s.close()


def test_sigterm_lets_calls_in_flight_finish_and_refuses_new_work(session):
    d = GrpcNodexd(session, [nx.test_cnode_spec("t")], extra={"shutdown": {"drain_ms": 20000}})
    try:
        d.start()
        d.wait_up("t")
        keep = d.connection()  # opened before the signal: answers on it close it
        assert d.request("GET", "/readyz", conn=keep).status == 200
        out = {}
        http_call = threading.Thread(target=slow_http_call, args=(d, 1500, out, "h"))
        http_call.start()
        grpc_call = d.stub.Call.future(pb.CallRequest(cnode="t", request=P(
            T(A("sleep"), I(1500), A("g"))), timeout_ms=30000), timeout=60)
        nx.wait_until(lambda: d.info("t")["in_flight"] == 2, 10 * nx.SLOW, what="2 in flight")
        d.send_signal(signal.SIGTERM)
        nx.wait_until(lambda: "draining" in d.log_text(), 10 * nx.SLOW, what="the drain")
        # not ready at once, on a connection that was open; the answer closes it
        r = d.request("GET", "/readyz", conn=keep)
        assert r.status == 503 and r.json()["status"] == "not_ready", r
        assert r.headers.get("connection", "").lower() == "close", r.headers
        keep.close()
        # the listeners no longer accept: new connections are refused
        nx.wait_until(lambda: connect_refused(d.port), 10 * nx.SLOW, what="HTTP refusing")
        nx.wait_until(lambda: connect_refused(d.grpc_port), 10 * nx.SLOW, what="gRPC refusing")
        # and the calls that were in flight get their own replies
        http_call.join(30)
        assert out["h"].status == 200, out["h"]
        assert out["h"].json() == tup(atom("slept"), atom("h")), out["h"].json()
        assert grpc_call.result(timeout=30).reply.term == T(A("slept"), A("g"))
        # then nodexd stops by itself, well before drain_ms, and stops its C-node
        assert d.proc.wait(timeout=15 * nx.SLOW) == 0
        assert "drain: no call in flight; stopping" in d.log_text()
    finally:
        d.close()


def test_a_new_call_on_an_open_connection_during_the_drain_is_503(session):
    d = nx.Nodexd(session, [nx.test_cnode_spec("t")], extra={"shutdown": {"drain_ms": 20000}})
    try:
        d.start()
        d.wait_up("t")
        keep = d.connection()
        assert d.call("t", tup(atom("ping"), "a"), conn=keep).status == 200
        out = {}
        t = threading.Thread(target=slow_http_call, args=(d, 2000, out, "h"))
        t.start()
        nx.wait_until(lambda: d.info("t")["in_flight"] == 1, 10 * nx.SLOW, what="in flight")
        d.send_signal(signal.SIGTERM)
        nx.wait_until(lambda: "draining" in d.log_text(), 10 * nx.SLOW, what="the drain")
        r = d.call("t", tup(atom("ping"), "b"), conn=keep)
        assert r.status == 503 and r.json()["error"]["code"] == "shutting_down", r
        t.join(30)
        assert out["h"].status == 200
        assert d.proc.wait(timeout=15 * nx.SLOW) == 0
    finally:
        d.close()


def test_calls_still_in_flight_when_drain_ms_passes_fail_503(session):
    d, t, out = start_with_a_call_in_flight(session, 300)
    try:
        d.send_signal(signal.SIGTERM)
        t.join(30)
        r = out["h"]
        assert r.status == 503 and r.json()["error"]["code"] == "shutting_down", r
        assert d.proc.wait(timeout=15 * nx.SLOW) == 0
        assert "drain: shutdown.drain_ms passed with 1 calls in flight" in d.log_text()
    finally:
        d.close()


def test_a_second_signal_ends_the_drain_at_once(session):
    d, t, out = start_with_a_call_in_flight(session, 600000)
    try:
        d.send_signal(signal.SIGTERM)
        nx.wait_until(lambda: "draining" in d.log_text(), 10 * nx.SLOW, what="the drain")
        d.send_signal(signal.SIGINT)
        t.join(30)
        assert out["h"].status == 503
        assert d.proc.wait(timeout=15 * nx.SLOW) == 0
    finally:
        d.close()


def test_drain_ms_0_fails_calls_in_flight_at_once(session):
    d, t, out = start_with_a_call_in_flight(session, 0)
    try:
        d.send_signal(signal.SIGTERM)
        t.join(30)
        assert out["h"].status == 503
        assert d.proc.wait(timeout=15 * nx.SLOW) == 0
        assert "draining" not in d.log_text()
    finally:
        d.close()


def test_systemd_gets_ready_watchdog_pings_and_stopping(session, tmp_path):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    d = nx.Nodexd(session, [nx.test_cnode_spec("t")],
                  env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "300000"})
    got = []
    try:
        d.start()

        def pings():
            try:
                got.append(sock.recv(4096).decode())
            except socket.timeout:
                pass
            return sum(m == "WATCHDOG=1" for m in got) >= 3

        nx.wait_until(pings, 20 * nx.SLOW, what="three WATCHDOG=1")
        assert any("READY=1" in m for m in got), got
        d.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=15 * nx.SLOW) == 0
        while True:
            try:
                got.append(sock.recv(4096).decode())
            except socket.timeout:
                break
        assert any("STOPPING=1" in m for m in got), got
    finally:
        d.close()
        sock.close()
