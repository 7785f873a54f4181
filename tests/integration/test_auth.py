"""test_auth: authentication and authorization on both transports (every route without a token,
with a wrong one, with one lacking the permission), the browser door (Origin, CORS, form bodies,
Host), rpc only to nodes nodexd knows (checked with a listener that counts connects), the
refusal to start on a public address without auth, the operations that are off by default, the
cookie kept from children, and children and nodexd's epmd on loopback when node.listen is."""

import os
import signal
import socket
import subprocess
import threading

import pytest

import nodex_harness as nx
from test_grpc_server import GrpcNodexd, pb, A, B, T, P, status_of

grpc = pytest.importorskip("grpc")

PING = '{"$tuple":[{"$atom":"ping"},"auth"]}'
PONG = '{"$tuple":[{"$atom":"pong"},"auth"]}'
JSON = {"Content-Type": "application/json"}

# (method, path, body): every route but the probes
ROUTES = [
    ("GET", "/cnodes", None),
    ("GET", "/cnodes/t", None),
    ("POST", "/cnodes/t/call", PING),
    ("POST", "/cnodes/t/cast", PING),
    ("POST", "/cnodes/t/stream", PING),
    ("GET", "/events", None),
    ("GET", "/nodes", None),
    ("POST", "/nodes", '{"count":1}'),
    ("DELETE", "/nodes/child1@127.0.0.1", None),
    ("POST", "/nodes/child1@127.0.0.1/rpc", '{"module":"erlang","function":"node","args":[]}'),
    ("PUT", "/nodes/child1@127.0.0.1/modules/m", "beam"),
    ("POST", "/cnodes/u/restart", None),
]


token_file = nx.token_file


@pytest.fixture(scope="module")
def authd(session):
    """nodexd with three principals: full (every permission), caller (call on t only), watcher."""
    full_path, full = token_file(session, "full")
    caller_path, caller = token_file(session, "caller")
    watcher_path, watcher = token_file(session, "watcher")
    restarter_path, restarter = token_file(session, "restarter")
    principals = [
        {"name": "full", "token_file": full_path,
         "allow": ["call", "cast", "stream", "watch", "rpc", "modules.load", "nodes.spawn",
                   "nodes.stop"]},
        {"name": "caller", "token_file": caller_path, "allow": ["call:t"]},
        {"name": "watcher", "token_file": watcher_path, "allow": ["watch"]},
        {"name": "restarter", "token_file": restarter_path, "allow": ["cnodes.restart:u*"]},
    ]
    d = GrpcNodexd(session, [nx.test_cnode_spec("t"), nx.test_cnode_spec("u")],
                   extra={"auth": {"principals": principals}})
    d.token = full
    d.start()
    d.wait_up("t")
    d.wait_up("u")
    d.tokens = {"full": full, "caller": caller, "watcher": watcher, "restarter": restarter}
    yield d
    d.close()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def md(token):
    return (("authorization", f"Bearer {token}"),)


# --- HTTP ------------------------------------------------------------------------------------
def test_every_http_route_without_a_token_is_401_with_a_challenge(authd):
    for method, path, body in ROUTES:
        r = nx.http_request(authd.port, method, path, body, JSON if body else {})
        assert r.status == 401, (method, path, r)
        assert r.headers["www-authenticate"] == 'Bearer realm="nodexd"', r.headers
        assert r.json()["error"]["code"] == "unauthenticated", r
    # the probes stay open
    assert nx.http_request(authd.port, "GET", "/healthz").status == 200
    assert nx.http_request(authd.port, "GET", "/readyz").status == 200


def test_a_wrong_token_is_401_invalid_token(authd):
    for method, path, body in ROUTES[:3]:
        r = nx.http_request(authd.port, method, path, body,
                            dict(JSON, **bearer("not-" + authd.tokens["full"])))
        assert r.status == 401, r
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        assert "not valid" in r.json()["error"]["message"]
    r = nx.http_request(authd.port, "GET", "/cnodes", None, {"Authorization": "Basic eDp5"})
    assert r.status == 401 and "Bearer <token>" in r.json()["error"]["message"], r


def test_a_token_without_the_permission_is_403_naming_it(authd):
    caller = bearer(authd.tokens["caller"])
    r = nx.http_request(authd.port, "POST", "/cnodes/t/call", PING, dict(JSON, **caller))
    assert r.status == 200 and r.body.decode() == PONG, r
    expect = {
        "/cnodes/u/call": "'call' for u",
        "/cnodes/t/cast": "'cast'",  # no grant of it at all: refused before the target
        "/cnodes/t/stream": "'stream'",
        "/events": "'watch'",
        "/nodes": "'nodes.spawn'",
        "/nodes/child1@127.0.0.1": "'nodes.stop'",
        "/nodes/child1@127.0.0.1/rpc": "'rpc'",
        "/nodes/child1@127.0.0.1/modules/m": "'modules.load'",
        "/cnodes/u/restart": "'cnodes.restart'",
    }
    methods = {"/events": "GET", "/nodes/child1@127.0.0.1": "DELETE",
               "/nodes/child1@127.0.0.1/modules/m": "PUT"}
    bodies = {p: b for _, p, b in ROUTES}
    for path, needle in expect.items():
        r = nx.http_request(authd.port, methods.get(path, "POST"), path,
                            bodies.get(path, PING), dict(JSON, **caller))
        assert r.status == 403, (path, r)
        err = r.json()["error"]
        assert err["code"] == "permission_denied" and needle in err["message"], (path, err)
        assert "caller" in err["message"]
    # cnodes.restart:u* restarts u, not t
    restarter = bearer(authd.tokens["restarter"])
    r = nx.http_request(authd.port, "POST", "/cnodes/t/restart", None, restarter)
    assert r.status == 403 and "'cnodes.restart' for t" in r.json()["error"]["message"], r
    old = authd.info("u")["os_pid"]
    assert nx.http_request(authd.port, "POST", "/cnodes/u/restart", None, restarter).status == 202
    authd.wait_new_pid("u", old, timeout=30)
    # status is readable by every principal
    r = nx.http_request(authd.port, "GET", "/cnodes", None, caller)
    assert r.status == 200 and len(r.json()["cnodes"]) == 2, r
    # a watcher may watch
    conn = authd.connection(timeout=10)
    conn.request("GET", "/events?include_current=true",
                 headers=dict(bearer(authd.tokens["watcher"]), Accept="application/x-ndjson"))
    resp = conn.getresponse()
    assert resp.status == 200
    assert b'"state":"up"' in resp.readline()
    conn.close()


def test_a_token_without_the_permission_is_403_whatever_the_arguments(authd):
    """Authorization comes first: a malformed body, a bad query or Accept, a C-node that does not
    exist tell a principal without the permission nothing but 403; with it, the real error."""
    caller, full = bearer(authd.tokens["caller"]), bearer(authd.tokens["full"])
    restarter = bearer(authd.tokens["restarter"])
    cases = [  # (method, path, body, headers, the status with the permission)
        ("POST", "/nodes", "{bad", JSON, 400),                # spawn: a malformed body
        ("POST", "/nodes", '{"count":0}', JSON, 400),         # spawn: a count out of range
        ("POST", "/nodes", '{"count":1}', {"Content-Type": "text/plain"}, 415),
        ("POST", "/nodes/child1@127.0.0.1/rpc", "{bad", JSON, 400),
        ("POST", "/nodes/child1@127.0.0.1/rpc", '{"module":"erlang"}', JSON, 400),
        ("POST", "/cnodes/t/cast", "{bad", JSON, 400),
        ("POST", "/cnodes/t/stream", PING, dict(JSON, Accept="text/html"), 406),
        ("GET", "/events", None, {"Accept": "text/html"}, 406),
    ]
    for method, path, body, headers, status in cases:
        r = nx.http_request(authd.port, method, path, body, dict(headers, **caller))
        assert r.status == 403, (method, path, body, r)
        assert r.json()["error"]["code"] == "permission_denied", r
        r = nx.http_request(authd.port, method, path, body, dict(headers, **full))
        assert r.status == status, (method, path, body, r)
    # a target the principal may not reach: 403 before whether it exists or the query is read
    for path, needle in [("/cnodes/nosuch/call", "'call' for nosuch"),
                         ("/cnodes/u/call?wait=maybe", "'call' for u"),
                         ("/cnodes/u/call?timeout_ms=abc", "'call' for u")]:
        r = nx.http_request(authd.port, "POST", path, PING, dict(JSON, **caller))
        assert r.status == 403 and needle in r.json()["error"]["message"], (path, r)
    assert nx.http_request(authd.port, "POST", "/cnodes/nosuch/call", PING,
                           dict(JSON, **full)).status == 404
    assert nx.http_request(authd.port, "POST", "/cnodes/t/call?wait=maybe", PING,
                           dict(JSON, **caller)).status == 400  # caller may call t
    r = nx.http_request(authd.port, "POST", "/cnodes/nosuch/restart", None, restarter)
    assert r.status == 403 and "'cnodes.restart' for nosuch" in r.json()["error"]["message"], r
    r = nx.http_request(authd.port, "POST", "/cnodes/uz/restart", None, restarter)
    assert r.status == 404, r  # restarter may restart u*: the name is what is wrong
    # gRPC: a message that does not decode is refused by who sends it first
    cast = authd.channel.unary_unary("/nodex.v1.Gateway/Cast")
    code, msg = status_of(lambda: cast(b"\xff\xff\xff", metadata=md(authd.tokens["caller"]),
                                       timeout=10))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "'cast'" in msg, (code, msg)
    code, msg = status_of(lambda: cast(b"\xff\xff\xff", timeout=10))
    assert code == grpc.StatusCode.UNAUTHENTICATED, (code, msg)
    code, msg = status_of(lambda: cast(b"\xff\xff\xff", metadata=md(authd.tokens["full"]),
                                       timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, msg)


# --- gRPC ------------------------------------------------------------------------------------
def grpc_calls(stub):
    """One request per method but Health, each as (name, callable taking metadata)."""
    req = pb.CallRequest(cnode="t", request=P(T(A("ping"), B("g"))))
    return [
        ("Call", lambda m: stub.Call(req, metadata=m, timeout=10)),
        ("Cast", lambda m: stub.Cast(pb.CastRequest(cnode="t", message=P(A("x"))), metadata=m,
                                     timeout=10)),
        ("CallStream", lambda m: list(stub.CallStream(req, metadata=m, timeout=10))),
        ("ListCnodes", lambda m: stub.ListCnodes(pb.ListCnodesRequest(), metadata=m, timeout=10)),
        ("GetCnode", lambda m: stub.GetCnode(pb.GetCnodeRequest(name="t"), metadata=m,
                                             timeout=10)),
        ("Watch", lambda m: next(iter(stub.Watch(pb.WatchRequest(include_current=True),
                                                 metadata=m, timeout=10)))),
        ("ListNodes", lambda m: stub.ListNodes(pb.ListNodesRequest(), metadata=m, timeout=10)),
        ("SpawnNodes", lambda m: stub.SpawnNodes(pb.SpawnNodesRequest(count=1), metadata=m,
                                                 timeout=10)),
        ("StopNode", lambda m: stub.StopNode(pb.StopNodeRequest(node="child1@127.0.0.1"),
                                             metadata=m, timeout=10)),
        ("Rpc", lambda m: stub.Rpc(pb.RpcRequest(node="child1@127.0.0.1", module="erlang",
                                                 function="node"), metadata=m, timeout=10)),
        ("LoadModule", lambda m: stub.LoadModule(
            pb.LoadModuleRequest(node="child1@127.0.0.1", module="m", beam=b"x"), metadata=m,
            timeout=10)),
        ("RestartCnode", lambda m: stub.RestartCnode(pb.RestartCnodeRequest(name="u"),
                                                     metadata=m, timeout=10)),
    ]


def test_every_grpc_method_without_a_token_is_unauthenticated(authd):
    for name, fn in grpc_calls(authd.stub):
        code, msg = status_of(fn, ())
        assert code == grpc.StatusCode.UNAUTHENTICATED, (name, code, msg)
        assert "Bearer" in msg
        code, msg = status_of(fn, md("wrong-" + authd.tokens["full"]))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "not valid" in msg, (name, msg)
    assert authd.stub.Health(pb.HealthRequest(), timeout=10).ready  # the probe stays open


def test_a_grpc_token_without_the_permission_is_permission_denied(authd):
    caller = md(authd.tokens["caller"])
    calls = dict(grpc_calls(authd.stub))
    assert calls["Call"](caller).reply.term == T(A("pong"), B("g"))
    assert len(calls["ListCnodes"](caller).cnodes) == 2
    for name, needle in [("Cast", "'cast'"), ("CallStream", "'stream'"),
                         ("Watch", "'watch'"), ("SpawnNodes", "'nodes.spawn'"),
                         ("StopNode", "'nodes.stop'"), ("Rpc", "'rpc'"),
                         ("LoadModule", "'modules.load'"),
                         ("RestartCnode", "'cnodes.restart'")]:
        code, msg = status_of(calls[name], caller)
        assert code == grpc.StatusCode.PERMISSION_DENIED and needle in msg, (name, code, msg)
    full = md(authd.tokens["full"])
    assert calls["Cast"](full) == pb.CastReply()
    assert calls["Watch"](md(authd.tokens["watcher"])).state == pb.UP


# --- the browser door ------------------------------------------------------------------------
def test_the_cross_origin_sequence_is_refused_and_starts_nothing(nodexd, session, tmp_path):
    """What a web page could do to an unauthenticated loopback nodexd: a form POST to /nodes,
    then an rpc of os:cmd. Neither is read; no child starts, no command runs."""
    d = nodexd([nx.test_cnode_spec("t")], extra={"erlang_nodes": {"count": 0}})
    d.wait_up("t")
    marker = tmp_path / "pwned"
    form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.example"}
    r = d.request("POST", "/nodes", '{"count":1}', form)
    assert r.status == 403, r
    assert "access-control-allow-origin" not in r.headers
    rpc = '{"module":"os","function":"cmd","args":["id > %s"]}' % marker
    r = d.request("POST", "/nodes/child1@127.0.0.1/rpc", rpc, form)
    assert r.status == 403, r
    # the same bodies without Origin (a non-browser client mislabelling them): 415, not read
    r = d.request("POST", "/nodes", '{"count":1}',
                  {"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 415 and r.json()["error"]["code"] == "unsupported_media_type", r
    for ct in ("text/plain", "multipart/form-data; boundary=x"):
        r = d.request("POST", "/cnodes/t/call", PING, {"Content-Type": ct})
        assert r.status == 415, (ct, r)
    assert d.get_json("/nodes")["nodes"] == []
    assert not marker.exists()
    assert "refused a request from origin http://evil.example" in d.log_text()


def test_an_allowed_origin_gets_cors_with_preflight(nodexd):
    origin = "http://app.example:3000"
    d = nodexd([nx.test_cnode_spec("t")], http={"allowed_origins": [origin]})
    d.wait_up("t")
    r = d.request("OPTIONS", "/cnodes/t/call", None,
                  {"Origin": origin, "Access-Control-Request-Method": "POST",
                   "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status == 204, r
    assert r.headers["access-control-allow-origin"] == origin
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "Authorization" in r.headers["access-control-allow-headers"]
    r = d.request("POST", "/cnodes/t/call", PING, dict(JSON, Origin=origin))
    assert r.status == 200 and r.body.decode() == PONG, r
    assert r.headers["access-control-allow-origin"] == origin and r.headers["vary"] == "Origin"
    r = d.request("POST", "/cnodes/t/call", PING, dict(JSON, Origin="http://app.example:3001"))
    assert r.status == 403, r


def test_a_loopback_listener_answers_only_to_its_own_names(nodexd):
    d = nodexd([], http={"allowed_hosts": ["gw.internal"]})
    for host in ("evil.example", "evil.example:%d" % d.port, "127.0.0.1.evil.example"):
        r = d.request("GET", "/cnodes", None, {"Host": host})
        assert r.status == 403 and r.json()["error"]["code"] == "forbidden_host", (host, r)
    for host in ("localhost:%d" % d.port, "127.0.0.1", "[::1]:%d" % d.port, "gw.internal:1"):
        assert d.request("GET", "/cnodes", None, {"Host": host}).status == 200, host


# --- rpc reaches known nodes only -------------------------------------------------------------
class ConnectCounter:
    """A TCP listener at (host, port) that counts connections and closes them."""

    def __init__(self, host, port):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.count = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.count += 1
            c.close()

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


def test_rpc_to_an_unknown_host_is_refused_before_any_packet(nodexd, session):
    counter = ConnectCounter("127.0.0.5", session.epmd_port)  # epmd of that "host"
    try:
        d = nodexd([])
        rpc = '{"module":"erlang","function":"node","args":[]}'
        r = d.request("POST", "/nodes/x@127.0.0.5/rpc", rpc, JSON)
        assert r.status == 403 and "not one nodexd knows" in r.json()["error"]["message"], r
        assert counter.count == 0
        # the control: a node the allow-list names is tried (and fails: no epmd answers there)
        d2 = nodexd([], extra={"erlang_nodes": {"rpc_nodes": ["*@127.0.0.5"]}})
        r = d2.request("POST", "/nodes/x@127.0.0.5/rpc?timeout_ms=5000", rpc, JSON)
        assert r.status in (503, 504), r
        nx.wait_until(lambda: counter.count >= 1, 10, what="the allowed rpc to reach epmd")
    finally:
        counter.close()


# --- defaults --------------------------------------------------------------------------------
def test_rpc_load_and_spawn_are_off_by_default(nodexd):
    d = nodexd([], extra={"erlang_nodes": {"rpc": False, "load_modules": False, "spawn": False}})
    for method, path, body, key in [
            ("POST", "/nodes", '{"count":1}', "erlang_nodes.spawn"),
            ("DELETE", "/nodes/child1@127.0.0.1", None, "erlang_nodes.spawn"),
            ("POST", "/nodes/child1@127.0.0.1/rpc",
             '{"module":"erlang","function":"node","args":[]}', "erlang_nodes.rpc"),
            ("PUT", "/nodes/child1@127.0.0.1/modules/m", "beam", "erlang_nodes.load_modules")]:
        r = d.request(method, path, body, JSON if body else {})
        assert r.status == 403 and f"set {key}: true" in r.json()["error"]["message"], (path, r)
    # and in the shipped default config
    out = subprocess.run([nx.NODEXD, "--print-default-config"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "rpc: true" not in out.stdout and "spawn: true" not in out.stdout


def test_a_public_listener_without_auth_refuses_to_start(session, tmp_path):
    cfg = tmp_path / "public.yaml"
    cfg.write_text('http:\n  listen: "0.0.0.0:0"\ngrpc:\n  listen: null\ncnodes: []\n')
    for args in (["--check-config", str(cfg)], ["--config", str(cfg)]):
        r = subprocess.run([nx.NODEXD, *args], capture_output=True, text=True, timeout=30,
                           env=session.env)
        assert r.returncode != 0, r
        assert "http.listen: 0.0.0.0:0 is not a loopback address" in r.stderr, r.stderr
        assert "auth: none" in r.stderr
    cfg.write_text('http:\n  listen: "0.0.0.0:0"\ngrpc:\n  listen: null\nauth: none\n'
                   'cnodes: []\n')
    r = subprocess.run([nx.NODEXD, "--check-config", str(cfg)], capture_output=True, text=True,
                       timeout=30, env=session.env)
    assert r.returncode == 0, r.stderr


def test_auth_none_warns_at_every_start(nodexd):
    d = nodexd([], extra={"auth": "none"})
    nx.wait_until(lambda: "auth: none" in d.log_text(), 10, what="the warning")


# --- the cookie --------------------------------------------------------------------------------
def environ_of(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)


def test_children_get_the_cookie_only_where_they_ask(nodexd, session):
    """NODEX_COOKIE (in nodexd's environment) reaches neither C-nodes nor child erl nodes, except
    a C-node whose env template asks for {cookie}; argv carrying the cookie is warned about."""
    asks = nx.test_cnode_spec("asks", env={"NODEX_COOKIE": "{cookie}"})
    d = nodexd([nx.test_cnode_spec("t"), asks],
               extra={"erlang_nodes": {"count": 1, "ready_timeout_ms": int(30000 * nx.SLOW)}})
    plain = d.wait_up("t")["os_pid"]
    asking = d.wait_up("asks")["os_pid"]
    assert b"NODEX_COOKIE" not in environ_of(plain)
    assert environ_of(asking)[b"NODEX_COOKIE"] == session.cookie.encode()
    child = nx.wait_until(
        lambda: next((n for n in d.get_json("/nodes")["nodes"]
                      if n["child"] and n["state"] == "up"), None),
        60 * nx.SLOW, what="the child node up")
    assert b"NODEX_COOKIE" not in environ_of(child["os_pid"])
    assert "cnode t: the cookie is in its argv" in d.log_text()


# --- loopback: child erl nodes and the epmd nodexd starts ---------------------------------------
def listening_sockets(pid):
    """(address, port) of every TCP socket process `pid` listens on, from /proc/net/tcp{,6}."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            with open(table) as f:
                rows = f.readlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            raw = bytes.fromhex(addr_hex)
            # the kernel prints the address as 32-bit words in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.append((socket.inet_ntop(family, raw), int(port_hex, 16)))
    return found


def listener_pid(port):
    """The pid of the process listening on TCP `port` (127.0.0.1 or any address), or None."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if any(p == port for _a, p in listening_sockets(int(entry))):
                    return int(entry)
            except OSError:
                continue
    return None


def epmd_port_please(epmd_port, sname):
    """The distribution port `sname` registered in the epmd on `epmd_port` (PORT_PLEASE2)."""
    with socket.create_connection((nx.HOST, epmd_port), timeout=2) as s:
        req = b"z" + sname.encode()
        s.sendall(len(req).to_bytes(2, "big") + req)
        data = s.recv(1024)
    return int.from_bytes(data[2:4], "big") if len(data) >= 4 and data[:2] == b"w\0" else None


def test_children_and_the_epmd_nodexd_starts_listen_on_loopback_only(nodexd, session):
    """node.listen 127.0.0.1: the epmd nodexd starts (none answered on its port) listens on
    loopback only, and so does a child erl node spawned with POST /nodes: its distribution
    listener (the port it registered in that epmd) is bound to 127.0.0.1, not 0.0.0.0."""
    epmd_port = nx.free_port()
    assert listener_pid(epmd_port) is None
    spawner_path, spawner = token_file(session, "spawner")
    d = nodexd([], start=False, env={"ERL_EPMD_PORT": str(epmd_port)},
               node={"listen": nx.HOST, "start_epmd": True},
               extra={"auth": {"principals": [
                   {"name": "spawner", "token_file": spawner_path,
                    "allow": ["watch", "nodes.spawn", "nodes.stop"]}]},
                   "erlang_nodes": {"ready_timeout_ms": int(30000 * nx.SLOW)}})
    d.token = spawner
    epmd = None
    child_pid = None
    try:
        d.start()
        epmd = nx.wait_until(lambda: listener_pid(epmd_port), 10 * nx.SLOW, what="nodexd's epmd")
        with open(f"/proc/{epmd}/environ", "rb") as f:
            assert f"ERL_EPMD_PORT={epmd_port}".encode() in f.read().split(b"\0")
        epmd_listens = listening_sockets(epmd)
        assert epmd_listens and all(a in ("127.0.0.1", "::1") for a, _p in epmd_listens), \
            epmd_listens
        assert (nx.HOST, epmd_port) in epmd_listens

        r = d.request("POST", "/nodes", '{"count":1}', JSON, timeout=60 * nx.SLOW)
        assert r.status in (200, 201, 202), f"{r}\n" + d.log_tail()
        child = nx.wait_until(
            lambda: next((n for n in d.get_json("/nodes")["nodes"]
                          if n["child"] and n["state"] == "up"), None),
            60 * nx.SLOW, what="the child node up")
        child_pid = child["os_pid"]
        with open(f"/proc/{child_pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        assert b"inet_dist_use_interface" in argv, argv
        dist_port = epmd_port_please(epmd_port, child["node"].split("@")[0])
        listens = listening_sockets(child_pid)
        assert dist_port and (nx.HOST, dist_port) in listens, (dist_port, listens)
        assert all(a == nx.HOST for a, _p in listens), listens
    finally:
        d.close()
        if epmd and nx.proc_alive(epmd):
            os.kill(epmd, signal.SIGTERM)  # epmd -daemon outlives nodexd: end it by its pid
        for pid in (child_pid, epmd):  # the child ends with nodexd
            if pid and not nx.proc_alive(pid):
                continue
            if pid:
                try:
                    nx.wait_until(lambda p=pid: not nx.proc_alive(p), 10 * nx.SLOW,
                                  what=f"pid {pid} to end")
                except AssertionError:
                    os.kill(pid, signal.SIGKILL)
                    raise
