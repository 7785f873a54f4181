/* test_metrics: request tables (bounded statuses, ignored routes), stream cuts, label escaping,
 * exposition. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

static const char *const routes[] = {"GET /a", "POST /b/{name}"};

static void test_requests_are_counted_by_route_and_status(void **state) {
    (void)state;
    metrics *m = metrics_new();
    assert_non_null(m);
    metrics_requests *t =
        metrics_add_requests(m, "x_requests_total", "Requests.", "route", "status", routes, 2, 599);
    assert_non_null(t);
    metrics_requests_count(t, 0, 200);
    metrics_requests_count(t, 0, 200);
    metrics_requests_count(t, 1, 404);
    metrics_requests_count(t, 7, 200);    /* no such route: ignored */
    metrics_requests_count(t, 1, 9999);   /* over max_status: "other" */
    metrics_requests_count(NULL, 0, 200); /* no table: nothing */
    assert_int_equal(metrics_requests_get(t, 0, 200), 2);
    assert_int_equal(metrics_requests_get(t, 1, 404), 1);
    assert_int_equal(metrics_requests_get(t, 1, 600), 1);
    assert_int_equal(metrics_requests_get(t, 7, 200), 0);
    strbuf sb = {0};
    assert_int_equal(metrics_render(m, NULL, &sb), 0);
    assert_non_null(strstr(sb.data, "# TYPE x_requests_total counter\n"));
    assert_non_null(strstr(sb.data, "x_requests_total{route=\"GET /a\",status=\"200\"} 2\n"));
    assert_non_null(
        strstr(sb.data, "x_requests_total{route=\"POST /b/{name}\",status=\"404\"} 1\n"));
    assert_non_null(
        strstr(sb.data, "x_requests_total{route=\"POST /b/{name}\",status=\"other\"} 1\n"));
    /* series that never happened are not listed */
    assert_null(strstr(sb.data, "status=\"500\""));
    strbuf_free(&sb);
    metrics_free(m);
}

static void test_the_process_is_described(void **state) {
    (void)state;
    metrics *m = metrics_new();
    strbuf sb = {0};
    assert_int_equal(metrics_render(m, NULL, &sb), 0);
    const char *families[] = {"process_resident_memory_bytes", "process_open_fds",
                              "process_start_time_seconds", "nodex_uptime_seconds"};
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        char help[128];
        snprintf(help, sizeof help, "# HELP %s ", families[i]);
        assert_non_null(strstr(sb.data, help));
        snprintf(help, sizeof help, "\n%s ", families[i]);
        const char *line = strstr(sb.data, help);
        assert_non_null(line);
        double v = strtod(line + strlen(help), NULL);
        assert_true(i == 3 ? v >= 0 : v > 0); /* uptime may still read 0.000 */
    }
    /* every line is a comment or "name{labels} value" / "name value" */
    for (char *l = sb.data; *l;) {
        char *nl = strchr(l, '\n');
        assert_non_null(nl);
        assert_true(l[0] == '#' || (l[0] >= 'a' && l[0] <= 'z'));
        l = nl + 1;
    }
    strbuf_free(&sb);
    metrics_free(m);
}

static void test_stream_cuts_are_counted_by_transport_and_cause_zeros_listed(void **state) {
    (void)state;
    metrics *m = metrics_new();
    assert_non_null(m);
    assert_int_equal(metrics_stream_cut(m, METRICS_GRPC, METRICS_CUT_UNREAD_BYTES), 1);
    assert_int_equal(metrics_stream_cut(m, METRICS_GRPC, METRICS_CUT_UNREAD_BYTES), 2);
    assert_int_equal(metrics_stream_cut(m, METRICS_TRANSPORT_COUNT, METRICS_CUT_UNREAD_BYTES), 0);
    assert_int_equal(metrics_stream_cut(m, METRICS_HTTP, METRICS_CUT_CAUSE_COUNT), 0);
    assert_int_equal(metrics_stream_cut(NULL, METRICS_HTTP, METRICS_CUT_UNREAD_BYTES), 0);
    assert_int_equal(metrics_stream_cuts(m, METRICS_GRPC, METRICS_CUT_UNREAD_BYTES), 2);
    assert_int_equal(metrics_stream_cuts(m, METRICS_HTTP, METRICS_CUT_UNREAD_BYTES), 0);
    strbuf sb = {0};
    assert_int_equal(metrics_render(m, NULL, &sb), 0);
    assert_non_null(strstr(sb.data, "# TYPE nodex_stream_cuts_total counter\n"));
    assert_non_null(strstr(
        sb.data, "\nnodex_stream_cuts_total{transport=\"grpc\",cause=\"unread_bytes\"} 2\n"));
    /* a series is there before its first cut (rate() and alerts need it) */
    assert_non_null(strstr(
        sb.data, "\nnodex_stream_cuts_total{transport=\"http\",cause=\"unread_bytes\"} 0\n"));
    strbuf_free(&sb);
    metrics_free(m);
}

static void test_label_values_are_escaped(void **state) {
    (void)state;
    strbuf sb = {0};
    assert_int_equal(metrics_label_value(&sb, "a\"b\\c\nd"), 0);
    assert_string_equal(sb.data, "\"a\\\"b\\\\c\\nd\"");
    strbuf_free(&sb);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests_are_counted_by_route_and_status),
        cmocka_unit_test(test_the_process_is_described),
        cmocka_unit_test(test_stream_cuts_are_counted_by_transport_and_cause_zeros_listed),
        cmocka_unit_test(test_label_values_are_escaped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
