#!/usr/bin/env python3
"""bench/payloads.py: nodexd alone with large payloads: bench.py's nodexd cases (HTTP and gRPC,
1/16/64 in flight) for the payloads asked for, with nodexd's CPU and page faults per call, the
failed calls by HTTP status or gRPC code (from /metrics), and its RSS idle, 2 s after the loads
and settled. Prints one line a case and writes the figures as JSON.

  bench/payloads.py --build-dir build [--payloads 16,65536,1048576] [--duration S] [--out FILE]
"""
import argparse
import json
import os
import re
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

# route labels hold braces ("POST /cnodes/{name}/call"): the status or code is the last label
REQUESTS_RE = re.compile(r'^nodex_(http|grpc)_requests_total\{.*(?:status|code)="([^"]+)"\}'
                         r"\s+(\d+)$", re.M)


def request_counts(http_port):
    """{(transport, status or code): count} of nodexd's request counters."""
    url = f"http://127.0.0.1:{http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    counts = {}
    for transport, status, n in REQUESTS_RE.findall(text):
        counts[(transport, status)] = counts.get((transport, status), 0) + int(n)
    return counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--payloads", default="16,65536,1048576")
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--out")
    args = ap.parse_args()
    os.environ["NODEX_BUILD_DIR"] = os.path.abspath(args.build_dir)
    sys.path.insert(0, os.path.join(bench.REPO, "tests", "integration"))
    import nodex_harness as nh

    payloads = [int(x) for x in args.payloads.split(",")]
    conc = [int(x) for x in args.concurrency.split(",")]
    measure = bench.measure_case
    http_port = []

    def measure_with_statuses(pid, cnode_pid, runner, calls_of, session, port, *rest, **kw):
        if runner is bench.run_wrk and not http_port:
            http_port.append(port)  # bench_nodexd's first case of every payload is HTTP
        before = request_counts(http_port[0])
        r = measure(pid, cnode_pid, runner, calls_of, session, port, *rest, **kw)
        after = request_counts(http_port[0])
        r["failed_by_status"] = {f"{t}:{s}": after[(t, s)] - before.get((t, s), 0)
                                 for (t, s) in after
                                 if s not in ("200", "OK", "0") and after[(t, s)] !=
                                 before.get((t, s), 0)}
        return r

    bench.measure_case = measure_with_statuses
    load_avg = [round(x, 2) for x in os.getloadavg()]
    session = nh.Session()
    pids_seen = []
    workdir = os.path.join(session.dir, "work")
    os.mkdir(workdir)
    try:
        cases, rss = bench.bench_nodexd(session, nh, payloads, conc, args.duration, workdir,
                                        pids_seen)
    finally:
        session.close()
    res = {"load_avg_start": load_avg, "load_avg_end": [round(x, 2) for x in os.getloadavg()],
           "cases": cases, "rss": rss}
    for k, r in cases.items():
        print(f"{k:18} {r['throughput_per_s']:8.0f}/s p50 {r['p50_us'] / 1000:8.2f} ms "
              f"cpu {r['cpu_us_per_call']:8.0f} us/call faults {r['faults_per_call']:7.1f}/call "
              f"rss peak {r['rss_peak_mib']:6.1f} MiB errors {r['errors']} "
              f"{r['failed_by_status'] or ''}")
    print(f"rss idle {rss['idle_mib']:.1f} MiB, 2 s after {rss['after_mib']:.1f}, settled "
          f"{rss['settled_mib']:.1f} ({rss['settle_s']} s), settled - idle "
          f"{rss['settled_mib'] - rss['idle_mib']:.1f} MiB; load avg {load_avg} -> "
          f"{res['load_avg_end']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
