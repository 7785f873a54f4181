"""test_observability: /metrics (parsed by Prometheus' own parser), the access log, request ids
and the W3C trace context, on HTTP and gRPC alike."""

import json
import os
import signal
import socket

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

import nodex_harness as nx
from nodex_harness import atom, tup
from test_grpc_server import GrpcNodexd, pb, pb_grpc, A, B, I, T, P, status_of

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def gw(session):
    d = GrpcNodexd(session, [nx.test_cnode_spec("t"),
                             nx.test_cnode_spec("pool", instances=2)],
                   extra={"log": {"access": True, "format": "json"}})
    d.start()
    d.wait_up("t")
    d.wait_up("pool")
    yield d
    d.close()


def scrape(d, **kw):
    r = d.request("GET", "/metrics", **kw)
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.headers
    families = {f.name: f for f in text_string_to_metric_families(r.body.decode())}
    return families


def sample(families, family, name=None, **labels):
    """The value of the one sample of `family` whose labels include `labels`."""
    f = families[family]
    found = [s.value for s in f.samples
             if (name is None or s.name == name) and all(s.labels.get(k) == v
                                                         for k, v in labels.items())]
    assert len(found) == 1, (family, labels, [s for s in f.samples][:20])
    return found[0]


def access_lines(d):
    out = []
    for tag, line in list(d.lines):
        if tag != "err":
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") == "access":
            out.append(rec)
    return out


def test_metrics_count_calls_by_outcome_with_latency_and_bytes(gw):
    before = scrape(gw)
    ok0 = sample(before, "nodex_cnode_calls", "nodex_cnode_calls_total", cnode="t",
                 instance="1", outcome="ok")
    to0 = sample(before, "nodex_cnode_calls", "nodex_cnode_calls_total", cnode="t",
                 instance="1", outcome="timeout")
    n0 = sample(before, "nodex_cnode_call_duration_seconds",
                "nodex_cnode_call_duration_seconds_count", cnode="t", instance="1")
    for i in range(5):
        assert gw.call("t", tup(atom("ping"), f"m{i}")).status == 200
    r = gw.call("t", tup(atom("sleep"), 2000, atom("x")), timeout_ms=100)
    assert r.status == 504, r
    after = scrape(gw)
    assert sample(after, "nodex_cnode_calls", "nodex_cnode_calls_total", cnode="t",
                  instance="1", outcome="ok") == ok0 + 5
    assert sample(after, "nodex_cnode_calls", "nodex_cnode_calls_total", cnode="t",
                  instance="1", outcome="timeout") == to0 + 1
    assert sample(after, "nodex_cnode_call_duration_seconds",
                  "nodex_cnode_call_duration_seconds_count", cnode="t", instance="1") == n0 + 6
    # the timed-out call took at least its 100 ms: it is above the 0.05 s bucket
    over = (sample(after, "nodex_cnode_call_duration_seconds",
                   "nodex_cnode_call_duration_seconds_count", cnode="t", instance="1")
            - sample(after, "nodex_cnode_call_duration_seconds",
                     "nodex_cnode_call_duration_seconds_bucket", cnode="t", instance="1",
                     le="0.05"))
    assert over >= 1
    inf = sample(after, "nodex_cnode_call_duration_seconds",
                 "nodex_cnode_call_duration_seconds_bucket", cnode="t", instance="1", le="+Inf")
    assert inf == n0 + 6
    assert sample(after, "nodex_cnode_received_bytes", "nodex_cnode_received_bytes_total",
                  cnode="t", instance="1") > 0
    assert sample(after, "nodex_cnode_sent_bytes", "nodex_cnode_sent_bytes_total",
                  cnode="t", instance="1") > 0
    assert sample(after, "nodex_cnode_up", cnode="t", instance="1") == 1
    assert sample(after, "nodex_cnode_state", cnode="t", instance="1", state="up") == 1
    assert sample(after, "nodex_cnode_state", cnode="t", instance="1", state="failed") == 0
    # the late reply of the timed-out call is dropped and counted by cause
    nx.wait_until(lambda: sample(scrape(gw), "nodex_cnode_dropped_messages",
                                 "nodex_cnode_dropped_messages_total", cnode="t", instance="1",
                                 cause="no_call") >= 1, 10 * nx.SLOW, what="the late reply")


def test_metrics_per_instance_restarts_and_process(gw):
    info = gw.get_json("/cnodes/pool")
    m = scrape(gw)
    for inst in ("1", "2"):
        assert sample(m, "nodex_cnode_up", cnode="pool", instance=inst) == 1
    r0 = sample(m, "nodex_cnode_restarts", "nodex_cnode_restarts_total", cnode="pool",
                instance="1")
    inst1 = [i for i in info.get("pool", []) if i.get("instance") == 1]
    assert inst1, info
    os.kill(inst1[0]["os_pid"], signal.SIGKILL)
    nx.wait_until(lambda: sample(scrape(gw), "nodex_cnode_restarts",
                                 "nodex_cnode_restarts_total", cnode="pool",
                                 instance="1") == r0 + 1, 10 * nx.SLOW, what="the restart")
    gw.wait_up("pool")
    m = scrape(gw)
    assert sample(m, "nodex_cnode_restarts", "nodex_cnode_restarts_total", cnode="pool",
                  instance="2") == 0
    assert sample(m, "process_resident_memory_bytes") > 1 << 20
    fds = sample(m, "process_open_fds")
    assert 5 < fds == pytest.approx(len(os.listdir(f"/proc/{gw.proc.pid}/fd")), abs=3)
    assert sample(m, "nodex_uptime_seconds") > 0
    assert sample(m, "nodex_ready") in (0, 1)
    assert sample(m, "nodex_cnode_waiting", cnode="pool") == 0


def test_metrics_count_http_and_grpc_requests_by_route_and_status(gw):
    m = scrape(gw)

    def http_count(fams, route, status):
        f = fams["nodex_http_requests"]
        return sum(s.value for s in f.samples
                   if s.labels == {"route": route, "status": status})

    def grpc_count(fams, method, code):
        f = fams.get("nodex_grpc_requests")
        return 0 if f is None else sum(s.value for s in f.samples
                                       if s.labels == {"method": method, "code": code})

    c404 = http_count(m, "unmatched", "404")
    c200 = http_count(m, "POST /cnodes/{name}/call", "200")
    g_ok = grpc_count(m, "/nodex.v1.Gateway/Call", "0")
    g_nf = grpc_count(m, "/nodex.v1.Gateway/Call", "5")
    assert gw.request("GET", "/no/such/route").status == 404
    assert gw.call("t", tup(atom("ping"), "x")).status == 200
    assert gw.stub.Call(pb.CallRequest(cnode="t", request=P(T(A("ping"), B("g")))),
                        timeout=30).reply.term == T(A("pong"), B("g"))
    code, _ = status_of(lambda: gw.stub.Call(pb.CallRequest(cnode="nope",
                                                            request=P(T(A("ping"), B("")))),
                                             timeout=30))
    assert code == grpc.StatusCode.NOT_FOUND
    m = scrape(gw)
    assert http_count(m, "unmatched", "404") == c404 + 1
    assert http_count(m, "POST /cnodes/{name}/call", "200") == c200 + 1
    assert grpc_count(m, "/nodex.v1.Gateway/Call", "0") == g_ok + 1
    assert grpc_count(m, "/nodex.v1.Gateway/Call", "5") == g_nf + 1
    # the request path is never a label: an unknown path adds no series
    for i in range(3):
        gw.request("GET", f"/random/{i}")
    names = {s.labels.get("route") for s in scrape(gw)["nodex_http_requests"].samples}
    assert not any(n and "random" in n for n in names), names


def test_http_request_id_is_echoed_or_made_and_logged(gw):
    r = gw.request("GET", "/cnodes/t", headers={"X-Request-Id": "req-abc.123"})
    assert r.headers["x-request-id"] == "req-abc.123"
    made = gw.call("t", tup(atom("ping"), "y")).headers["x-request-id"]
    assert len(made) == 32 and all(c in "0123456789abcdef" for c in made), made
    other = gw.call("t", tup(atom("ping"), "y")).headers["x-request-id"]
    assert other != made
    # one that is not safe in a header or a log line is replaced, not echoed
    r = gw.request("GET", "/cnodes/t", headers={"X-Request-Id": "x" * 200})
    assert r.headers["x-request-id"] != "x" * 200 and len(r.headers["x-request-id"]) == 32
    # errors carry it too
    r = gw.request("GET", "/nowhere", headers={"X-Request-Id": "err-1"})
    assert r.status == 404 and r.headers["x-request-id"] == "err-1"

    def logged():
        recs = {rec.get("request_id"): rec for rec in access_lines(gw)}
        return recs if "req-abc.123" in recs and made in recs and "err-1" in recs else None

    recs = nx.wait_until(logged, 10 * nx.SLOW, what="the access lines")
    a = recs["req-abc.123"]
    assert a["transport"] == "http" and a["method"] == "GET" and a["status"] == 200
    assert a["route"] == "GET /cnodes/{name}" and a["target"] == "t"
    assert a["peer"] == "127.0.0.1" and a["principal"] == "anonymous"
    assert isinstance(a["duration_us"], int) and a["duration_us"] >= 0
    assert a["bytes_out"] > 0
    c = recs[made]
    assert c["route"] == "POST /cnodes/{name}/call" and c["bytes_in"] > 0 and c["status"] == 200
    e = recs["err-1"]
    assert e["status"] == 404 and e["code"] == "not_found"


def test_traceparent_is_logged_and_a_bad_one_is_dropped(gw):
    gw.request("POST", "/cnodes/t/call", json.dumps(tup(atom("ping"), "tp")),
               {"Content-Type": "application/json", "X-Request-Id": "trace-1",
                "traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa"})
    gw.request("GET", "/cnodes", headers={"X-Request-Id": "trace-2",
                                          "traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
                                          "tracestate": "x=y"})

    def logged():
        recs = {rec.get("request_id"): rec for rec in access_lines(gw)}
        return recs if "trace-1" in recs and "trace-2" in recs else None

    recs = nx.wait_until(logged, 10 * nx.SLOW, what="the access lines")
    assert recs["trace-1"]["traceparent"] == TRACEPARENT
    assert recs["trace-1"]["tracestate"] == "congo=t61rcWkgMzE,rojo=00f067aa"
    assert recs["trace-2"]["traceparent"] is None  # an all-zero trace id is invalid
    assert recs["trace-2"]["tracestate"] is None  # and its tracestate goes with it


def test_grpc_request_id_is_made_when_absent_and_logged_with_trace(gw):
    r, c = gw.stub.Call.with_call(pb.CallRequest(cnode="t", request=P(T(A("ping"), B("n")))),
                                  timeout=30)
    md = dict(c.initial_metadata())
    assert len(md["x-request-id"]) == 32, md
    r, c = gw.stub.Call.with_call(pb.CallRequest(cnode="t", request=P(T(A("ping"), B("n")))),
                                  metadata=(("x-request-id", "g-42"),
                                            ("traceparent", TRACEPARENT)), timeout=30)
    assert dict(c.initial_metadata())["x-request-id"] == "g-42"

    def logged():
        recs = {rec.get("request_id"): rec for rec in access_lines(gw)}
        return recs.get("g-42")

    a = nx.wait_until(logged, 10 * nx.SLOW, what="the gRPC access line")
    assert a["transport"] == "grpc" and a["method"] == "/nodex.v1.Gateway/Call"
    assert a["status"] == 0 and a["target"] == "t" and a["traceparent"] == TRACEPARENT
    assert a["bytes_in"] > 0 and a["bytes_out"] > 0 and a["principal"] == "anonymous"


def test_access_log_is_off_by_default(session, nodexd):
    d = nodexd([nx.test_cnode_spec("t")])
    d.wait_up("t")
    assert d.call("t", tup(atom("ping"), "x")).status == 200
    assert d.request("GET", "/metrics").status == 200
    assert d.stop_and_drain() == 0
    assert '"access"' not in d.log_text() and " access " not in d.log_text()


def test_metrics_need_a_token_when_auth_is_on(session, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret-metrics-token\n")
    os.chmod(tokens, 0o600)
    d = nx.Nodexd(session, [nx.test_cnode_spec("t")],
                  extra={"auth": {"principals": [{"name": "scraper",
                                                  "token_file": str(tokens),
                                                  "allow": []}]}})
    try:
        d.start()
        r = d.request("GET", "/metrics")
        assert r.status == 401 and r.json()["error"]["code"] == "unauthenticated"
        d.token = "s3cret-metrics-token"
        assert "nodex_cnode_up" in d.request("GET", "/metrics").body.decode()
    finally:
        d.close()


def stream_cuts(d):
    f = scrape(d)
    return {t: sample(f, "nodex_stream_cuts", "nodex_stream_cuts_total", transport=t,
                      cause="unread_bytes") for t in ("http", "grpc")}


def test_a_stream_whose_client_never_reads_is_cut_and_counted_once_per_transport(session):
    """nodex_stream_cuts_total: a real cut on each transport moves its series by exactly one."""
    d = GrpcNodexd(session, [nx.test_cnode_spec("tagged", reply_filter={"tag": "reply"})],
                   grpc_cfg={"max_stream_pending_bytes": 1 << 20})
    d.start()
    ch = None
    try:
        d.wait_up("tagged")
        assert stream_cuts(d) == {"http": 0, "grpc": 0}  # listed before the first cut
        flood = tup(atom("flood"), 400, 100000)  # 40 MB for the client
        # HTTP: a call stream whose client reads nothing (tiny receive buffer) past the 8 MiB cap
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((nx.HOST, d.port))
        body = json.dumps(flood).encode()
        s.sendall(b"POST /cnodes/tagged/stream HTTP/1.1\r\nHost: " + f"{nx.HOST}:{d.port}".encode() +
                  b"\r\nContent-Type: application/json\r\nContent-Length: " +
                  str(len(body)).encode() + b"\r\n\r\n" + body)
        try:
            nx.wait_until(lambda: stream_cuts(d)["http"] > 0, 60 * nx.SLOW, interval=0.1,
                          what="the HTTP stream cut off")
            # the cut ended the call behind it: the rest of the flood is dropped, never cut again
            nx.wait_until(lambda: d.info("tagged")["in_flight"] == 0, 60 * nx.SLOW,
                          what="the HTTP call to end")
            assert stream_cuts(d) == {"http": 1, "grpc": 0}
        finally:
            s.close()
        assert "http: call stream cut off" in d.log_text() and "(1 so far)" in d.log_text()
        # gRPC: a CallStream whose client's windows never grow and who reads nothing
        ch = grpc.insecure_channel(f"{nx.HOST}:{d.grpc_port}",
                                   options=[("grpc.http2.bdp_probe", 0),
                                            ("grpc.http2.lookahead_bytes", 65536)])
        it = pb_grpc.GatewayStub(ch).CallStream(pb.CallRequest(
            cnode="tagged", request=P(T(A("flood"), I(400), I(100000))), timeout_ms=120000),
            timeout=120)
        nx.wait_until(lambda: stream_cuts(d)["grpc"] > 0, 60 * nx.SLOW, interval=0.1,
                      what="the gRPC stream cut off")
        nx.wait_until(lambda: d.info("tagged")["in_flight"] == 0, 60 * nx.SLOW,
                      what="the gRPC call to end")
        with pytest.raises(grpc.RpcError) as ei:
            for _ in it:
                pass
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, ei.value
        assert stream_cuts(d) == {"http": 1, "grpc": 1}
    finally:
        if ch:
            ch.close()
        d.close()
