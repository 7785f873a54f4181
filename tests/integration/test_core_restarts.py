"""test_core_restarts: calls that wait out a C-node's (re)start, recycling after calls_per_process,
restart on request, the crash-loop retry, and gen_call monitors against a real Erlang node."""

import subprocess
import threading

import nodex_harness as nx
from nodex_harness import J, atom, tup

JSON = {"Content-Type": "application/json"}


def post_call(d, name, term, query="", timeout=60.0):
    return d.request("POST", f"/cnodes/{name}/call{query}", J(term), JSON, timeout=timeout)


def concurrently(n, fn):
    """Runs fn(i) for i in 0..n-1 on n threads; returns the results in order."""
    results = [None] * n

    def run(i):
        try:
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - reported by the caller's assertion
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180 * nx.SLOW)
    assert not any(t.is_alive() for t in threads), "a caller never returned"
    return results


def test_a_cnode_that_exits_after_every_reply_serves_every_call(nodexd):
    # One message per process, then exit 0: nodexd sends each process one call
    # (calls_per_process: 1), holds the next ones until the new process is up, and does not count
    # the planned exits against the restart intensity.
    d = nodexd([nx.test_cnode_spec("once", "serve_once", calls_per_process=1)])
    d.wait_up("once")
    for i in range(200):
        r = d.call("once", tup(atom("ping"), f"s{i}"), timeout_ms=60000, timeout=90)
        assert r.status == 200 and r.json() == tup(atom("pong"), f"s{i}"), (i, r, d.log_tail())
    results = concurrently(50, lambda i: d.call("once", tup(atom("ping"), f"c{i}"),
                                                timeout_ms=120000, timeout=150))
    for i, r in enumerate(results):
        assert not isinstance(r, Exception) and r.status == 200, (i, r, d.log_tail())
        assert r.json() == tup(atom("pong"), f"c{i}"), (i, r)  # each caller its own reply
    info = d.info("once")
    assert info["state"] != "failed" and info["restarts"] >= 249, info
    assert info["waiting"] == 0 and info["in_flight"] == 0, info


def test_calls_wait_for_a_starting_cnode_unless_told_not_to(nodexd):
    d = nodexd([nx.test_cnode_spec("slow", "slow_ready", str(int(4000 * nx.SLOW)),
                                   spawn_inactive_timeout_ms=int(30000 * nx.SLOW))])
    assert d.info("slow")["state"] == "starting"
    r = post_call(d, "slow", tup(atom("ping"), "n"), "?wait=false")
    assert r.status == 503 and r.json()["error"]["code"] == "unavailable", r
    r = post_call(d, "slow", tup(atom("ping"), "n"), "?wait=maybe")
    assert r.status == 400 and "wait" in r.json()["error"]["message"], r
    r = post_call(d, "slow", tup(atom("ping"), "n"), "?timeout_ms=100")
    assert r.status == 504, r
    assert "did not come up within 100 ms" in r.json()["error"]["message"], r
    # The default: held until the C-node is up, then answered.
    r = post_call(d, "slow", tup(atom("ping"), "w"), "?timeout_ms=60000", timeout=90)
    assert r.status == 200 and r.json() == tup(atom("pong"), "w"), (r, d.log_tail())
    assert d.info("slow")["waiting"] == 0


def test_max_waiting_bounds_the_calls_held_for_a_cnode(nodexd):
    d = nodexd([nx.test_cnode_spec("slow", "slow_ready", str(int(4000 * nx.SLOW)), max_waiting=2,
                                   spawn_inactive_timeout_ms=int(30000 * nx.SLOW))])
    held = []
    threads = [threading.Thread(target=lambda i=i: held.append(
        post_call(d, "slow", tup(atom("ping"), f"h{i}"), "?timeout_ms=60000", timeout=90)))
        for i in range(2)]
    for t in threads:
        t.start()
    nx.wait_until(lambda: d.info("slow")["waiting"] == 2, 10 * nx.SLOW, what="2 calls waiting")
    r = post_call(d, "slow", tup(atom("ping"), "over"), "?timeout_ms=60000")
    assert r.status == 503 and r.json()["error"]["code"] == "overloaded", r
    for t in threads:
        t.join(90 * nx.SLOW)
    assert all(r.status == 200 for r in held), held
    assert sorted(J(r.json()) for r in held) == [J(tup(atom("pong"), f"h{i}")) for i in (0, 1)]


def test_a_failed_cnode_answers_at_once_and_restarts_on_request(nodexd, tmp_path):
    flag = tmp_path / "fail"
    flag.write_text("")
    d = nodexd([nx.test_cnode_spec("flaky", "exit_if_exists", str(flag), max_restarts=1,
                                   retry_failed_after_ms=0)])
    d.wait_for_state("flaky", "failed")
    # failed: no waiting (a 60 s wait would end in 504)
    r = post_call(d, "flaky", tup(atom("ping"), "f"), "?timeout_ms=60000")
    assert r.status == 503 and "failed" in r.json()["error"]["message"], r
    assert d.request("POST", "/cnodes/nope/restart").status == 404
    assert d.request("GET", "/cnodes/flaky/restart").status == 405
    flag.unlink()
    r = d.request("POST", "/cnodes/flaky/restart")
    assert r.status == 202 and r.json() == {"name": "flaky", "restart": "requested"}, r
    info = d.wait_up("flaky")
    r = d.call("flaky", tup(atom("ping"), "back"))
    assert r.status == 200 and r.json() == tup(atom("pong"), "back"), r
    # An up C-node restarts too: a new process.
    assert d.request("POST", "/cnodes/flaky/restart").status == 202
    d.wait_new_pid("flaky", info["os_pid"])
    r = d.call("flaky", tup(atom("ping"), "after"))
    assert r.status == 200 and r.json() == tup(atom("pong"), "after"), r
    assert any(line.endswith("restart requested") for _tag, line in d.lines), d.log_tail()


def test_a_failed_cnode_is_tried_again_after_retry_failed_after_ms(nodexd, tmp_path):
    flag = tmp_path / "fail"
    flag.write_text("")
    d = nodexd([nx.test_cnode_spec("loop", "exit_if_exists", str(flag), max_restarts=1,
                                   retry_failed_after_ms=1500)])
    d.wait_for_state("loop", "failed")
    flag.unlink()
    d.wait_up("loop", timeout=30)
    assert "trying again after 1500 ms failed" in d.log_text(), d.log_tail()
    r = d.call("loop", tup(atom("ping"), "again"))
    assert r.status == 200, r


# --- gen_call against a real Erlang node: monitors -------------------------------------------
SERVER = r"""
Loop = fun L() ->
    receive
        {'$gen_call', From, {ping, X}} -> gen:reply(From, {pong, X}), L();
        {'$gen_call', From, monitors} ->
            {monitored_by, M} = process_info(self(), monitored_by),
            gen:reply(From, length(M)), L();
        {'$gen_call', _From, crash} -> exit(crashed)
    end
end,
register(nx_server, spawn(Loop)),
io:format("READY~n")
"""


def start_erlang_server(session):
    sname = nx.unique("nxsrv")
    log = session.log_path(sname)
    with open(log, "wb") as f:
        p = session.spawn(["erl", "-noshell", "-name", f"{sname}@{nx.HOST}", "-args_file",
                           session.erl_args_file, "-kernel", "net_ticktime", "4",
                           "-eval", " ".join(SERVER.split())],
                          sname, stdout=f, stderr=subprocess.STDOUT)
    nx.wait_until(lambda: "READY" in open(log).read() or p.poll() is not None, 30 * nx.SLOW,
                  what="the Erlang server")
    assert p.poll() is None, open(log).read()
    return p, f"{sname}@{nx.HOST}"


def test_gen_call_monitors_its_target_process(session, nodexd):
    # two nodes: nodexd holds one connection per node, so one adopted entry per node
    p, node = start_erlang_server(session)
    p2, node2 = start_erlang_server(session)
    adopt = {"direction": "adopt", "protocol": "gen_call", "connect_timeout_ms": 2000}
    d = nodexd([dict(adopt, name="srv", node=node, registered_name="nx_server"),
                dict(adopt, name="ghost", node=node2, registered_name="no_such_server")])
    d.wait_up("srv")
    d.wait_up("ghost")
    for i in range(5):
        r = d.call("srv", tup(atom("ping"), i))
        assert r.status == 200 and r.json() == tup(atom("pong"), i), r
    # Each call's monitor ends with it (DEMONITOR_P, sent right after each reply: poll for the
    # last one's): the server holds the current call's only.
    nx.wait_until(lambda: d.call("srv", atom("monitors")).json() == 1, 10 * nx.SLOW,
                  what="exactly the current call's monitor")
    # No such process: noproc at once, not a timeout after 60 s.
    r = post_call(d, "ghost", tup(atom("ping"), 1), "?timeout_ms=60000")
    assert r.status == 503 and "noproc" in r.json()["error"]["message"], r
    # The process exits during the call: its exit reason at once.
    r = post_call(d, "srv", atom("crash"), "?timeout_ms=60000")
    assert r.status == 503 and "crashed" in r.json()["error"]["message"], r
    nx.end_process(p)
    nx.end_process(p2)
