"""test_openapi: docs/openapi.json is a valid OpenAPI 3.1 document (its structure, every $ref, every
schema), documents every route and error code nodexd has, is what GET /openapi.json serves, and
describes real answers: every route is driven to its success and its main errors, and each answer's
status must be documented for its route, its documented headers present and its body valid
against the documented schema (python3-jsonschema, draft 2020-12 as OpenAPI 3.1 uses)."""

import http.client
import json
import os
import re
import subprocess

import pytest

import nodex_harness as nx

import jsonschema  # python3-jsonschema (scripts/deps.sh)

DOC_PATH = os.path.join(nx.REPO_DIR, "docs", "openapi.json")
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "application/x-erlang-text"}
CHILD = "oachild1@127.0.0.1"


@pytest.fixture(scope="module")
def doc():
    with open(DOC_PATH) as f:
        return json.load(f)


def resolve(doc, obj):
    """Follows a {"$ref": "#/..."} (local refs only) to the object it names."""
    seen = 0
    while isinstance(obj, dict) and "$ref" in obj:
        ref = obj["$ref"]
        assert ref.startswith("#/"), ref
        obj = doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert isinstance(obj, dict) and part in obj, f"unresolved $ref {ref}"
            obj = obj[part]
        seen += 1
        assert seen < 20, "a $ref cycle"
    return obj


def validator(doc, schema):
    resolver = jsonschema.RefResolver(base_uri="", referrer=doc)
    return jsonschema.Draft202012Validator(schema, resolver=resolver)


def template_of(doc, path):
    """The documented path template that `path` (no query) matches, or None."""
    for template in doc["paths"]:
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return template
    return None


# --- the document itself ------------------------------------------------------------------------
# A subset of the OpenAPI 3.1 schema: what every document and the parts used here must have.
OAS_SUBSET = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["openapi", "info", "paths", "components"],
    "properties": {
        "openapi": {"type": "string", "pattern": r"^3\.1\.\d+$"},
        "info": {"type": "object", "required": ["title", "version"],
                 "properties": {"title": {"type": "string"}, "version": {"type": "string"}}},
        "servers": {"type": "array", "items": {"type": "object", "required": ["url"]}},
        "security": {"$ref": "#/$defs/security"},
        "tags": {"type": "array", "items": {"type": "object", "required": ["name"]}},
        "paths": {"type": "object",
                  "propertyNames": {"pattern": "^/"},
                  "additionalProperties": {"$ref": "#/$defs/pathItem"}},
        "components": {"type": "object", "properties": {
            "schemas": {"type": "object"},
            "responses": {"type": "object", "additionalProperties": {"$ref": "#/$defs/response"}},
            "parameters": {"type": "object",
                           "additionalProperties": {"$ref": "#/$defs/parameter"}},
            "headers": {"type": "object", "additionalProperties": {"$ref": "#/$defs/header"}},
            "securitySchemes": {"type": "object", "additionalProperties": {
                "type": "object", "required": ["type"],
                "properties": {"type": {"enum": ["apiKey", "http", "mutualTLS", "oauth2",
                                                 "openIdConnect"]}}}}}},
    },
    "patternProperties": {"^x-": {}},
    "additionalProperties": False,
    "$defs": {
        "ref": {"type": "object", "required": ["$ref"], "properties": {"$ref": {"type": "string"}}},
        "security": {"type": "array", "items": {"type": "object", "additionalProperties": {
            "type": "array", "items": {"type": "string"}}}},
        "pathItem": {
            "type": "object",
            "properties": {
                "parameters": {"type": "array", "items": {"anyOf": [
                    {"$ref": "#/$defs/ref"}, {"$ref": "#/$defs/parameter"}]}},
                **{m: {"$ref": "#/$defs/operation"} for m in METHODS},
            },
            "patternProperties": {"^x-": {}},
            "additionalProperties": False,
        },
        "operation": {
            "type": "object",
            "required": ["responses", "operationId"],
            "properties": {
                "operationId": {"type": "string"}, "summary": {"type": "string"},
                "description": {"type": "string"}, "tags": {"type": "array"},
                "parameters": {"type": "array", "items": {"anyOf": [
                    {"$ref": "#/$defs/ref"}, {"$ref": "#/$defs/parameter"}]}},
                "requestBody": {"type": "object", "required": ["content"],
                                "properties": {"content": {"$ref": "#/$defs/content"},
                                               "required": {"type": "boolean"}}},
                "responses": {"type": "object", "minProperties": 1,
                              "propertyNames": {"pattern": r"^([1-5](\d\d|XX)|default)$"},
                              "additionalProperties": {"anyOf": [
                                  {"$ref": "#/$defs/ref"}, {"$ref": "#/$defs/response"}]}},
                "security": {"$ref": "#/$defs/security"},
            },
            "patternProperties": {"^x-": {}},
            "additionalProperties": False,
        },
        "parameter": {
            "type": "object", "required": ["name", "in"],
            "properties": {"name": {"type": "string"},
                           "in": {"enum": ["query", "header", "path", "cookie"]},
                           "required": {"type": "boolean"}, "schema": {"type": "object"},
                           "description": {"type": "string"}, "examples": {"type": "object"},
                           "allowEmptyValue": {"type": "boolean"}},
            "if": {"properties": {"in": {"const": "path"}}},
            "then": {"required": ["required"], "properties": {"required": {"const": True}}},
            "additionalProperties": False,
        },
        "header": {"type": "object", "properties": {"description": {"type": "string"},
                                                     "schema": {"type": "object"}},
                   "additionalProperties": False},
        "response": {
            "type": "object", "required": ["description"],
            "properties": {"description": {"type": "string"},
                           "headers": {"type": "object", "additionalProperties": {"anyOf": [
                               {"$ref": "#/$defs/ref"}, {"$ref": "#/$defs/header"}]}},
                           "content": {"$ref": "#/$defs/content"}},
            "additionalProperties": False,
        },
        "content": {"type": "object",
                    "propertyNames": {"pattern": r"^[a-z]+/[a-z0-9.+-]+$"},
                    "additionalProperties": {
                        "type": "object",
                        "properties": {"schema": {"type": "object"}, "examples": {"type": "object"}},
                        "patternProperties": {"^x-": {}},
                        "additionalProperties": False}},
    },
}


def walk(obj, path=""):
    """Every (json pointer, dict) in obj."""
    if isinstance(obj, dict):
        yield path, obj
        for k, v in obj.items():
            yield from walk(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from walk(v, f"{path}/{i}")


def test_the_document_has_the_openapi_3_1_structure(doc):
    jsonschema.Draft202012Validator.check_schema(OAS_SUBSET)
    errors = sorted(jsonschema.Draft202012Validator(OAS_SUBSET).iter_errors(doc), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


def test_every_ref_resolves_and_every_schema_is_a_2020_12_schema(doc):
    for where, obj in walk(doc):
        if "$ref" in obj:
            resolve(doc, obj)
    for name, schema in doc["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
    for where, obj in walk(doc["paths"]):
        if isinstance(obj.get("schema"), dict):
            jsonschema.Draft202012Validator.check_schema(obj["schema"])


def test_operation_ids_are_unique_and_path_parameters_are_declared(doc):
    ids = []
    for template, item in doc["paths"].items():
        declared = {resolve(doc, p)["name"] for p in item.get("parameters", [])
                    if resolve(doc, p)["in"] == "path"}
        assert declared == set(re.findall(r"\{([^}]+)\}", template)), template
        for m in METHODS:
            if m in item:
                ids.append(item[m]["operationId"])
    assert len(ids) == len(set(ids)), ids


def test_every_route_nodexd_has_is_documented(doc):
    """Fails when a route is added to http_route.h without documenting it."""
    with open(os.path.join(nx.REPO_DIR, "src", "http_route.h")) as f:
        header = f.read()
    table = header[header.index("#define HTTP_ROUTES(X)"):header.index("typedef enum http_route_kind")]
    routes = re.findall(r'X\(HTTP_ROUTE_(\w+), "([A-Z]+) (/\S*)"\)', table)
    kinds = re.findall(r"X\(HTTP_ROUTE_(\w+),", table)
    assert len(routes) == len(kinds) - 1, "every route but NOT_FOUND names its method and path"
    for _kind, method, path in routes:
        assert path in doc["paths"], f"{method} {path} is not in docs/openapi.json"
        assert method.lower() in doc["paths"][path], f"{method} {path} is not in docs/openapi.json"
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in METHODS if m in item}
    assert documented == {(m, p) for _k, m, p in routes}, "documented routes nodexd lacks"


def test_every_error_code_nodexd_sends_is_documented(doc):
    codes = set(resolve(doc, {"$ref": "#/components/schemas/Error"})
                ["properties"]["error"]["properties"]["code"]["enum"])
    src = os.path.join(nx.REPO_DIR, "src")
    with open(os.path.join(src, "service.h")) as f:
        sent = set(re.findall(r'X\(SERVICE_\w+, \d+, \d+ /\* \w+ \*/, "(\w+)"\)', f.read()))
    assert len(sent) > 10
    with open(os.path.join(src, "http_api.c")) as f:
        text = f.read()
    sent |= set(re.findall(r'http_error\([^;]*?"([a-z_]+)",\s*"', text, re.S))
    sent |= set(re.findall(r'\\"code\\":\\"([a-z_]+)\\"', text))
    sent.discard("ok")
    assert sent - codes == set(), f"error codes missing from the Error schema: {sent - codes}"


# --- real answers -------------------------------------------------------------------------------
class Checker:
    """Checks answers against the document and remembers which (operation, status) it saw."""

    def __init__(self, doc):
        self.doc = doc
        self.seen = set()

    def response_of(self, method, path, status):
        template = template_of(self.doc, path)
        if template is None:
            assert status == 404, f"{method} {path}: {status} for a path not documented"
            return "x-nodex-404", resolve(self.doc, self.doc["x-nodex-404"])
        item = self.doc["paths"][template]
        if method.lower() not in item and not (method == "HEAD" and "get" in item):
            assert status == 405, f"{method} {path}: {status}, method not documented"
            return template, resolve(self.doc, item["x-nodex-405"])
        op = item[method.lower() if method != "HEAD" else "get"]
        assert str(status) in op["responses"], \
            f"{method} {template}: status {status} is not documented ({sorted(op['responses'])})"
        self.seen.add((method, template, status))
        return template, resolve(self.doc, op["responses"][str(status)])

    def check(self, method, path, status, headers, body):
        path = path.split("?")[0]
        template, response = self.response_of(method, path, status)
        for name in response.get("headers", {}):
            assert name.lower() in headers, f"{method} {path} {status}: no {name} header"
        if status == 405:
            allowed = {m.upper() for m in METHODS if m in self.doc["paths"][template]}
            assert set(headers["allow"].replace(" ", "").split(",")) == allowed, headers
        if method == "HEAD" or (not body and "content-type" not in headers):
            return
        ctype = headers["content-type"].split(";")[0].strip()
        content = response.get("content", {})
        assert ctype in content, f"{method} {path} {status}: {ctype} not documented"
        media = content[ctype]
        if ctype == "application/json":
            validator(self.doc, media["schema"]).validate(json.loads(body))
        elif ctype == "application/x-ndjson":
            lines = [json.loads(line) for line in body.decode().splitlines() if line]
            assert lines, body
            for line in lines:
                validator(self.doc, media["schema"]).validate(line)
        elif ctype == "text/event-stream":
            data = [line[6:] for line in body.decode().splitlines() if line.startswith("data: ")]
            assert data, body
            for d in data:
                validator(self.doc, media["x-nodex-data"]).validate(json.loads(d))

    def request(self, d, method, path, body=None, headers=None, expect=None, token=None):
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        r = nx.http_request(d.port, method, path, body, headers)
        if expect is not None:
            assert r.status == expect, (method, path, r)
        self.check(method, path, r.status, r.headers, r.body)
        return r

    def stream_head(self, d, path, headers, lines, token=None):
        """The first `lines` lines of an endless stream (GET /events), checked."""
        conn = http.client.HTTPConnection(nx.HOST, d.port, timeout=20 * nx.SLOW)
        headers = dict(headers)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            got = b""
            while got.count(b"\n") < lines:
                line = r.readline()
                assert line, got
                got += line
            self.check("GET", path, r.status, {k.lower(): v for k, v in r.getheaders()}, got)
            return r.status, got
        finally:
            conn.close()


@pytest.fixture(scope="module")
def checker(doc):
    return Checker(doc)


@pytest.fixture(scope="module")
def gw(session):
    d = nx.Nodexd(session, [
        nx.test_cnode_spec("t"),
        nx.test_cnode_spec("s", reply_filter={"tag": "reply"}),
        nx.test_cnode_spec("gone", "exit_before_ready", max_restarts=0),
    ], http={"max_body_bytes": 4096},
        extra={"erlang_nodes": {"name_prefix": "oachild", "max_children": 4}})
    d.start()
    d.wait_up("t")
    d.wait_up("s")
    d.wait_for_state("gone", "failed")
    yield d
    d.close()


PING = '{"$tuple":[{"$atom":"ping"},"oa"]}'


def test_status_page_openapi_and_probes(gw, checker, doc):
    r = checker.request(gw, "GET", "/", expect=200)
    assert r.headers["content-type"].startswith("text/html")
    with open(os.path.join(nx.REPO_DIR, "src", "status_page.html"), "rb") as f:
        assert r.body == f.read()
    assert "default-src 'none'" in r.headers["content-security-policy"]
    r = checker.request(gw, "GET", "/openapi.json", expect=200)
    assert r.headers["content-type"] == "application/json"
    assert r.json() == doc
    with open(DOC_PATH, "rb") as f:
        assert r.body == f.read()
    checker.request(gw, "HEAD", "/openapi.json", expect=200)
    checker.request(gw, "GET", "/healthz", expect=200)
    r = checker.request(gw, "GET", "/metrics", expect=200)
    assert r.headers["content-type"].startswith("text/plain")
    checker.request(gw, "GET", "/readyz", expect=503)  # "gone" has failed
    checker.request(gw, "GET", "/", headers={"Host": "evil.example"}, expect=403)
    for method, path in [("POST", "/"), ("DELETE", "/openapi.json"), ("PUT", "/healthz"),
                         ("POST", "/readyz"), ("POST", "/metrics"), ("POST", "/cnodes"), ("PUT", "/cnodes/t"),
                         ("GET", "/cnodes/t/call"), ("GET", "/cnodes/t/cast"),
                         ("GET", "/cnodes/t/stream"), ("GET", "/cnodes/t/restart"),
                         ("POST", "/events"), ("PUT", "/nodes"), ("GET", f"/nodes/{CHILD}"),
                         ("GET", f"/nodes/{CHILD}/rpc"), ("POST", f"/nodes/{CHILD}/modules/m")]:
        checker.request(gw, method, path, expect=405)
    checker.request(gw, "GET", "/no/such/route", expect=404)


def test_readyz_when_every_cnode_is_up(session, checker):
    d = nx.Nodexd(session, [nx.test_cnode_spec("t")])
    try:
        d.start()
        d.wait_up("t")
        checker.request(d, "GET", "/readyz", expect=200)
    finally:
        d.close()


def test_cnode_status_routes(gw, checker):
    r = checker.request(gw, "GET", "/cnodes", expect=200)
    assert {c["name"] for c in r.json()["cnodes"]} == {"t", "s", "gone"}
    checker.request(gw, "GET", "/cnodes/t", expect=200)
    checker.request(gw, "GET", "/cnodes/gone", expect=200)
    checker.request(gw, "GET", "/cnodes/nope", expect=404)


def test_pool_instances(session, checker):
    d = nx.Nodexd(session, [nx.test_cnode_spec("p", instances=2)])
    try:
        d.start()
        d.wait_for_state("p", "up", pred=lambda i: i["instances_up"] == 2)
        r = checker.request(d, "GET", "/cnodes/p", expect=200)
        assert len(r.json()["pool"]) == 2
    finally:
        d.close()


def test_call(gw, checker, tmp_path):
    r = checker.request(gw, "POST", "/cnodes/t/call", PING, JSON, expect=200)
    assert r.json() == {"$tuple": [{"$atom": "pong"}, "oa"]}
    checker.request(gw, "POST", "/cnodes/t/call", "{ping, x}", TEXT, expect=200)
    checker.request(gw, "POST", "/cnodes/t/call", "{ping, tru", TEXT, expect=400)
    checker.request(gw, "POST", "/cnodes/t/call?timeout_ms=abc", PING, JSON, expect=400)
    checker.request(gw, "POST", "/cnodes/t/call?wait=maybe", PING, JSON, expect=400)
    checker.request(gw, "POST", "/cnodes/nope/call", PING, JSON, expect=404)
    checker.request(gw, "POST", "/cnodes/t/call", PING, dict(JSON, Accept="text/html"),
                    expect=406)
    checker.request(gw, "POST", "/cnodes/t/call", "x" * 5000, JSON, expect=413)
    checker.request(gw, "POST", "/cnodes/t/call", "a=b",
                    {"Content-Type": "application/x-www-form-urlencoded"}, expect=415)
    checker.request(gw, "POST", "/cnodes/gone/call", PING, JSON, expect=503)
    release = tmp_path / "release"
    try:
        checker.request(gw, "POST", "/cnodes/t/call?timeout_ms=200",
                        f'{{wait_file, <<"{release}">>, x}}', TEXT, expect=504)
    finally:
        release.touch()


def test_cast(gw, checker):
    checker.request(gw, "POST", "/cnodes/t/cast", PING, JSON, expect=202)
    checker.request(gw, "POST", "/cnodes/t/cast", "[1,", JSON, expect=400)
    checker.request(gw, "POST", "/cnodes/nope/cast", PING, JSON, expect=404)
    checker.request(gw, "POST", "/cnodes/t/cast", "x" * 5000, JSON, expect=413)
    checker.request(gw, "POST", "/cnodes/t/cast", "hi", {"Content-Type": "text/plain"},
                    expect=415)
    checker.request(gw, "POST", "/cnodes/gone/cast", PING, JSON, expect=503)


def test_stream(gw, checker):
    r = checker.request(gw, "POST", "/cnodes/s/stream", "{noise, 2, hi}", TEXT, expect=200)
    lines = r.body.decode().splitlines()
    assert len(lines) == 3 and json.loads(lines[-1])["final"] is True, lines
    checker.request(gw, "POST", "/cnodes/s/stream", "{noise", TEXT, expect=400)
    checker.request(gw, "POST", "/cnodes/nope/stream", PING, JSON, expect=404)
    checker.request(gw, "POST", "/cnodes/s/stream", PING, dict(JSON, Accept="text/html"),
                    expect=406)
    checker.request(gw, "POST", "/cnodes/gone/stream", PING, JSON, expect=503)


def test_events(gw, checker):
    status, _ = checker.stream_head(gw, "/events?include_current=true", {}, 4)
    assert status == 200
    status, body = checker.stream_head(gw, "/events?include_current=1",
                                       {"Accept": "application/x-ndjson"}, 2)
    assert status == 200 and json.loads(body.splitlines()[0])["seq"] == 0
    checker.request(gw, "GET", "/events", headers={"Accept": "text/html"}, expect=406)


def test_erlang_nodes(gw, checker, tmp_path):
    r = checker.request(gw, "POST", "/nodes", '{"count":1}', JSON, expect=201)
    node = r.json()["nodes"][0]
    checker.request(gw, "GET", "/nodes", expect=200)
    checker.request(gw, "POST", "/nodes", '{"count":0}', JSON, expect=400)
    checker.request(gw, "POST", "/nodes", '{"count":1}', TEXT, expect=415)
    checker.request(gw, "POST", "/nodes", "x" * 5000, JSON, expect=413)
    rpc = f"/nodes/{node}/rpc"
    r = checker.request(gw, "POST", rpc, '{"module":"lists","function":"reverse","args":[[1,2]]}',
                        JSON, expect=200)
    assert r.json() == [2, 1]
    checker.request(gw, "POST", rpc, "{erlang, node, []}", TEXT, expect=200)
    checker.request(gw, "POST", rpc, '{"module":"lists"}', JSON, expect=400)
    checker.request(gw, "POST", rpc, '{"module":"nosuch","function":"f","args":[]}', JSON,
                    expect=502)
    checker.request(gw, "POST", rpc + "?timeout_ms=100",
                    '{"module":"timer","function":"sleep","args":[2000]}', JSON, expect=504)
    checker.request(gw, "POST", rpc, '{"module":"erlang","function":"node","args":[]}',
                    dict(JSON, Accept="text/html"), expect=406)
    checker.request(gw, "POST", rpc, "a=b", {"Content-Type": "multipart/form-data"}, expect=415)
    checker.request(gw, "POST", rpc, "x" * 5000, JSON, expect=413)
    checker.request(gw, "POST", "/nodes/nobody@127.0.0.1/rpc",
                    '{"module":"erlang","function":"node","args":[]}', JSON, expect=503)
    checker.request(gw, "POST", "/nodes/nobody@10.9.9.9/rpc",
                    '{"module":"erlang","function":"node","args":[]}', JSON, expect=403)
    src = tmp_path / "nx_oa.erl"
    src.write_text("-module(nx_oa).\n-export([f/0]).\nf() -> ok.\n")
    subprocess.run(["erlc", "-o", str(tmp_path), str(src)], check=True, timeout=60 * nx.SLOW)
    beam = (tmp_path / "nx_oa.beam").read_bytes()
    load = f"/nodes/{node}/modules/nx_oa"
    checker.request(gw, "PUT", load, beam, {"Content-Type": "application/octet-stream"},
                    expect=200)
    checker.request(gw, "PUT", load, b"not a beam", expect=400)
    checker.request(gw, "PUT", load, b"x" * 5000, expect=413)
    checker.request(gw, "PUT", "/nodes/nobody@127.0.0.1/modules/nx_oa", beam, expect=503)
    checker.request(gw, "DELETE", f"/nodes/{node}", expect=202)
    checker.request(gw, "DELETE", "/nodes/nobody@127.0.0.1", expect=404)


def test_restart(gw, checker):
    checker.request(gw, "POST", "/cnodes/nope/restart", expect=404)
    checker.request(gw, "POST", "/cnodes/gone/restart", expect=202)


def test_with_auth_every_route_but_the_open_ones_is_401_or_403(session, checker, doc):
    reader_path, reader = nx.token_file(session, "reader")
    d = nx.Nodexd(session, [nx.test_cnode_spec("t")], extra={"auth": {"principals": [
        {"name": "reader", "token_file": reader_path, "allow": ["cnodes.restart:none"]}]}})
    d.token = reader  # the harness's own GETs; checker.request sends what each case says
    try:
        d.start()
        d.wait_up("t")
        bodies = {"post": PING, "put": "beam"}
        for template, item in doc["paths"].items():
            path = (template.replace("{name}", "t").replace("{node}", CHILD)
                    .replace("{module}", "m"))
            for m in METHODS:
                if m not in item:
                    continue
                op = item[m]
                headers = JSON if m in bodies else {}
                if template == "/events":
                    continue  # an endless stream when it is allowed; below
                body = {"/nodes": '{"count":1}',
                        "/nodes/{node}/rpc": '{"module":"erlang","function":"node","args":[]}'
                        }.get(template, bodies.get(m))
                r = checker.request(d, m.upper(), path, body, headers)
                if op.get("security") == []:
                    assert r.status in (200, 503), (m, template, r)  # the open ones
                    continue
                assert r.status == 401, (m, template, r)
                assert r.headers["www-authenticate"] == 'Bearer realm="nodexd"'
                r = checker.request(d, m.upper(), path, body, headers, token=reader)
                if "x-nodex-permission" in op and "open to every" in op["x-nodex-permission"]:
                    assert r.status == 200, (m, template, r)
                else:
                    assert r.status == 403, (m, template, r)
        checker.request(d, "GET", "/events", expect=401)
        checker.request(d, "GET", "/events", token=reader, expect=403)
        r = checker.request(d, "GET", "/cnodes", token="not-" + reader, expect=401)
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        r = checker.request(d, "GET", "/", expect=200)  # the page itself needs no token
        with open(os.path.join(nx.REPO_DIR, "src", "status_page.html"), "rb") as f:
            assert r.body == f.read()  # static: nothing of this nodexd in it
    finally:
        d.close()


def test_every_operation_was_answered_with_success_above(checker, doc):
    """Runs last: the tests above drove every documented operation to a 2xx at least once."""
    ok = {(m, t) for m, t, s in checker.seen if 200 <= s < 300}
    ops = {(m.upper(), t) for t, item in doc["paths"].items() for m in METHODS if m in item}
    assert ops - ok == set(), f"operations never answered with success: {ops - ok}"
