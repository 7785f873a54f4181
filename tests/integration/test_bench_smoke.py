"""test_bench_smoke: bench/run.sh --smoke runs every benchmark case end to end and reports them.

This checks the benchmark machinery (build, private epmd, Erlang nodes, C-nodes, nodexd, wrk,
h2load, report files, clean-up), never speed: every figure only has to be a positive number."""

import json
import os
import subprocess

import nodex_harness as nx

RUN = os.path.join(nx.REPO_DIR, "bench", "run.sh")

CASES = (
    ["erl.local", "erl.remote", "erl.cnode_direct", "erl.cnode_genserver",
     "erl.cnode_direct_p16", "erl.cnode_direct_p64", "raw_ei.c1", "raw_ei.c16", "raw_ei.c64"]
    + [f"{proto}.16B.c{c}" for proto in ("http", "grpc") for c in (1, 16, 64)]
)


def test_bench_smoke(tmp_path):
    out = tmp_path / "results"
    argv = [RUN, "--smoke", "--out", str(out)]
    # Under ctest the build directory is given: use its binaries (bench/ is part of every build).
    if os.environ.get("NODEX_BUILD_DIR") and os.path.exists(
            os.path.join(nx.BUILD_DIR, "bench", "raw_ei_bench")):
        argv += ["--build-dir", nx.BUILD_DIR, "--no-build"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"run.sh --smoke failed ({p.returncode})\n{p.stdout}\n{p.stderr[-4000:]}"

    res = json.loads((out / "results.json").read_text())
    assert res["meta"]["mode"] == "smoke"
    for case in CASES:
        assert case in res["cases"], f"missing case {case}: {sorted(res['cases'])}"
        r = res["cases"][case]
        for key in ("throughput_per_s", "p50_us", "p99_us", "calls"):
            assert r[key] > 0, f"{case}.{key} = {r[key]}"
        assert r.get("errors", 0) == 0, f"{case}: {r['errors']} failed calls"
    for case in CASES:
        if case.startswith(("http.", "grpc.")):
            # every request the load tool counted reached the C-node
            assert res["cases"][case]["cnode_calls"] >= res["cases"][case]["calls"], case
    for key in ("idle_mib", "load_peak_mib", "after_mib"):
        assert res["rss"][key] > 0, key
    for fmt in ("json", "text", "etf"):
        assert res["term_codec"][fmt]["parse_us"] > 0 and res["term_codec"][fmt]["render_us"] > 0
    names = [t["name"] for t in res["targets"]]
    assert len(names) == 9 and all(isinstance(t["pass"], bool) for t in res["targets"])
    assert res["leftovers"] == [], res["leftovers"]
    md = (out / "results.md").read_text()
    assert "## Targets" in md and ("PASS" in md or "FAIL" in md)
    assert (out / "chart.png").stat().st_size > 1000
