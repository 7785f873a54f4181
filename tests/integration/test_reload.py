"""test_reload: SIGHUP reads the configuration again: tokens and principals replaced on HTTP and
gRPC; C-nodes added started, removed stopped after their calls in flight, changed replaced,
unchanged left running; a file that does not load, or a C-node that cannot be set up, refused
(the running configuration stays); what a reload does not apply (listeners, ...) named in the
log."""

import os
import signal
import threading

import grpc
import pytest

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
    d = nx.Nodexd(session, [nx.test_cnode_spec("t")])
    try:
        d.start()
        t0 = d.wait_up("t")["os_pid"]
        http = dict(d.config["http"], max_body_bytes=12345)
        rewrite(d, http=http)
        hup(d, "reload: auth: 0 principals")
        text = d.log_text()
        assert "reload: http changed: it takes a restart" in text
        assert "reload: node changed" not in text and "reload: log changed" not in text
        assert "reload: cnodes: 0 added, 0 removed, 0 changed, 1 unchanged" in text
        assert d.info("t")["os_pid"] == t0
        big = "x" * 20000  # over the new max_body_bytes: the running limit stays
        r = d.call("t", tup(atom("ping"), big))
        assert r.status == 200 and r.json() == tup(atom("pong"), big), r
    finally:
        d.close()


def names(d):
    return sorted(c["name"] for c in d.get_json("/cnodes")["cnodes"])


def gone(pid):
    return not nx.proc_alive(pid)


def call_in_thread(d, name, term, **kw):
    """Starts a call on its own thread; returns (thread, box): box["r"] is its response."""
    box = {}

    def run():
        box["r"] = d.call(name, term, **kw)

    th = threading.Thread(target=run)
    th.start()
    return th, box


def start_t_and_u(d):
    """Starts d (C-nodes t and u) and returns their OS pids once both are up."""
    d.start()
    return d.wait_up("t")["os_pid"], d.wait_up("u")["os_pid"]


def wait_in_flight(d, name, n=1):
    nx.wait_until(lambda: d.info(name)["in_flight"] >= n, 10 * nx.SLOW, what=f"{name} in flight")


def test_a_reload_starts_added_stops_removed_and_leaves_unchanged_cnodes_running(session):
    d = GrpcNodexd(session, [nx.test_cnode_spec("t"), nx.test_cnode_spec("u")])
    try:
        t0, u0 = start_t_and_u(d)
        rewrite(d, cnodes=[nx.test_cnode_spec("t"), nx.test_cnode_spec("v")])
        hup(d, "reload: cnodes: 1 added, 1 removed, 0 changed, 1 unchanged")
        # added: started, callable on both transports
        v = d.wait_up("v")
        assert v["os_pid"] not in (t0, u0)
        r = d.call("v", tup(atom("ping"), "v"))
        assert r.status == 200 and r.json() == tup(atom("pong"), "v"), r
        reply = d.stub.Call(pb.CallRequest(cnode="v", request=P(T(A("ping"), B("g")))), timeout=30)
        assert reply.reply.term == T(A("pong"), B("g"))
        # removed: gone from the API at once, its process stopped
        r = d.call("u", tup(atom("ping"), "u"))
        assert r.status == 404 and r.json()["error"]["code"] == "not_found", r
        assert d.request("GET", "/cnodes/u").status == 404
        with pytest.raises(grpc.RpcError) as e:
            d.stub.Call(pb.CallRequest(cnode="u", request=P(A("ping"))), timeout=30)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        nx.wait_until(lambda: gone(u0), 10 * nx.SLOW, what="u's process gone")
        nx.wait_until(lambda: "the instances a reload retired have stopped" in d.log_text(),
                      10 * nx.SLOW, what="u's entry freed")
        # unchanged: the same process, never restarted
        t = d.info("t")
        assert t["os_pid"] == t0 and t["restarts"] == 0 and t["state"] == "up"
        assert names(d) == ["t", "v"]
        assert d.call("t", tup(atom("ping"), "t")).status == 200
    finally:
        d.close()


def test_a_removed_cnode_finishes_its_call_in_flight_then_stops(session):
    d = nx.Nodexd(session, [nx.test_cnode_spec("t"), nx.test_cnode_spec("u")])
    try:
        _, u0 = start_t_and_u(d)
        th, box = call_in_thread(d, "u", tup(atom("sleep"), 1500, "late"))
        wait_in_flight(d, "u")
        rewrite(d, cnodes=[nx.test_cnode_spec("t")])
        hup(d, "reload: cnodes: 0 added, 1 removed, 0 changed, 1 unchanged")
        assert nx.proc_alive(u0)  # still serving the call in flight
        assert d.call("u", tup(atom("ping"), "u")).status == 404  # no new call reaches it
        th.join(30)
        r = box["r"]
        assert r.status == 200 and r.json() == tup(atom("slept"), "late"), r
        nx.wait_until(lambda: gone(u0), 10 * nx.SLOW, what="u's process gone")
        assert "C-node u: down: removed from the configuration" in d.log_text()
    finally:
        d.close()


def test_a_changed_cnode_is_replaced_after_its_call_in_flight_and_its_new_settings_apply(session):
    d = nx.Nodexd(session, [nx.test_cnode_spec("t"), nx.test_cnode_spec("u")])
    try:
        t0, u0 = start_t_and_u(d)
        th, box = call_in_thread(d, "t", tup(atom("sleep"), 1000, "old"))
        wait_in_flight(d, "t")
        rewrite(d, cnodes=[nx.test_cnode_spec("t", call_timeout_ms=300, instances=2),
                           nx.test_cnode_spec("u")])
        hup(d, "reload: cnodes: 0 added, 0 removed, 1 changed, 1 unchanged")
        # a call made during the switch waits for the new instances and is answered
        waiter, wbox = call_in_thread(d, "t", tup(atom("ping"), "during"), timeout_ms=20000)
        th.join(30)
        r = box["r"]
        assert r.status == 200 and r.json() == tup(atom("slept"), "old"), r  # the old one finished
        waiter.join(30)
        r = wbox["r"]
        assert r.status == 200 and r.json() == tup(atom("pong"), "during"), r
        nx.wait_until(lambda: gone(t0), 10 * nx.SLOW, what="t's old process gone")
        t = d.wait_for_state("t", "up", pred=lambda i: i["instances_up"] == 2)
        assert t["instances"] == 2 and t0 not in (t["os_pid"],)
        # the new call_timeout_ms (300 ms) is the default now
        r = d.call("t", tup(atom("sleep"), 1500, "slow"))
        assert r.status == 504 and r.json()["error"]["code"] == "timeout", r
        u = d.info("u")
        assert u["os_pid"] == u0 and u["restarts"] == 0  # unchanged: untouched
    finally:
        d.close()


def test_a_reload_whose_new_cnode_cannot_be_set_up_is_refused_and_changes_nothing(session):
    d = nx.Nodexd(session, [nx.test_cnode_spec("t"), nx.test_cnode_spec("u")])
    try:
        t0, u0 = start_t_and_u(d)
        missing = nx.test_cnode_spec("w", executable="no-such-cnode-program-on-path")
        rewrite(d, cnodes=[nx.test_cnode_spec("t", call_timeout_ms=300), missing])
        hup(d, "reload: refused")
        text = d.log_text()
        assert "cnode w" in text and "no-such-cnode-program-on-path" in text, text[-2000:]
        assert names(d) == ["t", "u"]
        assert d.info("t")["os_pid"] == t0 and d.info("u")["os_pid"] == u0
        # t's old call_timeout_ms (5000) still applies
        r = d.call("t", tup(atom("sleep"), 600, "still"))
        assert r.status == 200, r
        assert "reload: cnodes:" not in text
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
