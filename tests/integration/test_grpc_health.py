"""test_grpc_health: the standard grpc.health.v1.Health service (Check and Watch) on nodexd, with
Debian's python3-grpcio: the gateway's and each C-node's status, a SIGKILLed C-node seen going
down and up again, unknown names, the probe without a token, and Watch streams at the drain's
start (NOT_SERVING while calls still run) and at shutdown."""

import os
import signal
import threading

import pytest

import nodex_harness as nx
from test_auth import token_file
from test_grpc_server import GrpcNodexd, pb, status_of, A, P, T

grpc = pytest.importorskip("grpc")
import grpc_std as std  # noqa: E402

S = grpc.StatusCode


def check(d, service, **kw):
    return std.Health(d.channel).Check(std.HealthCheckRequest(service=service), timeout=30, **kw)


@pytest.fixture(scope="module")
def gw(session):
    d = GrpcNodexd(session, [nx.test_cnode_spec("t"), nx.test_cnode_spec("victim"),
                             nx.test_cnode_spec("pool", instances=2)])
    d.start()
    for name in ("t", "victim", "pool"):
        d.wait_up(name)
    nx.wait_until(lambda: d.request("GET", "/readyz").status == 200, 10 * nx.SLOW,
                  what="ready")
    yield d
    d.close()


class Watcher:
    """A Watch stream read on its own thread; statuses collects what arrived."""

    def __init__(self, d, service):
        self.call = std.Health(d.channel).Watch(std.HealthCheckRequest(service=service),
                                                timeout=120)
        self.statuses = []
        self.end = None
        self.cv = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for r in self.call:
                with self.cv:
                    self.statuses.append(r.status)
                    self.cv.notify_all()
        except grpc.RpcError as e:
            with self.cv:
                self.end = e.code()
                self.cv.notify_all()
        else:
            with self.cv:
                self.end = S.OK
                self.cv.notify_all()

    def wait(self, pred, what, timeout=30.0):
        with self.cv:
            if not self.cv.wait_for(lambda: pred(self), timeout * nx.SLOW):
                raise AssertionError(f"{what}: got {[std.status_name(s) for s in self.statuses]}"
                                     f" end={self.end}")

    def wait_sequence(self, *want, what="statuses"):
        self.wait(lambda w: w.statuses[:len(want)] == list(want) or w.end is not None, what)
        assert self.statuses[:len(want)] == list(want), [std.status_name(s) for s in self.statuses]

    def close(self):
        self.call.cancel()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def test_check_of_the_gateway_is_serving_when_ready(gw):
    assert check(gw, "").status == std.SERVING
    assert check(gw, "nodex.v1.Gateway").status == std.SERVING
    assert gw.stub.Health(pb.HealthRequest(), timeout=10).ready


def test_check_of_each_cnode_is_serving(gw):
    for name in ("t", "victim", "pool"):
        assert check(gw, name).status == std.SERVING, name


def test_check_of_an_unknown_service_is_not_found(gw):
    for name in ("nope", "nodex.v1.Nope", "grpc.health.v1.Health", "T"):
        code, msg = status_of(check, gw, name)
        assert code == S.NOT_FOUND and repr(name) in msg, (name, code, msg)


def test_watch_of_a_killed_cnode_sees_not_serving_then_serving(gw):
    one = Watcher(gw, "victim")
    whole = Watcher(gw, "")
    other = Watcher(gw, "t")
    try:
        one.wait_sequence(std.SERVING, what="first status")
        whole.wait_sequence(std.SERVING, what="first status of the gateway")
        other.wait_sequence(std.SERVING, what="first status of t")
        pid = gw.info("victim")["os_pid"]
        assert pid > 0
        os.kill(pid, signal.SIGKILL)
        one.wait_sequence(std.SERVING, std.NOT_SERVING, std.SERVING, what="down and up")
        whole.wait_sequence(std.SERVING, std.NOT_SERVING, std.SERVING, what="gateway down and up")
        gw.wait_new_pid("victim", pid)
        assert check(gw, "victim").status == std.SERVING
        # a status is sent only when it changes: t stayed up throughout
        assert other.statuses == [std.SERVING] and other.end is None
        assert one.end is None  # the stream stays open
    finally:
        for w in (one, whole, other):
            w.close()
    for w in (one, whole, other):
        assert w.end == S.CANCELLED


def test_watch_of_one_pool_instance_going_down_keeps_serving(gw):
    w = Watcher(gw, "pool")
    try:
        w.wait_sequence(std.SERVING)
        pid = gw.get_json("/cnodes/pool")["pool"][0]["os_pid"]
        os.kill(pid, signal.SIGKILL)

        def back():
            info = gw.get_json("/cnodes/pool")
            return info["pool"][0]["os_pid"] not in (0, pid) and info["instances_up"] == 2
        nx.wait_until(back, 20 * nx.SLOW, what="the pool instance back")
        assert w.statuses == [std.SERVING] and w.end is None  # the other instance served
    finally:
        w.close()


def test_watch_of_an_unknown_service_says_service_unknown_and_stays_open(gw):
    w = Watcher(gw, "nope")
    try:
        w.wait_sequence(std.SERVICE_UNKNOWN)
        assert w.end is None
        assert check(gw, "").status == std.SERVING  # the server is fine meanwhile
    finally:
        w.close()
    assert w.end == S.CANCELLED


def test_many_watches_cancelled_leave_nothing_behind(gw):
    watchers = [Watcher(gw, name) for name in ("", "t", "nope") * 10]
    for w in watchers:
        w.wait(lambda x: x.statuses or x.end is not None, "a first status")
    for w in watchers:
        w.close()
    assert all(w.end == S.CANCELLED for w in watchers)
    assert check(gw, "t").status == std.SERVING


def test_health_needs_no_token_while_the_rest_does(session):
    path, token = token_file(session, "full")
    d = GrpcNodexd(session, [nx.test_cnode_spec("t")],
                   extra={"auth": {"principals": [{"name": "full", "token_file": path,
                                                   "allow": ["call"]}]}})
    d.token = token  # for the harness's own HTTP requests
    try:
        d.start()
        d.wait_up("t")
        nx.wait_until(lambda: check(d, "").status == std.SERVING, 10 * nx.SLOW, what="serving")
        assert check(d, "t").status == std.SERVING
        # like /readyz: no token needed, and a wrong one is not even looked at
        assert check(d, "t", metadata=(("authorization", "Bearer wrong"),)).status == std.SERVING
        assert d.request("GET", "/readyz").status == 200
        code, _ = status_of(check, d, "nope")
        assert code == S.NOT_FOUND
        w = Watcher(d, "t")
        try:
            w.wait_sequence(std.SERVING)
        finally:
            w.close()
        code, msg = status_of(d.stub.ListCnodes, pb.ListCnodesRequest(), timeout=10)
        assert code == S.UNAUTHENTICATED, msg
    finally:
        d.close()


def test_watch_streams_end_at_shutdown(session):
    d = GrpcNodexd(session, [nx.test_cnode_spec("t")])
    d.start()
    try:
        d.wait_up("t")
        watchers = [Watcher(d, name) for name in ("", "t", "nope")]
        for w in watchers:
            w.wait(lambda x: x.statuses, "a first status")
        d.stop()
        for w in watchers:
            w.wait(lambda x: x.end is not None, "the end of the stream")
            assert w.end in (S.UNAVAILABLE, S.CANCELLED), w.end
            w.thread.join(timeout=30)
    finally:
        d.close()


def test_watches_open_at_sigterm_get_not_serving_while_a_call_still_runs(session):
    """The drain (SIGTERM) turns every Watch NOT_SERVING at its start, the server's and each
    C-node's, before the calls in flight end and long before the streams do."""
    # "held" answers {pong, T}, which its reply filter never takes: a call to it stays in flight
    # while the C-node goes on answering ticks
    d = GrpcNodexd(session, [nx.test_cnode_spec("t"), nx.test_cnode_spec("pool", instances=2),
                             nx.test_cnode_spec("held", reply_filter={"tag": "reply"},
                                                max_call_timeout_ms=600000)],
                   extra={"shutdown": {"drain_ms": 600000}})
    d.start()
    watchers = {}
    try:
        for name in ("t", "pool", "held"):
            d.wait_up(name)
        nx.wait_until(lambda: check(d, "").status == std.SERVING, 10 * nx.SLOW, what="serving")
        watchers = {name: Watcher(d, name) for name in ("", "nodex.v1.Gateway", "t", "pool", "nope")}
        for name, w in watchers.items():
            w.wait_sequence(std.SERVICE_UNKNOWN if name == "nope" else std.SERVING,
                            what=f"the first status of {name!r}")
        held = d.stub.Call.future(pb.CallRequest(cnode="held", request=P(
            T(A("ping"), A("x"))), timeout_ms=600000), timeout=900)
        nx.wait_until(lambda: d.info("held")["in_flight"] == 1, 10 * nx.SLOW, what="in flight")
        d.send_signal(signal.SIGTERM)
        for name in ("", "nodex.v1.Gateway", "t", "pool"):
            watchers[name].wait_sequence(std.SERVING, std.NOT_SERVING,
                                         what=f"{name!r} at the drain's start")
        # the drain, not the shutdown: the call still runs, nodexd too, the streams are open
        assert not held.done() and d.proc.poll() is None
        assert all(w.end is None for w in watchers.values())
        assert watchers["nope"].statuses == [std.SERVICE_UNKNOWN]
        assert "draining" in d.log_text()
        d.send_signal(signal.SIGINT)  # a second signal ends the drain at once
        with pytest.raises(grpc.RpcError) as ei:
            held.result(timeout=60)
        assert ei.value.code() == S.UNAVAILABLE, ei.value
        assert d.proc.wait(timeout=15 * nx.SLOW) == 0
        for w in watchers.values():
            w.wait(lambda x: x.end is not None, "the end of the stream")
    finally:
        for w in watchers.values():
            w.close()
        d.close()
