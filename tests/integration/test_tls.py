"""test_tls: HTTPS and gRPC over TLS, client certificates (mTLS), TLS versions and certificate
reload on SIGHUP, against a live nodexd with CAs made at test time (tls_pki, openssl CLI)."""

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import warnings

import pytest

import nodex_harness as nx
import tls_pki

grpc = pytest.importorskip("grpc")
from test_grpc_server import A, B, P, T, pb, pb_grpc  # noqa: E402  (stubs made at test time)

PING = {"$tuple": [{"$atom": "ping"}, "tls"]}
PONG = {"$tuple": [{"$atom": "pong"}, "tls"]}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = tls_pki.Pki(str(d / "ca"), "Nodex Test CA")
    other = tls_pki.Pki(str(d / "other"), "Other CA")
    ca.server = ca.issue("server", "/O=Example/CN=localhost")
    ca.client = ca.issue("ops", "/O=Example/CN=ops",
                         sans=("DNS:ops.example", "URI:spiffe://example/ops"), client=True)
    other.client = other.issue("intruder", "/CN=intruder", client=True)
    yield ca, other
    shutil.rmtree(str(d), ignore_errors=True)


def tls_files(ca, d, client_ca=True, require=False):
    """Copies of the server certificate and key in `d` (so a test may replace them)."""
    os.makedirs(d, exist_ok=True)
    cert, key = os.path.join(d, "server.crt"), os.path.join(d, "server.key")
    shutil.copy(ca.server[0], cert)
    shutil.copy(ca.server[1], key)
    t = {"cert_file": cert, "key_file": key}
    if client_ca:
        t["client_ca_file"] = ca.ca_cert
    if require:
        t["require_client_cert"] = True
    return t


def client_context(ca, client=None, version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca.ca_cert)
    if client:
        ctx.load_cert_chain(client[0], client[1])
    if version:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ctx.maximum_version = version
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def grpc_channel(ca, port, client=None):
    read = lambda p: open(p, "rb").read()  # noqa: E731
    creds = grpc.ssl_channel_credentials(
        read(ca.ca_cert), read(client[1]) if client else None, read(client[0]) if client else None)
    return grpc.secure_channel(f"{nx.HOST}:{port}", creds)


class TlsNodexd(nx.Nodexd):
    """nodexd with http.tls and grpc.tls; HTTP requests through the harness use HTTPS."""

    def __init__(self, session, ca, tls, client=None, debug=False, auth=None):
        extra = {"grpc": {"listen": f"{nx.HOST}:0", "tls": tls}}
        if auth:
            extra["auth"] = auth
        if debug:
            extra["log"] = {"level": "debug"}
        super().__init__(session, [nx.test_cnode_spec("t")], http={"tls": tls}, extra=extra)
        self.ca = ca
        self.https_context = client_context(ca, client)
        self.client = client

    def stub(self, client="default"):
        ch = grpc_channel(self.ca, self.grpc_port, self.client if client == "default" else client)
        return ch, pb_grpc.GatewayStub(ch)

    def reload(self):
        """SIGHUP, then waits for the loop to log that the reload finished."""
        before = self.log_text().count("reload: done")
        self.send_signal(signal.SIGHUP)
        nx.wait_until(lambda: self.log_text().count("reload: done") > before, 10 * nx.SLOW,
                      what="reload: done")


def handshake(port, ctx):
    """A fresh TLS connection; returns (protocol version, server certificate's DER)."""
    with socket.create_connection((nx.HOST, port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            return t.version(), t.getpeercert(binary_form=True)


def refused(port, ctx):
    """True when the server ends the connection in or right after the handshake (TLS 1.3
    reports a rejected client certificate on the first read)."""
    try:
        with socket.create_connection((nx.HOST, port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                t.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                return t.recv(100) == b""
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return True


@pytest.fixture(scope="module")
def gw(session, pki, tmp_path_factory):
    ca, _ = pki
    d = TlsNodexd(session, ca, tls_files(ca, str(tmp_path_factory.mktemp("gw"))), debug=True)
    d.start()
    d.wait_up("t")
    yield d
    d.close()


def test_https_call_and_plain_http_refused(gw):
    r = gw.call("t", PING)
    assert r.status == 200 and r.json() == PONG, r
    version, _ = handshake(gw.port, client_context(gw.ca))
    assert version in ("TLSv1.2", "TLSv1.3")
    plain = http.client.HTTPConnection(nx.HOST, gw.port, timeout=10)
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        plain.request("GET", "/healthz")
        plain.getresponse().read()
    plain.close()


def test_grpc_tls_call(gw):
    ch, stub = gw.stub(client=None)
    r = stub.Call(pb.CallRequest(cnode="t", request=P(T(A("ping"), B("g")))), timeout=30)
    assert r.reply.term == T(A("pong"), B("g"))
    ch.close()
    insecure = grpc.insecure_channel(f"{nx.HOST}:{gw.grpc_port}")
    with pytest.raises(grpc.RpcError):
        pb_grpc.GatewayStub(insecure).Health(pb.HealthRequest(), timeout=5)
    insecure.close()


def test_tls_1_1_client_is_refused_on_both_listeners(gw):
    old = client_context(gw.ca, version=ssl.TLSVersion.TLSv1_1)
    new = client_context(gw.ca, version=ssl.TLSVersion.TLSv1_2)
    for port in (gw.port, gw.grpc_port):
        with pytest.raises((ssl.SSLError, ConnectionResetError)) as ei:
            handshake(port, old)
        assert "NO_PROTOCOLS_AVAILABLE" not in str(ei.value)  # the server said no, not us
        assert handshake(port, new)[0] == "TLSv1.2"


def test_client_certificate_identity_is_extracted_on_both_transports(gw, pki):
    ca, _ = pki
    r = nx.http_request(gw.port, "GET", "/cnodes/t", context=client_context(ca, ca.client))
    assert r.status == 200, r
    ch, stub = gw.stub(client=ca.client)
    assert stub.Health(pb.HealthRequest(), timeout=10).alive
    ch.close()
    want = 'client certificate subject="CN=ops,O=Example" sans="DNS:ops.example,URI:spiffe://example/ops"'
    nx.wait_until(lambda: f"http: GET /cnodes/t: {want}" in gw.log_text(), 10, what="http line")
    nx.wait_until(lambda: f"grpc Health: {want}" in gw.log_text(), 10, what="grpc line")
    # without a certificate: optional (no require_client_cert), so served, and said so
    assert gw.request("GET", "/healthz").status == 200
    nx.wait_until(lambda: "http: GET /healthz: no client certificate" in gw.log_text(), 10,
                  what="the line of a request without a certificate")


def test_certificate_from_another_ca_is_refused_even_when_optional(gw, pki):
    _, other = pki
    assert refused(gw.port, client_context(gw.ca, other.client))
    ch, stub = gw.stub(client=other.client)
    with pytest.raises(grpc.RpcError) as ei:
        stub.Health(pb.HealthRequest(), timeout=10)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    ch.close()


def test_require_client_cert(session, pki, tmp_path):
    ca, other = pki
    d = TlsNodexd(session, ca, tls_files(ca, str(tmp_path), require=True), client=ca.client)
    d.start()
    try:
        d.wait_up("t")
        assert d.call("t", PING).json() == PONG  # with the CA's client certificate
        ch, stub = d.stub()
        assert stub.Health(pb.HealthRequest(), timeout=10).alive
        ch.close()  # an open channel can hang grpcio's fork handler in a later Popen
        for client in (None, other.client):
            assert refused(d.port, client_context(ca, client)), client
            ch, stub = d.stub(client=client)
            with pytest.raises(grpc.RpcError) as ei:
                stub.Health(pb.HealthRequest(), timeout=10)
            assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, client
            ch.close()
    finally:
        d.close()


def test_reload_serves_new_certificate_keeps_connections_and_refuses_a_broken_one(
        session, pki, tmp_path):
    ca, _ = pki
    tls = tls_files(ca, str(tmp_path), client_ca=False)
    d = TlsNodexd(session, ca, tls)
    d.start()
    try:
        d.wait_up("t")
        ctx = client_context(ca)
        first = tls_pki.fingerprint(tls["cert_file"])
        assert tls_pki.der_fingerprint(handshake(d.port, ctx)[1]) == first
        assert tls_pki.der_fingerprint(handshake(d.grpc_port, ctx)[1]) == first
        # an established keep-alive HTTPS connection and an open gRPC stream
        conn = d.connection()
        assert d.call("t", PING, conn=conn).json() == PONG
        sock = conn.sock
        ch, stub = d.stub()
        stream = stub.Watch(pb.WatchRequest(include_current=True), timeout=60 * nx.SLOW)
        current = next(stream)
        assert current.name == "t" and current.state == pb.UP

        cert, key, serial = ca.issue("server2", "/O=Example/CN=localhost")
        shutil.copy(cert, tls["cert_file"])
        shutil.copy(key, tls["key_file"])
        d.reload()
        second = tls_pki.fingerprint(cert)
        assert second != first
        for port in (d.port, d.grpc_port):
            assert tls_pki.der_fingerprint(handshake(port, ctx)[1]) == second, port
        assert f"new handshakes use serial={serial:X} " in d.log_text(), d.log_tail()

        r = d.call("t", PING, conn=conn)
        assert r.json() == PONG and conn.sock is sock  # same connection, old session
        assert tls_pki.der_fingerprint(sock.getpeercert(binary_form=True)) == first
        r = stub.Call(pb.CallRequest(cnode="t", request=P(T(A("ping"), B("x")))), timeout=30)
        assert r.reply.term == T(A("pong"), B("x"))
        os.kill(current.os_pid, signal.SIGKILL)  # events still reach the open stream
        ev = next(stream)
        assert ev.name == "t" and ev.state == pb.DOWN, ev
        stream.cancel()
        ch.close()
        conn.close()

        # a broken certificate (and a key of another certificate) are refused; the last good
        # one stays
        with open(tls["cert_file"], "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
        d.reload()
        assert "reload: HTTPS keeps its certificate" in d.log_text()
        assert "reload: gRPC keeps its certificate" in d.log_text()
        shutil.copy(cert, tls["cert_file"])
        shutil.copy(ca.server[1], tls["key_file"])
        d.reload()
        assert "does not match the certificate" in d.log_text()
        for port in (d.port, d.grpc_port):
            assert tls_pki.der_fingerprint(handshake(port, ctx)[1]) == second, port
        d.wait_up("t")
        assert d.call("t", PING).json() == PONG
    finally:
        d.close()


def check_config(path):
    p = subprocess.run([nx.NODEXD, "--check-config", path], capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def write_config(tmp_path, tls_yaml):
    path = str(tmp_path / "c.yaml")
    with open(path, "w") as f:
        f.write('node:\n  name: "x@127.0.0.1"\nhttp:\n  listen: "127.0.0.1:0"\n  tls:\n' + tls_yaml)
    return path


def test_check_config_reports_tls_errors_with_file_and_line(pki, tmp_path):
    ca, _ = pki
    cert, key, _ = ca.server
    rc, out = check_config(write_config(
        tmp_path, f"    cert_file: {cert}\n    key_file: {key}\n    require_client_cert: true\n"))
    assert rc == 2 and "c.yaml:8: http.tls.require_client_cert: true needs client_ca_file" in out, out
    rc, out = check_config(write_config(tmp_path, f"    cert_file: {cert}\n"))
    assert rc == 2 and 'c.yaml:6: http.tls: missing required key "key_file"' in out, out
    rc, out = check_config(write_config(tmp_path, f"    cert_file: {cert}\n    key_file: /nonexistent.key\n"))
    assert rc == 2 and "c.yaml:6: http.tls.key_file /nonexistent.key: cannot open" in out, out
    rc, out = check_config(write_config(tmp_path, f"    cert_file: {cert}\n    key_file: {ca.client[1]}\n"))
    assert rc == 2 and "does not match the certificate" in out, out
    rc, out = check_config(write_config(
        tmp_path, f"    cert_file: {cert}\n    key_file: {key}\n    client_ca_file: {ca.ca_cert}\n"))
    assert rc == 0 and "config OK" in out, out


def test_unreadable_key_is_a_start_up_error(session, pki, tmp_path):
    ca, _ = pki
    tls = tls_files(ca, str(tmp_path))
    os.remove(tls["key_file"])
    d = TlsNodexd(session, ca, tls)
    d.start(wait=False)
    try:
        assert d.proc.wait(30 * nx.SLOW) != 0
        for pump in d._pumps:
            pump.join(10 * nx.SLOW)
        assert f"http.tls.key_file {tls['key_file']}: cannot open" in d.log_text(), d.log_tail()
    finally:
        d.close()


def test_json_is_the_same_over_https(gw):
    r = gw.request("GET", "/cnodes")
    assert r.status == 200 and json.loads(r.body)["cnodes"][0]["name"] == "t"


# --- the clients: TLS options and the bearer token ---------------------------------------------
import clients_harness as ch  # noqa: E402

TOKEN = "s3cr3t-token-0123"
PY_CLIENT = """
import sys
from nodex import Atom, Gateway, NodexError
target, ca, cert, key, token_file = sys.argv[1:6]
kw = dict(ca_file=ca, token_file=token_file or None, token_env="NODEX_TEST_TOKEN")
if cert:
    kw.update(cert_file=cert, key_file=key)
try:
    with Gateway(target, **kw) as gw:
        print(gw.call("t", (Atom("ping"), b"py"), timeout=10))
except NodexError as e:
    print(e.code_name)
    sys.exit(1)
"""
NODE_CLIENT = """
import { Gateway, Atom, tuple } from '%s';
const [target, caFile, certFile, keyFile, tokenFile] = process.argv.slice(1);
const opts = { caFile, tokenEnv: 'NODEX_TEST_TOKEN' };
if (tokenFile) opts.tokenFile = tokenFile;
if (certFile) Object.assign(opts, { certFile, keyFile });
const gw = new Gateway(target, opts);
try {
  const r = await gw.call('t', tuple(new Atom('ping'), Buffer.from('js')), { timeout: 10000 });
  console.log(JSON.stringify(r[1].toString()));
} catch (e) {
  console.log(e.codeName);
  process.exitCode = 1;
} finally {
  gw.close();
}
"""


@pytest.fixture(scope="module")
def mtls_gw(session, pki, tmp_path_factory):
    ca, _ = pki
    token_file = str(tmp_path_factory.mktemp("token") / "token")
    with open(token_file, "w") as f:
        f.write(TOKEN + "\n")
    auth = {"principals": [{"name": "ops", "token_file": token_file, "allow": ["call"]}]}
    d = TlsNodexd(session, ca, tls_files(ca, str(tmp_path_factory.mktemp("mtls")), require=True),
                  client=ca.client, debug=True, auth=auth)
    d.token = TOKEN  # the harness's own HTTPS requests
    d.start()
    d.wait_up("t")
    d.token_file = token_file
    yield d
    d.close()


def run_client(kind, d, client, token_file="", env_token=None):
    env = dict(os.environ)
    env.pop("NODEX_TOKEN", None)
    env.pop("NODEX_TEST_TOKEN", None)
    if env_token:
        env["NODEX_TEST_TOKEN" if kind != "cli" else "NODEX_TOKEN"] = env_token
    cert, key = (client[0], client[1]) if client else ("", "")
    target = f"{nx.HOST}:{d.grpc_port}"
    if kind == "python":
        env["PYTHONPATH"] = os.path.join(ch.PYTHON_CLIENT_DIR, "src")
        argv = ["/usr/bin/python3", "-c", PY_CLIENT, target, d.ca.ca_cert, cert, key, token_file]
    elif kind == "node":
        index = os.path.join(ch.NODE_CLIENT_DIR, "src", "index.js")
        argv = ["node", "--input-type=module", "-e", NODE_CLIENT % index, target, d.ca.ca_cert,
                cert, key, token_file]
    else:
        argv = [ch.NODEX_CLI, "--target", target, "--ca-file", d.ca.ca_cert, "--timeout", "10000"]
        if cert:
            argv += ["--cert", cert, "--key", key]
        if token_file:
            argv += ["--token-file", token_file]
        argv += ["call", "t", '{ping, <<"cli">>}']
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60 * nx.SLOW)
    return p.returncode, p.stdout + p.stderr


@pytest.fixture(scope="module", autouse=False)
def python_stubs():
    subprocess.run([os.path.join(ch.PYTHON_CLIENT_DIR, "gen_stubs.sh")], check=True)


@pytest.mark.parametrize("kind", ["python", "node", "cli"])
def test_client_over_mtls_with_a_token(kind, mtls_gw, pki, python_stubs):
    ca, other = pki
    if kind == "node" and not shutil.which("node"):
        pytest.skip("no node")
    before = mtls_gw.log_text().count("authorization: (redacted")
    rc, out = run_client(kind, mtls_gw, ca.client, token_file=mtls_gw.token_file)
    assert rc == 0 and ("pong" in out or '"js"' in out), out
    # the token went out as "authorization: Bearer T" (its length is logged, never the value)
    line = f"authorization: (redacted, {len('Bearer ' + TOKEN)} bytes)"
    nx.wait_until(lambda: mtls_gw.log_text().count(line) > before, 10, what=line)
    assert TOKEN not in mtls_gw.log_text()
    # from the environment instead of a file
    rc, out = run_client(kind, mtls_gw, ca.client, env_token=TOKEN)
    assert rc == 0, out
    nx.wait_until(lambda: mtls_gw.log_text().count(line) > before + 1, 10, what=line)
    # the certificate alone is not a principal here: no token, UNAUTHENTICATED
    rc, out = run_client(kind, mtls_gw, ca.client)
    assert rc != 0 and "UNAUTHENTICATED" in out, out
    # refused without a client certificate and with one from another CA
    for client in (None, other.client):
        rc, out = run_client(kind, mtls_gw, client)
        assert rc != 0 and "UNAVAILABLE" in out, (client, out)


@pytest.mark.parametrize("match", [{"subject": "CN=ops,O=Example"},
                                   {"san": "spiffe://example/ops"}])
def test_a_client_certificate_is_a_principal_on_both_transports(session, pki, tmp_path, match):
    """auth.principals[].client_cert: the verified certificate's subject or one SAN names the
    principal, with its permissions; no certificate and no token is 401 / UNAUTHENTICATED."""
    ca, _ = pki
    auth = {"principals": [{"name": "certops", "client_cert": match, "allow": ["call:t"]}]}
    d = TlsNodexd(session, ca, tls_files(ca, str(tmp_path)), client=ca.client, auth=auth)
    try:
        d.start()
        d.wait_up("t")
        assert d.call("t", PING).status == 200
        r = d.call("t", PING, cast=True)
        assert r.status == 403 and "certops lacks the permission 'cast'" in r.body.decode(), r
        bare = nx.http_request(d.port, "GET", "/cnodes", context=client_context(ca))
        assert bare.status == 401, bare
        ch, stub = d.stub()
        req = pb.CallRequest(cnode="t", request=P(T(A("ping"), B("m"))))
        assert stub.Call(req, timeout=10).reply.term == T(A("pong"), B("m"))
        with pytest.raises(grpc.RpcError) as ei:
            stub.Cast(pb.CastRequest(cnode="t", message=P(A("x"))), timeout=10)
        assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED
        ch.close()
        ch, stub = d.stub(client=None)
        with pytest.raises(grpc.RpcError) as ei:
            stub.Call(req, timeout=10)
        assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ch.close()
    finally:
        d.close()
