/* test_http_api: the HTTP front end in process (gateway + test C-node + private epmd) spoken to
 * over a raw HTTP/1.1 socket: routes, methods, content negotiation, limits, keep-alive, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "epmd.h"
#include "gateway.h"
#include "http_api.h"
#include "http_assets.h"
#include "log.h"
#include "nodex_fixture.h"
#include "strbuf.h"
#include "term.h"

/* ---- tests -------------------------------------------------------------------------------- */

static void test_the_status_page_and_the_api_document_are_the_embedded_files(void **state) {
    (void)state;
    fixture_response r;
    char v[512];
    fixture_http_request(fixture_http_fe.port, "GET", "/", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    http_asset page = http_assets_status_page();
    assert_int_equal(r.body.len, page.len);
    assert_memory_equal(r.body.data, page.data, page.len);
    assert_string_equal(fixture_http_header(&r, "Content-Type", v, sizeof v), page.content_type);
    assert_non_null(fixture_http_header(&r, "Content-Security-Policy", v, sizeof v));
    assert_non_null(strstr(v, "connect-src 'self'"));
    fixture_http_response_free(&r);
    fixture_http_request(fixture_http_fe.port, "GET", "/openapi.json", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    http_asset doc = http_assets_openapi();
    assert_int_equal(r.body.len, doc.len);
    assert_memory_equal(r.body.data, doc.data, doc.len);
    assert_string_equal(fixture_http_header(&r, "Content-Type", v, sizeof v), "application/json");
    assert_null(fixture_http_header(&r, "Content-Security-Policy", v, sizeof v));
    fixture_http_response_free(&r);
    fixture_http_request(fixture_http_fe.port, "POST", "/", NULL, "x", 1, &r);
    fixture_assert_http_error(&r, 405, "method_not_allowed");
    fixture_http_response_free(&r);
}

static void test_unknown_routes_are_404_with_an_error_body(void **state) {
    (void)state;
    static const char *const paths[] = {
        "//", "/nope", "/healthz/x", "/cnodes/t/x", "/cnodes/t/call/x", "/cnodesx", "/eventsx"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        fixture_response r;
        fixture_http_request(fixture_http_fe.port, "GET", paths[i], NULL, NULL, 0, &r);
        fixture_assert_http_error(&r, 404, "not_found");
        fixture_http_response_free(&r);
    }
    fixture_response r;
    fixture_http_request(fixture_http_fe.port, "GET", "/cnodes/nope", NULL, NULL, 0, &r);
    fixture_assert_http_error(&r, 404, "not_found");
    assert_non_null(strstr(r.body.data, "nope"));
    fixture_http_response_free(&r);
    fixture_http_call_json(fixture_http_fe.port, "/cnodes/nope/call", NULL, fixture_ping_json, &r);
    fixture_assert_http_error(&r, 404, "not_found");
    fixture_http_response_free(&r);
}

static void test_wrong_methods_are_405_with_allow(void **state) {
    (void)state;
    static const struct {
        const char *method, *path, *allow;
    } cases[] = {
        {"POST", "/healthz", "GET"},       {"DELETE", "/healthz", "GET"},
        {"POST", "/readyz", "GET"},        {"POST", "/cnodes", "GET"},
        {"PUT", "/cnodes", "GET"},         {"POST", "/cnodes/t", "GET"},
        {"GET", "/cnodes/t/call", "POST"}, {"PUT", "/cnodes/t/call", "POST"},
        {"GET", "/cnodes/t/cast", "POST"}, {"POST", "/events", "GET"},
        {"DELETE", "/events", "GET"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fixture_response r;
        fixture_http_request(fixture_http_fe.port, cases[i].method, cases[i].path, NULL,
                             cases[i].method[0] == 'G' ? NULL : "", 0, &r);
        fixture_assert_http_error(&r, 405, "method_not_allowed");
        char allow[64];
        if (!fixture_http_header(&r, "Allow", allow, sizeof allow))
            fail_msg("%s %s: no Allow header", cases[i].method, cases[i].path);
        assert_string_equal(allow, cases[i].allow);
        fixture_http_response_free(&r);
    }
    fixture_response r;
    fixture_http_request(fixture_http_fe.port, "GET", "/healthz", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "{\"status\":\"ok\"}");
    fixture_http_response_free(&r);
}

static void test_content_negotiation(void **state) {
    (void)state;
    fixture_response r;
    /* JSON in, JSON out. */
    fixture_http_call_json(fixture_http_fe.port, "/cnodes/t/call", NULL, fixture_ping_json, &r);
    assert_int_equal(r.status, 200);
    char v[128];
    assert_string_equal(fixture_http_header(&r, "Content-Type", v, sizeof v), "application/json");
    assert_string_equal(r.body.data, fixture_pong_json);
    fixture_http_response_free(&r);

    /* A Content-Type we do not read: 415. */
    fixture_http_request(fixture_http_fe.port, "POST", "/cnodes/t/call",
                         "Content-Type: text/plain\r\n", "x", 1, &r);
    fixture_assert_http_error(&r, 415, "unsupported_media_type");
    fixture_http_response_free(&r);

    /* An Accept we cannot satisfy: 406. */
    fixture_http_call_json(fixture_http_fe.port, "/cnodes/t/call", "Accept: text/html\r\n",
                           fixture_ping_json, &r);
    fixture_assert_http_error(&r, 406, "not_acceptable");
    fixture_http_response_free(&r);

    /* Text in, text out (no Accept: the request's own format). */
    const char text[] = "{ping, <<\"hi\">>}";
    fixture_http_request(fixture_http_fe.port, "POST", "/cnodes/t/call",
                         "Content-Type: application/x-erlang-text\r\n", text, strlen(text), &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(fixture_http_header(&r, "Content-Type", v, sizeof v),
                        "application/x-erlang-text");
    assert_string_equal(r.body.data, "{pong,<<\"hi\">>}");
    fixture_http_response_free(&r);

    /* Text in, Accept: application/json: JSON out. */
    fixture_http_request(fixture_http_fe.port, "POST", "/cnodes/t/call",
                         "Content-Type: application/x-erlang-text\r\nAccept: application/json\r\n",
                         text, strlen(text), &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(fixture_http_header(&r, "Content-Type", v, sizeof v), "application/json");
    assert_string_equal(r.body.data, fixture_pong_json);
    fixture_http_response_free(&r);

    /* The first type we produce in a list wins; a wildcard means the request's format. */
    fixture_http_request(fixture_http_fe.port, "POST", "/cnodes/t/call",
                         "Content-Type: application/json\r\n"
                         "Accept: text/html, application/x-erlang-text;q=0.5, application/json\r\n",
                         fixture_ping_json, strlen(fixture_ping_json), &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(fixture_http_header(&r, "Content-Type", v, sizeof v),
                        "application/x-erlang-text");
    fixture_http_response_free(&r);
    fixture_http_call_json(fixture_http_fe.port, "/cnodes/t/call", "Accept: */*\r\n",
                           fixture_ping_json, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(fixture_http_header(&r, "Content-Type", v, sizeof v), "application/json");
    fixture_http_response_free(&r);

    /* What a browser may send cross-origin without a preflight is never read; no Content-Type
     * at all is JSON. */
    static const char *const simple[] = {"application/x-www-form-urlencoded",
                                         "multipart/form-data; boundary=x", "text/plain"};
    for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++) {
        char ct[96];
        snprintf(ct, sizeof ct, "Content-Type: %s\r\n", simple[i]);
        fixture_http_request(fixture_http_fe.port, "POST", "/cnodes/t/call", ct, fixture_ping_json,
                             strlen(fixture_ping_json), &r);
        fixture_assert_http_error(&r, 415, "unsupported_media_type");
        fixture_http_response_free(&r);
    }
    fixture_http_request(fixture_http_fe.port, "POST", "/cnodes/t/call", NULL, fixture_ping_json,
                         strlen(fixture_ping_json), &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, fixture_pong_json);
    fixture_http_response_free(&r);

    /* ETF in, ETF out: version byte, then the reply's bytes. */
    static const char etf[] = {(char)131, 104, 2,   100, 0, 4,   'p', 'i',
                               'n',       'g', 100, 0,   2, 'h', 'i'};
    fixture_http_request(fixture_http_fe.port, "POST", "/cnodes/t/call",
                         "Content-Type: application/x-erlang-binary\r\n", etf, sizeof etf, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(fixture_http_header(&r, "Content-Type", v, sizeof v),
                        "application/x-erlang-binary");
    assert_int_equal((unsigned char)r.body.data[0], 131);
    ei_x_buff x;
    ei_x_new(&x);
    term_error err;
    assert_int_equal(term_from_etf(r.body.data, r.body.len, NULL, &x, &err), 0);
    strbuf sb = {0};
    int idx = 0;
    assert_int_equal(term_to_text(x.buff, (size_t)x.index, &idx, NULL, &sb, &err), 0);
    assert_string_equal(sb.data, "{pong,hi}");
    strbuf_free(&sb);
    ei_x_free(&x);
    fixture_http_response_free(&r);
}

static void test_body_over_max_body_bytes_is_413(void **state) {
    (void)state;
    /* Announced by Content-Length: answered from the headers, before any body byte. */
    fixture_conn *c = calloc(1, sizeof *c);
    c->fd = fixture_http_connect(fixture_http_fe.port);
    char head[256];
    int n = snprintf(head, sizeof head,
                     "POST /cnodes/t/call HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                     "application/json\r\nContent-Length: %d\r\n\r\n",
                     FIXTURE_HTTP_MAX_BODY + 1);
    fixture_send_all(c->fd, head, (size_t)n);
    fixture_response r;
    fixture_http_read_response(c, &r);
    fixture_assert_http_error(&r, 413, "payload_too_large");
    fixture_http_response_free(&r);
    close(c->fd);

    /* Chunked: the size is known only while reading. */
    memset(c, 0, sizeof *c);
    c->fd = fixture_http_connect(fixture_http_fe.port);
    const char *ch = "POST /cnodes/t/call HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                     "application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    fixture_send_all(c->fd, ch, strlen(ch));
    char chunk[300 + 16];
    int k = snprintf(chunk, sizeof chunk, "%x\r\n", 300);
    memset(chunk + k, ' ', 300);
    memcpy(chunk + k + 300, "\r\n", 2);
    for (int i = 0; i < 4; i++) fixture_send_all(c->fd, chunk, (size_t)k + 302); /* 1200 > 1024 */
    fixture_send_all(c->fd, "0\r\n\r\n", 5);
    fixture_http_read_response(c, &r);
    fixture_assert_http_error(&r, 413, "payload_too_large");
    fixture_http_response_free(&r);
    close(c->fd);

    /* Exactly at the limit is fine (spaces around a valid term). */
    memset(c, 0, sizeof *c);
    c->fd = fixture_http_connect(fixture_http_fe.port);
    fixture_send_all(c->fd, ch, strlen(ch));
    char body[FIXTURE_HTTP_MAX_BODY];
    memset(body, ' ', sizeof body);
    memcpy(body, fixture_ping_json, strlen(fixture_ping_json));
    k = snprintf(chunk, sizeof chunk, "%x\r\n", 256);
    for (int i = 0; i < 4; i++) {
        fixture_send_all(c->fd, chunk, (size_t)k);
        fixture_send_all(c->fd, body + 256 * i, 256);
        fixture_send_all(c->fd, "\r\n", 2);
    }
    fixture_send_all(c->fd, "0\r\n\r\n", 5);
    fixture_http_read_response(c, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, fixture_pong_json);
    fixture_http_response_free(&r);
    close(c->fd);
    free(c);
}

/* Every body-reading route answers 413 for a chunked body over the limit, POST /nodes too:
 * its oversized body must not be taken for an empty one ("count 1"). */
static void test_chunked_body_over_limit_is_413_on_every_body_route(void **state) {
    (void)state;
    static const struct {
        const char *method, *path;
    } routes[] = {{"POST", "/cnodes/t/call"},
                  {"POST", "/cnodes/t/cast"},
                  {"POST", "/cnodes/t/stream"},
                  {"POST", "/nodes/x@127.0.0.1/rpc"},
                  {"PUT", "/nodes/x@127.0.0.1/modules/m"},
                  {"POST", "/nodes"}};
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        fixture_conn *c = calloc(1, sizeof *c);
        c->fd = fixture_http_connect(fixture_http_fe.port);
        char head[256];
        int n = snprintf(head, sizeof head,
                         "%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n",
                         routes[i].method, routes[i].path);
        fixture_send_all(c->fd, head, (size_t)n);
        char chunk[400 + 16];
        int k = snprintf(chunk, sizeof chunk, "%x\r\n", 400);
        memset(chunk + k, ' ', 400);
        memcpy(chunk + k + 400, "\r\n", 2);
        for (int j = 0; j < 3; j++)
            fixture_send_all(c->fd, chunk, (size_t)k + 402); /* 1200 > 1024 */
        fixture_send_all(c->fd, "0\r\n\r\n", 5);
        fixture_response r;
        fixture_http_read_response(c, &r);
        close(c->fd);
        free(c);
        int status = r.status;
        char body[256];
        snprintf(body, sizeof body, "%s", r.body.data);
        if (status == 413) fixture_assert_http_error(&r, 413, "payload_too_large");
        fixture_http_response_free(
            &r); /* before any failure: a failed test must not leak under ASan */
        if (status != 413)
            fail_msg("%s %s with a 1200-byte chunked body: %d %s (want 413)", routes[i].method,
                     routes[i].path, status, body);
    }
}

static void test_bad_json_is_400_naming_the_path(void **state) {
    (void)state;
    fixture_response r;
    fixture_http_call_json(fixture_http_fe.port, "/cnodes/t/call", NULL,
                           "{\"a\":[1,{\"$nope\":2}]}", &r);
    fixture_assert_http_error(&r, 400, "bad_tag");
    if (!strstr(r.body.data, "$.a[1]")) fail_msg("no JSON path in %s", r.body.data);
    fixture_http_response_free(&r);
    fixture_http_call_json(fixture_http_fe.port, "/cnodes/t/call", NULL, "[1,2,]", &r);
    fixture_assert_http_error(&r, 400, "bad_syntax");
    if (!strstr(r.body.data, "$[2]")) fail_msg("no JSON path in %s", r.body.data);
    fixture_http_response_free(&r);
    fixture_http_request(fixture_http_fe.port, "POST", "/cnodes/t/call",
                         "Content-Type: application/x-erlang-text\r\n", "{ping,", 6, &r);
    fixture_assert_http_error(&r, 400, "bad_syntax");
    fixture_http_response_free(&r);
}

static void test_timeout_ms_is_validated(void **state) {
    (void)state;
    static const char *const bad[] = {"0", "-1", "abc", "10001", "", "5x", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[128];
        snprintf(path, sizeof path, "/cnodes/t/call?timeout_ms=%s", bad[i]);
        fixture_response r;
        fixture_http_call_json(fixture_http_fe.port, path, NULL, fixture_ping_json, &r);
        fixture_assert_http_error(&r, 400, "bad_request");
        if (!strstr(r.body.data, "10000")) fail_msg("timeout_ms=%s: %s", bad[i], r.body.data);
        fixture_http_response_free(&r);
    }
    fixture_response r;
    fixture_http_call_json(fixture_http_fe.port, "/cnodes/t/call?timeout_ms=10000", NULL,
                           fixture_ping_json, &r);
    assert_int_equal(r.status, 200);
    fixture_http_response_free(&r);
    /* A valid timeout that expires: 504 in the error shape. */
    fixture_http_call_json(fixture_http_fe.port, "/cnodes/t/call?timeout_ms=100", NULL,
                           "{\"$tuple\":[{\"$atom\":\"sleep\"},300,1]}", &r);
    fixture_assert_http_error(&r, 504, "timeout");
    assert_non_null(strstr(r.body.data, "100 ms"));
    fixture_http_response_free(&r);
}

/* A connection to the fixture's HTTP server, for several requests (close c->fd, free c). */
static fixture_conn *keep_alive_conn(void) {
    fixture_conn *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->fd = fixture_http_connect(fixture_http_fe.port);
    return c;
}

/* POST /cnodes/t/call with the fixture's ping as JSON; returns its length. */
static int ping_call_request(char *out, size_t cap) {
    return snprintf(out, cap,
                    "POST /cnodes/t/call HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                    "application/json\r\nContent-Length: %zu\r\n\r\n%s",
                    strlen(fixture_ping_json), fixture_ping_json);
}

static void test_keep_alive_serves_three_requests_on_one_socket(void **state) {
    (void)state;
    fixture_conn *c = keep_alive_conn();
    char req[512];
    int n = ping_call_request(req, sizeof req);
    const char *get = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    fixture_response r;
    fixture_send_all(c->fd, get, strlen(get));
    fixture_http_read_response(c, &r);
    assert_int_equal(r.status, 200);
    assert_false(r.closed);
    fixture_http_response_free(&r);
    fixture_send_all(c->fd, req, (size_t)n);
    fixture_http_read_response(c, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, fixture_pong_json);
    assert_false(r.closed);
    fixture_http_response_free(&r);
    /* An error answer keeps the connection too. */
    const char *bad = "GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n";
    fixture_send_all(c->fd, bad, strlen(bad));
    fixture_http_read_response(c, &r);
    fixture_assert_http_error(&r, 404, "not_found");
    fixture_http_response_free(&r);
    /* Pipelined: two requests in one write, answered in order. */
    char two[1024];
    int m = snprintf(two, sizeof two, "%s%s", req, get);
    fixture_send_all(c->fd, two, (size_t)m);
    fixture_http_read_response(c, &r);
    assert_string_equal(r.body.data, fixture_pong_json);
    fixture_http_response_free(&r);
    fixture_http_read_response(c, &r);
    assert_string_equal(r.body.data, "{\"status\":\"ok\"}");
    fixture_http_response_free(&r);
    close(c->fd);
    free(c);
}

/* Request state is reused from one request to the next (a spare pool): what one request set
 * (its X-Request-Id, an error, a body) must not reach the next on the same connection. */
static void test_a_request_after_an_error_one_carries_nothing_of_it(void **state) {
    (void)state;
    fixture_conn *c = keep_alive_conn();
    char call[512];
    int n = ping_call_request(call, sizeof call);
    const char *bad = "POST /cnodes/t/call HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: "
                      "first-request\r\nContent-Type: application/json\r\nContent-Length: "
                      "5\r\n\r\n{\"a\":";
    fixture_response r;
    char id[128];
    for (int round = 0; round < 3; round++) {
        fixture_send_all(c->fd, bad, strlen(bad));
        fixture_http_read_response(c, &r);
        fixture_assert_http_error(&r, 400, "bad_syntax");
        assert_string_equal(fixture_http_header(&r, "X-Request-Id", id, sizeof id),
                            "first-request");
        fixture_http_response_free(&r);
        fixture_send_all(c->fd, call, (size_t)n);
        fixture_http_read_response(c, &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body.data, fixture_pong_json);
        assert_non_null(fixture_http_header(&r, "X-Request-Id", id, sizeof id));
        assert_int_equal(strlen(id), 32); /* made for this request, not the one before */
        assert_int_equal(strspn(id, "0123456789abcdef"), 32);
        fixture_http_response_free(&r);
    }
    close(c->fd);
    free(c);
}

static void test_get_cnodes_lists_every_field(void **state) {
    (void)state;
    fixture_response r;
    fixture_http_call_json(fixture_http_fe.port, "/cnodes/t/call", NULL, fixture_ping_json,
                           &r); /* one call for calls_total */
    fixture_http_response_free(&r);
    gateway_cnode_info info;
    assert_int_equal(gateway_cnode_info_by_name(fixture_http_gw.gw, "t", &info), 0);
    fixture_http_request(fixture_http_fe.port, "GET", "/cnodes", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    fixture_assert_json(&r);
    assert_true(strncmp(r.body.data, "{\"cnodes\":[{\"name\":\"t\",", 23) == 0);
    assert_string_equal(r.body.data + r.body.len - 3, "}]}"); /* one C-node */
    char fields[12][256];
    int nf = 0;
    snprintf(fields[nf++], 256, "\"node\":\"%.200s\"", info.node);
    snprintf(fields[nf++], 256, "\"os_pid\":%d,", (int)info.os_pid);
    static const char *const fixed[] = {"\"state\":\"up\",",      "\"restarts\":0,",
                                        "\"last_exit\":null,",    "\"last_error\":null,",
                                        "\"in_flight\":0,",       "\"uptime_ms\":",
                                        "\"calls_total\":1,",     "\"dropped_messages\":0,",
                                        "\"direction\":\"back\"", "\"protocol\":\"raw\""};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        snprintf(fields[nf++], 256, "%s", fixed[i]);
    for (int i = 0; i < nf; i++)
        if (!strstr(r.body.data, fields[i])) fail_msg("no %s in %s", fields[i], r.body.data);
    long uptime = strtol(strstr(r.body.data, "\"uptime_ms\":") + 12, NULL, 10);
    assert_true(uptime >= 0 && uptime < 60000);
    /* One C-node by name: the same fields. */
    char *list = strbuf_detach(&r.body, NULL);
    fixture_http_request(fixture_http_fe.port, "GET", "/cnodes/t", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    fixture_assert_json(&r);
    assert_true(strncmp(r.body.data, "{\"name\":\"t\",", 12) == 0);
    for (int i = 0; i < nf; i++)
        if (!strstr(r.body.data, fields[i]))
            fail_msg("GET /cnodes/t: no %s in %s", fields[i], r.body.data);
    free(list);
    fixture_http_response_free(&r);
}

static void test_readyz_is_200_when_up_and_503_once_the_cnode_failed(void **state) {
    (void)state;
    fixture_response r;
    fixture_http_request(fixture_http_fe.port, "GET", "/readyz", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "{\"status\":\"ready\"}");
    fixture_http_response_free(&r);
    /* max_restarts 0: the first crash fails the C-node for good. */
    gateway_cnode_info info = fixture_wait_state(&fixture_http_gw, "t", CNODE_UP, 1000);
    assert_int_equal(kill(info.os_pid, SIGKILL), 0);
    info = fixture_wait_state(&fixture_http_gw, "t", CNODE_FAILED, 5000);
    fixture_http_request(fixture_http_fe.port, "GET", "/readyz", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body.data, "{\"status\":\"not_ready\"}");
    char v[32];
    assert_non_null(fixture_http_header(&r, "Retry-After", v, sizeof v));
    fixture_http_response_free(&r);
    /* Calls are refused in the error shape; /healthz is still fine. */
    fixture_http_call_json(fixture_http_fe.port, "/cnodes/t/call", NULL, fixture_ping_json, &r);
    fixture_assert_http_error(&r, 503, "unavailable");
    fixture_http_response_free(&r);
    fixture_http_request(fixture_http_fe.port, "GET", "/cnodes/t", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body.data, "\"state\":\"failed\""));
    assert_non_null(strstr(r.body.data, "\"os_pid\":null"));
    assert_non_null(strstr(r.body.data, "signal 9"));
    fixture_http_response_free(&r);
    fixture_http_request(fixture_http_fe.port, "GET", "/healthz", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    fixture_http_response_free(&r);
}

int main(void) {
    fixture_process_init(); /* before any thread */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_unknown_routes_are_404_with_an_error_body,
                                        fixture_http_setup, fixture_http_teardown),
        cmocka_unit_test_setup_teardown(
            test_the_status_page_and_the_api_document_are_the_embedded_files, fixture_http_setup,
            fixture_http_teardown),
        cmocka_unit_test_setup_teardown(test_wrong_methods_are_405_with_allow, fixture_http_setup,
                                        fixture_http_teardown),
        cmocka_unit_test_setup_teardown(test_content_negotiation, fixture_http_setup,
                                        fixture_http_teardown),
        cmocka_unit_test_setup_teardown(test_body_over_max_body_bytes_is_413, fixture_http_setup,
                                        fixture_http_teardown),
        cmocka_unit_test_setup_teardown(test_chunked_body_over_limit_is_413_on_every_body_route,
                                        fixture_http_setup, fixture_http_teardown),
        cmocka_unit_test_setup_teardown(test_bad_json_is_400_naming_the_path, fixture_http_setup,
                                        fixture_http_teardown),
        cmocka_unit_test_setup_teardown(test_timeout_ms_is_validated, fixture_http_setup,
                                        fixture_http_teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive_serves_three_requests_on_one_socket,
                                        fixture_http_setup, fixture_http_teardown),
        cmocka_unit_test_setup_teardown(test_a_request_after_an_error_one_carries_nothing_of_it,
                                        fixture_http_setup, fixture_http_teardown),
        cmocka_unit_test_setup_teardown(test_get_cnodes_lists_every_field, fixture_http_setup,
                                        fixture_http_teardown),
        cmocka_unit_test_setup_teardown(test_readyz_is_200_when_up_and_503_once_the_cnode_failed,
                                        fixture_http_setup, fixture_http_teardown),
    };
    return cmocka_run_group_tests(tests, fixture_group_setup, fixture_group_teardown);
}
