#!/usr/bin/env python3
"""bench/tls_floor.py: what TLS costs the protocol libraries alone, without nodexd.

HTTP: bench/http_echo as nodexd's HTTP daemon (one loop thread, epoll, nodexd's TLS priorities)
under bench.py's wrk runs (libmicrohttpd + GnuTLS). gRPC: bench/grpc_echo as nodexd's gRPC
server (2 completion-queue threads, as the ceilings run it; --tls: nodexd's grpc.tls server
credentials) under bench.py's h2load runs (gRPC core + OpenSSL). Each server once plaintext and
once with --tls (a P-256 certificate from tests/integration/tls_pki.py), under bench.py's CPU
meter, with its 16 B body and 64 keep-alive connections (so one handshake per connection, paid in
a warm-up run before the measured one), in alternating rounds. Every process is started in a
harness session and ended by pid. Prints a table and, with --json FILE, writes the figures.

    bench/tls_floor.py --build-dir build [--proto http|grpc|both] [--rounds 3] [--duration 5]
                       [--conns 64]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

# protocol: (server binary, its argv, bench.py's load runner, write_bodies key, libraries, scheme
# without and with TLS)
PROTOS = {
    "http": ("http_echo", ["--threads", "0"], bench.run_wrk, "http",
             "libmicrohttpd + GnuTLS", ("http", "https")),
    "grpc": ("grpc_echo", ["--threads", "2"], bench.run_h2load, "grpc",
             "gRPC core + OpenSSL", ("grpc", "grpcs")),
}


def one(session, nh, proto, build, tls, cert, key, bodies, conns, dur_s, workdir):
    """One echo server of `proto`, plaintext or TLS: a 1 s warm-up (the handshakes), then the
    measured load run through bench.py's measure_case (server CPU per call from /proc/PID/stat)."""
    exe, extra, runner, body_key, _, _ = PROTOS[proto]
    argv = [os.path.join(build, "bench", exe)] + extra + (["--tls", cert, key] if tls else [])
    p, port = bench.start_echo(session, argv, f"{exe}_tls" if tls else exe)
    try:
        runner(session, port, bodies[body_key], conns, 1, workdir, tls=tls)
        r = bench.measure_case(p.pid, None, runner, None, session, port, bodies[body_key], conns,
                               dur_s, workdir, tls=tls)
    finally:
        nh.end_process(p)
    return {"proto": proto, "tls": tls, "calls_per_s": r["throughput_per_s"],
            "cpu_us_per_call": r["cpu_us_per_call"], "errors": r["errors"]}


def medians(rows, proto):
    """{"median_cpu_us_plain", "median_cpu_us_tls", "tls_added_us"} of `proto`'s rows."""
    def med(tls):
        v = sorted(x["cpu_us_per_call"] for x in rows if x["proto"] == proto and x["tls"] == tls)
        return v[len(v) // 2]
    plain, tls = med(False), med(True)
    return {"median_cpu_us_plain": plain, "median_cpu_us_tls": tls, "tls_added_us": tls - plain}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.path.join(bench.REPO, "build"))
    ap.add_argument("--proto", choices=("http", "grpc", "both"), default="both")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--json")
    a = ap.parse_args()
    protos = ("http", "grpc") if a.proto == "both" else (a.proto,)
    os.environ["NODEX_BUILD_DIR"] = os.path.abspath(a.build_dir)
    sys.path.insert(0, os.path.join(bench.REPO, "tests", "integration"))
    import nodex_harness as nh
    import tls_pki

    session = nh.Session()
    rows = []
    try:
        workdir = os.path.join(session.dir, "work")
        os.mkdir(workdir)
        pki = tls_pki.Pki(os.path.join(workdir, "pki"), "Bench CA")
        cert, key, _ = pki.issue("echo", "/CN=localhost")
        bodies = bench.write_bodies(workdir, "tls_floor_", 16)  # the ceilings' 16 B
        for proto in protos:
            for r in range(a.rounds):
                for tls in (False, True):
                    row = one(session, nh, proto, a.build_dir, tls, cert, key, bodies, a.conns,
                              a.duration, workdir)
                    row["round"] = r + 1
                    rows.append(row)
                    print(f"{proto} round {r + 1} {PROTOS[proto][5][tls]:5}: "
                          f"{row['calls_per_s']:9.0f} calls/s  "
                          f"{row['cpu_us_per_call']:6.2f} µs CPU/call  errors {row['errors']}",
                          flush=True)
    finally:
        session.close()

    out = {"rounds": rows, "conns": a.conns}
    for proto in protos:
        m = medians(rows, proto)
        out[proto] = m
        plain, tls = m["median_cpu_us_plain"], m["median_cpu_us_tls"]
        print(f"{proto} ({PROTOS[proto][4]}) median CPU per call: plaintext {plain:.2f} µs, "
              f"TLS {tls:.2f} µs: TLS adds {tls - plain:.2f} µs ({tls / plain:.2f}x the "
              f"library's plaintext)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return 1 if any(x["errors"] for x in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
