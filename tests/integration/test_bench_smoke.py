"""test_bench_smoke: bench/run.sh --smoke runs every benchmark case end to end and reports them.

This checks the benchmark machinery (build, private epmd, Erlang nodes, C-nodes, nodexd, with a
token and with TLS and a token, the Erlang mochiweb front, the library-ceiling servers, wrk,
h2load, CPU per call, report files, clean-up), never speed: every figure only has to be a
positive number, and every target a computed ratio with a PASS or FAIL."""

import importlib.util
import json
import os
import subprocess

import nodex_harness as nx

RUN = os.path.join(nx.REPO_DIR, "bench", "run.sh")

CASES = (
    ["erl.local", "erl.remote", "erl.cnode_direct", "erl.cnode_genserver",
     "erl.cnode_direct_p16", "erl.cnode_direct_p64", "raw_ei.c1", "raw_ei.c16", "raw_ei.c64"]
    + [f"{proto}.16B.c{c}" for proto in ("http", "http_etf", "http_pool", "grpc")
       for c in (1, 16, 64)]
)
# the user's alternative: an Erlang node with mochiweb (jiffy JSON, and ETF) and its own C-node
FRONT_CASES = [f"{p}.16B.c{c}" for p in ("mochiweb", "mochiweb_etf") for c in (1, 16, 64)]
# nodexd with a bearer token on plaintext listeners, and with the token over HTTPS / gRPC-TLS
# (at 1 and 16 in flight: 64 TLS handshakes need not finish within a 1 s smoke case under ASan)
SECURE_CASES = [f"{p}.16B.c{c}" for p in ("http_token", "https_token", "grpc_token", "grpcs_token")
                for c in (1, 16)]
# library ceilings: bench/http_echo and bench/grpc_echo alone, no backend
CEILING_CASES = (
    [f"ceiling.{lib}.c{c}" for lib in ("http", "grpc") for c in (1, 16, 64)]
    + [f"ceiling.{lib}.c64" for lib in ("http_suspend", "http_pool", "http_pool_suspend")]
    + [f"ceiling.grpc_reply_thread.c{c}" for c in (1, 64)]
    + [f"ceiling.{lib}.c16" for lib in ("https", "grpcs")]  # over TLS: 16 in flight in a smoke run
)


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", os.path.join(nx.REPO_DIR, "bench",
                                                                        "bench.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_git_revision_unknown_without_git(tmp_path):
    bench = load_bench()
    assert bench.git_revision(nx.REPO_DIR, git=str(tmp_path / "no-such-git")) == "unknown"


def test_git_revision_unknown_outside_a_repository(tmp_path):
    bench = load_bench()
    assert bench.git_revision(str(tmp_path)) == "unknown"


def test_git_revision_names_the_commit_in_a_checkout():
    bench = load_bench()
    head = subprocess.run(["git", "-C", nx.REPO_DIR, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert bench.git_revision(nx.REPO_DIR).split("+")[0] == head


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
    for case in CASES + SECURE_CASES + CEILING_CASES + FRONT_CASES:
        assert case in res["cases"], f"missing case {case}: {sorted(res['cases'])}"
        r = res["cases"][case]
        for key in ("throughput_per_s", "p50_us", "p99_us", "calls"):
            assert r[key] > 0, f"{case}.{key} = {r[key]}"
        assert r.get("errors", 0) == 0, f"{case}: {r['errors']} failed calls"
    for case in CASES:
        if case.startswith(("http.", "http_pool.", "grpc.")):
            # every request the load tool counted reached the C-node
            assert res["cases"][case]["cnode_calls"] >= res["cases"][case]["calls"], case
        if case.startswith(("http.", "grpc.")) or case == "http_pool.16B.c64":
            # and is set against its library ceiling at the same concurrency
            assert res["cases"][case]["x_ceiling"] > 0, case
    for case in SECURE_CASES:
        r = res["cases"][case]
        # the token was accepted (no 401s: errors 0 above) and every call reached the C-node
        assert r["token"] is True and r["cnode_calls"] >= r["calls"], case
        assert r["tls"] is case.startswith(("https_", "grpcs_")), case
        # set beside the plaintext case of the same run, with nodexd's CPU per call
        plain = ("http" if case.startswith("http") else "grpc") + case[case.index("."):]
        assert r["plaintext_case"] == plain and r["x_plaintext"] > 0, case
        assert r["cpu_us_per_call"] > 0 and isinstance(r["cpu_extra_us"], float), case
        if r["tls"]:
            assert r["x_token"] > 0 and isinstance(r["cpu_tls_us"], float), case
    # CPU per call of every server, and of the C-node behind each one that has a C-node
    for case in CASES + SECURE_CASES + CEILING_CASES + FRONT_CASES:
        r = res["cases"][case]
        if case.startswith("erl."):
            continue
        assert r["cpu_us_per_call"] > 0, case
        if not case.startswith("ceiling."):
            assert r["cnode_cpu_us_per_call"] >= 0, case
        if not case.startswith("raw_ei."):  # wrk or h2load, measured from their rusage
            assert r["load_cpu_us_per_call"] > 0, case
    md_cpu = (out / "results.md").read_text()
    assert "## CPU per call (16 B, same run)" in md_cpu
    assert "## nodexd against the Erlang front (mochiweb, 16 B, same wrk runs)" in md_cpu
    assert all(f"| {case} |" in md_cpu for case in FRONT_CASES)
    assert sorted(res["ceilings"]) == ["grpc", "grpc_reply_thread", "grpcs", "http", "http_pool",
                                       "http_pool_suspend", "http_suspend", "https"], res["ceilings"]
    for server, info in res["ceilings"].items():
        assert info["exit_status"] == 0, f"ceiling server {server} did not stop cleanly: {info}"
    for key in ("idle_mib", "load_peak_mib", "after_mib", "settled_mib"):
        assert res["rss"][key] > 0, key
    for fmt in ("json", "text", "etf"):
        assert res["term_codec"][fmt]["parse_us"] > 0 and res["term_codec"][fmt]["render_us"] > 0
    graded = [t for t in res["targets"] if t["kind"] == "target"]
    assert len(graded) == 11 and all(isinstance(t["pass"], bool) for t in graded), graded
    retired = [t for t in res["targets"] if t["kind"] == "retired"]
    assert len(retired) == 5 and all(isinstance(t["pass"], bool) for t in retired), retired
    names = " ".join(t["name"] for t in graded)
    for what in ("mochiweb front (JSON)", "the mochiweb front's", "(http_echo + raw_ei_bench)",
                 "/ grpc_echo @64", "(grpc_echo p50 @1 + raw-ei p50 @1)", "HTTPS + token CPU",
                 "gRPC-TLS + token CPU"):
        assert what in names, what
    assert all(t["value"] > 0 for t in graded if t["unit"] == "x"), graded
    ceilings = [t for t in res["targets"] if t["kind"] == "ceiling"]
    assert len(ceilings) == 5 and all(t["pass"] is None and isinstance(t["within_reach"], bool)
                                      for t in ceilings), ceilings
    assert all(t["value"] > 0 for t in ceilings if t["unit"] == "x")
    bounds = [t for t in res["targets"] if t["kind"] == "bound"]
    assert len(bounds) == 2 and all(t["value"] > 0 and isinstance(t["within_reach"], bool)
                                    for t in bounds), bounds
    # what TLS costs the libraries alone, against the TLS targets
    floors = [t for t in res["targets"] if t["kind"] == "tls_floor"]
    assert [t["name"].split(" ")[0] for t in floors] == ["HTTPS", "gRPC-TLS"], floors
    assert all(t["value"] > 0 and isinstance(t["within_reach"], bool) for t in floors), floors
    assert res["leftovers"] == [], res["leftovers"]
    md = (out / "results.md").read_text()
    assert "TLS floor: target" in md
    assert "## Targets" in md and ("PASS" in md or "FAIL" in md)
    assert "## Library ceilings (no backend at all)" in md and "ceiling: target" in md
    assert "## The cost of a token and of TLS (16 B, same run)" in md
    assert all(f"| {case} |" in md for case in SECURE_CASES)
    assert (out / "chart.png").stat().st_size > 1000
