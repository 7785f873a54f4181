"""test_grpc_server: nodexd's gRPC API (server side), black-box with Debian's python3-grpcio."""

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

import nodex_harness as nx

grpc = pytest.importorskip("grpc")

SERVICE = "/nodex.v1.Gateway/"


def _generate_stubs():
    """Python messages and stubs from proto/, generated at test time (grpc_tools is not packaged)."""
    out = tempfile.mkdtemp(prefix="nodex-pb-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    subprocess.run(
        ["protoc", f"--python_out={out}", f"--grpc_python_out={out}",
         "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
         f"-I{nx.REPO_DIR}/proto", os.path.join(nx.REPO_DIR, "proto/nodex/v1/nodex.proto")],
        check=True)
    sys.path.insert(0, out)
    from nodex.v1 import nodex_pb2, nodex_pb2_grpc  # noqa: E402
    return nodex_pb2, nodex_pb2_grpc


pb, pb_grpc = _generate_stubs()


# --- Term helpers ------------------------------------------------------------------------------
def A(name):
    return pb.Term(atom=name)


def I(v):
    return pb.Term(int=v)


def B(data):
    return pb.Term(binary=data if isinstance(data, bytes) else data.encode())


def T(*items):
    return pb.Term(tuple=pb.Tuple(elements=list(items)))


def L(*items, tail=None):
    return pb.Term(list=pb.List(elements=list(items), tail=tail))


def P(term):
    return pb.Payload(term=term)


class GrpcNodexd(nx.Nodexd):
    """A Nodexd with its gRPC server on an ephemeral port, read from the ready line."""

    def __init__(self, session, cnodes, grpc_cfg=None, extra=None, **kw):
        extra = dict(extra or {})
        extra["grpc"] = {"listen": f"{nx.HOST}:0", **(grpc_cfg or {})}
        super().__init__(session, cnodes, extra=extra, **kw)
        self.channel = None

    def start(self, wait=True, timeout=20.0):
        super().start(wait=wait, timeout=timeout)
        if wait:
            assert self.grpc_port, "no grpc= in the ready line\n" + self.log_tail()
            self.channel = grpc.insecure_channel(f"{nx.HOST}:{self.grpc_port}")
            self.stub = pb_grpc.GatewayStub(self.channel)
        return self

    def close(self):
        if self.channel is not None:
            self.channel.close()
        super().close()


def cnodes():
    return [
        nx.test_cnode_spec("t"),
        nx.test_cnode_spec("tagged", reply_filter={"tag": "reply"}),
        nx.test_cnode_spec("victim"),
        nx.test_cnode_spec("broken", "exit_before_ready", max_restarts=0),
    ]


@pytest.fixture(scope="module")
def gw(session):
    d = GrpcNodexd(session, cnodes(), grpc_cfg={"max_message_bytes": 1 << 20},
                   extra={"log": {"level": "debug"}})
    d.start()
    for name in ("t", "tagged", "victim"):
        d.wait_up(name)
    d.wait_for_state("broken", "failed")
    yield d
    d.close()


def call(gw, cnode, term, **kw):
    timeout = kw.pop("timeout", 30)
    return gw.stub.Call(pb.CallRequest(cnode=cnode, request=P(term), **kw), timeout=timeout)


def status_of(fn, *args, **kw):
    with pytest.raises(grpc.RpcError) as ei:
        fn(*args, **kw)
    return ei.value.code(), ei.value.details()


# --- interop-style cases -----------------------------------------------------------------------
def test_empty_unary(gw):
    r = call(gw, "t", T(A("ping"), B(b"")))
    assert r.reply.term == T(A("pong"), B(b""))
    assert gw.stub.Cast(pb.CastRequest(cnode="t", message=P(A("hello")))) == pb.CastReply()
    assert len(gw.stub.ListCnodes(pb.ListCnodesRequest()).cnodes) == 4


def test_large_unary(gw):
    blob = os.urandom(300_000)
    r = call(gw, "t", T(A("ping"), B(blob)))
    assert r.reply.term == T(A("pong"), B(blob))
    r = call(gw, "t", T(A("big"), I(300_000)))
    assert len(r.reply.term.binary) == 300_000
    r = call(gw, "t", T(A("big"), I(300_000)), reply_as_etf=True)
    assert r.reply.etf[:1] == b"\x83" and len(r.reply.etf) == 300_000 + 6


def test_every_term_kind_round_trips_through_a_cnode(gw):
    term = T(
        A("é"), I(-5), I(2**63 - 1), pb.Term(big_int="-123456789012345678901234567890"),
        pb.Term(float=1.5), B(b"\xff\x00"), pb.Term(bits=pb.BitString(data=b"\x01\xa0", bits=11)),
        L(I(1), I(2)), L(A("a"), tail=A("b")), L(), T(),
        pb.Term(map=pb.Map(entries=[pb.MapEntry(key=A("k"), value=L(I(300)))])))
    r = call(gw, "t", T(A("ping"), term))
    assert r.reply.term == T(A("pong"), term)
    # self_pid becomes the call's own pid: comes back as an opaque pid, which round-trips
    r = call(gw, "t", T(A("ping"), pb.Term(self_pid=pb.SelfPid())))
    pid = r.reply.term.tuple.elements[1]
    assert pid.WhichOneof("kind") == "pid" and pid.pid.etf[:1] == b"\x83"
    r2 = call(gw, "t", T(A("ping"), pid))
    assert r2.reply.term.tuple.elements[1] == pid
    # raw ETF in, ETF out: term_to_binary({ping, <<"e">>})
    etf = b"\x83h\x02w\x04pingm\x00\x00\x00\x01e"
    r = gw.stub.Call(pb.CallRequest(cnode="t", request=pb.Payload(etf=etf), reply_as_etf=True))
    assert r.reply.etf == b"\x83h\x02w\x04pongm\x00\x00\x00\x01e"


def test_status_codes_and_messages(gw):
    S = grpc.StatusCode
    code, msg = status_of(call, gw, "nope", A("x"))
    assert code == S.NOT_FOUND and "nope" in msg
    code, msg = status_of(gw.stub.GetCnode, pb.GetCnodeRequest(name="nope"))
    assert code == S.NOT_FOUND
    code, msg = status_of(call, gw, "broken", A("x"))
    assert code == S.UNAVAILABLE and "broken" in msg
    code, msg = status_of(call, gw, "t", T(A("sleep"), I(2000), A("x")), timeout_ms=300)
    assert code == S.DEADLINE_EXCEEDED and "300 ms" in msg
    code, msg = status_of(call, gw, "t", A("a" * 256))
    assert code == S.INVALID_ARGUMENT and "255" in msg
    code, msg = status_of(gw.stub.Call, pb.CallRequest(cnode="t", request=pb.Payload(etf=b"\x83z")))
    assert code == S.INVALID_ARGUMENT
    code, msg = status_of(call, gw, "t", A("x"), timeout_ms=10_000_000)
    assert code == S.INVALID_ARGUMENT and "timeout_ms" in msg
    code, msg = status_of(gw.stub.Call, pb.CallRequest(cnode="t"))
    assert code == S.INVALID_ARGUMENT and "payload" in msg
    code, msg = status_of(call, gw, "t", T(A("ping"), B(os.urandom(1_200_000))))
    assert code == S.RESOURCE_EXHAUSTED  # over grpc.max_message_bytes (request)
    code, msg = status_of(call, gw, "t", T(A("big"), I(1_100_000)))
    assert code == S.RESOURCE_EXHAUSTED and "max_message_bytes" in msg  # (reply)
    code, msg = status_of(call, gw, "t", A("garbage"))
    assert code == S.INTERNAL and "cannot be converted" in msg
    assert call(gw, "t", T(A("ping"), B("still fine"))).reply.term == T(A("pong"), B("still fine"))


def test_resource_exhausted_over_max_in_flight(session):
    d = GrpcNodexd(session, [nx.test_cnode_spec("t")], grpc_cfg={"max_in_flight": 2})
    try:
        d.start()
        d.wait_up("t")
        slow = [d.stub.Call.future(pb.CallRequest(cnode="t", request=P(
            T(A("sleep"), I(1500), A("x"))))) for _ in range(2)]
        nx.wait_until(lambda: d.info("t")["in_flight"] == 2, 5 * nx.SLOW, what="2 calls in flight")
        code, msg = status_of(call, d, "t", T(A("ping"), B("")))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_in_flight" in msg
        for f in slow:
            assert f.result(timeout=10).reply.term == T(A("slept"), A("x"))
        assert call(d, "t", T(A("ping"), B(""))).reply.term == T(A("pong"), B(""))
    finally:
        d.close()


def test_custom_metadata_is_read_and_echoed(gw):
    md = (("x-request-id", "req-4711"), ("x-custom-thing", "hello"))
    r, c = gw.stub.Call.with_call(pb.CallRequest(cnode="t", request=P(T(A("ping"), B("m")))),
                                  metadata=md)
    assert r.reply.term == T(A("pong"), B("m"))
    assert ("x-request-id", "req-4711") in tuple(c.initial_metadata())
    nx.wait_until(lambda: "x-custom-thing: hello" in gw.log_text(), 5, what="metadata in the log")


def test_deadline_on_a_sleeping_cnode(gw, tmp_path):
    release = tmp_path / "release"  # the C-node holds the call until this exists
    before = gw.info("t")["dropped_messages"]
    t0 = time.monotonic()
    try:
        code, _ = status_of(call, gw, "t", T(A("wait_file"), B(str(release)), A("x")), timeout=1.0)
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t0 >= 0.9  # not before the deadline (load only adds to it)
        # the client's deadline can pass before the gateway's: release only once the call ended
        nx.wait_until(lambda: gw.info("t")["in_flight"] == 0, 10, what="the call to end")
    finally:
        release.touch()
    # the C-node is still serving, and its late reply reached no call
    assert call(gw, "t", T(A("ping"), B("after"))).reply.term == T(A("pong"), B("after"))
    nx.wait_until(lambda: gw.info("t")["dropped_messages"] >= before + 1, 10,
                  what="the late reply to be dropped")


def test_cancel_after_begin(gw, tmp_path):
    release = tmp_path / "release"  # the C-node holds the call until this exists
    before = gw.info("t")["dropped_messages"]
    f = gw.stub.Call.future(pb.CallRequest(cnode="t", request=P(T(A("wait_file"), B(str(release)),
                                                                  A("c")))))
    try:
        nx.wait_until(lambda: gw.info("t")["in_flight"] >= 1, 10, what="the call in flight")
        assert f.cancel()
        with pytest.raises(grpc.FutureCancelledError):
            f.result()
        nx.wait_until(lambda: gw.info("t")["in_flight"] == 0, 10, what="the call ended")
    finally:
        release.touch()
    assert call(gw, "t", T(A("ping"), B("ok"))).reply.term == T(A("pong"), B("ok"))
    # the cancelled call ended in nodexd; the C-node's reply, released after, reaches no call
    nx.wait_until(lambda: gw.info("t")["dropped_messages"] >= before + 1, 5 * nx.SLOW,
                  what="the late reply to be dropped")


def test_cnode_that_stops_reading_never_stalls_grpc(session):
    """gRPC calls carrying 16 MiB in all pile up unsent for a SIGSTOPped C-node: each ends with
    DEADLINE_EXCEEDED, while calls to another C-node keep answering at once (the
    completion-queue threads never wait for a peer to take their bytes)."""
    d = GrpcNodexd(session, [nx.test_cnode_spec("stuck"), nx.test_cnode_spec("ok")],
                   node={"tick_time_ms": 30000})
    d.start()
    stuck = d.wait_up("stuck")["os_pid"]
    d.wait_up("ok")
    os.kill(stuck, signal.SIGSTOP)
    try:
        blob = b"x" * (2 << 20)
        codes = []

        def big_call():
            code, _ = status_of(call, d, "stuck", T(A("ping"), B(blob)), timeout=4 * nx.SLOW)
            codes.append(code)

        threads = [threading.Thread(target=big_call) for _ in range(8)]
        for t in threads:
            t.start()
        nx.wait_until(lambda: d.info("stuck")["in_flight"] >= 8, 10, what="8 calls in flight")
        for i in range(20):
            r = call(d, "ok", T(A("ping"), B(f"x{i}")), timeout=5)
            assert r.reply.term == T(A("pong"), B(f"x{i}"))
        # Served while all 8 still wait: nothing waited for the stuck peer to take its bytes.
        assert d.info("stuck")["in_flight"] == 8 and all(t.is_alive() for t in threads)
        for t in threads:
            t.join(30 * nx.SLOW)
        # the deadline, or (on a starved machine) the 5 s send stall cutting the peer off
        assert len(codes) == 8 and set(codes) <= {grpc.StatusCode.DEADLINE_EXCEEDED,
                                                  grpc.StatusCode.UNAVAILABLE}, codes
    finally:
        try:
            os.kill(stuck, signal.SIGKILL)
        except ProcessLookupError:
            pass  # cut off and already ended by nodexd
        d.close()


def test_unimplemented_method(gw):
    fn = gw.channel.unary_unary(SERVICE + "NoSuchMethod")
    code, msg = status_of(fn, b"", timeout=5)
    assert code == grpc.StatusCode.UNIMPLEMENTED and "NoSuchMethod" in msg
    fn = gw.channel.unary_unary("/other.Service/Call")
    assert status_of(fn, b"", timeout=5)[0] == grpc.StatusCode.UNIMPLEMENTED


def ld(field, body):
    """Protobuf wire format: field `field` (length-delimited) holding `body`."""
    n, v = len(body), b""
    while True:
        b = n & 0x7F
        n >>= 7
        v += bytes([b | (0x80 if n else 0)])
        if not n:
            return bytes([field << 3 | 2]) + v + body


def test_deep_request_is_rejected_not_crashing(gw):
    # CallRequest{cnode: "t", request: Payload{term: Term{tuple: Tuple{elements: [...]}}}} 100k deep
    inner = b"\x10\x02"
    for _ in range(100_000):
        inner = ld(8, ld(1, inner))
    raw = ld(1, b"t") + ld(2, ld(1, inner))
    fn = gw.channel.unary_unary(SERVICE + "Call")
    code, msg = status_of(fn, raw, timeout=10)
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), msg
    assert call(gw, "t", T(A("ping"), B("alive"))).reply.term == T(A("pong"), B("alive"))


def _vm_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_request_of_4m_empty_terms_is_refused_within_bounded_memory(session):
    # CallRequest{cnode: "t", request: Payload{term: Term{list: List{elements: 4 M x Term{}}}}}:
    # 8 MB on the wire (under the default grpc.max_message_bytes), ~340 MB for protobuf-c
    # unpacked. Decoding is bounded by terms.max_bytes (64 MiB by default).
    raw = ld(1, b"t") + ld(2, ld(1, ld(7, b"\x0a\x00" * 4_000_000)))
    assert len(raw) < 8 << 20
    d = GrpcNodexd(session, [nx.test_cnode_spec("t")])
    try:
        d.start()
        d.wait_up("t")
        assert call(d, "t", T(A("ping"), B("warm"))).reply.term == T(A("pong"), B("warm"))
        before = _vm_kib(d.proc.pid, "VmHWM")
        fn = d.channel.unary_unary(SERVICE + "Call")
        code, msg = status_of(fn, raw, timeout=60)
        growth = _vm_kib(d.proc.pid, "VmHWM") - before
        print(f"VmHWM growth for the 8 MB request: {growth} KiB")
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "terms.max_bytes" in msg, msg
        if not nx.TSAN:  # ThreadSanitizer's shadow memory grows with what is touched
            assert growth < 100 << 10, f"peak RSS grew by {growth} KiB"
        assert call(d, "t", T(A("ping"), B("alive"))).reply.term == T(A("pong"), B("alive"))
    finally:
        d.close()


def test_200_concurrent_unary_calls(gw):
    futures = [gw.stub.Call.future(pb.CallRequest(cnode="t", request=P(T(A("ping"), B(f"p{i}")))),
                                   timeout=60) for i in range(200)]
    for i, f in enumerate(futures):
        assert f.result().reply.term == T(A("pong"), B(f"p{i}"))


def test_50_concurrent_watch_streams(gw):
    streams = [gw.stub.Watch(pb.WatchRequest(include_current=True), timeout=60)
               for _ in range(50)]
    for s in streams:
        first = [next(s) for _ in range(4)]
        assert {e.name for e in first} == {"t", "tagged", "victim", "broken"}
        assert all(e.kind == pb.Event.CNODE for e in first)
    for s in streams:
        s.cancel()
    assert call(gw, "t", T(A("ping"), B("w"))).reply.term == T(A("pong"), B("w"))


def test_watch_sees_kill_and_restart(gw):
    stream = gw.stub.Watch(pb.WatchRequest(include_current=True), timeout=30 * nx.SLOW)
    seen = []
    for ev in stream:  # the current states come first
        seen.append(ev)
        if len(seen) == 4:
            break
    victim = [e for e in seen if e.name == "victim"][0]
    assert victim.state == pb.UP and victim.os_pid > 0
    os.kill(victim.os_pid, signal.SIGKILL)
    states = []
    for ev in stream:
        if ev.name != "victim":
            continue
        states.append((ev.state, ev.reason))
        if ev.state == pb.UP:
            break
    stream.cancel()
    names = [s for s, _ in states]
    assert names[0] == pb.DOWN and states[0][1], states
    assert pb.STARTING in names and names[-1] == pb.UP, states
    assert names.index(pb.STARTING) < len(names) - 1
    gw.wait_up("victim")


def test_callstream_with_reply_filter(gw):
    msgs = list(gw.stub.CallStream(pb.CallRequest(cnode="tagged", request=P(
        T(A("noise"), I(3), B("n")))), timeout=10))
    assert [m.final for m in msgs] == [False, False, False, True]
    assert [m.message.term for m in msgs[:3]] == [T(A("noise"), I(i)) for i in (1, 2, 3)]
    assert msgs[3].message.term == T(A("pong"), B("n"))
    it = gw.stub.CallStream(pb.CallRequest(cnode="tagged", request=P(
        T(A("sleep"), I(2000), A("s"))), timeout_ms=300))
    code, msg = status_of(list, it)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_cast_list_and_get(gw):
    assert gw.stub.Cast(pb.CastRequest(cnode="t", message=P(T(A("ping"), B("c"))))) == \
        pb.CastReply()
    assert status_of(gw.stub.Cast, pb.CastRequest(cnode="zz", message=P(A("x"))))[0] == \
        grpc.StatusCode.NOT_FOUND
    lst = gw.stub.ListCnodes(pb.ListCnodesRequest())
    byname = {c.name: c for c in lst.cnodes}
    assert byname["t"].state == pb.UP and byname["broken"].state == pb.FAILED
    one = gw.stub.GetCnode(pb.GetCnodeRequest(name="t"))
    http = gw.info("t")
    assert one.os_pid == http["os_pid"] and one.node == http["node"]
    assert one.direction == "back" and one.protocol == "raw" and one.calls_total >= 1


def test_rpc_validation(gw):
    S = grpc.StatusCode
    code, _ = status_of(gw.stub.Rpc, pb.RpcRequest(node="", module="erlang", function="node"))
    assert code == S.INVALID_ARGUMENT
    code, msg = status_of(gw.stub.Rpc, pb.RpcRequest(node="x@127.0.0.1", module="erlang",
                                                     function="node", args=P(A("notalist"))))
    assert code == S.INVALID_ARGUMENT and "list" in msg
    code, _ = status_of(gw.stub.StopNode, pb.StopNodeRequest(node="nochild@127.0.0.1"))
    assert code == S.NOT_FOUND
    code, _ = status_of(gw.stub.SpawnNodes, pb.SpawnNodesRequest(count=0))
    assert code == S.INVALID_ARGUMENT
    assert isinstance(gw.stub.ListNodes(pb.ListNodesRequest()).nodes, object)


def test_shutdown_with_calls_in_flight(session):
    d = GrpcNodexd(session, [nx.test_cnode_spec("t")])
    d.start()
    d.wait_up("t")
    pending = [d.stub.Call.future(pb.CallRequest(cnode="t", request=P(
        T(A("sleep"), I(10_000), A("x")))), timeout=30) for _ in range(5)]
    watch = d.stub.Watch(pb.WatchRequest(include_current=True), timeout=30)
    assert next(watch).name == "t"
    nx.wait_until(lambda: d.info("t")["in_flight"] == 5, 5 * nx.SLOW, what="5 calls in flight")
    assert d.stop(signal.SIGTERM) == 0, d.log_tail()
    for f in pending:
        with pytest.raises(grpc.RpcError) as ei:
            f.result(timeout=10)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError) as ei:
        for _ in watch:
            pass
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    d.close()
    time.sleep(0.5)  # let the log pumps read the sanitizer's exit report
    if nx.SANITIZE:
        assert "ERROR: AddressSanitizer" not in d.log_text(), d.log_tail()
        assert "LeakSanitizer" not in d.log_text(), d.log_tail()


def test_health_is_the_grpc_twin_of_healthz_and_readyz(gw):
    # "broken" failed for good: not ready, and named as such.
    h = gw.stub.Health(pb.HealthRequest())
    assert h.alive is True
    assert h.ready is False
    assert list(h.not_ready) == ["broken"]
    r = gw.request("GET", "/readyz")
    assert r.status == 503  # the HTTP twin agrees


def test_health_ready_when_every_cnode_is_up(session):
    d = GrpcNodexd(session, [nx.test_cnode_spec("t")])
    d.start()
    try:
        d.wait_up("t")
        h = d.stub.Health(pb.HealthRequest())
        assert h.alive and h.ready and list(h.not_ready) == []
        assert d.request("GET", "/readyz").status == 200
    finally:
        d.close()


def test_fail_fast_refuses_while_starting_and_restart_cnode(session):
    d = GrpcNodexd(session, [nx.test_cnode_spec("slow", "slow_ready", str(int(4000 * nx.SLOW)),
                                                spawn_inactive_timeout_ms=int(30000 * nx.SLOW))])
    try:
        d.start()
        assert d.info("slow")["state"] == "starting"
        # fail_fast: UNAVAILABLE at once; the default waits for the C-node (wait-for-ready)
        code, msg = status_of(call, d, "slow", T(A("ping"), B("f")), fail_fast=True)
        assert code == grpc.StatusCode.UNAVAILABLE and "starting" in msg, msg
        r = call(d, "slow", T(A("ping"), B("w")), timeout=60 * nx.SLOW)
        assert r.reply.term == T(A("pong"), B("w"))
        assert d.stub.GetCnode(pb.GetCnodeRequest(name="slow")).waiting == 0
        old = d.info("slow")["os_pid"]
        d.stub.RestartCnode(pb.RestartCnodeRequest(name="slow"), timeout=10)
        d.wait_new_pid("slow", old, timeout=30)
        code, _ = status_of(d.stub.RestartCnode, pb.RestartCnodeRequest(name="nosuch"), timeout=10)
        assert code == grpc.StatusCode.NOT_FOUND
    finally:
        d.close()


def vm_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def test_callstream_whose_client_stops_reading_is_cut_off_by_bytes(session):
    """A CallStream client that never reads: nodexd holds at most grpc.max_stream_pending_bytes
    for it (its own queue plus the message gRPC is sending), then cancels the stream with
    RESOURCE_EXHAUSTED, logs and counts the cut, and cancels the call behind it. Before, the cap
    was 4096 messages of any size: 2000 x 100 kB all queued, 200 MB in nodexd."""
    cap = 1 << 20
    d = GrpcNodexd(session, [nx.test_cnode_spec("tagged", reply_filter={"tag": "reply"})],
                   grpc_cfg={"max_stream_pending_bytes": cap})
    d.start()
    d.wait_up("tagged")
    pid = d.proc.pid
    rss0 = vm_kib(pid, "VmRSS")
    # A client whose windows do not grow: it takes no more than 64 KiB it has not read.
    ch = grpc.insecure_channel(f"{nx.HOST}:{d.grpc_port}",
                               options=[("grpc.http2.bdp_probe", 0),
                                        ("grpc.http2.lookahead_bytes", 65536)])
    try:
        stub = pb_grpc.GatewayStub(ch)
        it = stub.CallStream(pb.CallRequest(cnode="tagged", request=P(
            T(A("flood"), I(2000), I(100000))), timeout_ms=120000), timeout=120)
        # never read until nodexd has cut the stream off
        nx.wait_until(lambda: "stream cut off" in d.log_text(), 60 * nx.SLOW, interval=0.1,
                      what="nodexd to cut the stream off")
        # the flood keeps coming in from the C-node; none of it stays in nodexd
        nx.wait_until(lambda: d.info("tagged")["dropped_messages"] >= 1000, 60 * nx.SLOW,
                      interval=0.1, what="the rest of the flood to be dropped")
        hwm = vm_kib(pid, "VmHWM")
        if not nx.SANITIZE:  # ASan's quarantine keeps the flood's freed read buffers
            assert hwm - rss0 < 64 * 1024, f"peak RSS {hwm} KiB, {rss0} KiB before the stream"
        with pytest.raises(grpc.RpcError) as ei:
            for _ in it:
                pass
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, ei.value
        assert "unread" in ei.value.details() and str(cap) in ei.value.details(), ei.value
        line = next(ln for ln in d.log_text().splitlines() if "stream cut off" in ln)
        assert "CallStream" in line and "(1 so far)" in line, line
        print(f"cap {cap} B: peak RSS {hwm - rss0} KiB over the {rss0} KiB before")
        # the C-node and the server are fine
        msgs = list(stub.CallStream(pb.CallRequest(cnode="tagged", request=P(
            T(A("noise"), I(1), B("after")))), timeout=30))
        assert msgs[-1].final and msgs[-1].message.term == T(A("pong"), B("after"))
    finally:
        ch.close()
        d.close()
