"""test_core_supervisor: C-node failures, liveness, restart policies and nodexd's own shutdown."""

import json
import os
import signal
import threading
import time

import pytest

import nodex_harness as nx
from nodex_harness import atom, tup


def call_in_thread(d, name, body, timeout_ms):
    out = {}

    def run():
        out["r"] = d.call(name, body, timeout_ms=timeout_ms)

    th = threading.Thread(target=run)
    th.start()
    return th, out


def wait_in_flight(d, name, n=1):
    nx.wait_until(lambda: d.info(name)["in_flight"] >= n, 5, what=f"{n} call(s) in flight")


def test_kill_9_fails_in_flight_calls_with_503_fast_and_restart_serves(nodexd):
    d = nodexd([nx.test_cnode_spec("t")])
    old = d.wait_up("t")["os_pid"]
    calls = [call_in_thread(d, "t", tup(atom("sleep"), 8000, f"s{i}"), 10000) for i in range(3)]
    wait_in_flight(d, "t", 3)
    os.kill(old, signal.SIGKILL)
    for th, out in calls:
        th.join(30 * nx.SLOW)
        r = out["r"]
        # 503 unavailable, not the 504 their 10 s timeout would give: failed when the C-node died
        assert r.status == 503, r
        assert r.json()["error"]["code"] == "unavailable"
        assert "retry-after" in r.headers, r.headers
    info = d.wait_new_pid("t", old)
    assert info["restarts"] >= 1
    assert "signal 9" in (info["last_exit"] or ""), info
    r = d.call("t", tup(atom("ping"), "after"))
    assert r.status == 200 and r.json() == tup(atom("pong"), "after"), r


def test_sigstop_hang_is_noticed_within_tick_time_and_restarted(nodexd):
    d = nodexd([nx.test_cnode_spec("t")], node={"tick_time_ms": 1000})
    old = d.wait_up("t")["os_pid"]
    r = d.call("t", atom("hang"), timeout_ms=60000)
    # 503, not the 504 of the call's own 60 s timeout: the missing ticks ended it
    assert r.status == 503, r
    assert r.json()["error"]["code"] == "unavailable", r
    info = d.wait_new_pid("t", old)
    assert not nx.proc_alive(old), "the hung process was not killed"
    r = d.call("t", tup(atom("ping"), "x"))
    assert r.status == 200, r
    assert info["restarts"] >= 1


def test_idle_hung_cnode_is_declared_down_by_ticks(nodexd):
    d = nodexd([nx.test_cnode_spec("t")], node={"tick_time_ms": 1000})
    old = d.wait_up("t")["os_pid"]
    os.kill(old, signal.SIGSTOP)  # no call in flight: only nodexd's own ticking can notice
    try:
        d.wait_new_pid("t", old, timeout=6)
    finally:
        try:
            os.kill(old, signal.SIGKILL)
        except OSError:
            pass


@pytest.mark.parametrize("http_threads", [0, 2])
def test_cnode_that_stops_reading_never_stalls_the_gateway(nodexd, http_threads):
    """16 MiB of requests pile up unsent for a SIGSTOPped C-node (far more than the socket
    buffers hold): they time out with 504, while another C-node and /healthz keep answering at
    once, because no nodexd thread ever waits for a peer to take its bytes (HTTP on the loop
    thread, or in a libmicrohttpd pool)."""
    d = nodexd([nx.test_cnode_spec("stuck"), nx.test_cnode_spec("ok")],
               node={"tick_time_ms": 30000},  # not declared down during the test
               http={"threads": http_threads})
    stuck = d.wait_up("stuck")["os_pid"]
    d.wait_up("ok")
    big = tup(atom("ping"), "x" * (2 << 20))
    os.kill(stuck, signal.SIGSTOP)
    try:
        calls = [call_in_thread(d, "stuck", big, int(4000 * nx.SLOW)) for _ in range(8)]
        wait_in_flight(d, "stuck", 8)
        for i in range(20):
            r = d.call("ok", tup(atom("ping"), f"x{i}"), timeout_ms=5000)
            assert r.status == 200 and r.json() == tup(atom("pong"), f"x{i}"), r
            assert d.request("GET", "/healthz").status == 200
        # Served while all 8 still wait: nothing waited for the stuck peer to take its bytes.
        assert d.info("stuck")["in_flight"] == 8 and all(th.is_alive() for th, _ in calls)
        for th, out in calls:
            th.join(30 * nx.SLOW)
            # 504 at the call's timeout; on a starved machine the 5 s send stall may cut the
            # peer off first: 503 naming it, just as bounded
            r = out["r"]
            assert r.status == 504 or (r.status == 503 and "went down" in r.body.decode()), r
    finally:
        try:
            os.kill(stuck, signal.SIGKILL)
        except ProcessLookupError:
            pass  # nodexd cut the stalled peer off (the 503 case above) and reaped it already
    d.wait_new_pid("stuck", stuck)


def test_casts_to_a_cnode_that_stops_reading_get_503_overloaded_and_it_stays_connected(nodexd):
    """Backpressure: once 32 MiB wait for a C-node that does not read, casts and calls to it get
    503 overloaded at once, while the connection stays up; when it reads again, all is well."""
    d = nodexd([nx.test_cnode_spec("slow")], node={"tick_time_ms": 30000})
    pid = d.wait_up("slow")["os_pid"]
    big = json.dumps(tup(atom("ping"), "x" * (2 << 20)))
    os.kill(pid, signal.SIGSTOP)
    try:
        statuses = []
        while len(statuses) < 60 and (not statuses or statuses[-1] == 202):
            statuses.append(d.call("slow", big, cast=True).status)
        assert statuses[-1] == 503, statuses
        assert 10 <= statuses.count(202) <= 40, statuses  # ~32 MiB accepted, then refused
        # still refused: the kernel may take a few more MiB meanwhile (its buffers grow), so
        # one more cast may pass before the next refusal, never more than a few
        again = [d.call("slow", big, cast=True) for _ in range(4)]
        refused = [r for r in again if r.status == 503]
        assert refused and refused[0].json()["error"]["code"] == "overloaded", again
        r = d.call("slow", tup(atom("ping"), "c"))
        assert r.status == 503 and r.json()["error"]["code"] == "overloaded", r
    finally:
        os.kill(pid, signal.SIGCONT)
    info = d.info("slow")
    assert info["state"] == "up" and info["os_pid"] == pid and info["restarts"] == 0, info
    nx.wait_until(lambda: d.call("slow", tup(atom("ping"), "after")).status == 200, 10,
                  what="the C-node drained its input and answers again")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.parametrize("http_threads", [0, 2])
def test_loop_sleeps_while_calls_wait_on_cnodes(nodexd, http_threads):
    """With calls in flight and nothing to do, nodexd sleeps: it polls briefly only right after
    light traffic, never while several calls wait."""
    d = nodexd([nx.test_cnode_spec("t")], http={"threads": http_threads})
    d.wait_up("t")
    # The test C-node serves one call at a time: 8 x 300 ms keep 3 or more in flight for 1.5 s.
    calls = [call_in_thread(d, "t", tup(atom("sleep"), 300, f"s{i}"), 10000) for i in range(8)]
    wait_in_flight(d, "t", 8)
    # nodexd's CPU time from now until the last call is answered (an event, not a sleep), as a
    # share of that time: the loop works for 8 replies and otherwise sleeps
    c0, t0 = cpu_seconds(d.proc.pid), time.monotonic()
    for th, out in calls:
        th.join(30 * nx.SLOW)
        assert out["r"].status == 200, out["r"]
    share = (cpu_seconds(d.proc.pid) - c0) / (time.monotonic() - t0)
    assert share < 0.1, f"nodexd used {share:.0%} of a CPU while waiting"


def test_refused_call_is_answered_at_once(nodexd):
    """A call refused after its connection was suspended (the C-node is not up) is answered in
    the same loop iteration, not at the next timer sweep (50 ms later)."""
    d = nodexd([nx.test_cnode_spec("gone", "exit_before_ready", max_restarts=0)])
    d.wait_for_state("gone", "failed")
    took, probe = [], []
    for _ in range(7):
        r = d.call("gone", tup(atom("ping"), "x"))
        assert r.status == 503, r
        took.append(r.elapsed)
        probe.append(d.request("GET", "/healthz").elapsed)  # the same loop, answered at once
    # Against /healthz on the same loop at the same moment (a loaded machine slows both), not
    # a fixed time: waiting for the sweep would add 25 ms on average (it runs every 50 ms).
    median = sorted(took)[3] - sorted(probe)[3]
    assert median < 0.02, f"refused calls took {took}, /healthz {probe}"


def test_crash_mid_call_is_503_fast(nodexd):
    d = nodexd([nx.test_cnode_spec("t")])
    old = d.wait_up("t")["os_pid"]
    r = d.call("t", atom("crash"), timeout_ms=60000)
    assert r.status == 503, r  # not the 504 of its 60 s timeout: ended when the C-node died
    info = d.wait_new_pid("t", old)
    assert "signal 6" in (info["last_exit"] or ""), info
    assert d.call("t", tup(atom("ping"), "x")).status == 200


def test_never_ready_ends_failed_and_gateway_serves_others(nodexd):
    d = nodexd([
        nx.test_cnode_spec("never", "never_ready", spawn_inactive_timeout_ms=300, max_restarts=2,
                           max_seconds=30),
        nx.test_cnode_spec("t"),
    ])
    d.wait_up("t")
    info = d.wait_for_state("never", "failed", timeout=10)
    assert info["restarts"] == 2, info
    assert info["os_pid"] is None
    assert info["last_exit"] or info.get("last_error"), info
    text = d.log_text()
    assert "starting" in text and "a line ending in CRLF" in text, "child output not logged"
    assert "CRLF\r" not in text, "\\r\\n not stripped"
    assert "never_ready: stderr line" in text
    r = d.call("never", tup(atom("ping"), "x"))
    assert r.status == 503, r
    assert d.call("t", tup(atom("ping"), "x")).status == 200


def test_exit_before_ready_reports_exit_status_3(nodexd):
    d = nodexd([nx.test_cnode_spec("e", "exit_before_ready", max_restarts=1, max_seconds=30)])
    info = d.wait_for_state("e", "failed", timeout=10)
    assert info["last_exit"] == "exit status 3", info


def test_signal_before_ready_reports_the_signal(nodexd):
    d = nodexd([nx.test_cnode_spec("s", "signal_before_ready", restart="temporary")])
    info = d.wait_for_state("s", "stopped", timeout=10)
    last = info["last_exit"] or ""
    expected = "signal 6" if nx.SANITIZE else "signal 11"
    assert last.startswith("killed by signal") and expected in last, info


def test_slow_ready_within_spawn_timeout_comes_up(nodexd):
    d = nodexd([nx.test_cnode_spec("slow", "slow_ready", "700")])
    info = d.wait_up("slow", timeout=8)
    assert info["restarts"] == 0, info


def test_ready_line_without_connection_is_not_up(nodexd):
    d = nodexd([nx.test_cnode_spec("nc", "ready_then_no_connect", spawn_inactive_timeout_ms=500,
                                   restart="temporary")])
    info = d.wait_for_state("nc", "stopped", timeout=10)
    assert info["os_pid"] is None
    assert d.stop_and_drain() == 0
    moves = d.transitions("nc")
    assert moves and all(to != "up" for _, to in moves), moves  # never up, at no moment


def assert_never_restarted(d, name):
    """After nodexd's own shutdown, its log shows `name` entered stopped once and never left it
    (so no restart came later, however long we would have waited)."""
    assert d.stop_and_drain() == 0
    moves = d.transitions(name)
    tos = [to for _, to in moves]
    assert "stopped" in tos, moves
    assert all(to == "stopped" for to in tos[tos.index("stopped"):]), moves


def test_temporary_is_not_restarted(nodexd):
    # A 1 ms backoff: a wrong restart would follow at once, long before nodexd's shutdown.
    d = nodexd([nx.test_cnode_spec("t", restart="temporary", backoff_initial_ms=1,
                                   backoff_max_ms=1)])
    d.wait_up("t")
    r = d.call("t", tup(atom("exit"), 3))
    assert r.status == 503, r
    info = d.wait_for_state("t", "stopped", timeout=5)
    assert info["restarts"] == 0 and info["last_exit"] == "exit status 3", info
    assert d.request("GET", "/healthz").status == 200
    assert_never_restarted(d, "t")


def test_transient_exit_0_is_not_restarted(nodexd):
    d = nodexd([nx.test_cnode_spec("t", restart="transient", backoff_initial_ms=1,
                                   backoff_max_ms=1)])
    d.wait_up("t")
    d.call("t", tup(atom("exit"), 0))
    info = d.wait_for_state("t", "stopped", timeout=5)
    assert info["last_exit"] == "exit status 0" and info["restarts"] == 0, info
    assert d.request("GET", "/healthz").status == 200
    assert_never_restarted(d, "t")


def test_transient_exit_3_is_restarted(nodexd):
    d = nodexd([nx.test_cnode_spec("t", restart="transient")])
    old = d.wait_up("t")["os_pid"]
    d.call("t", tup(atom("exit"), 3))
    info = d.wait_new_pid("t", old)
    assert info["restarts"] == 1 and info["last_exit"] == "exit status 3", info


def test_max_restarts_marks_failed_and_gateway_lives(nodexd):
    d = nodexd([nx.test_cnode_spec("t", max_restarts=2, max_seconds=30), nx.test_cnode_spec("ok")])
    for _ in range(3):
        old = d.wait_up("t")["os_pid"]
        d.call("t", tup(atom("exit"), 5))
        nx.wait_until(lambda: d.info("t")["os_pid"] != old, 5, what="the exit to be seen")
    info = d.wait_for_state("t", "failed", timeout=5)
    assert info["restarts"] == 2, info
    assert d.request("GET", "/healthz").status == 200
    assert d.request("GET", "/readyz").status == 503
    assert d.call("ok", tup(atom("ping"), "x")).status == 200
    assert d.proc.poll() is None


def test_nodexd_sigkill_leaves_no_child_behind(nodexd):
    d = nodexd([nx.test_cnode_spec("a"), nx.test_cnode_spec("b"), nx.example_cnode_spec("c")])
    pids = [d.wait_up(n)["os_pid"] for n in ("a", "b", "c")]
    d.record_pids()
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(5)
    t0 = time.monotonic()
    left = d.survivors(wait=2.0)
    assert not left, f"children survived nodexd's SIGKILL for 2 s: {left} (of {pids})"
    print(f"children gone {time.monotonic() - t0:.2f}s after SIGKILL")


def test_sigterm_exits_0_and_stops_children(nodexd):
    d = nodexd([nx.test_cnode_spec("a"), nx.example_cnode_spec("c")])
    for n in ("a", "c"):
        d.wait_up(n)
    status = d.stop(signal.SIGTERM)
    assert status == 0, d.log_tail()
    assert not d.survivors(wait=0.5), "children alive after nodexd exited"


def test_sigint_exits_0(nodexd):
    d = nodexd([nx.test_cnode_spec("a")])
    d.wait_up("a")
    assert d.stop(signal.SIGINT) == 0, d.log_tail()


def test_sigterm_kills_a_child_ignoring_sigterm_after_shutdown_timeout(nodexd):
    # A SIGSTOPped child cannot act on SIGTERM: only the SIGKILL after shutdown_timeout_ms ends it.
    d = nodexd([nx.test_cnode_spec("a", shutdown_timeout_ms=500)], node={"tick_time_ms": 60000})
    pid = d.wait_up("a")["os_pid"]
    os.kill(pid, signal.SIGSTOP)
    assert d.stop(signal.SIGTERM) == 0, d.log_tail()
    assert not nx.proc_alive(pid) and not d.survivors(wait=1.0)


def test_calls_while_restarting_get_503_with_retry_after(nodexd):
    d = nodexd([nx.test_cnode_spec("t", backoff_initial_ms=2000, backoff_max_ms=2000)])
    old = d.wait_up("t")["os_pid"]
    os.kill(old, signal.SIGKILL)
    nx.wait_until(lambda: d.info("t")["state"] in ("down", "restarting"), 3, what="not up")
    # ?wait=false: refused at once, not held until the restart (or its 60 s timeout)
    r = d.request("POST", "/cnodes/t/call?timeout_ms=60000&wait=false",
                  nx.J(tup(atom("ping"), "x")), {"Content-Type": "application/json"})
    assert r.status == 503, r
    assert "retry-after" in r.headers
    # the default: held until the C-node is back, then answered
    r = d.call("t", tup(atom("ping"), "w"), timeout_ms=60000)
    assert r.status == 200 and r.json() == tup(atom("pong"), "w"), r
