/* test_http_route: every route, 405s with their Allow, 404s, formats, Host and query values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "http_route.h"

static http_route match(const char *method, const char *url) {
    http_route r;
    http_route_match(method, url, &r);
    return r;
}

static void expect(const char *method, const char *url, http_route_kind kind, const char *name) {
    http_route r = match(method, url);
    assert_int_equal(r.kind, kind);
    assert_null(r.allow);
    assert_string_equal(r.name, name);
}

static void expect_405(const char *method, const char *url, const char *allow) {
    http_route r = match(method, url);
    assert_int_not_equal(r.kind, HTTP_ROUTE_NOT_FOUND);
    assert_non_null(r.allow);
    assert_string_equal(r.allow, allow);
}

static void test_every_route_matches_with_its_names(void **state) {
    (void)state;
    expect("GET", "/healthz", HTTP_ROUTE_HEALTHZ, "");
    expect("HEAD", "/readyz", HTTP_ROUTE_READYZ, "");
    expect("GET", "/events", HTTP_ROUTE_EVENTS, "");
    expect("GET", "/metrics", HTTP_ROUTE_METRICS, "");
    expect("GET", "/", HTTP_ROUTE_STATUS_PAGE, "");
    expect("HEAD", "/openapi.json", HTTP_ROUTE_OPENAPI, "");
    expect("GET", "/cnodes", HTTP_ROUTE_CNODES, "");
    expect("GET", "/cnodes/example", HTTP_ROUTE_CNODE, "example");
    expect("POST", "/cnodes/example/call", HTTP_ROUTE_CNODE_CALL, "example");
    expect("POST", "/cnodes/e/cast", HTTP_ROUTE_CNODE_CAST, "e");
    expect("POST", "/cnodes/e/stream", HTTP_ROUTE_CNODE_STREAM, "e");
    expect("POST", "/cnodes/e/restart", HTTP_ROUTE_CNODE_RESTART, "e");
    expect("GET", "/nodes", HTTP_ROUTE_NODES, "");
    expect("POST", "/nodes", HTTP_ROUTE_NODES_SPAWN, "");
    expect("DELETE", "/nodes/child1@h", HTTP_ROUTE_NODE_STOP, "child1@h");
    expect("POST", "/nodes/n@h/rpc", HTTP_ROUTE_NODE_RPC, "n@h");
    http_route r = match("PUT", "/nodes/n@h/modules/my_mod");
    assert_int_equal(r.kind, HTTP_ROUTE_NODE_LOAD);
    assert_string_equal(r.name, "n@h");
    assert_string_equal(r.module, "my_mod");
}

static void test_a_wrong_method_is_405_with_the_allowed_ones(void **state) {
    (void)state;
    expect_405("POST", "/healthz", "GET");
    expect_405("DELETE", "/events", "GET");
    expect_405("POST", "/", "GET");
    expect_405("PUT", "/openapi.json", "GET");
    expect_405("POST", "/cnodes/x", "GET");
    expect_405("GET", "/cnodes/x/call", "POST");
    expect_405("PUT", "/nodes", "GET, POST");
    expect_405("GET", "/nodes/n@h", "DELETE");
    expect_405("GET", "/nodes/n@h/rpc", "POST");
    expect_405("POST", "/nodes/n@h/modules/m", "PUT");
}

static void test_other_paths_are_not_found(void **state) {
    (void)state;
    const char *paths[] = {"//",
                           "",
                           "/openapi.json/",
                           "/openapi",
                           "/index.html",
                           "/healthz/",
                           "/cnodesx",
                           "/cnodes/",
                           "/cnodes//call",
                           "/cnodes/x/",
                           "/cnodes/x/other",
                           "/cnodes/x/call/more",
                           "/nodesx",
                           "/nodes/",
                           "/nodes/n/",
                           "/nodes/n/rpc/x",
                           "/nodes/n/modules/",
                           "/nodes/n/modules/a/b",
                           "/eventsx"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        http_route r = match("GET", paths[i]);
        assert_int_equal(r.kind, HTTP_ROUTE_NOT_FOUND);
        assert_null(r.allow);
    }
    char long_name[300];
    memset(long_name, 'a', sizeof long_name);
    strcpy(long_name, "/cnodes/");
    memset(long_name + 8, 'a', 128);
    long_name[136] = '\0'; /* a 128-byte name is too long for a C-node */
    assert_int_equal(match("GET", long_name).kind, HTTP_ROUTE_NOT_FOUND);
    long_name[135] = '\0';
    assert_int_equal(match("GET", long_name).kind, HTTP_ROUTE_CNODE);
}

static void test_content_type_and_accept_choose_formats(void **state) {
    (void)state;
    assert_int_equal(http_route_content_type(NULL), HTTP_FORMAT_JSON);
    assert_int_equal(http_route_content_type("application/json; charset=utf-8"), HTTP_FORMAT_JSON);
    assert_int_equal(http_route_content_type(" Application/X-Erlang-Text "), HTTP_FORMAT_TEXT);
    assert_int_equal(http_route_content_type("text/plain"), HTTP_FORMAT_NONE);
    assert_int_equal(http_route_accept(NULL, HTTP_FORMAT_TEXT), HTTP_FORMAT_TEXT);
    assert_int_equal(http_route_accept("", HTTP_FORMAT_ETF), HTTP_FORMAT_ETF);
    assert_int_equal(
        http_route_accept("text/html, application/x-erlang-binary;q=0.5", HTTP_FORMAT_JSON),
        HTTP_FORMAT_ETF);
    assert_int_equal(http_route_accept("text/html, */*", HTTP_FORMAT_TEXT), HTTP_FORMAT_TEXT);
    assert_int_equal(http_route_accept("application/*", HTTP_FORMAT_JSON), HTTP_FORMAT_JSON);
    assert_int_equal(http_route_accept("text/html,,;", HTTP_FORMAT_JSON), HTTP_FORMAT_NONE);
    assert_string_equal(http_format_mime(HTTP_FORMAT_ETF), "application/x-erlang-binary");
}

static void test_host_timeout_and_flags(void **state) {
    (void)state;
    char *allowed[] = {"gw.example.com"};
    assert_true(http_route_host_allowed("localhost:8080", allowed, 1));
    assert_true(http_route_host_allowed("127.9.9.9", allowed, 1));
    assert_true(http_route_host_allowed("[::1]:80", allowed, 1));
    assert_true(http_route_host_allowed("GW.example.com:1", allowed, 1));
    assert_false(http_route_host_allowed("evil.example.com", allowed, 1));
    assert_false(http_route_host_allowed("[::1", allowed, 1));
    assert_false(http_route_host_allowed("", allowed, 0));
    assert_int_equal(http_route_timeout_ms(NULL, 1000), 0);
    assert_int_equal(http_route_timeout_ms("250", 1000), 250);
    const char *bad[] = {"", "0", "-1", "+5", " 5", "5x", "1000", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(http_route_timeout_ms(bad[i], 1000), 1000);
    assert_true(http_route_query_true(""));
    assert_true(http_route_query_true("1"));
    assert_true(http_route_query_true("true"));
    assert_false(http_route_query_true("false"));
    assert_false(http_route_query_true(NULL));
}

/* Metrics label requests by these names: each one distinct, the path's template, never a path
 * a client sent. */
static void test_every_route_has_a_distinct_template_name(void **state) {
    (void)state;
    for (int i = 0; i < HTTP_ROUTE_COUNT; i++) {
        const char *n = http_route_name((http_route_kind)i);
        assert_non_null(n);
        assert_ptr_equal(n, http_route_names[i]);
        for (int k = 0; k < i; k++) assert_string_not_equal(n, http_route_names[k]);
    }
    assert_string_equal(http_route_name(HTTP_ROUTE_CNODE_CALL), "POST /cnodes/{name}/call");
    assert_string_equal(http_route_name(HTTP_ROUTE_METRICS), "GET /metrics");
    assert_string_equal(http_route_name(HTTP_ROUTE_NOT_FOUND), "unmatched");
    assert_string_equal(http_route_name((http_route_kind)HTTP_ROUTE_COUNT), "unmatched");
    expect_405("POST", "/metrics", "GET");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_route_matches_with_its_names),
        cmocka_unit_test(test_a_wrong_method_is_405_with_the_allowed_ones),
        cmocka_unit_test(test_other_paths_are_not_found),
        cmocka_unit_test(test_content_type_and_accept_choose_formats),
        cmocka_unit_test(test_host_timeout_and_flags),
        cmocka_unit_test(test_every_route_has_a_distinct_template_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
