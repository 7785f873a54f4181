/* test_http_limits: header and body deadlines cut trickling connections once; the body budget. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "http_limits.h"

/* True when the peer of sv[0] sees end of stream (the tracker shut sv[0] down). */
static bool peer_sees_eof(const int sv[2]) {
    char b;
    return recv(sv[1], &b, 1, MSG_DONTWAIT) == 0;
}

static void test_headers_past_their_deadline_are_cut_once(void **state) {
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    http_limits *l = http_limits_new(1000, 2000, 100);
    http_limits_conn *c = http_limits_open(l, sv[0], 10);
    assert_int_equal(http_limits_sweep(l, 1009), 0);
    assert_false(peer_sees_eof(sv));
    assert_int_equal(http_limits_sweep(l, 1010), 1);
    assert_true(peer_sees_eof(sv));
    assert_int_equal(http_limits_sweep(l, 5000), 0); /* cut once */
    http_limits_stats st = http_limits_stats_get(l);
    assert_int_equal(st.header_timeouts, 1);
    assert_int_equal(st.body_timeouts, 0);
    http_limits_close(l, c);
    http_limits_free(l);
    close(sv[0]);
    close(sv[1]);
}

static void test_a_body_has_its_own_deadline_and_none_once_in(void **state) {
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    http_limits *l = http_limits_new(1000, 2000, 100);
    http_limits_conn *c = http_limits_open(l, sv[0], 0);
    http_limits_headers_in(l, c, 500);
    assert_int_equal(http_limits_sweep(l, 2499), 0); /* past the header deadline: no matter */
    http_limits_body_in(c);
    assert_int_equal(http_limits_sweep(l, 1000000), 0); /* served: the call's own timeouts */
    http_limits_request_done(l, c, 3000);               /* keep-alive: the next request */
    assert_int_equal(http_limits_sweep(l, 3999), 0);
    http_limits_headers_in(l, c, 3500);
    assert_int_equal(http_limits_sweep(l, 5499), 0);
    assert_int_equal(http_limits_sweep(l, 5500), 1);
    assert_true(peer_sees_eof(sv));
    http_limits_stats st = http_limits_stats_get(l);
    assert_int_equal(st.header_timeouts, 0);
    assert_int_equal(st.body_timeouts, 1);
    http_limits_close(l, c);
    http_limits_free(l);
    close(sv[0]);
    close(sv[1]);
}

static void test_zero_timeouts_and_closed_connections_are_never_cut(void **state) {
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    http_limits *l = http_limits_new(0, 0, 100);
    http_limits_conn *c = http_limits_open(l, sv[0], 0);
    assert_int_equal(http_limits_sweep(l, INT64_MAX / 4), 0);
    http_limits_headers_in(l, c, 1);
    assert_int_equal(http_limits_sweep(l, INT64_MAX / 4), 0);
    http_limits_close(l, c);
    http_limits_free(l);
    l = http_limits_new(10, 10, 100);
    http_limits_conn *a = http_limits_open(l, sv[0], 0);
    http_limits_conn *b = http_limits_open(l, sv[1], 0);
    http_limits_close(l, a);
    http_limits_close(l, b);
    http_limits_close(l, NULL);
    assert_int_equal(http_limits_sweep(l, 100), 0);
    assert_false(peer_sees_eof(sv));
    http_limits_free(l);
    close(sv[0]);
    close(sv[1]);
}

static void test_the_body_budget_is_shared_and_counts_refusals(void **state) {
    (void)state;
    http_limits *l = http_limits_new(0, 0, 100);
    assert_true(http_limits_reserve(l, 60));
    assert_true(http_limits_reserve(l, 40));
    assert_false(http_limits_reserve(l, 1));
    assert_false(http_limits_reserve(l, SIZE_MAX));
    http_limits_stats st = http_limits_stats_get(l);
    assert_int_equal(st.buffered, 100);
    assert_int_equal(st.budget_refusals, 2);
    http_limits_release(l, 60);
    assert_true(http_limits_reserve(l, 50));
    assert_int_equal(http_limits_stats_get(l).buffered, 90);
    http_limits_release(l, 90);
    assert_int_equal(http_limits_stats_get(l).buffered, 0);
    http_limits_free(l);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers_past_their_deadline_are_cut_once),
        cmocka_unit_test(test_a_body_has_its_own_deadline_and_none_once_in),
        cmocka_unit_test(test_zero_timeouts_and_closed_connections_are_never_cut),
        cmocka_unit_test(test_the_body_budget_is_shared_and_counts_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
