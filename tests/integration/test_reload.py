"""test_reload: SIGHUP reads the configuration again: tokens and principals replaced on HTTP and
gRPC, a file that does not load refused with its file:line error (the running one stays), and
what a reload does not apply yet (C-nodes, listeners, ...) named in the log."""

import os
import signal

import grpc

import nodex_harness as nx
from nodex_harness import atom, tup
from test_grpc_server import GrpcNodexd, pb, A, B, T, P, status_of

OLD = "old-token-0123456789abcdef"
NEW = "new-token-fedcba9876543210"


def write_token(path, token):
    path.write_text(token + "\n")
    os.chmod(path, 0o600)


def principals(token_file, allow=("call",)):
    return {"principals": [{"name": "svc", "token_file": str(token_file), "allow": list(allow)}]}


def rewrite(d, **changes):
    """Writes d's config file again with `changes` applied to its top-level sections."""
    cfg = dict(d.config, **changes)
    with open(d.config_path, "w") as f:
        f.write(nx.to_yaml(cfg))



def hup(d, what):
    n = d.log_text().count("reload: ")
    d.send_signal(signal.SIGHUP)
    nx.wait_until(lambda: d.log_text().count("reload: ") > n and what in d.log_text(),
                  10 * nx.SLOW, what=what)


def grpc_call(d, token):
    return d.stub.Call(pb.CallRequest(cnode="t", request=P(T(A("ping"), B("g")))),
                       metadata=(("authorization", f"Bearer {token}"),), timeout=30)


def test_a_rotated_token_replaces_the_old_one_on_both_transports(session, tmp_path):
    tok = tmp_path / "token"
    write_token(tok, OLD)
    d = GrpcNodexd(session, [nx.test_cnode_spec("t")], extra={"auth": principals(tok)})
    try:
        d.start()
        d.token = OLD
        d.wait_up("t")
        assert d.call("t", tup(atom("ping"), "a")).status == 200
        assert grpc_call(d, OLD).reply.term == T(A("pong"), B("g"))
        write_token(tok, NEW)
        hup(d, "reload: auth: 1 principals, tokens read again")
        r = d.call("t", tup(atom("ping"), "b"))
        assert r.status == 401 and r.json()["error"]["code"] == "unauthenticated", r
        code, _ = status_of(grpc_call, d, OLD)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        d.token = NEW
        assert d.call("t", tup(atom("ping"), "c")).status == 200
        assert grpc_call(d, NEW).reply.term == T(A("pong"), B("g"))
        # nothing else moved: the C-node kept running through it
        assert d.info("t")["restarts"] == 0
        assert OLD not in d.log_text() and NEW not in d.log_text()
    finally:
        d.close()


def test_changed_permissions_apply_to_the_next_request(session, tmp_path):
    tok = tmp_path / "token"
    write_token(tok, OLD)
    d = nx.Nodexd(session, [nx.test_cnode_spec("t")], extra={"auth": principals(tok)})
    try:
        d.start()
        d.token = OLD
        d.wait_up("t")
        assert d.call("t", tup(atom("ping"), "a")).status == 200
        rewrite(d, auth=principals(tok, allow=["cast"]))
        hup(d, "reload: auth: 1 principals")
        r = d.call("t", tup(atom("ping"), "b"))
        assert r.status == 403 and "'call'" in r.json()["error"]["message"], r
        assert d.call("t", tup(atom("ping"), "c"), cast=True).status == 202
    finally:
        d.close()


def test_a_config_that_does_not_load_is_refused_and_the_old_one_stays(session, tmp_path):
    tok = tmp_path / "token"
    write_token(tok, OLD)
    d = nx.Nodexd(session, [nx.test_cnode_spec("t")], extra={"auth": principals(tok)})
    try:
        d.start()
        d.token = OLD
        d.wait_up("t")
        good = open(d.config_path).read()
        with open(d.config_path, "a") as f:
            f.write("no_such_section: {x: 1}\n")
        lines = good.count("\n") + 1
        hup(d, "reload: refused")
        text = d.log_text()
        assert f"{d.config_path}:{lines}" in text, text[-2000:]
        assert "no_such_section" in text
        assert d.call("t", tup(atom("ping"), "a")).status == 200  # the old token still works
        # a token file that cannot be read refuses the auth part only
        with open(d.config_path, "w") as f:
            f.write(good)
        os.unlink(tok)
        hup(d, "reload: auth keeps its principals and tokens")
        assert d.call("t", tup(atom("ping"), "b")).status == 200
        assert d.proc.poll() is None
    finally:
        d.close()


def test_what_a_reload_does_not_apply_is_named_and_left_running(session, tmp_path):
    d = nx.Nodexd(session, [nx.test_cnode_spec("t"), nx.test_cnode_spec("u")])
    try:
        d.start()
        t0 = d.wait_up("t")["os_pid"]
        d.wait_up("u")
        cnodes = [nx.test_cnode_spec("t", call_timeout_ms=7000), nx.test_cnode_spec("v")]
        http = dict(d.config["http"], max_body_bytes=12345)
        rewrite(d, cnodes=cnodes, http=http)
        hup(d, "reload: auth: 0 principals")
        text = d.log_text()
        assert "reload: http changed: it takes a restart" in text
        assert "reload: cnode t changed" in text and "reload: cnode v added" in text
        assert "reload: cnode u removed" in text
        assert "reload: node changed" not in text and "reload: log changed" not in text
        # they run as they were
        assert d.info("t")["os_pid"] == t0
        assert d.info("u")["state"] == "up"
        assert d.request("GET", "/cnodes/v").status == 404
    finally:
        d.close()


def test_an_unchanged_file_reloads_quietly(session):
    d = nx.Nodexd(session, [nx.test_cnode_spec("t")])
    try:
        d.start()
        d.wait_up("t")
        hup(d, "reload: done")
        assert "takes a restart" not in d.log_text()
        assert d.proc.poll() is None
    finally:
        d.close()
