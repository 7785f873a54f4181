/* test_access: request ids (accepted, refused, made unique), traceparent validation, tracestate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "access.h"

static void test_a_safe_client_request_id_is_kept(void **state) {
    (void)state;
    access_ids ids;
    access_ids_from(&ids, "req-4711.a:b/c", 14, NULL, 0, NULL, 0);
    assert_string_equal(ids.request_id, "req-4711.a:b/c");
    assert_false(ids.request_id_generated);
    char max[ACCESS_REQUEST_ID_MAX];
    memset(max, 'x', sizeof max);
    assert_true(access_request_id_valid(max, sizeof max));
}

static void test_an_unsafe_or_long_request_id_is_replaced(void **state) {
    (void)state;
    const char *bad[] = {"",          "has space", "quo\"te", "back\\slash",
                         "new\nline", "tab\t",     "\x7f",    "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(access_request_id_valid(bad[i], strlen(bad[i])));
        access_ids ids;
        access_ids_from(&ids, bad[i], strlen(bad[i]), NULL, 0, NULL, 0);
        assert_true(ids.request_id_generated);
        assert_int_equal(strlen(ids.request_id), ACCESS_REQUEST_ID_GENERATED);
    }
    char longer[ACCESS_REQUEST_ID_MAX + 1];
    memset(longer, 'x', sizeof longer);
    assert_false(access_request_id_valid(longer, sizeof longer));
    assert_false(access_request_id_valid(NULL, 0));
}

static void test_made_request_ids_are_hex_and_never_repeat(void **state) {
    (void)state;
    char a[ACCESS_REQUEST_ID_GENERATED + 1], b[ACCESS_REQUEST_ID_GENERATED + 1];
    access_request_id_new(a);
    for (int i = 0; i < 1000; i++) {
        access_request_id_new(b);
        assert_string_not_equal(a, b);
    }
    assert_int_equal(strlen(a), ACCESS_REQUEST_ID_GENERATED);
    assert_int_equal(strspn(a, "0123456789abcdef"), ACCESS_REQUEST_ID_GENERATED);
    assert_true(access_request_id_valid(a, strlen(a)));
}

/* The id is the process's 64-bit prefix then a counter, each as 16 hex digits, most significant
 * first: consecutive ids share the prefix and count up by one. */
static void test_made_request_ids_are_the_prefix_then_the_counter_in_hex(void **state) {
    (void)state;
    char a[ACCESS_REQUEST_ID_GENERATED + 1], b[ACCESS_REQUEST_ID_GENERATED + 1];
    access_request_id_new(a);
    access_request_id_new(b);
    assert_memory_equal(a, b, 16);
    unsigned long long ca = strtoull(a + 16, NULL, 16), cb = strtoull(b + 16, NULL, 16);
    assert_int_equal(cb, ca + 1);
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", cb);
    assert_string_equal(b + 16, hex);
}

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static void test_a_valid_traceparent_is_kept_with_its_tracestate(void **state) {
    (void)state;
    assert_true(access_traceparent_valid(TP, strlen(TP)));
    access_ids ids;
    access_ids_from(&ids, NULL, 0, TP, strlen(TP), "congo=t61rcWkgMzE", 17);
    assert_string_equal(ids.traceparent, TP);
    assert_string_equal(ids.tracestate, "congo=t61rcWkgMzE");
    /* a later version may carry more fields: the ones version 00 defines are passed on */
    const char *v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
    assert_true(access_traceparent_valid(v1, strlen(v1)));
    access_ids_from(&ids, NULL, 0, v1, strlen(v1), NULL, 0);
    assert_int_equal(strlen(ids.traceparent), 55);
}

static void test_a_malformed_traceparent_drops_the_trace_context(void **state) {
    (void)state;
    const char *bad[] = {
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",    /* short */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   /* upper case */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   /* zero parent id */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* forbidden version */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", /* 00 has no more */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",   /* not hex */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(access_traceparent_valid(bad[i], strlen(bad[i])));
        access_ids ids;
        access_ids_from(&ids, NULL, 0, bad[i], strlen(bad[i]), "a=b", 3);
        assert_string_equal(ids.traceparent, "");
        assert_string_equal(ids.tracestate, "");
    }
}

static void test_a_long_tracestate_is_cut_at_a_member_and_a_bad_one_dropped(void **state) {
    (void)state;
    char ts[ACCESS_TRACESTATE_MAX + 100];
    size_t n = 0;
    while (n + 10 < sizeof ts) { /* "m00=vvvvv," members of 10 bytes */
        memcpy(ts + n, "m00=vvvvv,", 10);
        n += 10;
    }
    access_ids ids;
    access_ids_from(&ids, NULL, 0, TP, strlen(TP), ts, n);
    size_t kept = strlen(ids.tracestate);
    assert_true(kept <= ACCESS_TRACESTATE_MAX);
    assert_true(kept > ACCESS_TRACESTATE_MAX - 10);
    assert_int_equal(ids.tracestate[kept - 1], 'v'); /* ends on a whole member */
    access_ids_from(&ids, NULL, 0, TP, strlen(TP), "a=b\r\nx: y", 10);
    assert_string_equal(ids.traceparent, TP);
    assert_string_equal(ids.tracestate, "");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_safe_client_request_id_is_kept),
        cmocka_unit_test(test_an_unsafe_or_long_request_id_is_replaced),
        cmocka_unit_test(test_made_request_ids_are_hex_and_never_repeat),
        cmocka_unit_test(test_made_request_ids_are_the_prefix_then_the_counter_in_hex),
        cmocka_unit_test(test_a_valid_traceparent_is_kept_with_its_tracestate),
        cmocka_unit_test(test_a_malformed_traceparent_drops_the_trace_context),
        cmocka_unit_test(test_a_long_tracestate_is_cut_at_a_member_and_a_bad_one_dropped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
