"""test_core_calls: calls through nodexd: content types, multiplexing, late replies, filters, protocols."""

import json
import struct
import threading
import time

import pytest

import nodex_harness as nx
from nodex_harness import atom, tup

PONG_HELLO = '{"$tuple":[{"$atom":"pong"},"hello world"]}'


@pytest.fixture(scope="module")
def gw(session):
    """One nodexd shared by the read-only tests of this module."""
    cnodes = [
        nx.example_cnode_spec("example"),
        nx.test_cnode_spec("t"),
        nx.test_cnode_spec("tagged", reply_filter={"tag": "reply"}),
        nx.test_cnode_spec("bynode", reply_filter="node"),
        nx.test_cnode_spec("gc", protocol="gen_call"),
    ]
    d = nx.Nodexd(session, cnodes)
    d.start()
    for c in cnodes:
        d.wait_up(c["name"])
    yield d
    d.close()


def test_readme_curl_example_returns_exactly_pong_hello_world(session, nodexd):
    # The embedded default, except for a free HTTP port and a unique node name.
    d = nodexd([{"name": "example", "executable": "example_cnode"}])
    d.wait_up("example")
    r = d.call("example", '{"$tuple":[{"$atom":"ping"},"hello world"]}')
    assert r.status == 200, r
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    assert r.body.decode().strip() == PONG_HELLO


def test_json_call_without_content_type_defaults_to_json(gw):
    r = gw.call("example", '{"$tuple":[{"$atom":"ping"},"hello world"]}', content_type=None)
    assert r.status == 200, r
    assert r.json() == json.loads(PONG_HELLO)


def test_erlang_text_round_trip(gw):
    r = gw.call("example", '{ping, <<"hello world">>}.', content_type="application/x-erlang-text")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("application/x-erlang-text"), r.headers
    assert r.body.decode().strip().rstrip(".").replace(" ", "") == '{pong,<<"helloworld">>}'


def etf_ping(payload: bytes) -> bytes:
    """{ping, <<payload>>} in ETF (SMALL_TUPLE, SMALL_ATOM_UTF8, BINARY)."""
    return (b"\x83h\x02" + b"w\x04ping" + b"m" + struct.pack(">I", len(payload)) + payload)


def etf_pong(payload: bytes) -> bytes:
    return (b"\x83h\x02" + b"w\x04pong" + b"m" + struct.pack(">I", len(payload)) + payload)


def test_etf_round_trip_is_byte_exact(gw):
    payload = bytes(range(256))
    r = gw.call("example", etf_ping(payload), content_type="application/x-erlang-binary")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("application/x-erlang-binary"), r.headers
    assert r.body == etf_pong(payload)


def test_accept_header_converts_json_request_to_etf_reply(gw):
    r = gw.call("example", '{"$tuple":[{"$atom":"ping"},"hi"]}', accept="application/x-erlang-binary")
    assert r.status == 200, r
    assert r.body == etf_pong(b"hi")


def test_etf_request_with_json_accept(gw):
    r = gw.call("example", etf_ping(b"hello world"), content_type="application/x-erlang-binary",
                accept="application/json")
    assert r.status == 200, r
    assert r.body.decode().strip() == PONG_HELLO


def test_unknown_request_gets_error_unknown_call(gw):
    r = gw.call("example", {"$atom": "what"})
    assert r.status == 200, r
    assert r.json() == tup(atom("error"), atom("unknown_call"))


def test_200_concurrent_calls_with_distinct_payloads_each_get_their_own_reply(gw):
    n_threads, per_thread = 20, 10
    errors, done = [], []

    def worker(t):
        conn = gw.connection(timeout=30)
        try:
            for i in range(per_thread):
                payload = f"payload-{t}-{i}-" + "x" * (t * 37 + i)
                r = gw.call("t", tup(atom("ping"), payload), conn=conn)
                if r.status != 200 or r.json() != tup(atom("pong"), payload):
                    errors.append((payload, r))
                else:
                    done.append(payload)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((t, repr(e)))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    barrier_start = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors[:5]
    assert len(done) == n_threads * per_thread
    assert len(set(done)) == 200
    print(f"200 calls in {time.monotonic() - barrier_start:.2f}s")


def test_a_slow_call_blocks_no_server_thread(gw, tmp_path):
    # The single-threaded C-node is held inside one call until the test creates a file: while it
    # is, /healthz, another C-node and 20 calls queued behind it are all accepted (no HTTP thread
    # waits for a C-node), and the queued ones are answered once it is released.
    release = tmp_path / "release"
    results = []

    def one(i):
        r = gw.call("t", tup(atom("ping"), f"p{i}"), timeout_ms=60000)
        results.append(r.status)

    slow = threading.Thread(target=lambda: results.append(
        gw.call("t", tup(atom("wait_file"), str(release), "s"), timeout_ms=60000).status))
    slow.start()
    nx.wait_until(lambda: gw.info("t")["in_flight"] >= 1, 10, what="the held call in flight")
    assert gw.request("GET", "/healthz").status == 200
    r = gw.call("example", tup(atom("ping"), "x"))
    assert r.status == 200, r
    ths = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for th in ths:
        th.start()
    nx.wait_until(lambda: gw.info("t")["in_flight"] == 21, 10, what="20 calls queued behind it")
    assert slow.is_alive() and not results, results  # nothing ended while the C-node was held
    release.touch()
    for th in ths + [slow]:
        th.join(60)
    assert results.count(200) == 21, results


def test_late_reply_never_reaches_a_later_call(session, nodexd, tmp_path):
    d = nodexd([nx.test_cnode_spec("t")])
    d.wait_up("t")
    before = d.info("t")["dropped_messages"]
    release = tmp_path / "release"
    r = d.call("t", tup(atom("wait_file"), str(release), "a"), timeout_ms=300)
    assert r.status == 504, r
    assert r.json()["error"]["code"] == "timeout"
    assert r.elapsed >= 0.3, r  # not before its deadline (a lower bound: load only adds to it)
    release.touch()  # the C-node replies now, to a call that has ended
    r = d.call("t", tup(atom("ping"), "b"))  # queued behind the sleep: answered after the late reply
    assert r.status == 200, r
    assert r.json() == tup(atom("pong"), "b"), "a late reply reached a later call"
    info = nx.wait_until(lambda: (lambda i: i if i["dropped_messages"] >= before + 1 else None)(
        d.info("t")), 5, what="dropped_messages to count the late reply")
    assert info["dropped_messages"] == before + 1
    assert info["in_flight"] == 0


def test_garbage_reply_is_502_bad_reply(session, nodexd):
    d = nodexd([nx.test_cnode_spec("t")])
    d.wait_up("t")
    r = d.call("t", atom("garbage"), timeout_ms=3000)
    assert r.status == 502, r
    assert r.json()["error"]["code"] == "bad_reply"  # not the 504 of its timeout


def test_trailing_bytes_after_reply_term_are_ignored(gw):
    r = gw.call("t", tup(atom("trailing"), "tr"))
    assert r.status == 200, r
    assert r.json() == tup(atom("pong"), "tr")


def test_unsolicited_messages_are_counted_and_the_call_still_answered(gw):
    before = gw.info("t")["dropped_messages"]
    r = gw.call("t", tup(atom("unsolicited"), 5))
    assert r.status == 200, r
    assert r.json() == atom("ok")
    info = nx.wait_until(lambda: (lambda i: i if i["dropped_messages"] >= before + 5 else None)(
        gw.info("t")), 5, what="5 dropped messages")
    assert info["dropped_messages"] == before + 5


def test_second_reply_to_a_finished_call_is_dropped(gw):
    before = gw.info("t")["dropped_messages"]
    r = gw.call("t", tup(atom("twice"), "w"))
    assert r.status == 200 and r.json() == tup(atom("pong"), "w"), r
    r = gw.call("t", tup(atom("ping"), "after"))
    assert r.json() == tup(atom("pong"), "after"), r
    nx.wait_until(lambda: gw.info("t")["dropped_messages"] >= before + 1, 5, what="drop count")


def test_flood_of_big_messages_keeps_calls_correct(gw):
    results = []

    def pinger():
        for i in range(30):
            r = gw.call("t", tup(atom("ping"), f"f{i}"), timeout_ms=10000)
            results.append(r.status == 200 and r.json() == tup(atom("pong"), f"f{i}"))

    before = gw.info("t")["dropped_messages"]
    th = threading.Thread(target=pinger)
    th.start()
    # Filter any: the first of 200 x 64 KiB messages is the reply; the other 199 and the final
    # {flooded, 200} reach a finished call and must be dropped, never given to the pings.
    r = gw.call("t", tup(atom("flood"), 200, 65536), timeout_ms=15000,
                accept="application/x-erlang-binary")
    assert r.status == 200, r
    assert r.body == b"\x83m" + struct.pack(">I", 65536) + b"f" * 65536
    th.join(30)
    assert len(results) == 30 and all(results), results
    nx.wait_until(lambda: gw.info("t")["dropped_messages"] >= before + 200, 10,
                  what="the 200 flood leftovers to be dropped")


def test_big_reply_of_4_mib(gw):
    size = 4 << 20
    r = gw.call("t", tup(atom("big"), size), accept="application/x-erlang-binary", timeout_ms=15000)
    assert r.status == 200, r
    assert r.body[:2] == b"\x83m" and struct.unpack(">I", r.body[2:6])[0] == size
    assert r.body[6:] == b"b" * size


def test_reply_filter_tag_skips_other_messages(gw):
    r = gw.call("tagged", tup(atom("noise"), 5, "n"))
    assert r.status == 200, r
    assert r.json() == tup(atom("pong"), "n")


def test_reply_filter_any_takes_the_first_message(gw):
    r = gw.call("t", tup(atom("noise"), 2, "n"))
    assert r.status == 200, r
    assert r.json() == tup(atom("noise"), 1)


def test_reply_filter_node_answers_the_node_tagged_reply(gw):
    r = gw.call("bynode", tup(atom("node_tagged"), "nt"))
    assert r.status == 200, r
    assert r.json() == tup(atom("pong"), "nt")
    info = gw.info("bynode")
    assert info["node"].startswith(gw.sname), info


def test_gen_call_protocol(gw):
    r = gw.call("gc", tup(atom("ping"), "g"))
    assert r.status == 200, r
    assert r.json() == tup(atom("pong"), "g")
    assert gw.info("gc")["protocol"] == "gen_call"


def test_pid_self_in_request_receives_the_reply(gw):
    r = gw.call("t", tup(atom("reply_to"), {"$pid": "self"}, "rt"))
    assert r.status == 200, r
    assert r.json() == tup(atom("pong"), "rt")


def test_pid_self_in_text_request(gw):
    r = gw.call("t", "{reply_to, self(), rt}", content_type="application/x-erlang-text",
                accept="application/json")
    assert r.status == 200, r
    assert r.json() == tup(atom("pong"), atom("rt"))


def test_keep_alive_serves_several_requests_on_one_connection(gw):
    conn = gw.connection()
    try:
        for i in range(10):
            r = gw.call("example", tup(atom("ping"), f"k{i}"), conn=conn)
            assert r.status == 200 and r.json() == tup(atom("pong"), f"k{i}"), r
            assert r.headers.get("connection", "").lower() != "close", r.headers
        r = gw.request("GET", "/healthz", conn=conn)
        assert r.status == 200, r
        r = gw.request("GET", "/cnodes/nope", conn=conn)
        assert r.status == 404, r
        r = gw.call("example", tup(atom("ping"), "last"), conn=conn)
        assert r.status == 200, r
        sock = conn.sock
        assert sock is not None  # still the same open connection
    finally:
        conn.close()


def test_cast_returns_202_accepted(gw):
    r = gw.call("t", tup(atom("ping"), "c"), cast=True)
    assert r.status == 202, r
    assert r.json() == {"status": "accepted"}


def test_get_cnode_reports_the_documented_fields(gw):
    info = gw.info("t")
    for key in ("name", "state", "node", "os_pid", "restarts", "last_exit", "in_flight",
                "uptime_ms", "dropped_messages", "direction", "protocol"):
        assert key in info, (key, info)
    assert info["name"] == "t" and info["state"] == "up"
    assert info["node"] == f"{gw.sname}_t@127.0.0.1"
    assert isinstance(info["os_pid"], int) and nx.proc_alive(info["os_pid"])
    assert info["direction"] == "back" and info["protocol"] == "raw"
    all_ = gw.get_json("/cnodes")
    assert sorted(c["name"] for c in all_["cnodes"]) == ["bynode", "example", "gc", "t", "tagged"]
