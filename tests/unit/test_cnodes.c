/* test_cnodes: the configured C-nodes as groups: lookup, iteration, set-up errors, and what a
 * reload adds, keeps, replaces and removes (real processes for the ones it starts). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnodes.h"
#include "host_fixture.h"
#include "log.h"

#define SLEEPER "    executable: /bin/sh\n    args: [\"-c\", \"exec sleep 60\"]\n"

static const char *const three = "cnodes:\n"
                                 "  - name: a\n" SLEEPER "    instances: 2\n"
                                 "  - name: b\n" SLEEPER "    direction: to\n"
                                 "  - name: c\n" SLEEPER; /* direction: back, the default */

static size_t count_instances(const cnodes *cs) {
    size_t n = 0;
    for (entry *cn = cnodes_next(cs, NULL); cn; cn = cnodes_next(cs, cn)) n++;
    return n;
}

/* The host's C-nodes, set up. */
static cnodes *cnodes_of(host_fixture *h) {
    char err[256] = "";
    cnodes *cs = cnodes_new(&h->host, h->cfg, err, sizeof err);
    if (!cs) fail_msg("cnodes_new: %s", err);
    return cs;
}

/* Stops every instance that may have started, then frees. */
static void stop_and_free(host_fixture *h, cnodes *cs) {
    for (entry *cn = cnodes_next(cs, NULL); cn; cn = cnodes_next(cs, cn)) host_fixture_stop(h, cn);
    cnodes_free(cs);
    host_fixture_free(h);
}

static void test_c_nodes_are_found_by_name_and_index_in_config_order(void **state) {
    (void)state;
    host_fixture *h = host_fixture_new(three);
    cnodes *cs = cnodes_of(h);
    pthread_mutex_lock(&h->mu);
    assert_int_equal(cnodes_count_locked(cs), 3);
    assert_string_equal(entry_cfg(cnodes_at_locked(cs, 1))->name, "b");
    assert_null(cnodes_at_locked(cs, 3));
    assert_ptr_equal(cnodes_find_locked(cs, "a"), cnodes_at_locked(cs, 0));
    assert_null(cnodes_find_locked(cs, "nope"));
    pthread_mutex_unlock(&h->mu);
    assert_int_equal(count_instances(cs), 4); /* a's two, b, c */
    stop_and_free(h, cs);
}

static void test_only_a_back_c_node_is_found_by_the_node_that_connects_in(void **state) {
    (void)state;
    host_fixture *h = host_fixture_new(three);
    cnodes *cs = cnodes_of(h);
    pthread_mutex_lock(&h->mu);
    entry *c = cnodes_find_locked(cs, "c");
    entry *b = cnodes_find_locked(cs, "b");
    pthread_mutex_unlock(&h->mu);
    assert_ptr_equal(cnodes_back_instance(cs, entry_node(c)), c);
    assert_null(cnodes_back_instance(cs, entry_node(b))); /* `to`: nodexd connects to it */
    assert_null(cnodes_back_instance(cs, "stranger@127.0.0.1"));
    stop_and_free(h, cs);
}

static void test_one_c_node_that_cannot_be_set_up_refuses_them_all(void **state) {
    (void)state;
    host_fixture *h = host_fixture_new("cnodes:\n  - name: ok\n" SLEEPER
                                       "  - name: gone\n    executable: /nonexistent/x\n");
    char err[256] = "";
    assert_null(cnodes_new(&h->host, h->cfg, err, sizeof err));
    assert_non_null(strstr(err, "cnode gone: executable /nonexistent/x"));
    host_fixture_free(h);
}

static int done_calls;
static void on_done(call *c, void *ctx) {
    (void)c;
    (void)ctx;
    done_calls++;
}

static void
test_a_reload_adds_keeps_replaces_and_removes_and_fails_the_calls_waiting(void **state) {
    (void)state;
    host_fixture *h = host_fixture_new(three);
    cnodes *cs = cnodes_of(h);
    char err[256] = "";
    /* a call held for c, which the reload removes */
    call held = {.on_done = on_done};
    entry_host_make_pid(&h->host, &held.pid);
    held.key = dist_pid_key(&held.pid);
    held.deadline_ms = dist_now_ms() + 60000;
    pthread_mutex_lock(&h->mu);
    entry *a = cnodes_find_locked(cs, "a");
    entry *c = cnodes_find_locked(cs, "c");
    assert_int_equal(entry_hold_call_locked(c, &held, "", 0, "m", 1), GATEWAY_OK);
    pthread_mutex_unlock(&h->mu);
    /* a unchanged, b changed, c removed, d added */
    config *next =
        host_fixture_config("cnodes:\n"
                            "  - name: a\n" SLEEPER "    instances: 2\n"
                            "  - name: b\n" SLEEPER "    direction: to\n    call_timeout_ms: 1234\n"
                            "  - name: d\n" SLEEPER);
    gateway_reload_counts counts;
    done_calls = 0;
    assert_int_equal(cnodes_reload(cs, next, &counts, err, sizeof err), 0);
    assert_int_equal(counts.added, 1);
    assert_int_equal(counts.removed, 1);
    assert_int_equal(counts.changed, 1);
    assert_int_equal(counts.kept, 1);
    assert_int_equal(done_calls, 1);
    assert_int_equal(held.outcome, CALL_UNAVAILABLE);
    assert_string_equal(held.detail, "C-node c was removed by a reload");
    call_clear(&held);
    pthread_mutex_lock(&h->mu);
    assert_ptr_equal(cnodes_find_locked(cs, "a"), a); /* the same instances run on */
    assert_null(cnodes_find_locked(cs, "c"));
    assert_int_equal(entry_cfg(cnodes_find_locked(cs, "b"))->call_timeout_ms, 1234);
    assert_string_equal(entry_cfg(cnodes_at_locked(cs, 2))->name, "d");
    pthread_mutex_unlock(&h->mu);
    /* configured: a (2), b, d; still stopping: the old b and c */
    assert_int_equal(count_instances(cs), 6);
    /* Nothing of the retired ones ever ran: one sweep stops them for good and frees them, and
     * starts the new ones. */
    cnodes_service(cs, dist_now_ms());
    assert_int_equal(count_instances(cs), 4);
    pthread_mutex_lock(&h->mu);
    gateway_cnode_info d;
    entry_group_info_locked(cnodes_find_locked(cs, "d"), &d);
    pthread_mutex_unlock(&h->mu);
    assert_true(d.os_pid > 0); /* started */
    stop_and_free(h, cs);
    config_free(next);
}

static void test_a_reload_with_a_c_node_that_cannot_be_set_up_changes_nothing(void **state) {
    (void)state;
    host_fixture *h = host_fixture_new(three);
    cnodes *cs = cnodes_of(h);
    char err[256] = "";
    config *next = host_fixture_config("cnodes:\n  - name: a\n" SLEEPER "    instances: 2\n"
                                       "  - name: new\n" SLEEPER
                                       "  - name: gone\n    executable: /nonexistent/y\n");
    gateway_reload_counts counts;
    assert_int_equal(cnodes_reload(cs, next, &counts, err, sizeof err), -1);
    assert_non_null(strstr(err, "cnode gone: executable /nonexistent/y"));
    pthread_mutex_lock(&h->mu);
    assert_int_equal(cnodes_count_locked(cs), 3);
    assert_non_null(cnodes_find_locked(cs, "c"));
    assert_null(cnodes_find_locked(cs, "new"));
    pthread_mutex_unlock(&h->mu);
    assert_int_equal(count_instances(cs), 4);
    stop_and_free(h, cs);
    config_free(next);
}

int main(void) {
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_c_nodes_are_found_by_name_and_index_in_config_order),
        cmocka_unit_test(test_only_a_back_c_node_is_found_by_the_node_that_connects_in),
        cmocka_unit_test(test_one_c_node_that_cannot_be_set_up_refuses_them_all),
        cmocka_unit_test(test_a_reload_adds_keeps_replaces_and_removes_and_fails_the_calls_waiting),
        cmocka_unit_test(test_a_reload_with_a_c_node_that_cannot_be_set_up_changes_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
