"""test_pools: a C-node entry with `instances: N` runs N processes and spreads calls to the least
loaded one that is up; losing one instance never fails calls the others can take."""

import os
import signal
import threading
import time

import nodex_harness as nx
from nodex_harness import atom, tup


def pool_spec(n, mode="serve", **kw):
    spec = nx.test_cnode_spec("pool", mode, **kw)
    spec["instances"] = n
    return spec


def wait_pool_up(d, n, timeout=10.0):
    deadline = time.monotonic() + timeout * nx.SLOW
    while time.monotonic() < deadline:
        info = d.info("pool")
        if info["instances_up"] == n:
            return info
        time.sleep(0.05)
    raise AssertionError(f"pool not up: {d.info('pool')}\n" + d.log_tail())


def test_pool_runs_n_processes_with_distinct_node_names(nodexd):
    d = nodexd([pool_spec(3)])
    info = wait_pool_up(d, 3)
    assert info["instances"] == 3 and info["state"] == "up"
    pool = info["pool"]
    assert [p["instance"] for p in pool] == [1, 2, 3]
    assert len({p["node"] for p in pool}) == 3, pool
    assert len({p["os_pid"] for p in pool}) == 3, pool
    for p in pool:
        assert p["state"] == "up" and os.path.exists(f"/proc/{p['os_pid']}")
    d._note({"cnodes": pool})  # the harness checks every instance is gone at the end


def test_concurrent_calls_spread_over_every_instance(nodexd):
    d = nodexd([pool_spec(3)])
    wait_pool_up(d, 3)
    results = {}

    def one(i):
        # Each call holds its instance for 150 ms: least-loaded dispatch must use all three.
        r = d.call("pool", nx.J(tup(atom("sleep"), 150, i)), timeout_ms=5000)
        results[i] = (r.status, r.json())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[i] == (200, tup(atom("slept"), i)) for i in range(30)), results
    pool = d.info("pool")["pool"]
    d._note({"cnodes": pool})
    per_instance = [p["calls_total"] for p in pool]
    assert sum(per_instance) == 30
    assert all(n >= 5 for n in per_instance), per_instance


def test_killing_one_instance_does_not_fail_calls_to_the_pool(nodexd):
    d = nodexd([pool_spec(2, backoff_initial_ms=1000, backoff_max_ms=1000)])
    wait_pool_up(d, 2)
    victim = d.info("pool")["pool"][0]["os_pid"]
    d._note({"cnodes": d.info("pool")["pool"]})
    os.kill(victim, signal.SIGKILL)
    info = nx.wait_until(lambda: (lambda i: i if i["instances_up"] == 1 else None)(d.info("pool")),
                         5, what="the killed instance to be seen down")
    assert info["state"] == "up", info
    for i in range(20):
        r = d.call("pool", nx.J(tup(atom("ping"), i)))
        assert r.status == 200 and r.json() == tup(atom("pong"), i), r
    info = wait_pool_up(d, 2)
    assert info["restarts"] == 1
    d._note({"cnodes": info["pool"]})


def test_pool_with_no_instance_up_is_503(nodexd):
    d = nodexd([pool_spec(2, "never_ready", spawn_inactive_timeout_ms=5000)])
    r = d.request("POST", "/cnodes/pool/call?wait=false", nx.J(tup(atom("ping"), 1)),
                  {"Content-Type": "application/json"})
    assert r.status == 503 and r.headers.get("retry-after") == "1", r
    d._note({"cnodes": d.info("pool")["pool"]})
