"""test_core_http: HTTP error statuses, health endpoints and the command line of nodexd."""

import json
import subprocess

import pytest

import nodex_harness as nx
from nodex_harness import atom, tup


@pytest.fixture(scope="module")
def gw(session):
    d = nx.Nodexd(session, [nx.test_cnode_spec("t")], http={"max_body_bytes": 1024})
    d.start()
    d.wait_up("t")
    yield d
    d.close()


def error_of(r, status, code):
    assert r.status == status, r
    body = r.json()
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return body["error"]["message"]


def test_malformed_json_is_400_and_says_where(gw):
    msg = error_of(gw.call("t", '{"$tuple":[{"$atom":"ping"}, tru]}'), 400, "bad_syntax")
    assert "offset" in msg or "$" in msg, msg


def test_bad_value_deep_in_json_is_400_naming_the_json_path(gw):
    r = gw.call("t", '{"$tuple":[{"$atom":"ping"},[1,2,{"$atom":5}]]}')
    assert r.status == 400, r
    msg = r.json()["error"]["message"]
    assert "$[1][2]" in msg or "[1][2]" in msg or "$tuple" in msg, msg


def test_unknown_dollar_tag_is_400_naming_it(gw):
    r = gw.call("t", '{"$tuple":[{"$atom":"ping"},{"$bogus":1}]}')
    msg = error_of(r, 400, "bad_tag")
    assert "$bogus" in msg, msg


def test_malformed_erlang_text_is_400_with_offset(gw):
    r = gw.call("t", "{ping, <<\"x\">>", content_type="application/x-erlang-text")
    assert r.status == 400, r
    assert "offset" in r.json()["error"]["message"], r


def test_malformed_etf_is_400(gw):
    r = gw.call("t", b"\x83h\x02w\x04pi", content_type="application/x-erlang-binary")
    assert r.status == 400, r


def test_etf_without_version_byte_is_400(gw):
    r = gw.call("t", b"h\x02w\x04pingw\x01x", content_type="application/x-erlang-binary")
    assert r.status == 400, r


def test_unknown_cnode_is_404_not_found(gw):
    error_of(gw.call("nope", tup(atom("ping"), "x")), 404, "not_found")
    error_of(gw.request("GET", "/cnodes/nope"), 404, "not_found")


def test_unknown_route_is_404_not_found(gw):
    error_of(gw.request("GET", "/nothing/here"), 404, "not_found")
    error_of(gw.request("POST", "/cnodes/t/frobnicate", "{}"), 404, "not_found")


def test_wrong_method_is_405_with_allow_header(gw):
    r = gw.request("GET", "/cnodes/t/call")
    error_of(r, 405, "method_not_allowed")
    assert "POST" in r.headers.get("allow", ""), r.headers
    r = gw.request("DELETE", "/healthz")
    error_of(r, 405, "method_not_allowed")
    assert "GET" in r.headers.get("allow", ""), r.headers


def test_body_over_max_body_bytes_is_413(gw):
    big = '{"$tuple":[{"$atom":"ping"},"' + "x" * 2000 + '"]}'
    error_of(gw.call("t", big), 413, "payload_too_large")
    # The daemon is fine afterwards.
    assert gw.call("t", tup(atom("ping"), "ok")).status == 200


def test_unsupported_content_type_is_415(gw):
    error_of(gw.call("t", "ping", content_type="text/plain"), 415, "unsupported_media_type")


def test_unacceptable_accept_is_406(gw):
    error_of(gw.call("t", tup(atom("ping"), "x"), accept="text/html"), 406, "not_acceptable")


def test_accept_star_star_answers_in_the_request_type(gw):
    r = gw.call("t", '{ping, x}', content_type="application/x-erlang-text", accept="*/*")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("application/x-erlang-text"), r.headers


def test_bad_timeout_parameter_is_400(gw):
    r = gw.request("POST", "/cnodes/t/call?timeout_ms=abc", '{"$atom":"x"}',
                   {"Content-Type": "application/json"})
    assert r.status == 400, r


def test_healthz_and_readyz_when_all_up(gw):
    r = gw.request("GET", "/healthz")
    assert r.status == 200 and r.json() == {"status": "ok"}, r
    assert gw.request("GET", "/readyz").status == 200


def test_readyz_is_503_while_a_cnode_is_not_up(session, nodexd):
    d = nodexd([nx.test_cnode_spec("t"),
                nx.test_cnode_spec("never", "never_ready", spawn_inactive_timeout_ms=60000)])
    d.wait_up("t")
    r = d.request("GET", "/readyz")
    assert r.status == 503, r
    assert d.request("GET", "/healthz").status == 200
    # A call to the C-node that is not up, told not to wait: 503 at once, with Retry-After.
    r = d.request("POST", "/cnodes/never/call?timeout_ms=60000&wait=false",
                  nx.J(tup(atom("ping"), "x")), {"Content-Type": "application/json"})
    assert r.status == 503, r  # refused, not held until its 60 s timeout (504)
    assert r.json()["error"]["code"] == "unavailable"
    assert "retry-after" in r.headers, r.headers


# --- command line --------------------------------------------------------------------------


def run(session, *args, timeout=20):
    return subprocess.run([nx.NODEXD, *args], env=session.env, capture_output=True, text=True,
                          timeout=timeout * nx.SLOW)


def test_help_exits_0(session):
    p = run(session, "--help")
    assert p.returncode == 0, p
    assert "--config" in p.stdout + p.stderr


def test_print_default_config_is_a_valid_config(session, tmp_path):
    p = run(session, "--print-default-config")
    assert p.returncode == 0, p
    assert "example" in p.stdout and "127.0.0.1:8080" in p.stdout
    f = tmp_path / "default.yaml"
    f.write_text(p.stdout)
    p = run(session, "--check-config", str(f))
    assert p.returncode == 0 and "config OK" in p.stdout, p


def test_check_config_accepts_a_good_file(session, tmp_path):
    f = tmp_path / "good.yaml"
    f.write_text(nx.to_yaml({"node": {"name": "a@127.0.0.1"}, "http": {"listen": "127.0.0.1:0"},
                             "cnodes": [nx.test_cnode_spec("t")]}))
    p = run(session, "--check-config", str(f))
    assert p.returncode == 0, p
    assert "config OK" in p.stdout, p


def test_check_config_rejects_unknown_key_with_file_line_key(session, tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text('node:\n  name: "a@127.0.0.1"\ncnodes:\n  - name: t\n'
                 '    executable: "/bin/true"\n    restrat: permanent\n')
    p = run(session, "--check-config", str(f))
    assert p.returncode == 2, p
    assert f"{f}:6: cnodes[0].restrat:" in p.stderr, p.stderr


def test_check_config_rejects_bad_enum_value(session, tmp_path):
    f = tmp_path / "bad2.yaml"
    f.write_text('cnodes:\n  - name: t\n    executable: "/bin/true"\n    restart: sometimes\n')
    p = run(session, "--check-config", str(f))
    assert p.returncode == 2, p
    assert f"{f}:4: cnodes[0].restart:" in p.stderr, p.stderr


def test_cookie_never_appears_in_logs_or_api(session, nodexd):
    d = nodexd([nx.test_cnode_spec("t")])
    d.wait_up("t")
    d.call("t", tup(atom("ping"), "x"))
    api = d.request("GET", "/cnodes").body.decode() + d.request("GET", "/cnodes/t").body.decode()
    assert session.cookie not in api
    assert session.cookie not in d.log_text()


def test_log_format_json_writes_one_json_object_per_line(nodexd):
    d = nodexd([nx.test_cnode_spec("t")], extra={"log": {"format": "json"}})
    d.wait_up("t")
    assert d.call("t", tup(atom("ping"), "x")).status == 200
    assert d.stop_and_drain() == 0
    lines = [l for tag, l in d.lines if tag == "err"]
    assert lines, "nodexd logged nothing"
    records = [json.loads(l) for l in lines]  # every line is one JSON object
    for r in records:
        assert set(r) >= {"time", "level", "msg"} and r["level"] in ("debug", "info", "warn",
                                                                    "error"), r
        assert r["time"].endswith("Z")
    msgs = [r["msg"] for r in records]
    assert "cnode t: starting -> up" in msgs, msgs
    assert any(m.startswith("[t") for m in msgs), msgs  # the C-node's own output, as JSON too
