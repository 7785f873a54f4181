#!/usr/bin/python3
"""latency.py: issue 17's two latency targets at 1 call in flight, in interleaved rounds.

Each round measures, one after the other: erl.cnode_direct (and the rest of bench_erlang's
one-process cases), raw_ei.c1, nodexd's http.16B.c1 and grpc.16B.c1 (and, with
--baseline-build, the same two against a second nodexd built from other sources: `before.*`),
ceiling.http.c1, ceiling.grpc.c1 and ceiling.grpc_reply_thread.c1 (bench.py's cases, same
tools and bodies), and bench/handoff_bench (`handoff.*`: one thread handing a token to another,
p50 of one hand-off). Every target is computed per round, from figures of that round, and the
report gives the median over the rounds. With perf on the machine, each nodexd case also
counts, per call, nodexd's syscalls, context switches, futex calls and the wake-ups its threads
issue (`perf stat -p`, tracepoints); with --allocs also its malloc, calloc and realloc calls
(uprobes on libc, added for the run and removed after it: needs root).

  bench/latency.py --build-dir build [--baseline-build DIR] [--rounds 5] [--duration 3]
                   [--allocs] [--out FILE.json]
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench as B  # noqa: E402

PERF_EVENTS = {"raw_syscalls:sys_enter": "syscalls", "context-switches": "context_switches",
               "syscalls:sys_enter_futex": "futex", "sched:sched_wakeup": "wakeups_issued"}
ALLOC_EVENTS = {"probe_libc:malloc": "malloc", "probe_libc:calloc": "calloc",
                "probe_libc:realloc": "realloc"}
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
ALLOC_FNS = ("malloc", "calloc", "realloc")


def allocs_probe(add):
    """Adds (or removes) the libc uprobes the alloc counts use; returns True when they exist.
    realloc(NULL, n) calls malloc inside libc, so it is counted once as each."""
    if add:
        subprocess.run(["perf", "probe", "-q", "-x", LIBC] +
                       [a for f in ALLOC_FNS for a in ("-a", f)], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out = subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True).stdout
        return all(f"probe_libc:{f}" in out for f in ALLOC_FNS)
    subprocess.run(["perf", "probe", "-q", "-d", "probe_libc:*"], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return False


def perf_stat_start(pid, outfile, events):
    """perf stat over every thread of `pid` until perf_stat_end, or None without perf."""
    if not shutil.which("perf"):
        return None
    ev = ",".join(events)
    return subprocess.Popen(["perf", "stat", "-x", ",", "-e", ev, "-p", str(pid), "-o", outfile],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def perf_stat_end(p, outfile, r):
    """Stops perf and stores its counts per call of case `r`."""
    if not p:
        return
    p.send_signal(2)  # SIGINT: perf prints its counts and exits
    p.wait(timeout=30)
    with open(outfile) as f:
        for line in f:
            parts = line.strip().split(",")
            names = dict(PERF_EVENTS, **ALLOC_EVENTS)
            if len(parts) >= 3 and parts[2] in names and parts[0].isdigit() and r["calls"]:
                r[names[parts[2]] + "_per_call"] = int(parts[0]) / r["calls"]
    if "malloc_per_call" in r:
        r["allocs_per_call"] = sum(r.get(f"{f}_per_call", 0.0) for f in ALLOC_FNS)


def handoff(build, n=20000):
    """bench/handoff_bench: p50 of one thread-to-thread hand-off per mode, as cases."""
    out = subprocess.run([os.path.join(build, "bench", "handoff_bench"), str(n)],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    cases = {}
    for line in out.splitlines():
        d = json.loads(line)
        cases[f"handoff.{d['mode']}"] = {"p50_us": d["handoff_p50_us"],
                                         "roundtrip_p50_us": d["roundtrip_p50_us"],
                                         "p99_us": d["roundtrip_p99_us"] / 2,
                                         "throughput_per_s": 1e6 / d["roundtrip_p50_us"]}
    return cases


def nodexd_case(d, pid, cnode_pid, port, runner, body, conc, dur, session, workdir,
                events=PERF_EVENTS):
    statf = os.path.join(workdir, "perf-stat.txt")
    ps = perf_stat_start(pid, statf, events)
    time.sleep(0.3)  # perf attached (its idle counts over 0.3 s are small against a case)
    r = {"calls": 0}
    try:
        r = B.measure_case(pid, cnode_pid, runner, lambda: d.info("example")["calls_total"],
                           session, port, body, conc, dur, workdir)
    finally:
        perf_stat_end(ps, statf, r)
    return r


def one_round(session, nh, args, ebin, daemons, bodies, servers, workdir, pids_seen, odd):
    dur = max(1, round(args.duration))  # wrk and h2load take whole seconds
    cases = {}
    erl = B.bench_erlang(session, nh, ebin, int(dur * 1000), [16], pids_seen)
    cases["erl.cnode_direct"] = erl["erl.cnode_direct"]
    cases.update(B.bench_raw_ei(session, nh, args.build_dir, int(dur * 1000), [1], pids_seen))
    for prefix, d, grpc_port, cnode_pid in daemons[::-1] if odd else daemons:  # alternate
        for proto, port, runner in (("http", d.port, B.run_wrk), ("grpc", grpc_port, B.run_h2load)):
            cases[f"{prefix}{proto}.16B.c1"] = nodexd_case(d, d.proc.pid, cnode_pid, port, runner,
                                                           bodies[proto], 1, dur, session, workdir)
    for label, (p, port) in servers.items():
        runner = B.run_wrk if label == "http" else B.run_h2load
        body = bodies["http" if label == "http" else "grpc"]
        cases[f"ceiling.{label}.c1"] = B.measure_case(p.pid, None, runner, None, session, port,
                                                      body, 1, dur, workdir)
    cases.update(handoff(args.build_dir))
    for k, r in cases.items():
        B.log_case(k, dict({"errors": 0}, **r))
    return cases


def targets(c):
    p50 = {k: v["p50_us"] for k, v in c.items()}
    t = {
        "http_p50_minus_erl_direct_us": p50["http.16B.c1"] - p50["erl.cnode_direct"],
        "grpc_p50_minus_floors_us": p50["grpc.16B.c1"] -
        (p50["ceiling.grpc.c1"] + p50["raw_ei.c1"]),
        # informational: what the floors themselves give against the goals' baselines
        "http_floors_minus_erl_direct_us":
        p50["ceiling.http.c1"] + p50["raw_ei.c1"] - p50["erl.cnode_direct"],
        "grpc_reply_thread_minus_grpc_echo_us":
        p50["ceiling.grpc_reply_thread.c1"] - p50["ceiling.grpc.c1"],
        "grpc_p50_minus_reply_thread_floors_us": p50["grpc.16B.c1"] -
        (p50["ceiling.grpc_reply_thread.c1"] + p50["raw_ei.c1"]),
    }
    if "before.grpc.16B.c1" in p50:
        t["before_http_p50_minus_erl_direct_us"] = p50["before.http.16B.c1"] - p50["erl.cnode_direct"]
        t["before_grpc_p50_minus_floors_us"] = p50["before.grpc.16B.c1"] - \
            (p50["ceiling.grpc.c1"] + p50["raw_ei.c1"])
    return t


GOALS = {"http_p50_minus_erl_direct_us": 30, "grpc_p50_minus_floors_us": 15,
         "http_floors_minus_erl_direct_us": 30, "grpc_reply_thread_minus_grpc_echo_us": 15,
         "grpc_p50_minus_reply_thread_floors_us": 15,
         "before_http_p50_minus_erl_direct_us": 30, "before_grpc_p50_minus_floors_us": 15}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--baseline-build", help="a second nodexd build, measured as before.*")
    ap.add_argument("--allocs", action="store_true", help="count allocations (libc uprobes)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    os.environ["NODEX_BUILD_DIR"] = os.path.abspath(args.build_dir)
    args.build_dir = os.path.abspath(args.build_dir)
    probes = args.allocs and allocs_probe(True)
    if args.allocs and not probes:
        B.log("no libc uprobes (perf probe needs root and libc symbols): no allocation counts")
    sys.path.insert(0, os.path.join(B.REPO, "tests", "integration"))
    import nodex_harness as nh

    res = {"meta": {"git": B.git_revision(B.REPO), "rounds": args.rounds, "duration_s": args.duration,
                    "load_avg_start": [round(x, 2) for x in os.getloadavg()]}, "rounds": []}
    session = nh.Session()
    pids_seen, servers = [], {}
    workdir = os.path.join(session.dir, "work")
    os.mkdir(workdir)
    try:
        ebin = os.path.join(session.dir, "ebin")
        os.mkdir(ebin)
        subprocess.run(["erlc", "-o", ebin, os.path.join(B.REPO, "bench", "erl", "nodex_bench.erl")],
                       check=True)
        daemons = []
        builds = [("", args.build_dir)]
        if args.baseline_build:
            builds.append(("before.", os.path.abspath(args.baseline_build)))
        data = B.payload_bytes(16)
        for prefix, build in builds:
            nh.NODEXD = os.path.join(build, "nodexd")
            d = nh.Nodexd(session, [nh.example_cnode_spec("example")])
            d.start()
            d.wait_up("example")
            grpc_port = next(int(m.group("grpc_port")) for _t, line in d.lines
                             if (m := nh.READY_RE.match(line)) and m.group("grpc_port"))
            cnode_pid = d.info("example")["os_pid"]
            pids_seen.append(cnode_pid)
            B.check_http(d.port, data)
            B.check_grpc(grpc_port, data)
            daemons.append((prefix, d, grpc_port, cnode_pid))
        bodies = B.write_bodies(workdir, "", 16)
        for label, exe, extra in (("http", "http_echo", ["--threads", "0"]),
                                  ("grpc", "grpc_echo", ["--threads", "2"]),
                                  ("grpc_reply_thread", "grpc_echo",
                                   ["--threads", "2", "--reply-thread", "direct"])):
            servers[label] = B.start_echo(session, [os.path.join(args.build_dir, "bench", exe)] +
                                          extra, f"ceiling_{label}")
        for i in range(args.rounds):
            B.log(f"round {i + 1} of {args.rounds}")
            c = one_round(session, nh, args, ebin, daemons, bodies, servers, workdir, pids_seen,
                          i % 2 == 1)
            res["rounds"].append({"cases": c, "targets": targets(c),
                                  "load_avg": [round(x, 2) for x in os.getloadavg()]})
        if probes:  # a pass of its own: a uprobe hit costs microseconds, so no latency from it
            res["allocs"] = {}
            for prefix, d, grpc_port, cnode_pid in daemons:
                for proto, port, runner in (("http", d.port, B.run_wrk),
                                            ("grpc", grpc_port, B.run_h2load)):
                    r = nodexd_case(d, d.proc.pid, cnode_pid, port, runner, bodies[proto], 1, 1,
                                    session, workdir, events=ALLOC_EVENTS)
                    res["allocs"][f"{prefix}{proto}.16B.c1"] = {
                        k: r[k] for k in r if k.endswith("_per_call") and k[:-9] in
                        ALLOC_FNS + ("allocs",)}
    finally:
        for p, _port in servers.values():
            nh.end_process(p)
        session.close()
        for p in pids_seen:
            if p and nh.proc_alive(p):
                os.kill(p, 9)
        if probes:
            allocs_probe(False)
    med = {}
    keys = sorted({k for r in res["rounds"] for k in r["cases"]})
    for k in keys:
        vals = [r["cases"][k] for r in res["rounds"] if k in r["cases"]]
        med[k] = {f: statistics.median(v[f] for v in vals)
                  for f in vals[0] if isinstance(vals[0][f], (int, float))}
    res["median_cases"] = med
    for k, a in res.get("allocs", {}).items():
        med[k].update(a)
    res["median_targets"] = {t: statistics.median(r["targets"][t] for r in res["rounds"])
                             for t in GOALS if t in res["rounds"][0]["targets"]}
    res["meta"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"median of {args.rounds} rounds ({args.duration} s per case), load "
          f"{res['meta']['load_avg_start']} -> {res['meta']['load_avg_end']}")
    print("| case | p50 µs | calls/s | server CPU µs/call | syscalls/call | context switches/call "
          "| futex/call | wake-ups issued/call | allocations/call |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k in keys:
        m = med[k]
        extra = " | ".join(f"{m[f]:.2f}" if f in m else "–" for f in (
            "syscalls_per_call", "context_switches_per_call", "futex_per_call",
            "wakeups_issued_per_call", "allocs_per_call"))
        cpu = f"{m['cpu_us_per_call']:.1f}" if "cpu_us_per_call" in m else "–"
        print(f"| {k} | {m['p50_us']:.0f} | {m['throughput_per_s']:,.0f} | {cpu} | {extra} |")
    print("\n| target (per round, median) | rounds | median | goal |")
    print("|---|---|---|---|")
    for t, goal in GOALS.items():
        if t not in res["median_targets"]:
            continue
        per = ", ".join(f"{r['targets'][t]:+.0f}" for r in res["rounds"])
        print(f"| {t} | {per} | {res['median_targets'][t]:+.1f} µs | <= +{goal} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
