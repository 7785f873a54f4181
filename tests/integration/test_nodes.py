"""test_nodes: the Erlang-node API against real `erl` nodes: children (spawn, supervise, stop),
rpc into children and other nodes, code loading, error mapping, and cleanup with nodexd."""

import concurrent.futures
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

import nodex_harness as nx
from nodex_harness import atom, tup

H = nx.HOST
COUNT = 2          # children started with the shared nodexd
MAX_CHILDREN = 5   # erlang_nodes.max_children of the shared nodexd
TICK_MS = 4000     # node.tick_time_ms (the harness default): children get net_ticktime 4


def child(i, prefix="child"):
    return f"{prefix}{i}@{H}"


def nodes_config(**overrides):
    """An erlang_nodes: section for the suite: generous start timeout (erl is slow on a loaded
    machine), quick stop. gRPC is off: it is not under test here."""
    spec = {
        "count": COUNT,
        "max_children": MAX_CHILDREN,
        "ready_timeout_ms": int(30000 * nx.SLOW),
        "shutdown_timeout_ms": 2000,
        "restart": "permanent",
        "max_restarts": 3,
        "max_seconds": 5,
        "rpc_timeout_ms": 5000,
    }
    spec.update(overrides)
    return {"erlang_nodes": spec, "grpc": {"listen": None}}


# --- helpers ----------------------------------------------------------------------------------

def list_nodes(d):
    """GET /nodes; remembers every child os_pid seen (with its start time) on d.child_pids."""
    r = d.request("GET", "/nodes")
    assert r.status == 200, f"GET /nodes: {r}\n" + d.log_tail()
    data = r.json()
    seen = d.__dict__.setdefault("child_pids", {})
    for n in data["nodes"]:
        pid = n.get("os_pid")
        if n.get("child") and isinstance(pid, int) and pid > 0 and pid not in seen:
            st = nx.proc_start_time(pid)
            if st is not None:
                seen[pid] = st
    return data


def entry(d, node):
    return next((n for n in list_nodes(d)["nodes"] if n["node"] == node), None)


def wait_entry(d, node, pred, what, timeout=30.0):
    last = None

    def check():
        nonlocal last
        last = entry(d, node)
        return (last or True) if pred(last) else None

    try:
        return nx.wait_until(check, timeout * nx.SLOW, interval=0.1, what=f"{node} {what}")
    except AssertionError as e:
        raise AssertionError(f"{e}; last: {last}\n" + d.log_tail()) from None


def wait_up(d, node, timeout=30.0, pred=None):
    return wait_entry(d, node, lambda e: e is not None and e["state"] == "up" and e["connected"]
                      and (pred is None or pred(e)), "to be up", timeout)


def rpc(d, node, body, timeout_ms=None, content_type="application/json", accept=None,
        timeout=30.0):
    if not isinstance(body, (str, bytes)):
        body = json.dumps(body)
    headers = {"Content-Type": content_type} if content_type else {}
    if accept:
        headers["Accept"] = accept
    path = f"/nodes/{node}/rpc" + (f"?timeout_ms={timeout_ms}" if timeout_ms is not None else "")
    return d.request("POST", path, body, headers, timeout=timeout)


def mfa(m, f, args):
    return {"module": m, "function": f, "args": args}


def node_of(d, node):
    """rpc erlang:node() on `node`; returns the reply."""
    r = rpc(d, node, mfa("erlang", "node", []))
    assert r.status == 200, f"{node}: {r}\n" + d.log_tail()
    return r.json()


def start_erl(session, name, *extra):
    """A long-named erl node on our epmd with our cookie (through the args file), not a child
    of nodexd; waits until epmd knows it. Ended by pid by the caller (or the session)."""
    p = session.spawn(["erl", "-noshell", "-noinput", "-name", f"{name}@{H}",
                       "-args_file", session.erl_args_file, *extra], name)
    nx.wait_until(lambda: name in (session.epmd_names() or []) or p.poll() is not None,
                  30 * nx.SLOW, interval=0.1, what=f"erl node {name} in epmd")
    assert p.poll() is None, open(session.log_path(name)).read()
    return p


def gone(pids, timeout):
    """Waits until none of {pid: start_time} runs; returns the survivors."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p, st in pids.items() if nx.proc_alive(p, st)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def kill_survivors(pids):
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def assert_clean_exit(d):
    """nodexd was stopped: no sanitizer report in its output (leaks are reported at exit)."""
    text = d.log_text()
    for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
        assert marker not in text, d.log_tail(200)


def stop_clean(d):
    """SIGTERM: nodexd exits 0, every child it had is gone, no sanitizer report."""
    list_nodes(d)
    pids = dict(d.child_pids)
    assert d.stop() == 0, d.log_tail()
    survivors = gone(pids, 3 * nx.SLOW)
    kill_survivors(survivors)
    assert not survivors, f"children survived nodexd: {survivors}\n" + d.log_tail()
    assert_clean_exit(d)


def etf_atom(a):
    b = a.encode()
    return bytes([119, len(b)]) + b  # SMALL_ATOM_UTF8_EXT


# --- one nodexd with two children, shared by the tests that follow in file order --------------

@pytest.fixture(scope="module")
def gw(session):
    d = nx.Nodexd(session, [], extra=nodes_config())
    d.start()
    try:
        for i in range(1, COUNT + 1):
            wait_up(d, child(i))
        yield d
    finally:
        try:
            d.close()
        finally:
            survivors = gone(d.__dict__.get("child_pids", {}), 5 * nx.SLOW)
            kill_survivors(survivors)
        assert not survivors, f"child nodes survived nodexd: {survivors}\n" + d.log_tail()


def test_children_are_listed_and_answer_rpc(gw):
    data = list_nodes(gw)
    assert data["self"] == gw.node_name, data
    children = {n["node"]: n for n in data["nodes"] if n["child"]}
    assert sorted(children) == [child(1), child(2)], data
    for name, n in children.items():
        assert n["state"] == "up" and n["connected"] is True and n["restarts"] == 0, n
        assert isinstance(n["os_pid"], int) and nx.proc_alive(n["os_pid"]), n
        assert node_of(gw, name) == atom(name)
    assert len({n["os_pid"] for n in children.values()}) == COUNT


def test_child_gets_cookie_through_home_not_argv_and_our_ticktime(gw, session):
    for i in (1, 2):
        n = entry(gw, child(i))
        with open(f"/proc/{n['os_pid']}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        assert not any(session.cookie.encode() in a for a in argv), argv
        assert not any(session.cookie.lower().encode() in a for a in argv), argv
        joined = b" ".join(argv)
        assert b"-kernel net_ticktime 4" in joined, argv
        # ...and yet the child has our cookie, and ticks at node.tick_time_ms.
        r = rpc(gw, child(i), mfa("erlang", "get_cookie", []))
        assert r.status == 200 and r.json() == atom(session.cookie), r
        r = rpc(gw, child(i), mfa("net_kernel", "get_net_ticktime", []))
        assert r.status == 200 and r.json() == TICK_MS // 1000, r


def test_rpc_in_erlang_text_and_etf(gw):
    r = rpc(gw, child(1), "{lists, reverse, [[1,2,3]]}", content_type="application/x-erlang-text")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("application/x-erlang-text"), r.headers
    assert r.body.decode().strip().rstrip(".").replace(" ", "") == "[3,2,1]", r
    # {lists, reverse, [[1,2,3]]} as ETF, answered in JSON, and the other way round.
    body = (b"\x83h\x03" + etf_atom("lists") + etf_atom("reverse")
            + b"l\x00\x00\x00\x01" + b"k\x00\x03\x01\x02\x03" + b"j")
    r = rpc(gw, child(1), body, content_type="application/x-erlang-binary",
            accept="application/json")
    assert r.status == 200 and r.json() == [3, 2, 1], r
    r = rpc(gw, child(2), mfa("lists", "reverse", [[1, 2, 3]]),
            accept="application/x-erlang-binary")
    assert r.status == 200, r
    assert r.body in (b"\x83k\x00\x03\x03\x02\x01",
                      b"\x83l\x00\x00\x00\x03a\x03a\x02a\x01j"), r
    # Module and function may be JSON strings or atoms; a term body may be {M, F, A} in JSON too.
    r = rpc(gw, child(1), {"module": atom("erlang"), "function": atom("abs"), "args": [-7]})
    assert r.status == 200 and r.json() == 7, r
    r = rpc(gw, child(1), tup(atom("erlang"), atom("abs"), [-8]))
    assert r.status == 200 and r.json() == 8, r


@pytest.mark.parametrize("body, expect", [
    ("[1,2,3]", "expected {\"module\":M"),
    ('"lists"', "expected {\"module\":M"),
    ('{"module":"lists","function":"reverse"}', "args is required"),
    ('{"module":"lists","function":"reverse","args":5}', "args must be a list"),
    ('{"module":"lists","function":"reverse","args":{"a":1}}', "args must be a list"),
    ('{"module":"lists","function":"reverse","args":[],"node":"x"}', "$.node: unknown key"),
    ('{"function":"reverse","args":[]}', "module and function are required"),
    ('{"module":"lists","function":7,"args":[]}', "$.function: expected a string"),
    ('{"module":"lists","function":"reverse","args":[[1]', None),  # not JSON at all
    ("", None),
])
def test_malformed_rpc_body_is_400_naming_the_problem(gw, body, expect):
    r = rpc(gw, child(1), body)
    assert r.status == 400, r
    err = r.json()["error"]
    assert err["message"], err
    if expect:
        assert err["code"] == "bad_request" and expect in err["message"], err


def test_rpc_bad_parameters_and_methods(gw):
    for q in ("0", "abc", "-5", "300001"):
        r = rpc(gw, child(1), mfa("erlang", "node", []), timeout_ms=q)
        assert r.status == 400 and "timeout_ms" in r.json()["error"]["message"], (q, r)
    r = rpc(gw, child(1), "{lists, reverse, [[1]]}", content_type="text/plain")
    assert r.status == 415, r
    r = rpc(gw, child(1), mfa("erlang", "node", []), accept="text/html")
    assert r.status == 406, r
    r = gw.request("GET", f"/nodes/{child(1)}/rpc")
    assert r.status == 405 and r.headers.get("allow") == "POST", r
    r = gw.request("PUT", "/nodes")
    assert r.status == 405 and r.headers.get("allow") == "GET, POST", r
    r = gw.request("POST", f"/nodes/{child(1)}/nosuch")
    assert r.status == 404, r


def test_badrpc_is_502_with_the_reason(gw):
    r = rpc(gw, child(1), mfa("nx_no_such_module", "f", [1]))
    assert r.status == 502, r
    err = r.json()["error"]
    assert err["code"] == "badrpc" and "undef" in err["message"], err
    assert child(1) in err["message"], err
    # Reason is the term itself: {'EXIT', {undef, [{nx_no_such_module, f, [1], _} | _]}}
    reason = err["reason"]
    assert reason["$tuple"][0] == atom("EXIT"), reason
    assert reason["$tuple"][1]["$tuple"][0] == atom("undef"), reason
    assert reason["$tuple"][1]["$tuple"][1][0]["$tuple"][:3] == [
        atom("nx_no_such_module"), atom("f"), [1]], reason

    r = rpc(gw, child(2), mfa("erlang", "atom_to_list", [1]))
    assert r.status == 502, r
    err = r.json()["error"]
    assert err["code"] == "badrpc" and "badarg" in err["message"], err
    assert err["reason"]["$tuple"][1]["$tuple"][0] == atom("badarg"), err
    # A function that returns {badrpc, X} itself is indistinguishable, by rpc's design.
    r = rpc(gw, child(1), mfa("erlang", "list_to_tuple", [[atom("badrpc"), atom("mine")]]))
    assert r.status == 502 and r.json()["error"]["reason"] == atom("mine"), r
    # The node is fine afterwards.
    assert node_of(gw, child(1)) == atom(child(1))


def test_load_module_then_call_it(gw, tmp_path):
    src = tmp_path / "nx_probe.erl"
    src.write_text(
        "-module(nx_probe).\n"
        "-export([double/1, hello/1]).\n"
        "double(X) -> 2 * X.\n"
        "hello(Name) -> {hello, Name, node()}.\n")
    subprocess.run(["erlc", "-o", str(tmp_path), str(src)], check=True, timeout=60 * nx.SLOW)
    beam = (tmp_path / "nx_probe.beam").read_bytes()
    r = gw.request("PUT", f"/nodes/{child(1)}/modules/nx_probe", beam,
                   {"Content-Type": "application/octet-stream"})
    assert r.status == 200, r
    assert r.json() == {"status": "loaded", "module": "nx_probe", "node": child(1)}, r
    r = rpc(gw, child(1), mfa("nx_probe", "double", [21]))
    assert r.status == 200 and r.json() == 42, r
    r = rpc(gw, child(1), mfa("nx_probe", "hello", ["you"]))
    assert r.status == 200 and r.json() == tup(atom("hello"), "you", atom(child(1))), r
    # Loaded on child1 only.
    r = rpc(gw, child(2), mfa("nx_probe", "double", [21]))
    assert r.status == 502 and "undef" in r.json()["error"]["message"], r
    # Reloading (a new version) works too.
    r = gw.request("PUT", f"/nodes/{child(1)}/modules/nx_probe", beam)
    assert r.status == 200, r


def test_load_garbage_or_nothing_is_400(gw):
    r = gw.request("PUT", f"/nodes/{child(1)}/modules/nx_bad", b"this is not a beam file")
    assert r.status == 400, r
    err = r.json()["error"]
    assert err["code"] == "load_failed", err
    want = f"code:load_binary(nx_bad) on {child(1)} returned {{error,badfile}}"
    assert err["message"] == want, err
    r = gw.request("PUT", f"/nodes/{child(1)}/modules/nx_bad", b"")
    assert r.status == 400 and r.json()["error"]["code"] == "bad_request", r
    r = gw.request("POST", f"/nodes/{child(1)}/modules/nx_bad", b"x")
    assert r.status == 405 and r.headers.get("allow") == "PUT", r
    assert node_of(gw, child(1)) == atom(child(1))


def test_rpc_timeout_is_504_and_the_node_still_answers(gw):
    r = rpc(gw, child(1), mfa("timer", "sleep", [60000]), timeout_ms=300)
    assert r.status == 504, r
    assert r.json()["error"]["code"] == "timeout", r
    assert r.elapsed >= 0.3, r  # not before its deadline (a lower bound: load only adds to it)
    # Answered while the timed-out call still sleeps on the node (for a minute): not behind it.
    assert node_of(gw, child(1)) == atom(child(1))
    assert entry(gw, child(1))["state"] == "up"


def test_many_concurrent_rpcs_each_get_their_own_answer(gw):
    n = 100

    def one(i):
        node = child(1 + i % 2)
        if i % 2:
            return i, rpc(gw, node, mfa("erlang", "+", [i, 1]), timeout_ms=20000, timeout=60)
        return i, rpc(gw, node, mfa("lists", "reverse", [[i, i * 7, 1000 + i]]),
                      timeout_ms=20000, timeout=60)

    barrier = threading.Barrier(n)

    def together(i):
        barrier.wait(timeout=30)
        return one(i)

    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(together, range(n)))
    bad = []
    for i, r in results:
        want = i + 1 if i % 2 else [1000 + i, i * 7, i]
        if r.status != 200 or r.json() != want:
            bad.append((i, want, r))
    assert not bad, bad[:5]


def test_child_killed_mid_call_is_503_at_once_and_restarted(gw):
    before = wait_up(gw, child(2))
    old_pid = before["os_pid"]
    result = {}

    def call():
        result["r"] = rpc(gw, child(2), mfa("timer", "sleep", [60000]), timeout_ms=60000)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.5 * nx.SLOW)  # the call is in flight on the child
    assert t.is_alive(), result
    os.kill(old_pid, signal.SIGKILL)
    t.join(90)
    r = result["r"]
    # 503 unavailable, not the 504 of its 60 s timeout: failed when the child died
    assert r.status == 503, r
    assert r.json()["error"]["code"] == "unavailable", r
    # restart: permanent -> a new process under the same name, restarts counted.
    after = wait_up(gw, child(2), pred=lambda e: e["os_pid"] not in (None, old_pid))
    assert after["restarts"] == before["restarts"] + 1, after
    assert not nx.proc_alive(old_pid)
    assert node_of(gw, child(2)) == atom(child(2))


def test_spawn_more_children_continues_numbering(gw):
    t0 = time.monotonic()
    r = gw.request("POST", "/nodes", '{"count":2}', {"Content-Type": "application/json"},
                   timeout=60 * nx.SLOW)
    assert r.status == 201, f"{r}\n" + gw.log_tail()
    assert r.json() == {"nodes": [child(3), child(4)]}, r
    print(f"two children up in {time.monotonic() - t0:.1f} s")
    # Answered once they are up: no waiting needed.
    for i in (3, 4):
        e = entry(gw, child(i))
        assert e["state"] == "up" and e["child"] and e["connected"] and e["restarts"] == 0, e
        assert nx.proc_alive(e["os_pid"]), e
        assert node_of(gw, child(i)) == atom(child(i))
    # An empty body is one child.
    r = gw.request("POST", "/nodes", timeout=60 * nx.SLOW)
    assert r.status == 201 and r.json() == {"nodes": [child(5)]}, r
    assert node_of(gw, child(5)) == atom(child(5))


@pytest.mark.parametrize("body, expect", [
    ("[2]", "the body must be a JSON object"),
    ('"2"', "the body must be a JSON object"),
    ('{"count":0}', "$.count: expected"),
    ('{"count":-1}', "$.count: expected"),
    ('{"count":"2"}', "$.count: expected"),
    ('{"count":2.5}', "$.count: expected"),
    ('{"count":10001}', "$.count: expected"),
    ('{"cuont":1}', "$.cuont"),
    ('{"count":', None),
    # 5 children run, max_children is 5
    ('{"count":1}', f"at most erlang_nodes.max_children ({MAX_CHILDREN})"),
])
def test_bad_spawn_request_is_400(gw, body, expect):
    before = sorted(n["node"] for n in list_nodes(gw)["nodes"] if n["child"])
    r = gw.request("POST", "/nodes", body, {"Content-Type": "application/json"})
    assert r.status == 400, r
    err = r.json()["error"]
    if expect:
        assert err["code"] == "bad_request" and expect in err["message"], err
    after = sorted(n["node"] for n in list_nodes(gw)["nodes"] if n["child"])
    assert after == before


def test_delete_child_stops_and_forgets_it(gw):
    e = wait_up(gw, child(5))
    pid, st = e["os_pid"], nx.proc_start_time(e["os_pid"])
    r = gw.request("DELETE", f"/nodes/{child(5)}")
    assert r.status == 202, r
    assert r.json() == {"status": "stopping", "node": child(5)}, r
    wait_entry(gw, child(5), lambda x: x is None, "to be forgotten", timeout=10)
    assert child(5) not in [n["node"] for n in list_nodes(gw)["nodes"]]
    assert not gone({pid: st}, 5 * nx.SLOW), f"{child(5)} pid {pid} still runs"
    r = gw.request("DELETE", f"/nodes/{child(5)}")
    assert r.status == 404 and r.json()["error"]["code"] == "not_found", r
    # Room for one more child again; numbering still goes on from the highest.
    r = gw.request("POST", "/nodes", '{"count":1}', timeout=60 * nx.SLOW)
    assert r.status == 201 and r.json() == {"nodes": [child(6)]}, r
    assert node_of(gw, child(6)) == atom(child(6))


def test_delete_unknown_or_non_child_is_404(gw):
    for node in (f"nx_nosuch@{H}", gw.node_name, "x"):
        r = gw.request("DELETE", f"/nodes/{node}")
        assert r.status == 404 and r.json()["error"]["code"] == "not_found", (node, r)


def test_rpc_into_another_erl_node_connects_on_demand(gw, session):
    name = nx.unique("nxpeer")
    node = f"{name}@{H}"
    p = start_erl(session, name)
    try:
        assert entry(gw, node) is None
        assert node_of(gw, node) == atom(node)
        r = rpc(gw, node, mfa("lists", "seq", [1, 5]))
        assert r.status == 200 and r.json() == [1, 2, 3, 4, 5], r
        e = entry(gw, node)
        assert e == {"node": node, "connected": True, "child": False, "state": "up",
                     "os_pid": None, "restarts": 0}, e
        # Not a child: it cannot be deleted through nodexd.
        r = gw.request("DELETE", f"/nodes/{node}")
        assert r.status == 404, r
        # Killed: a call in flight fails at once, and the node is no longer connected.
        result = {}

        def call():
            result["r"] = rpc(gw, node, mfa("timer", "sleep", [60000]), timeout_ms=60000)

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.5 * nx.SLOW)
        nx.end_process(p, signal.SIGKILL)
        t.join(90)
        assert result["r"].status == 503, result  # not the 504 of its 60 s timeout
        wait_entry(gw, node, lambda x: x is None or not x["connected"], "to be disconnected")
        # Back under the same name: connected on demand again.
        p = start_erl(session, name)
        assert node_of(gw, node) == atom(node)
    finally:
        nx.end_process(p, signal.SIGKILL)


def test_rpc_into_unreachable_node_is_503(gw):
    node = f"{nx.unique('nxghost')}@{H}"
    r = rpc(gw, node, mfa("erlang", "node", []), timeout_ms=20000)
    assert r.status == 503, r
    assert r.json()["error"]["code"] == "unavailable", r
    assert r.headers.get("retry-after") == "1", r.headers
    # (503, not the 504 of the 20 s timeout: answered once epmd said the name is not there)
    e = entry(gw, node)
    assert e is None or not e["connected"], e
    # The children are unaffected.
    assert node_of(gw, child(1)) == atom(child(1))


def task_count(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_rpcs_to_unreachable_nodes_leave_no_threads_or_memory_behind(nodexd, session):
    """Each rpc to an unknown node makes a peer entry and a connector thread. Behind an epmd that
    accepts and never answers (ei_connect's own lookup has no timeout) the threads used to hang
    for ever, one per attempt; entries stayed until exit. Now the lookup has the attempt's
    deadline and a forgotten entry is freed."""
    gw = nodexd([], extra=nodes_config(count=0, rpc_nodes=[f"*@{H}", "*@127.0.0.2"]))
    pid = gw.proc.pid
    tasks0, rss0 = task_count(pid), rss_kib(pid)
    # 127.0.0.2 is loopback too, and our epmd listens on 127.0.0.1 only.
    silent = socket.socket()
    silent.bind(("127.0.0.2", session.epmd_port))
    silent.listen(1024)
    try:
        silent_nodes = [f"{nx.unique('nxsilent')}@127.0.0.2" for _ in range(120)]
        with concurrent.futures.ThreadPoolExecutor(60) as ex:
            codes = list(ex.map(lambda n: rpc(gw, n, mfa("erlang", "node", []),
                                              timeout_ms=20000).status, silent_nodes))
        assert codes == [503] * len(codes), codes
        # 2,000 more to names epmd does not know: each answered at once.
        ghosts = [f"{nx.unique('nxghost')}@{H}" for _ in range(2000)]
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            codes = list(ex.map(lambda n: rpc(gw, n, mfa("erlang", "node", []),
                                              timeout_ms=20000).status, ghosts))
        assert set(codes) == {503}, set(codes)
        # The connector threads end (at their deadline at most): back to where we started.
        nx.wait_until(lambda: task_count(pid) <= tasks0, 30 * nx.SLOW, interval=0.1,
                      what=f"threads back to {tasks0} (now {task_count(pid)})")
    finally:
        silent.close()
    nodes = [n["node"] for n in list_nodes(gw)["nodes"]]
    assert not [n for n in nodes if "nxsilent" in n or "nxghost" in n], nodes
    rss = rss_kib(pid)
    if not nx.SANITIZE:  # ASan keeps freed memory in its quarantine
        assert rss <= rss0 * 1.5 + 32 * 1024, f"RSS {rss} KiB after, {rss0} KiB before"
    print(f"threads {tasks0} before and after; RSS {rss0} -> {rss} KiB")


def test_rpc_to_a_malformed_node_name_is_400(gw):
    for node in ("justaname", "a@b@c", "nohost@", f"@{H}", gw.node_name):
        r = rpc(gw, node, mfa("erlang", "node", []))
        assert r.status == 400 and r.json()["error"]["code"] == "bad_request", (node, r)
    # A percent-encoded '@' is the same node.
    r = rpc(gw, child(1).replace("@", "%40"), mfa("erlang", "node", []))
    assert r.status == 200 and r.json() == atom(child(1)), r


def test_erl_node_pings_nodexd_and_is_served_when_connected_in(gw, session):
    name = nx.unique("nxpinger")
    node = f"{name}@{H}"
    gwn = gw.node_name
    expr = (f"P = net_adm:ping('{gwn}'), H = lists:member('{gwn}', nodes(hidden)), "
            f"V = lists:member('{gwn}', nodes()), "
            f"io:format(\"PING ~p HIDDEN ~p VISIBLE ~p~n\", [P, H, V])")
    p = start_erl(session, name, "-eval", expr)
    try:
        log = session.log_path(name)
        nx.wait_until(lambda: "PING" in open(log).read(), 20 * nx.SLOW, what="the ping line")
        out = open(log).read()
        assert "PING pong HIDDEN true VISIBLE false" in out, out + gw.log_tail()
        # It connected to us: listed as a connected peer, and rpc uses that connection.
        e = wait_up(gw, node, timeout=10)
        assert e["child"] is False and e["os_pid"] is None, e
        assert node_of(gw, node) == atom(node)
        r = rpc(gw, node, mfa("erlang", "nodes", [atom("hidden")]))
        assert r.status == 200 and atom(gwn) in r.json(), r
    finally:
        nx.end_process(p, signal.SIGKILL)


def test_sigterm_stops_every_child(gw):
    children = {n["node"]: n["os_pid"] for n in list_nodes(gw)["nodes"] if n["child"]}
    assert sorted(children) == [child(i) for i in (1, 2, 3, 4, 6)], children
    pids = {pid: nx.proc_start_time(pid) for pid in children.values()}
    assert all(st is not None for st in pids.values()), pids
    status = gw.stop(signal.SIGTERM)
    assert status == 0, gw.log_tail()
    survivors = gone(pids, 3 * nx.SLOW)
    kill_survivors(survivors)
    assert not survivors, f"children survived SIGTERM of nodexd: {survivors}\n" + gw.log_tail()
    assert_clean_exit(gw)


# --- nodexd SIGKILLed: children die with it ---------------------------------------------------

def test_children_die_when_nodexd_is_sigkilled(nodexd):
    d = nodexd([], extra=nodes_config(count=2, name_prefix="sk"))
    pids = {}
    for i in (1, 2):
        e = wait_up(d, child(i, "sk"))
        pids[e["os_pid"]] = nx.proc_start_time(e["os_pid"])
    assert node_of(d, child(1, "sk")) == atom(child(1, "sk"))
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(10 * nx.SLOW)
    survivors = gone(pids, 5 * nx.SLOW)
    kill_survivors(survivors)
    # A SIGKILLed nodexd cannot remove its children's private HOME (with the cookie file).
    tmp = os.environ.get("TMPDIR") or "/tmp"
    for home in glob.glob(os.path.join(tmp, f"nodexd-{d.proc.pid}-*")):
        shutil.rmtree(home, ignore_errors=True)
    assert not survivors, f"children survived SIGKILL of nodexd: {survivors}"


# --- configuration: code_paths, erl_args; a child that dies while starting ---------------------

def test_code_paths_and_erl_args_reach_the_child(nodexd, tmp_path):
    (tmp_path / "nx_cp.erl").write_text(
        "-module(nx_cp).\n-export([hi/0]).\nhi() -> from_code_path.\n")
    subprocess.run(["erlc", "-o", str(tmp_path), str(tmp_path / "nx_cp.erl")], check=True,
                   timeout=60 * nx.SLOW)
    d = nodexd([], extra=nodes_config(count=1, name_prefix="cp", code_paths=[str(tmp_path)],
                                      erl_args=["-nx_flag", "{not_a_template}"]))
    node = child(1, "cp")
    wait_up(d, node)
    r = rpc(d, node, mfa("nx_cp", "hi", []))
    assert r.status == 200 and r.json() == atom("from_code_path"), r
    r = rpc(d, node, mfa("init", "get_argument", [atom("nx_flag")]))
    # Erlang strings are lists of character codes in JSON; the braces are passed literally.
    codes = [ord(ch) for ch in "{not_a_template}"]
    assert r.status == 200 and r.json() == tup(atom("ok"), [[codes]]), r
    stop_clean(d)


def test_child_dying_while_starting_is_503_spawn_failed(nodexd):
    d = nodexd([], extra=nodes_config(count=0, name_prefix="bad", restart="temporary",
                                      erl_args=["-eval", "halt(3)"]))
    assert list_nodes(d)["nodes"] == []
    r = d.request("POST", "/nodes", '{"count":1}', timeout=60 * nx.SLOW)
    assert r.status == 503, f"{r}\n" + d.log_tail()
    err = r.json()["error"]
    assert err["code"] == "spawn_failed" and err["nodes"] == [] and err["message"], err
    e = entry(d, child(1, "bad"))
    assert e is None or (e["state"] in ("down", "stopped") and not e["connected"]), e
    stop_clean(d)


def test_missing_erl_is_logged_and_spawn_is_503(nodexd):
    d = nodexd([], extra=nodes_config(count=1, erl="/nonexistent/erl"))
    assert list_nodes(d)["nodes"] == []
    nx.wait_until(lambda: "cannot set up child node child1@" in d.log_text(), 10,
                  what="the missing erl in the log")
    r = d.request("POST", "/nodes", '{"count":1}')
    assert r.status == 503 and r.json()["error"]["code"] == "unavailable", r
    assert list_nodes(d)["nodes"] == []
    stop_clean(d)


def test_restart_policy_temporary_and_max_restarts(nodexd):
    # temporary: a killed child is not restarted; it stays listed until deleted.
    d = nodexd([], extra=nodes_config(count=1, name_prefix="tmp", restart="temporary"))
    node = child(1, "tmp")
    pid = wait_up(d, node)["os_pid"]
    os.kill(pid, signal.SIGKILL)
    e = wait_entry(d, node, lambda x: x and x["state"] == "stopped", "to be stopped", timeout=10)
    assert e["restarts"] == 0 and not e["connected"], e
    r = rpc(d, node, mfa("erlang", "node", []), timeout_ms=60000)
    assert r.status == 503, r  # refused, not held until its 60 s timeout (504)
    r = d.request("DELETE", f"/nodes/{node}")
    assert r.status == 202, r
    wait_entry(d, node, lambda x: x is None, "to be forgotten", timeout=10)
    stop_clean(d)

    # permanent, max_restarts 1 in 30 s: the second death marks it failed.
    d = nodexd([], extra=nodes_config(count=1, name_prefix="mr", max_restarts=1, max_seconds=30))
    node = child(1, "mr")
    first = wait_up(d, node)["os_pid"]
    os.kill(first, signal.SIGKILL)
    second = wait_up(d, node, pred=lambda x: x["os_pid"] not in (None, first))
    assert second["restarts"] == 1, second
    os.kill(second["os_pid"], signal.SIGKILL)
    e = wait_entry(d, node, lambda x: x and x["state"] == "failed", "to be failed", timeout=10)
    assert e["restarts"] == 1 and e["os_pid"] is None, e
    assert rpc(d, node, mfa("erlang", "node", [])).status == 503
    stop_clean(d)
