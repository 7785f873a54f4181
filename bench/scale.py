#!/usr/bin/python3
"""bench/scale.py: the scale benchmarks behind bench/scale.sh and bench/netns.sh (stdlib only).

  scale.py scale --build-dir DIR --load BIN --pidfile F [--count 1000] [--calls-per-cnode 10]
                 [--sleep-ms 1000] [--pool-duration 5] [--out DIR]
  scale.py netns --build-dir DIR --load BIN --pidfile F --ns-a NS --ns-b NS --ip-a IP --ip-b IP
                 [--duration 5] [--out DIR]

Every process started here is recorded in --pidfile (one pid a line) so that the calling shell's
trap can kill it by pid even if this script dies. Results: <out>/scale-<ts>.{json,md} or
<out>/scale-netns-<ts>.{json,md}; <out>/latest-scale.md is rebuilt from the newest of both.
"""

import argparse
import glob
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "integration"))
from nodex_harness import pids_with_arg  # noqa: E402  (C-nodes carry the cookie in argv)

READY_RE = re.compile(r"^nodexd ready http=(\S+):(\d+) node=(\S+)")
SPIN_US = 1000  # CPU per call of the pool benchmark's C-node work
TARGETS = {
    "startup_s": 10.0,          # all C-nodes up within
    "rss_per_cnode_kib": 64.0,  # nodexd RSS delta per C-node
    "fds_min": 1024,            # nodexd descriptors: well past this
}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kib(pid):
    return proc_status(pid, "VmRSS")


def cpu_ticks(pid):
    """utime + stime of pid in clock ticks, or 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def idle_cpu(pids, seconds=2.0):
    """CPU used by each of pids over `seconds`, in % of one CPU."""
    hz = os.sysconf("SC_CLK_TCK")
    c0 = {p: cpu_ticks(p) for p in pids}
    time.sleep(seconds)
    return {p: (cpu_ticks(p) - c0[p]) * 100.0 / hz / seconds for p in pids}


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def wait_pools_up(d, timeout_s=20):
    """Waits (at most timeout_s) until every C-node of `d`, every instance of each pool, is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lst = d.get("/cnodes")["cnodes"]
        if all(c["state"] == "up" and c.get("instances_up", 1) == c.get("instances", 1)
               for c in lst):
            return
        time.sleep(0.05)


def yaml_str(s):
    return json.dumps(str(s))


class Session:
    """Temp dir, HOME, cookie, env; every process spawned is tracked and killed by pid."""

    def __init__(self, pidfile, epmd_port=None):
        self.dir = tempfile.mkdtemp(prefix="nodex-scale-")
        self.home = os.path.join(self.dir, "home")
        os.mkdir(self.home, 0o700)
        self.cookie = "NXSCALE" + secrets.token_hex(12).upper()
        self.epmd_port = epmd_port or free_port()
        self.env = dict(os.environ, HOME=self.home, ERL_EPMD_PORT=str(self.epmd_port),
                        NODEX_COOKIE=self.cookie)
        self.pidfile = pidfile
        self.procs = []

    def spawn(self, argv, name, netns=None, stdout=None):
        if netns:
            argv = ["ip", "netns", "exec", netns] + argv
        logf = open(os.path.join(self.dir, name + ".log"), "ab")
        p = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL,
                             stdout=stdout if stdout is not None else logf, stderr=logf)
        logf.close()
        self.procs.append((p, name))
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid}\n")
        return p

    def log_path(self, name):
        return os.path.join(self.dir, name + ".log")

    def epmd(self, netns=None, name="epmd"):
        p = self.spawn(["epmd", "-port", str(self.epmd_port)], name, netns=netns)
        time.sleep(0.3)
        return p

    def stop(self, p, timeout=20.0):
        if p.poll() is not None:
            return p.returncode
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait(5)

    def close(self):
        for p, _ in reversed(self.procs):
            if p.poll() is None:
                try:
                    self.stop(p, 10)
                except Exception:
                    pass
        # C-nodes die with nodexd (PDEATHSIG); anything still carrying our cookie is a stray.
        strays = pids_with_arg(self.cookie)
        for pid in strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
        return strays


class Nodexd:
    def __init__(self, session, build, config, name="nodexd", netns=None):
        self.s = session
        self.netns = netns
        self.config_path = os.path.join(session.dir, name + ".yaml")
        with open(self.config_path, "w") as f:
            f.write(config)
        self.t_start = time.monotonic()
        self.p = session.spawn([os.path.join(build, "nodexd"), "--config", self.config_path],
                               name, netns=netns, stdout=subprocess.PIPE)
        self.ready = threading.Event()
        self.port = None
        self.t_ready = None
        self.lines = []
        threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read_stdout(self):
        for raw in self.p.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            m = READY_RE.match(line)
            if m and not self.ready.is_set():
                self.port = int(m.group(2))
                self.t_ready = time.monotonic() - self.t_start
                self.ready.set()

    def wait_ready(self, timeout=30):
        if not self.ready.wait(timeout):
            raise RuntimeError(f"nodexd not ready in {timeout}s; log {self.s.log_path('nodexd')}")

    @property
    def pid(self):
        return self.p.pid

    def get(self, path, timeout=10):
        if self.netns:
            out = subprocess.run(["ip", "netns", "exec", self.netns, "curl", "-sS", "-m",
                                  str(timeout), f"http://127.0.0.1:{self.port}{path}"],
                                 capture_output=True, timeout=timeout + 5)
            return json.loads(out.stdout)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def stop(self):
        t0 = time.monotonic()
        rc = self.s.stop(self.p, 30)
        return rc, time.monotonic() - t0


def base_config(node_name="nodexd@127.0.0.1", listen="127.0.0.1", http_port=0, extra_http=""):
    return (f"node:\n  name: {yaml_str(node_name)}\n  listen: {yaml_str(listen)}\n"
            f"  start_epmd: false\n"
            f"http:\n  listen: \"127.0.0.1:{http_port}\"\n{extra_http}"
            f"grpc:\n  listen: null\nlog:\n  level: info\n")


def run_load(load, args, netns=None, timeout=120):
    argv = [load] + [str(a) for a in args]
    if netns:
        argv = ["ip", "netns", "exec", netns] + argv
    out = subprocess.run(argv, capture_output=True, timeout=timeout)
    text = out.stdout.decode().strip().splitlines()
    if not text:
        raise RuntimeError(f"load client printed nothing: {out.stderr.decode()[-2000:]}")
    res = json.loads(text[-1])
    if out.stderr.strip():
        res["stderr"] = out.stderr.decode()[-500:]
    return res


# ------------------------------------------------------------------------------------------------
# scale


PARTIAL = {}


def scale(a):
    res = PARTIAL
    res.update({"kind": "scale", "count": a.count, "calls": a.count * a.calls_per_cnode,
           "sleep_ms": a.sleep_ms, "targets": TARGETS, "checks": {}})
    s = Session(a.pidfile)
    try:
        s.epmd()
        http_extra = (f"  threads: {a.http_threads}\n  max_connections: {a.max_connections}\n"
                      f"  max_connections_per_ip: {a.max_connections}\n"
                      "  header_timeout_ms: 60000\n")  # idle keep-alives: connection_timeout_s

        # 1. Baseline: the same daemon with no C-node.
        d0 = Nodexd(s, a.build_dir, base_config(extra_http=http_extra) + "cnodes: []\n",
                    "nodexd-empty")
        d0.wait_ready()
        time.sleep(2)
        res["rss_empty_kib"] = rss_kib(d0.pid)
        res["fds_empty"] = fd_count(d0.pid)
        rc, _ = d0.stop()
        log(f"empty nodexd: RSS {res['rss_empty_kib']} KiB, {res['fds_empty']} fds, exit {rc}")

        # 2. N C-nodes.
        test_cnode = os.path.join(a.build_dir, "tests", "test_cnode")
        cn = "".join(
            f"  - name: c{i}\n    executable: {yaml_str(test_cnode)}\n"
            f"    args: [\"{{sname}}\", \"{{hostname}}\", \"{{cookie}}\", \"{{gateway_sname}}\", \"serve\"]\n"
            f"    spawn_inactive_timeout_ms: 30000\n"
            for i in range(a.count))
        d = Nodexd(s, a.build_dir, base_config(extra_http=http_extra) + "cnodes:\n" + cn,
                   "nodexd")
        d.wait_ready(60)
        res["ready_line_s"] = round(d.t_ready, 3)
        deadline = time.monotonic() + 120
        states = {}
        while time.monotonic() < deadline:
            try:
                lst = d.get("/cnodes")["cnodes"]
            except (OSError, ValueError):
                time.sleep(0.05)
                continue
            states = {}
            for c in lst:
                states[c["state"]] = states.get(c["state"], 0) + 1
            if states.get("up", 0) == a.count:
                break
            time.sleep(0.05)
        t_up = time.monotonic() - d.t_start
        res["all_up_s"] = round(t_up, 3) if states.get("up", 0) == a.count else None
        res["states_at_end_of_wait"] = states
        log(f"{states.get('up', 0)}/{a.count} up after {t_up:.2f}s (ready line {d.t_ready:.2f}s)")
        time.sleep(2)
        res["rss_idle_kib"] = rss_kib(d.pid)
        res["fds_idle"] = fd_count(d.pid)
        res["threads_idle"] = proc_status(d.pid, "Threads")
        res["nofile_limit"] = None
        try:
            with open(f"/proc/{d.pid}/limits") as f:
                for line in f:
                    if line.startswith("Max open files"):
                        res["nofile_limit"] = int(line.split()[3])
        except OSError:
            pass
        res["rss_per_cnode_kib"] = round((res["rss_idle_kib"] - res["rss_empty_kib"]) / a.count, 2)
        cnode_pids = pids_with_arg(s.cookie)
        res["cnode_processes"] = len(cnode_pids)
        # Idle CPU: with nothing to do, nodexd and the C-nodes should be near 0 %.
        use = idle_cpu([d.pid] + cnode_pids)
        res["idle_cpu_pct_nodexd"] = round(use.pop(d.pid), 1)
        res["idle_cpu_pct_cnodes_total"] = round(sum(use.values()), 1)
        log(f"idle CPU over 2 s: nodexd {res['idle_cpu_pct_nodexd']} %, "
            f"{len(cnode_pids)} C-nodes {res['idle_cpu_pct_cnodes_total']} % in all")
        log(f"idle: RSS {res['rss_idle_kib']} KiB ({res['rss_per_cnode_kib']} KiB/C-node), "
            f"{res['fds_idle']} fds, {res['cnode_processes']} C-node processes")

        # 3. calls_per_cnode x count calls at once.
        peak = {"in_flight": 0, "fds": 0, "rss_kib": 0, "http_conns": 0}
        stop = threading.Event()

        def monitor():
            while not stop.is_set():
                try:
                    lst = d.get("/cnodes", timeout=5)["cnodes"]
                    peak["in_flight"] = max(peak["in_flight"], sum(c["in_flight"] for c in lst))
                except Exception:
                    pass
                peak["fds"] = max(peak["fds"], fd_count(d.pid) or 0)
                peak["rss_kib"] = max(peak["rss_kib"], rss_kib(d.pid) or 0)
                time.sleep(0.1)

        mon = threading.Thread(target=monitor, daemon=True)
        mon.start()
        burst = run_load(a.load, ["--port", d.port, "--conns", a.count * a.calls_per_cnode,
                                  "--cnodes", a.count, "--prefix", "c", "--burst",
                                  "--sleep-ms", a.sleep_ms, "--timeout-ms", 30000], timeout=180)
        time.sleep(0.3)
        stop.set()
        mon.join()
        lst = d.get("/cnodes")["cnodes"]
        burst["peak_in_flight"] = peak["in_flight"]
        burst["peak_fds"] = peak["fds"]
        burst["peak_rss_kib"] = peak["rss_kib"]
        burst["calls_total"] = sum(c["calls_total"] for c in lst)
        burst["dropped_messages"] = sum(c["dropped_messages"] for c in lst)
        burst["up_after"] = sum(1 for c in lst if c["state"] == "up")
        burst["restarts"] = sum(c["restarts"] for c in lst)
        res["burst"] = burst
        res["rss_after_burst_kib"] = rss_kib(d.pid)
        log(f"burst: {json.dumps(burst)}")
        rc, t_stop = d.stop()
        res["shutdown_s"] = round(t_stop, 3)
        res["shutdown_rc"] = rc
        time.sleep(0.5)
        res["cnode_processes_after_stop"] = len(pids_with_arg(s.cookie))
        log(f"nodexd stopped in {t_stop:.2f}s (exit {rc}); "
            f"{res['cnode_processes_after_stop']} C-node processes left")
        err_lines = []
        with open(s.log_path("nodexd"), errors="replace") as f:
            for line in f:
                if re.search(r"\b(warn|error)\b", line, re.I):
                    err_lines.append(line.rstrip())
        res["nodexd_warn_error_lines"] = len(err_lines)
        res["nodexd_warn_error_sample"] = err_lines[:8]

        # 4. instances 1 vs 2 of the single-threaded example_cnode, same 64-connection load.
        example = os.path.join(a.build_dir, "example_cnode")
        pool_cfg = base_config(extra_http=http_extra) + "cnodes:\n" + "".join(
            f"  - name: p{n}\n    executable: {yaml_str(example)}\n    instances: {n}\n"
            for n in (1, 2))
        dp = Nodexd(s, a.build_dir, pool_cfg, "nodexd-pool")
        dp.wait_ready()
        wait_pools_up(dp)
        pool = {"conns": 64, "duration_s": a.pool_duration, "runs": []}
        for rnd in range(a.pool_rounds):
            for n in (1, 2):
                r = run_load(a.load, ["--port", dp.port, "--conns", 64, "--cnodes", 1,
                                      "--prefix", f"p{n}", "--exact", "--duration",
                                      a.pool_duration, "--warmup", 1])
                r["instances"] = n
                r["round"] = rnd + 1
                pool["runs"].append(r)
                log(f"pool instances {n} round {rnd + 1}: {r['calls_per_s']:.0f} calls/s, "
                    f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, errors {r['errors']}")
        for n in (1, 2):
            runs = [r for r in pool["runs"] if r["instances"] == n]
            pool[f"instances{n}_calls_per_s"] = round(sum(r["calls_per_s"] for r in runs) / len(runs), 1)
        pool["ratio"] = round(pool["instances2_calls_per_s"] / pool["instances1_calls_per_s"], 3)
        pool["errors"] = sum(r["errors"] for r in pool["runs"])
        p2 = dp.get("/cnodes/p2")
        pool["p2_instance_calls"] = [i["calls_total"] for i in p2.get("pool", [])]
        dp.stop()

        # 4b. The same pool comparison where the C-node's own work dominates: test_cnode
        # answering {sleep, 2, I} (2 ms of serial work per call), 64 connections.
        pool_cfg = base_config(extra_http=http_extra) + "cnodes:\n" + "".join(
            f"  - name: s{n}\n    executable: {yaml_str(test_cnode)}\n    instances: {n}\n"
            for n in (1, 2))
        dp = Nodexd(s, a.build_dir, pool_cfg, "nodexd-pool-sleep")
        dp.wait_ready()
        wait_pools_up(dp)
        for n in (1, 2):
            r = run_load(a.load, ["--port", dp.port, "--conns", 64, "--cnodes", 1, "--prefix",
                                  f"s{n}", "--exact", "--sleep", "--sleep-ms", 2, "--duration",
                                  a.pool_duration, "--warmup", 1])
            pool[f"sleep2ms_instances{n}_calls_per_s"] = r["calls_per_s"]
            pool["errors"] += r["errors"]
            log(f"pool (sleep 2 ms) instances {n}: {r['calls_per_s']:.0f} calls/s, errors {r['errors']}")
        pool["sleep2ms_ratio"] = round(pool["sleep2ms_instances2_calls_per_s"]
                                       / pool["sleep2ms_instances1_calls_per_s"], 3)
        # 4c. A C-node whose work needs a core: {spin, 1000, I} burns 1 ms of CPU per call, so one
        # single-threaded process tops out near 1,000 calls/s; two use both cores. (With 200 µs
        # per call nodexd's own ~90 µs per call, paid on the same two cores, caps the gain.)
        for n in (1, 2):
            r = run_load(a.load, ["--port", dp.port, "--conns", 64, "--cnodes", 1, "--prefix",
                                  f"s{n}", "--exact", "--spin-us", SPIN_US, "--duration",
                                  a.pool_duration, "--warmup", 1])
            pool[f"spin1ms_instances{n}_calls_per_s"] = r["calls_per_s"]
            pool["errors"] += r["errors"]
            log(f"pool (spin {SPIN_US} us) instances {n}: {r['calls_per_s']:.0f} calls/s, "
                f"errors {r['errors']}")
        pool["spin1ms_ratio"] = round(pool["spin1ms_instances2_calls_per_s"]
                                        / pool["spin1ms_instances1_calls_per_s"], 3)
        res["pool"] = pool
        dp.stop()

        # Checks.
        ck = res["checks"]
        ck["startup"] = {"value_s": res["all_up_s"], "target": "<= 10 s",
                         "pass": res["all_up_s"] is not None and res["all_up_s"] <= TARGETS["startup_s"]}
        ck["rss_per_cnode"] = {"value_kib": res["rss_per_cnode_kib"], "target": "<= 64 KiB",
                               "pass": res["rss_per_cnode_kib"] <= TARGETS["rss_per_cnode_kib"]}
        fds = max(res["fds_idle"] or 0, burst["peak_fds"])
        ck["descriptors"] = {"idle": res["fds_idle"], "peak": burst["peak_fds"],
                             "target": "well past 1024", "pass": fds > 2 * TARGETS["fds_min"]}
        want = a.count * a.calls_per_cnode
        ck["calls_in_flight"] = {"ok": burst["ok"], "errors": burst["errors"],
                                 "peak_in_flight": burst["peak_in_flight"],
                                 "target": f"{want} at once, 0 errors",
                                 "pass": burst["ok"] == want and burst["errors"] == 0
                                 and burst["dropped_messages"] == 0
                                 and burst["peak_in_flight"] >= want * 0.9}
        # A pool spreads a single-threaded C-node's work over the cores: graded where that work
        # needs a core (spin). For a trivial ping nodexd itself is the limit (reported only).
        ck["pool_ratio"] = {"value": pool["spin1ms_ratio"],
                            "target": "> 1 for CPU-bound C-node work (at most ≈2 on 2 cores "
                                      "that nodexd and the load generator share)",
                            "pass": pool["spin1ms_ratio"] > 1.0 and pool["errors"] == 0}
    finally:
        strays = s.close()
        res["strays_killed"] = strays
    return res


# ------------------------------------------------------------------------------------------------
# netns


def wait_file_line(path, needle, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, errors="replace") as f:
                if needle in f.read():
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def netns(a):
    res = PARTIAL
    res.update({"kind": "netns", "ns_a": a.ns_a, "ns_b": a.ns_b, "ip_a": a.ip_a, "ip_b": a.ip_b,
           "duration_s": a.duration, "cnode": "echo_sdk (to mode), single-threaded", "runs": [],
           "checks": {}})
    s = Session(a.pidfile)
    echo = os.path.join(a.build_dir, "echo_sdk")
    try:
        sides = {}
        # veth: epmd in both namespaces (same port number), the C-node in B, nodexd in A.
        s.epmd(netns=a.ns_b, name="epmd-b")
        s.epmd(netns=a.ns_a, name="epmd-a")
        s.spawn([echo, "t", a.ip_b, s.cookie, "nodexd", "to"], "cnode-b", netns=a.ns_b)
        if not wait_file_line(s.log_path("cnode-b"), f"t@{a.ip_b} ready", 10):
            raise RuntimeError("C-node in namespace B not ready")
        cfg = base_config(node_name=f"nodexd@{a.ip_a}", listen=a.ip_a, http_port=18080) + (
            f"cnodes:\n  - name: t\n    direction: adopt\n    node: \"t@{a.ip_b}\"\n")
        sides["veth"] = Nodexd(s, a.build_dir, cfg, "nodexd-a", netns=a.ns_a)
        # loopback: the same pair in the root namespace, adopting over 127.0.0.1.
        s.epmd(name="epmd-root")
        s.spawn([echo, "t", "127.0.0.1", s.cookie, "nodexd", "to"], "cnode-root")
        if not wait_file_line(s.log_path("cnode-root"), "t@127.0.0.1 ready", 10):
            raise RuntimeError("C-node on loopback not ready")
        cfg = base_config(http_port=0) + (
            "cnodes:\n  - name: t\n    direction: adopt\n    node: \"t@127.0.0.1\"\n")
        sides["loopback"] = Nodexd(s, a.build_dir, cfg, "nodexd-root")
        for name, d in sides.items():
            d.wait_ready()
            deadline = time.monotonic() + 15
            st = None
            while time.monotonic() < deadline:
                try:
                    st = d.get("/cnodes/t")
                    if st["state"] == "up":
                        break
                except Exception:
                    pass
                time.sleep(0.1)
            if not st or st["state"] != "up":
                raise RuntimeError(f"{name}: adopted C-node not up: {st}")
            res[f"{name}_node"] = st["node"]
            log(f"{name}: nodexd pid {d.pid} http {d.port}, C-node {st['node']} up")
        for conc in (1, 16):
            for rnd in range(a.rounds):
                for name in ("loopback", "veth"):
                    d = sides[name]
                    r = run_load(a.load, ["--port", d.port, "--conns", conc, "--cnodes", 1,
                                          "--prefix", "t", "--exact", "--duration", a.duration,
                                          "--warmup", 1], netns=d.netns)
                    r.update(side=name, concurrency=conc, round=rnd + 1)
                    res["runs"].append(r)
                    log(f"{name} c{conc} round {rnd + 1}: {r['calls_per_s']:.0f} calls/s, "
                        f"p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, errors {r['errors']}")
        summary = {}
        for conc in (1, 16):
            row = {}
            for name in ("loopback", "veth"):
                runs = [r for r in res["runs"] if r["side"] == name and r["concurrency"] == conc]
                row[name] = {k: round(sum(r[k] for r in runs) / len(runs), 3)
                             for k in ("calls_per_s", "p50_ms", "p99_ms")}
            row["ratio_veth_over_loopback"] = {
                k: round(row["veth"][k] / row["loopback"][k], 3) if row["loopback"][k] else None
                for k in ("calls_per_s", "p50_ms", "p99_ms")}
            summary[f"c{conc}"] = row
        res["summary"] = summary
        errors = sum(r["errors"] for r in res["runs"])
        res["checks"]["veth_calls"] = {"errors": errors, "pass": errors == 0}
        for name, d in sides.items():
            d.stop()
    finally:
        res["strays_killed"] = s.close()
    return res


# ------------------------------------------------------------------------------------------------
# reports


def md_scale(r):
    ck = r.get("checks", {})
    pf = lambda k: ("PASS" if ck[k]["pass"] else "FAIL") if k in ck else "n/a"
    b = r.get("burst", {})
    p = r.get("pool", {})
    lines = [
        f"## Scale: {r['count']} C-nodes (test_cnode serve), {r['calls']} calls at once",
        "",
        "| measure | value | target | result |",
        "|---|---|---|---|",
        f"| start to all {r['count']} up (GET /cnodes) | {r.get('all_up_s')} s (ready line at {r.get('ready_line_s')} s) | ≤ 10 s | {pf('startup')} |",
        f"| RSS per C-node | {r.get('rss_per_cnode_kib')} KiB ({r.get('rss_empty_kib')} KiB empty → {r.get('rss_idle_kib')} KiB) | ≤ 64 KiB | {pf('rss_per_cnode')} |",
        f"| open descriptors | {r.get('fds_idle')} idle, {b.get('peak_fds')} under load (limit {r.get('nofile_limit')}) | well past 1024 | {pf('descriptors')} |",
        f"| {r['calls']} × {{sleep, {r['sleep_ms']}, I}} at once | {b.get('ok')} right replies, {b.get('errors')} errors, peak in flight {b.get('peak_in_flight')}, {b.get('elapsed_s')} s, p50 {b.get('p50_ms')} ms, p99 {b.get('p99_ms')} ms, max {b.get('max_ms')} ms | all, 0 errors | {pf('calls_in_flight')} |",
        f"| pool: test_cnode {{spin, 1000, I}} (1 ms of CPU per call): instances 2 vs 1, 64 conns | {p.get('spin1ms_instances2_calls_per_s')} vs {p.get('spin1ms_instances1_calls_per_s')} calls/s = ×{p.get('spin1ms_ratio')} | > 1 (at most ≈2 on 2 shared cores) | {pf('pool_ratio')} |",
        f"| (info) pool: example_cnode ping (no work: nodexd is the limit), instances 2 vs 1 | {p.get('instances2_calls_per_s')} vs {p.get('instances1_calls_per_s')} calls/s = ×{p.get('ratio')} | — | — |",
        f"| (info) pool, test_cnode {{sleep, 2, I}}: instances 2 vs 1, 64 conns | {p.get('sleep2ms_instances2_calls_per_s')} vs {p.get('sleep2ms_instances1_calls_per_s')} calls/s = ×{p.get('sleep2ms_ratio')} | — | — |",
        "",
        f"Other: RSS after the burst {r.get('rss_after_burst_kib')} KiB (peak {b.get('peak_rss_kib')} KiB); "
        f"client connect time for {b.get('conns')} connections {b.get('connect_s')} s; "
        f"dropped messages {b.get('dropped_messages')}, restarts {b.get('restarts')}, "
        f"C-nodes up after {b.get('up_after')}; shutdown {r.get('shutdown_s')} s (exit {r.get('shutdown_rc')}); "
        f"idle CPU (2 s, all up, no calls): nodexd {r.get('idle_cpu_pct_nodexd')} %, C-nodes {r.get('idle_cpu_pct_cnodes_total')} % in all; "
        f"nodexd threads {r.get('threads_idle')}; warn/error log lines {r.get('nodexd_warn_error_lines')}; "
        f"stray processes killed {len(r.get('strays_killed') or [])}.",
    ]
    if b.get("first_error"):
        lines.append(f"\nFirst error: `{b['first_error']}`")
    return "\n".join(lines) + "\n"


def md_netns(r):
    lines = [f"## Across a veth pair ({r['ns_a']} {r['ip_a']} ↔ {r['ns_b']} {r['ip_b']}) vs loopback",
             "",
             f"nodexd in A adopts `{r.get('veth_node')}` in B (`direction: adopt`); the same pair on "
             f"127.0.0.1 in the root namespace. C-node: {r['cnode']}. {{ping, <<\"hello\">>}} over HTTP "
             f"keep-alive from inside each side's namespace, {r['duration_s']} s per run, runs interleaved, "
             "means of the rounds.",
             "",
             "| concurrency | side | calls/s | p50 ms | p99 ms |",
             "|---|---|---|---|---|"]
    for key, row in r.get("summary", {}).items():
        for side in ("loopback", "veth"):
            v = row[side]
            lines.append(f"| {key[1:]} | {side} | {v['calls_per_s']:.0f} | {v['p50_ms']:.3f} | {v['p99_ms']:.3f} |")
        q = row["ratio_veth_over_loopback"]
        lines.append(f"| {key[1:]} | **veth / loopback** | ×{q['calls_per_s']} | ×{q['p50_ms']} | ×{q['p99_ms']} |")
    ck = r.get("checks", {}).get("veth_calls", {})
    lines += ["", f"Errors in all runs: {ck.get('errors')} ({'PASS' if ck.get('pass') else 'FAIL'})."]
    if r.get("error"):
        lines.append(f"\nRun failed: `{r['error']}`")
    return "\n".join(lines) + "\n"


def write_results(out, res, stamp):
    os.makedirs(out, exist_ok=True)
    base = "scale" if res["kind"] == "scale" else "scale-netns"
    jpath = os.path.join(out, f"{base}-{stamp}.json")
    with open(jpath, "w") as f:
        json.dump(res, f, indent=2)
    md = (md_scale if res["kind"] == "scale" else md_netns)(res) if "error" not in res or res.get("checks") else ""
    if "error" in res:
        md += f"\n**Run failed:** `{res['error']}`\n"
    head = f"# nodexd scale benchmark, {stamp} ({res.get('host', '')})\n\n"
    with open(os.path.join(out, f"{base}-{stamp}.md"), "w") as f:
        f.write(head + md)
    # latest-scale.md: the newest of each kind.
    parts = []
    for pattern in ("scale-[0-9]*.json", "scale-netns-*.json"):
        files = sorted(glob.glob(os.path.join(out, pattern)))
        if files:
            with open(files[-1]) as f:
                r = json.load(f)
            name = os.path.basename(files[-1])
            body = (md_scale if r["kind"] == "scale" else md_netns)(r) if r.get("checks") else ""
            if r.get("error"):
                body += f"\n**Run failed:** `{r['error']}`\n"
            parts.append(f"<!-- from {name} -->\n" + body)
    with open(os.path.join(out, "latest-scale.md"), "w") as f:
        f.write("# nodexd scale benchmarks (latest runs)\n\n"
                "Written by bench/scale.sh and bench/netns.sh; figures from "
                f"{os.cpu_count()} CPUs. See bench/README.md.\n\n" + "\n".join(parts))
    log(f"wrote {jpath} and {base}-{stamp}.md, latest-scale.md")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["scale", "netns"])
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--load", required=True)
    ap.add_argument("--pidfile", required=True)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--calls-per-cnode", type=int, default=10)
    # Each test_cnode serves its calls one after another: with 10 per C-node the last ends at
    # 10 x sleep. A sleep of 1 s leaves the ~0.6 s the 10,000 requests take to go out before
    # the first replies come, so all are in flight at once (500 ms: the first 1,000 were back
    # before the last were sent, peak 8,000); the calls' timeout covers the 10 s.
    ap.add_argument("--sleep-ms", type=int, default=1000)
    ap.add_argument("--http-threads", type=int, default=2)
    # 10,000 load connections plus the monitor's GET /cnodes: a little over the default 10000.
    ap.add_argument("--max-connections", type=int, default=10100)
    ap.add_argument("--pool-duration", type=float, default=5)
    ap.add_argument("--pool-rounds", type=int, default=2)
    ap.add_argument("--ns-a")
    ap.add_argument("--ns-b")
    ap.add_argument("--ip-a")
    ap.add_argument("--ip-b")
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    t0 = time.monotonic()
    try:
        res = scale(a) if a.what == "scale" else netns(a)
    except Exception as e:  # still write what failed
        res = PARTIAL
        res["error"] = f"{type(e).__name__}: {e}"
        res["checks"] = {}
        res.setdefault("kind", a.what)
    res["host"] = f"{os.cpu_count()} CPUs, {socket.gethostname()}"
    res["wall_s"] = round(time.monotonic() - t0, 1)
    res["stamp"] = stamp
    write_results(a.out, res, stamp)
    failed = [k for k, v in res.get("checks", {}).items() if not v.get("pass")]
    for k, v in res.get("checks", {}).items():
        print(f"{'PASS' if v.get('pass') else 'FAIL'} {k}: {json.dumps(v)}")
    if "error" in res:
        print(f"ERROR {res['error']}")
    return 1 if failed or "error" in res else 0


if __name__ == "__main__":
    sys.exit(main())
