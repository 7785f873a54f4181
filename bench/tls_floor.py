#!/usr/bin/env python3
"""bench/tls_floor.py: what TLS costs libmicrohttpd + GnuTLS alone, without nodexd.

bench/http_echo as nodexd's HTTP daemon (one loop thread, epoll, nodexd's TLS priorities), once
plaintext and once with --tls (a P-256 certificate from tests/integration/tls_pki.py), under the
same wrk runs as bench.py's 16 B cases (64 keep-alive connections, so one handshake per
connection, paid in a warm-up run before the measured one), in alternating rounds. CPU per call
is the server's user + system time over the measured run (/proc/PID/stat). Every process is ended
by pid. Prints a table and, with --json FILE, writes the figures.

    bench/tls_floor.py --build-dir build [--rounds 3] [--duration 5] [--conns 64]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
import tls_pki  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wrk(url, script, conns, dur_s):
    out = subprocess.run(["wrk", "-t", "2", "-c", str(conns), "-d", f"{dur_s}s", "-s", script,
                          url], capture_output=True, text=True, timeout=dur_s + 60).stdout
    calls = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return calls, int(bad.group(1)) if bad else 0


def one(echo, tls, cert, key, script, conns, dur_s):
    argv = [echo, "--threads", "0"] + (["--tls", cert, key] if tls else [])
    p = subprocess.Popen(argv, stdout=subprocess.PIPE)
    try:
        m = re.search(r"ready port=(\d+)", p.stdout.readline().decode())
        if not m:
            raise RuntimeError(f"{' '.join(argv)} did not start")
        url = f"{'https' if tls else 'http'}://127.0.0.1:{m.group(1)}/cnodes/example/call"
        wrk(url, script, conns, 1)  # handshakes and warm-up, not measured
        c0 = cpu_s(p.pid)
        calls, bad = wrk(url, script, conns, dur_s)
        c1 = cpu_s(p.pid)
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return {"tls": tls, "calls_per_s": calls / dur_s, "cpu_us_per_call": (c1 - c0) * 1e6 / calls,
            "non_2xx": bad}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--json")
    a = ap.parse_args()
    echo = os.path.join(a.build_dir, "bench", "http_echo")
    with tempfile.TemporaryDirectory(prefix="nodex-tls-floor-") as tmp:
        pki = tls_pki.Pki(os.path.join(tmp, "pki"), "Bench CA")
        cert, key, _ = pki.issue("echo", "/CN=localhost")
        body, script = os.path.join(tmp, "body.json"), os.path.join(tmp, "post.lua")
        with open(body, "w") as f:
            f.write('{"$tuple":[{"$atom":"ping"},"0123456789abcdef"]}')
        with open(script, "w") as f:
            f.write(f'local f = assert(io.open("{body}", "rb"))\nwrk.body = f:read("*a")\n'
                    'f:close()\nwrk.method = "POST"\n'
                    'wrk.headers["Content-Type"] = "application/json"\n')
        rows = []
        for r in range(a.rounds):
            for tls in (False, True):
                row = one(echo, tls, cert, key, script, a.conns, a.duration)
                row["round"] = r + 1
                rows.append(row)
                print(f"round {r + 1} {'https' if tls else 'http '}: "
                      f"{row['calls_per_s']:9.0f} calls/s  {row['cpu_us_per_call']:6.2f} µs CPU/call"
                      f"  non-2xx {row['non_2xx']}", flush=True)

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
    return 1 if any(x["non_2xx"] for x in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
