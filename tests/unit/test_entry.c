/* test_entry: one supervised entry without a gateway: names, set-up errors, a process that exits
 * or never gets ready (real processes, a real loop), held calls, and the Erlang-node list. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "entry.h"
#include "host_fixture.h"
#include "log.h"

/* The C-node under test: the instances of the host's first configured C-node. */
typedef struct cnode_fixture {
    host_fixture *h;
    entry *first;       /* its instances */
    unsigned instances; /* how many */
    bool started;       /* a test started instance 0 */
} cnode_fixture;

static cnode_fixture *host_new(const char *cnodes_yaml) {
    cnode_fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->h = host_fixture_new(cnodes_yaml);
    return f;
}

/* Sets up every instance of the config's first C-node; returns entry_init_cnode's result. */
static int host_make_cnode(cnode_fixture *f, char *err, size_t err_len) {
    const config_cnode *cfg = &f->h->cfg->cnodes[0];
    f->instances = cfg->instances;
    f->first = entry_array_new(cfg->instances);
    assert_non_null(f->first);
    for (unsigned i = 1; i <= cfg->instances; i++)
        if (entry_init_cnode(f->first, i, &f->h->host, cfg, f, err, err_len) != 0) return -1;
    return 0;
}

/* Ends whatever still runs (by its pid) and frees everything. */
static void host_free(cnode_fixture *f) {
    for (unsigned i = 0; f->started && i < f->instances; i++)
        host_fixture_stop(f->h, entry_at(f->first, i));
    entry_array_free(f->first, f->instances);
    host_fixture_free(f->h);
    free(f);
}

static gateway_cnode_info info_of(cnode_fixture *f, unsigned i) {
    gateway_cnode_info out;
    pthread_mutex_lock(&f->h->mu);
    entry_info_locked(entry_at(f->first, i), dist_now_ms(), &out);
    pthread_mutex_unlock(&f->h->mu);
    return out;
}

/* Runs the loop (output lines), the reaper and the phase timers until instance 0 is in `want`
 * (after `min_events` events), or fails after 30 s: a bound on a hang, not on speed. */
static void run_until(cnode_fixture *f, cnode_state want, size_t min_events) {
    entry *cn = f->first;
    int64_t give_up = dist_now_ms() + 30000;
    for (;;) {
        if (info_of(f, 0).state == want && f->h->seen_count >= min_events) return;
        if (dist_now_ms() > give_up) fail_msg("state %d never reached", (int)want);
        loop_poll(f->h->loop, dist_now_ms() + 10, false);
        entry_reap(cn);
        entry_timers(cn, dist_now_ms());
    }
}

static void test_instances_of_a_pool_get_distinct_node_names(void **state) {
    (void)state;
    cnode_fixture *f = host_new("cnodes:\n  - name: pool\n    executable: /bin/true\n"
                                "    instances: 3\n");
    char err[256] = "";
    assert_int_equal(host_make_cnode(f, err, sizeof err), 0);
    assert_string_equal(entry_node(entry_at(f->first, 0)), "entrytest_pool_1@127.0.0.1");
    assert_string_equal(entry_node(entry_at(f->first, 2)), "entrytest_pool_3@127.0.0.1");
    assert_int_equal(entry_instance(entry_at(f->first, 1)), 2);
    assert_ptr_equal(entry_group(entry_at(f->first, 1)), f);
    assert_int_equal(entry_kind_of(f->first), ENTRY_CNODE);
    gateway_cnode_info all;
    pthread_mutex_lock(&f->h->mu);
    entry_group_info_locked(f->first, &all);
    pthread_mutex_unlock(&f->h->mu);
    assert_string_equal(all.name, "pool");
    assert_int_equal(all.instance, 0);
    assert_int_equal(all.instances, 3);
    assert_int_equal(all.instances_up, 0);
    assert_int_equal(all.state, CNODE_STARTING);
    host_free(f);
}

static void test_an_executable_that_is_not_there_is_refused_at_set_up(void **state) {
    (void)state;
    cnode_fixture *f = host_new("cnodes:\n  - name: gone\n    executable: /nonexistent/cnode\n");
    char err[256] = "";
    assert_int_equal(host_make_cnode(f, err, sizeof err), -1);
    assert_non_null(strstr(err, "cnode gone: executable /nonexistent/cnode"));
    host_free(f);
}

static void test_a_node_name_with_instances_is_refused_at_set_up(void **state) {
    (void)state;
    cnode_fixture *f = host_new("cnodes:\n  - name: two\n    executable: /bin/true\n"
                                "    instances: 2\n    node: \"x@127.0.0.1\"\n");
    char err[256] = "";
    assert_int_equal(host_make_cnode(f, err, sizeof err), -1);
    assert_non_null(strstr(err, "`instances` must be 1"));
    host_free(f);
}

static void test_a_process_that_exits_before_its_ready_line_is_down_then_restarting(void **state) {
    (void)state;
    cnode_fixture *f =
        host_new("cnodes:\n  - name: quits\n    executable: /bin/sh\n"
                 "    args: [\"-c\", \"exit 3\"]\n    backoff_initial_ms: 60000\n    "
                 "backoff_max_ms: 60000\n");
    char err[256] = "";
    assert_int_equal(host_make_cnode(f, err, sizeof err), 0);
    entry_start(f->first);
    f->started = true;
    assert_true(info_of(f, 0).os_pid > 0);
    run_until(f, CNODE_RESTARTING, 3);
    static const cnode_state want[] = {CNODE_STARTING, CNODE_DOWN, CNODE_RESTARTING};
    assert_true(host_fixture_seen_in_order(f->h, want, 3));
    gateway_cnode_info i = info_of(f, 0);
    assert_string_equal(i.last_exit, "exit status 3");
    assert_non_null(strstr(i.last_error, "exited before it was up: exit status 3"));
    assert_int_equal(i.os_pid, 0);
    assert_non_null(strstr(f->h->last_reason, "exited before it was up"));
    host_free(f);
}

static void test_no_ready_line_within_the_spawn_timeout_kills_the_process(void **state) {
    (void)state;
    cnode_fixture *f = host_new("cnodes:\n  - name: mute\n    executable: /bin/sh\n"
                                "    args: [\"-c\", \"exec sleep 60\"]\n"
                                "    spawn_inactive_timeout_ms: 100\n    backoff_initial_ms: "
                                "60000\n    backoff_max_ms: 60000\n");
    char err[256] = "";
    assert_int_equal(host_make_cnode(f, err, sizeof err), 0);
    entry_start(f->first);
    f->started = true;
    run_until(f, CNODE_RESTARTING, 3);
    gateway_cnode_info i = info_of(f, 0);
    assert_non_null(strstr(i.last_error, "no ready line within 100 ms"));
    assert_string_equal(i.last_exit, "killed by signal 9 (Killed)");
    host_free(f);
}

static void test_a_ready_line_without_the_connection_back_times_out(void **state) {
    (void)state;
    /* direction back: the ready line alone is not up; the connection in must follow. */
    cnode_fixture *f =
        host_new("cnodes:\n  - name: lonely\n    executable: /bin/sh\n"
                 "    args: [\"-c\", \"echo '{sname}@{hostname} ready'; exec sleep 60\"]\n"
                 "    direction: back\n    spawn_inactive_timeout_ms: 3000\n"
                 "    backoff_initial_ms: 60000\n    backoff_max_ms: 60000\n");
    char err[256] = "";
    assert_int_equal(host_make_cnode(f, err, sizeof err), 0);
    assert_true(entry_expects_connection(f->first) == false); /* not spawned yet */
    entry_start(f->first);
    f->started = true;
    assert_true(entry_expects_connection(f->first));
    run_until(f, CNODE_RESTARTING, 3);
    gateway_cnode_info i = info_of(f, 0);
    assert_non_null(strstr(i.last_error, "ready line seen but no connection within 3000 ms"));
    host_free(f);
}

static void done_noop(call *c, void *ctx) {
    (void)c;
    (*(int *)ctx)++;
}

static void test_calls_wait_up_to_max_waiting_and_fail_when_the_cnode_is_removed(void **state) {
    (void)state;
    cnode_fixture *f = host_new("cnodes:\n  - name: w\n    executable: /bin/true\n"
                                "    max_waiting: 1\n");
    char err[256] = "";
    assert_int_equal(host_make_cnode(f, err, sizeof err), 0);
    int done = 0;
    call a = {.on_done = done_noop, .ctx = &done}, b = a;
    entry_host_make_pid(&f->h->host, &a.pid);
    entry_host_make_pid(&f->h->host, &b.pid);
    a.key = dist_pid_key(&a.pid);
    b.key = dist_pid_key(&b.pid);
    a.deadline_ms = b.deadline_ms = dist_now_ms() + 60000;
    pthread_mutex_lock(&f->h->mu);
    assert_null(entry_pick_instance_locked(f->first)); /* none is up */
    assert_int_equal(entry_hold_call_locked(f->first, &a, "p", 1, "msg", 3), GATEWAY_OK);
    assert_int_equal(entry_hold_call_locked(f->first, &b, "p", 1, "msg", 3), GATEWAY_OVERLOADED);
    pthread_mutex_unlock(&f->h->mu);
    assert_int_equal(a.outbox_len, 4);
    assert_memory_equal(a.outbox, "pmsg", 4);
    assert_int_equal(info_of(f, 0).waiting, 1);
    entry_fail_waiting(f->first, "removed by a test");
    assert_int_equal(done, 1);
    assert_int_equal(a.outcome, CALL_UNAVAILABLE);
    assert_string_equal(a.detail, "removed by a test");
    call_clear(&a);
    host_free(f);
}

static void test_a_cnode_with_max_waiting_0_refuses_to_hold_calls(void **state) {
    (void)state;
    cnode_fixture *f = host_new("cnodes:\n  - name: nw\n    executable: /bin/true\n"
                                "    max_waiting: 0\n");
    char err[256] = "";
    assert_int_equal(host_make_cnode(f, err, sizeof err), 0);
    call a = {0};
    pthread_mutex_lock(&f->h->mu);
    assert_int_equal(entry_hold_call_locked(f->first, &a, "", 0, "m", 1), GATEWAY_UNAVAILABLE);
    pthread_mutex_unlock(&f->h->mu);
    assert_null(a.outbox);
    host_free(f);
}

static void test_the_node_list_keeps_one_entry_per_node(void **state) {
    (void)state;
    cnode_fixture *f = host_new("cnodes: []\n");
    entry *a = entry_new_node(&f->h->host, ENTRY_PEER, "peer@127.0.0.1", 0);
    entry *b = entry_new_node(&f->h->host, ENTRY_PEER, "peer@127.0.0.1", 0);
    entry *c = entry_new_node(&f->h->host, ENTRY_PEER, "other@127.0.0.1", 0);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    pthread_mutex_lock(&f->h->mu);
    assert_ptr_equal(entry_list_link_locked(&f->h->nodes, a), a);
    assert_ptr_equal(entry_list_link_locked(&f->h->nodes, b), a); /* b freed: a racer's copy */
    assert_ptr_equal(entry_list_link_locked(&f->h->nodes, c), c);
    assert_ptr_equal(entry_list_find_locked(&f->h->nodes, "peer@127.0.0.1"), a);
    assert_null(entry_list_find_locked(&f->h->nodes, "nobody@127.0.0.1"));
    size_t listed, retired;
    entry_list_counts_locked(&f->h->nodes, &listed, &retired);
    assert_int_equal(listed, 2);
    assert_int_equal(retired, 0);
    assert_int_equal(entry_list_children_locked(&f->h->nodes), 0);
    assert_false(entry_node_known_locked(a));   /* a peer not connected */
    assert_true(entry_takes_rpc_locked(a));     /* starting: an rpc waits for the connection */
    assert_false(entry_request_stop_locked(a)); /* only children are stopped on request */
    gateway_node_info *list = NULL;
    assert_int_equal(entry_list_info_locked(&f->h->nodes, &list), 2);
    pthread_mutex_unlock(&f->h->mu);
    assert_string_equal(list[0].node, "other@127.0.0.1"); /* newest first */
    assert_false(list[0].child);
    assert_false(list[0].connected);
    free(list);
    host_free(f);
}

int main(void) {
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_instances_of_a_pool_get_distinct_node_names),
        cmocka_unit_test(test_an_executable_that_is_not_there_is_refused_at_set_up),
        cmocka_unit_test(test_a_node_name_with_instances_is_refused_at_set_up),
        cmocka_unit_test(test_a_process_that_exits_before_its_ready_line_is_down_then_restarting),
        cmocka_unit_test(test_no_ready_line_within_the_spawn_timeout_kills_the_process),
        cmocka_unit_test(test_a_ready_line_without_the_connection_back_times_out),
        cmocka_unit_test(test_calls_wait_up_to_max_waiting_and_fail_when_the_cnode_is_removed),
        cmocka_unit_test(test_a_cnode_with_max_waiting_0_refuses_to_hold_calls),
        cmocka_unit_test(test_the_node_list_keeps_one_entry_per_node),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
