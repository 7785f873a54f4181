"""test_http_limits: per-address connection cap, header and body deadlines, the body budget."""

import json
import select
import socket
import time

import nodex_harness as nx

# Bounds for things that must happen "eventually": generous, never met on a success path.
EVENTUALLY = 60 * nx.SLOW


def start(session, **http):
    d = nx.Nodexd(session, [nx.test_cnode_spec("t")], http=http)
    d.start()
    d.wait_up("t")
    return d


def connect(d, source="127.0.0.1"):
    s = socket.create_connection((nx.HOST, d.port), timeout=EVENTUALLY,
                                 source_address=(source, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_response(s):
    """One HTTP/1.1 response off socket `s`: (status, body bytes); (None, b"") if it closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            assert not data, f"closed inside a response: {data[:200]!r}"
            return None, b""
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, "closed inside a response body"
        body += chunk
    return int(lines[0].split()[1]), body


def get_healthz(s):
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return read_response(s)


def closed_by_server(s):
    """True once the server has closed `s` (end of stream or reset); False while it is open."""
    r, _, _ = select.select([s], [], [], 0.25)
    if not r:
        return False
    try:
        return s.recv(65536) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def trickle_until_cut(s, data):
    """Sends `data` one byte every 0.25 s until the server closes `s`; returns the bytes sent."""
    deadline = time.monotonic() + EVENTUALLY
    for i, b in enumerate(data):
        try:
            s.sendall(bytes([b]))
        except (ConnectionResetError, BrokenPipeError):
            return i
        if closed_by_server(s):
            return i + 1
        assert time.monotonic() < deadline, "a trickling client was never cut off"
    raise AssertionError("sent everything and was never cut off")


def server_queue(d, s):
    """Bytes nodexd has not read yet from client socket `s` (its receive queue), or None."""
    port, peer = d.port, s.getsockname()[1]
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) == peer:
                return int(fields[4].split(":")[1], 16)
    return None


def call_request(body, length=None):
    head = (f"POST /cnodes/t/call HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length or len(body)}\r\n\r\n")
    return head.encode() + body


def ping_body(payload):
    return json.dumps({"$tuple": [{"$atom": "ping"}, payload]}).encode()


def test_one_address_gets_max_connections_per_ip_and_others_are_served(session):
    d = start(session, max_connections_per_ip=4)
    opened, held = [], []  # every socket (closed at the end); the served ones we hold

    def served():
        s = connect(d)
        opened.append(s)
        try:
            ok = get_healthz(s)[0] == 200
        except ConnectionResetError:
            ok = False
        if ok:
            held.append(s)
        return ok
    try:
        # four served connections (a slot may still be taken by the harness's last request,
        # closed on our side a moment ago: a connection refused meanwhile is retried)
        for _ in range(4):
            nx.wait_until(served, EVENTUALLY, interval=0.1, what="a served connection")
        extra = connect(d)  # the kernel accepts it; nodexd closes it without an answer
        opened.append(extra)
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            assert read_response(extra) == (None, b"")
        except ConnectionResetError:
            pass
        assert get_healthz(held[0])[0] == 200  # the four still are served
        other = connect(d, source="127.0.0.2")  # another address has its own four
        opened.append(other)
        assert get_healthz(other)[0] == 200
        held[1].close()  # a place is free again: a new connection gets it, eventually
        nx.wait_until(served, EVENTUALLY, interval=0.1, what="a connection after one closed")
    finally:
        for s in opened:
            s.close()
        d.close()


def test_headers_trickled_a_byte_at_a_time_are_cut_at_header_timeout_ms(session):
    d = start(session, header_timeout_ms=1000)
    try:
        s = connect(d)
        sent = trickle_until_cut(s, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X" * 10000)
        s.close()
        assert sent < 10000
        assert d.request("GET", "/healthz").status == 200  # others are served
        nx.wait_until(lambda: "1 header, 0 body timeouts so far" in d.log_text(), EVENTUALLY,
                      what="the cut counted")
        # keep-alive: a request and then one more within the deadline, each its own deadline
        s = connect(d)
        assert get_healthz(s)[0] == 200
        assert get_healthz(s)[0] == 200
        s.close()
    finally:
        d.close()


def test_a_body_trickled_a_byte_at_a_time_is_cut_at_body_timeout_ms(session):
    d = start(session, body_timeout_ms=1000)
    try:
        s = connect(d)
        s.sendall(call_request(b"", length=10000))
        sent = trickle_until_cut(s, b"[" + b"1," * 5000)
        s.close()
        assert sent < 10000
        nx.wait_until(lambda: "0 header, 1 body timeouts so far" in d.log_text(), EVENTUALLY,
                      what="the cut counted")
        r = d.call("t", ping_body("fast"))  # a body sent at once is served
        assert r.status == 200 and r.json() == {"$tuple": [{"$atom": "pong"}, "fast"]}, r
    finally:
        d.close()


def test_bodies_held_at_once_share_body_budget_bytes(session):
    mib = 1 << 20
    d = start(session, max_body_bytes=mib, body_budget_bytes=mib)
    held = None
    try:
        big = ping_body("a" * 700_000)
        held = connect(d)
        held.sendall(call_request(big[:-10], length=len(big)))  # 700 kB held, not finished
        # nodexd has taken them in (else another upload could take the budget first)
        nx.wait_until(lambda: server_queue(d, held) == 0, EVENTUALLY, what="the upload read")
        mid = ping_body("b" * 400_000)

        def refused():
            r = d.call("t", mid)
            assert r.status in (200, 503), r
            return r if r.status == 503 else None
        r = nx.wait_until(refused, EVENTUALLY, interval=0.05, what="503 once the budget is full")
        assert r.json()["error"]["code"] == "busy" and "body_budget_bytes" in r.json()[
            "error"]["message"], r
        assert r.headers.get("retry-after") == "1"
        r = d.call("t", ping_body("small"))  # what still fits is served
        assert r.status == 200 and r.json() == {"$tuple": [{"$atom": "pong"}, "small"]}, r
        held.sendall(big[-10:])  # the held upload finishes and is answered
        status, body = read_response(held)
        assert status == 200 and json.loads(body)["$tuple"][1] == "a" * 700_000
        nx.wait_until(lambda: d.call("t", mid).status == 200, EVENTUALLY, interval=0.05,
                      what="the budget given back")
        assert "http.body_budget_bytes (1048576) is full" in d.log_text()
    finally:
        if held:
            held.close()
        d.close()
