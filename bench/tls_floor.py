#!/usr/bin/env python3
"""bench/tls_floor.py: what TLS costs libmicrohttpd + GnuTLS alone, without nodexd.

bench/http_echo as nodexd's HTTP daemon (one loop thread, epoll, nodexd's TLS priorities), once
plaintext and once with --tls (a P-256 certificate from tests/integration/tls_pki.py), under
bench.py's own wrk runs and CPU meter (its 16 B body, 64 keep-alive connections, so one handshake
per connection, paid in a warm-up run before the measured one), in alternating rounds. Every
process is started in a harness session and ended by pid. Prints a table and, with --json FILE,
writes the figures.

    bench/tls_floor.py --build-dir build [--rounds 3] [--duration 5] [--conns 64]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def one(session, nh, echo, tls, cert, key, body, conns, dur_s, workdir):
    """One http_echo, plaintext or TLS: a 1 s warm-up (the handshakes), then the measured wrk
    run through bench.py's measure_case (server CPU per call from /proc/PID/stat)."""
    argv = [echo, "--threads", "0"] + (["--tls", cert, key] if tls else [])
    p, port = bench.start_echo(session, argv, "http_echo_tls" if tls else "http_echo")
    try:
        bench.run_wrk(session, port, body, conns, 1, workdir, tls=tls)
        r = bench.measure_case(p.pid, None, bench.run_wrk, None, session, port, body, conns,
                               dur_s, workdir, tls=tls)
    finally:
        nh.end_process(p)
    return {"tls": tls, "calls_per_s": r["throughput_per_s"],
            "cpu_us_per_call": r["cpu_us_per_call"], "errors": r["errors"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.path.join(bench.REPO, "build"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--json")
    a = ap.parse_args()
    os.environ["NODEX_BUILD_DIR"] = os.path.abspath(a.build_dir)
    sys.path.insert(0, os.path.join(bench.REPO, "tests", "integration"))
    import nodex_harness as nh
    import tls_pki

    echo = os.path.join(a.build_dir, "bench", "http_echo")
    session = nh.Session()
    rows = []
    try:
        workdir = os.path.join(session.dir, "work")
        os.mkdir(workdir)
        pki = tls_pki.Pki(os.path.join(workdir, "pki"), "Bench CA")
        cert, key, _ = pki.issue("echo", "/CN=localhost")
        body = bench.write_bodies(workdir, "tls_floor_", 16)["http"]  # the ceilings' 16 B
        for r in range(a.rounds):
            for tls in (False, True):
                row = one(session, nh, echo, tls, cert, key, body, a.conns, a.duration, workdir)
                row["round"] = r + 1
                rows.append(row)
                print(f"round {r + 1} {'https' if tls else 'http '}: "
                      f"{row['calls_per_s']:9.0f} calls/s  {row['cpu_us_per_call']:6.2f} µs CPU/call"
                      f"  errors {row['errors']}", flush=True)
    finally:
        session.close()

    def med(tls):
        v = sorted(x["cpu_us_per_call"] for x in rows if x["tls"] == tls)
        return v[len(v) // 2]

    plain, tls = med(False), med(True)
    print(f"median CPU per call: plaintext {plain:.2f} µs, TLS {tls:.2f} µs: TLS adds "
          f"{tls - plain:.2f} µs ({tls / plain:.2f}x the library's plaintext)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rounds": rows, "median_cpu_us_plain": plain, "median_cpu_us_tls": tls,
                       "tls_added_us": tls - plain, "conns": a.conns}, f, indent=2)
    return 1 if any(x["errors"] for x in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
