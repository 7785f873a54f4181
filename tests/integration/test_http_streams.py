"""test_http_streams: HTTP parity with gRPC's streams: GET /events (Watch) as Server-Sent Events
or NDJSON, and POST /cnodes/{name}/stream (CallStream) as NDJSON."""

import http.client
import json
import os
import signal
import socket
import threading
import time

import pytest

import nodex_harness as nx


def open_events(d, accept=None, query=""):
    conn = http.client.HTTPConnection(nx.HOST, d.port, timeout=20)
    headers = {"Accept": accept} if accept else {}
    conn.request("GET", "/events" + query, headers=headers)
    resp = conn.getresponse()
    return conn, resp


def read_sse_events(resp, count, timeout=10.0):
    """Reads `count` SSE events (skipping keep-alive comments) as (event, id, data) tuples."""
    events, cur = [], {}
    deadline = time.monotonic() + timeout * nx.SLOW
    while len(events) < count and time.monotonic() < deadline:
        line = resp.readline().decode().rstrip("\n")
        if line == "":
            if cur:
                events.append((cur.get("event"), cur.get("id"), json.loads(cur["data"])))
                cur = {}
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(": ")
        cur[key] = value
    return events


def read_ndjson(resp, count, timeout=10.0):
    out = []
    deadline = time.monotonic() + timeout * nx.SLOW
    while len(out) < count and time.monotonic() < deadline:
        line = resp.readline()
        if not line:
            break
        obj = json.loads(line)
        if obj.get("keepalive"):
            continue
        out.append(obj)
    return out


@pytest.fixture
def gw(session, nodexd):
    d = nodexd([nx.test_cnode_spec("t", reply_filter={"tag": "reply"})],
               node={"tick_time_ms": 1000})
    d.wait_up("t")
    return d


def test_events_sse_reports_current_state_then_kill_and_restart(gw):
    conn, resp = open_events(gw, query="?include_current=true")
    try:
        assert resp.status == 200
        assert resp.getheader("content-type").startswith("text/event-stream")
        (first,) = read_sse_events(resp, 1)
        assert first[0] == "up" and first[2]["name"] == "t" and first[2]["kind"] == "cnode"
        old = first[2]["os_pid"]
        assert old == gw.info("t")["os_pid"]
        os.kill(old, signal.SIGKILL)
        events = read_sse_events(resp, 4)
        states = [e[0] for e in events]
        assert states == ["down", "restarting", "starting", "up"], events
        assert events[0][2]["reason"], "a down event says why"
        assert events[-1][2]["os_pid"] not in (None, old)
        seqs = [int(e[1]) for e in events]
        assert seqs == sorted(seqs) and seqs[0] > 0
    finally:
        conn.close()


def test_events_ndjson_on_accept(gw):
    conn, resp = open_events(gw, accept="application/x-ndjson")
    try:
        assert resp.getheader("content-type").startswith("application/x-ndjson")
        os.kill(gw.info("t")["os_pid"], signal.SIGKILL)
        events = read_ndjson(resp, 2)
        assert [e["state"] for e in events] == ["down", "restarting"], events
    finally:
        conn.close()


def test_events_unacceptable_accept_is_406(gw):
    r = gw.request("GET", "/events", headers={"Accept": "application/xml"})
    assert r.status == 406 and r.json()["error"]["code"] == "not_acceptable"


def test_events_wrong_method_is_405(gw):
    r = gw.request("POST", "/events", body="")
    assert r.status == 405 and "GET" in r.headers["allow"]


def test_many_watchers_see_the_same_event_and_gone_clients_are_dropped(gw):
    watchers = [open_events(gw, accept="application/x-ndjson") for _ in range(20)]
    try:
        # Half the clients leave before anything happens: nodexd must not care.
        for conn, _ in watchers[10:]:
            conn.close()
        time.sleep(0.3)
        os.kill(gw.info("t")["os_pid"], signal.SIGKILL)
        for conn, resp in watchers[:10]:
            (ev,) = read_ndjson(resp, 1)
            assert ev["state"] == "down" and ev["name"] == "t"
        gw.wait_up("t")
        r = gw.call("t", '{"$tuple":[{"$atom":"noise"},0,"ok"]}', timeout_ms=3000)
        assert r.status == 200
    finally:
        for conn, _ in watchers[:10]:
            conn.close()


def test_events_request_during_shutdown_does_not_keep_nodexd_from_exiting(nodexd):
    """A GET /events that reaches nodexd while it stops is ended, not left suspended (which would
    make libmicrohttpd abort in MHD_stop_daemon). The drain closes the listener, so a connection
    still in its backlog may be reset instead."""
    d = nodexd([nx.test_cnode_spec("t")])
    d.wait_up("t")
    socks = [socket.create_connection((nx.HOST, d.port)) for _ in range(3)]
    try:
        d.proc.send_signal(signal.SIGTERM)
        for i, sock in enumerate(socks):
            time.sleep(0.01 * i)
            try:
                sock.sendall(
                    b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
            except (ConnectionResetError, BrokenPipeError):
                pass  # never accepted: the listener closed with it in the backlog
        status = d.proc.wait(timeout=15 * nx.SLOW)
    finally:
        for sock in socks:
            sock.close()
    assert status == 0, d.log_tail()
    assert "Fatal error" not in d.log_tail(), d.log_tail()


def stream_call(d, body, query="", content_type="application/x-erlang-text"):
    conn = http.client.HTTPConnection(nx.HOST, d.port, timeout=20)
    conn.request("POST", "/cnodes/t/stream" + query, body=body,
                 headers={"Content-Type": content_type})
    return conn, conn.getresponse()


def test_call_stream_sends_every_message_then_the_final_reply(gw):
    conn, resp = stream_call(gw, "{noise, 3, hi}")
    try:
        assert resp.status == 200
        assert resp.getheader("content-type").startswith("application/x-ndjson")
        lines = [json.loads(l) for l in resp.read().decode().splitlines()]
        assert [l["final"] for l in lines] == [False, False, False, True], lines
        assert [l["message"] for l in lines[:3]] == [
            {"$tuple": [{"$atom": "noise"}, i]} for i in (1, 2, 3)]
        assert lines[3]["message"] == {"$tuple": [{"$atom": "pong"}, {"$atom": "hi"}]}
    finally:
        conn.close()


def test_call_stream_timeout_is_the_last_line(gw, tmp_path):
    release = tmp_path / "release"  # the C-node holds the call until this exists
    conn, resp = stream_call(gw, f'{{wait_file, <<"{release}">>, x}}', query="?timeout_ms=200")
    try:
        lines = [json.loads(l) for l in resp.read().decode().splitlines()]
        assert lines == [{"error": {"code": "timeout",
                                    "message": "C-node t did not reply within 200 ms"}}]
    finally:
        release.touch()
        conn.close()


def test_call_stream_errors_before_the_stream_are_real_statuses(gw):
    r = gw.request("POST", "/cnodes/nosuch/stream", body="1",
                   headers={"Content-Type": "application/json"})
    assert r.status == 404 and r.json()["error"]["code"] == "not_found"
    r = gw.request("POST", "/cnodes/t/stream", body="{bad",
                   headers={"Content-Type": "application/x-erlang-text"})
    assert r.status == 400, r
    r = gw.request("GET", "/cnodes/t/stream")
    assert r.status == 405


def test_call_stream_kill_mid_stream_ends_with_unavailable_fast(gw):
    conn, resp = stream_call(gw, "{sleep, 60000, x}", query="?timeout_ms=60000")
    try:
        nx.wait_until(lambda: gw.info("t")["in_flight"] >= 1, 10, what="the call in flight")
        os.kill(gw.info("t")["os_pid"], signal.SIGKILL)
        lines = [json.loads(l) for l in resp.read().decode().splitlines()]
        # unavailable, not the timeout 60 s later: the stream ended when the C-node died
        assert lines[-1]["error"]["code"] == "unavailable", lines
    finally:
        conn.close()


def test_watch_open_at_shutdown_ends_cleanly(session, nodexd):
    d = nodexd([nx.test_cnode_spec("t")])
    d.wait_up("t")
    conn, resp = open_events(d)
    results = {}

    def drain():
        results["body"] = resp.read()

    t = threading.Thread(target=drain)
    t.start()
    time.sleep(0.2)
    d.stop()
    t.join(10)
    assert not t.is_alive(), "the event stream did not end at shutdown"
    assert d.proc.returncode == 0
    conn.close()


def test_erlang_node_events_share_the_stream_with_cnode_events(session, nodexd):
    # Child nodes started and stopped through the API report starting/up/down/stopped on the
    # same stream as C-nodes, as kind erlang_node.
    d = nodexd([nx.test_cnode_spec("t")], extra={
        "erlang_nodes": {"ready_timeout_ms": int(30000 * nx.SLOW), "name_prefix": d_prefix()}})
    d.wait_up("t")
    conn, resp = open_events(d, accept="application/x-ndjson")
    try:
        r = d.request("POST", "/nodes", body='{"count":1}',
                      headers={"Content-Type": "application/json"}, timeout=60)
        assert r.status == 201, r
        (node,) = r.json()["nodes"]
        up = [e for e in read_ndjson(resp, 2, timeout=30) if e["kind"] == "erlang_node"]
        assert [e["state"] for e in up] == ["starting", "up"], up
        assert all(e["name"] == node and e["node"] == node for e in up)
        child_pid = up[-1]["os_pid"]
        assert isinstance(child_pid, int) and child_pid > 0
        r = d.request("DELETE", f"/nodes/{node}")
        assert r.status == 202, r
        down = read_ndjson(resp, 2, timeout=30)
        assert [e["state"] for e in down] == ["down", "stopped"], down
        assert all(e["kind"] == "erlang_node" and e["name"] == node for e in down)
        nx.wait_until(lambda: not nx.proc_alive(child_pid), 10 * nx.SLOW,
                      what="the stopped child's process to end")
    finally:
        conn.close()


def d_prefix():
    return nx.unique("evchild")


def test_streams_that_expire_while_being_sent_never_touch_freed_calls(nodexd):
    """16 clients x 40 streams with ?timeout_ms=1 on an HTTP pool: the loop ends (and frees) many
    calls while gateway_call is still sending them (14.1: it read the call's pid after the lock;
    under AddressSanitizer that was a heap-use-after-free). Every stream answers, nodexd lives."""
    d = nodexd([nx.test_cnode_spec("t")], http={"threads": 2})
    d.wait_up("t")
    errors = []

    def client():
        for _ in range(40):
            conn, resp = stream_call(d, "{ping, <<\"x\">>}", query="?timeout_ms=1")
            try:
                body = resp.read().decode()
                last = json.loads(body.splitlines()[-1])
                if resp.status != 200 or not ("message" in last or
                                              last["error"]["code"] == "timeout"):
                    errors.append((resp.status, body))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
            finally:
                conn.close()

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:5]
    assert d.proc.poll() is None, d.log_tail()
    assert d.call("t", nx.tup(nx.atom("ping"), "after")).status == 200
