/* test_grpc_health: grpc.health.v1 names and statuses over a real gateway (test C-nodes, private
 * epmd): the gateway and each C-node by name, unknown names, and Watch reports: the current
 * status first, each change once when a C-node is killed and restarted, nothing after the end,
 * and NOT_SERVING from every watch at the start of the drain (SIGTERM) while a call still runs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ei.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "grpc_health.h"
#include "nodex_fixture.h"
#include "service.h"

#define SERVING         GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define NOT_SERVING     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
#define SERVICE_UNKNOWN GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN
#define WAIT_MS         20000 /* a hang guard, not a performance bound */

static fixture_gateway fx;
static service *svc;

/* SIGTERM's drain tells the service, as main.c's on_drain does (loop thread; svc is set by
 * then: the drain is the group's last test). */
static void on_drain(void *ctx) {
    (void)ctx;
    service_drain_began(svc);
}

static int attach_drain(fixture_gateway *f, void *ctx) {
    (void)ctx;
    gateway_on_drain(f->gw, on_drain, NULL);
    return 0;
}

static int group_setup(void **state) {
    if (fixture_group_setup(state) != 0) return -1;
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "node:\n"
             "  name: \"gh%d@127.0.0.1\"\n"
             "  start_epmd: false\n"
             "http:\n"
             "  listen: \"127.0.0.1:0\"\n"
             "grpc:\n"
             "  listen: null\n"
             "log:\n"
             "  level: error\n"
             "shutdown:\n"
             "  drain_ms: 600000\n" /* the drain's own end is not what tells the watches */
             "cnodes:\n"
             "  - name: t\n"
             "    executable: %s\n"
             "    shutdown_timeout_ms: 1000\n"
             "  - name: held\n" /* its replies never pass the filter: calls stay in flight */
             "    executable: %s\n"
             "    reply_filter: {tag: reply}\n"
             "    max_call_timeout_ms: 600000\n"
             "    shutdown_timeout_ms: 1000\n"
             "  - name: victim\n"
             "    executable: %s\n"
             "    max_restarts: 100\n"
             "    backoff_initial_ms: 1\n"
             "    backoff_max_ms: 2\n"
             "    shutdown_timeout_ms: 1000\n",
             (int)getpid() % 100000, fixture_test_cnode_path(), fixture_test_cnode_path(),
             fixture_test_cnode_path());
    if (fixture_gateway_start(&fx, yaml, "test_grpc_health", "healthtestcookie", attach_drain,
                              NULL) != 0)
        return -1;
    fixture_wait_state(&fx, "t", CNODE_UP, WAIT_MS);
    fixture_wait_state(&fx, "victim", CNODE_UP, WAIT_MS);
    fixture_wait_state(&fx, "held", CNODE_UP, WAIT_MS);
    char err[256];
    svc = service_new(fx.cfg, fx.gw, err, sizeof err);
    if (!svc) fprintf(stderr, "service_new: %s\n", err);
    return svc ? 0 : -1;
}

static int group_teardown(void **state) {
    service_free(svc);
    svc = NULL;
    int rc = fixture_gateway_stop(&fx, NULL, NULL);
    return fixture_group_teardown(state) != 0 ? -1 : rc;
}

/* ---- a Watch's reports -------------------------------------------------------------------- */

typedef struct reports {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    grpc_health_status got[64];
    size_t n;
    bool in_report; /* two reports at once would be a bug */
    bool overlapped;
} reports;

static void reports_init(reports *r) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

static void reports_destroy(reports *r) {
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
}

static void on_report(grpc_health_status status, void *ctx) {
    reports *r = ctx;
    pthread_mutex_lock(&r->mu);
    if (r->in_report) r->overlapped = true;
    r->in_report = true;
    if (r->n < sizeof r->got / sizeof r->got[0]) r->got[r->n++] = status;
    r->in_report = false;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static size_t reports_count(reports *r) {
    pthread_mutex_lock(&r->mu);
    size_t n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* Waits until `n` reports arrived (a hang guard fails the test). */
static void reports_wait(reports *r, size_t n) {
    int64_t deadline = fixture_now_ms() + WAIT_MS;
    pthread_mutex_lock(&r->mu);
    while (r->n < n) {
        if (fixture_now_ms() > deadline) {
            pthread_mutex_unlock(&r->mu);
            fail_msg("%zu of %zu reports", reports_count(r), n);
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    pthread_mutex_unlock(&r->mu);
}

/* A Watch of `name` reporting into `r` (initialized here). */
static grpc_health_watch *watch_start(const char *name, reports *r) {
    reports_init(r);
    service_error e;
    grpc_health_watch *w = grpc_health_watch_new(svc, NULL, name, on_report, r, &e);
    assert_non_null(w);
    return w;
}

static pid_t os_pid_of(const char *name) {
    gateway_cnode_info info;
    assert_int_equal(gateway_cnode_info_by_name(fx.gw, name, &info), 0);
    assert_true(info.os_pid > 0);
    fixture_remember_pid(&fx, info.os_pid);
    return info.os_pid;
}

/* Kills C-node `name` and waits until a new process of it is up. */
static void kill_and_wait_up(const char *name) {
    pid_t old = os_pid_of(name);
    assert_int_equal(kill(old, SIGKILL), 0);
    for (int64_t deadline = fixture_now_ms() + WAIT_MS;;) {
        gateway_cnode_info info;
        assert_int_equal(gateway_cnode_info_by_name(fx.gw, name, &info), 0);
        if (info.state == CNODE_UP && info.os_pid != old && info.os_pid > 0) break;
        if (fixture_now_ms() > deadline) fail_msg("%s did not come back up", name);
        fixture_sleep_ms(5);
    }
    fixture_remember_pid(&fx, os_pid_of(name));
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_check_names_the_gateway_and_each_cnode(void **state) {
    (void)state;
    service_error e;
    grpc_health_status st = NOT_SERVING;
    const char *serving[] = {"", "nodex.v1.Gateway", "t", "victim"};
    for (size_t i = 0; i < sizeof serving / sizeof serving[0]; i++) {
        st = NOT_SERVING;
        assert_int_equal(grpc_health_check(svc, NULL, serving[i], &st, &e), SERVICE_OK);
        assert_int_equal(st, SERVING);
    }
    assert_int_equal(grpc_health_check(svc, NULL, NULL, &st, &e), SERVICE_OK); /* NULL is "" */
    assert_int_equal(st, SERVING);
}

static void test_check_of_an_unknown_name_is_not_found_naming_it(void **state) {
    (void)state;
    const char *unknown[] = {"nope", "nodex.v1.Other", "T", "grpc.health.v1.Health", "t "};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        service_error e;
        grpc_health_status st = SERVING;
        assert_int_equal(grpc_health_check(svc, NULL, unknown[i], &st, &e), SERVICE_NOT_FOUND);
        assert_int_equal(st, SERVICE_UNKNOWN);
        char needle[64];
        snprintf(needle, sizeof needle, "'%s'", unknown[i]);
        assert_non_null(strstr(e.message, needle));
        assert_non_null(strstr(e.message, "C-node"));
    }
}

static void test_watch_reports_the_current_status_before_it_returns(void **state) {
    (void)state;
    reports r;
    reports_init(&r);
    service_error e;
    grpc_health_watch *w = grpc_health_watch_new(svc, NULL, "t", on_report, &r, &e);
    assert_non_null(w);
    assert_int_equal(reports_count(&r), 1);
    assert_int_equal(r.got[0], SERVING);
    grpc_health_watch_free(w);
    reports_destroy(&r);
}

static void test_watch_reports_each_change_once_when_a_cnode_is_killed(void **state) {
    (void)state;
    reports one, whole, other;
    grpc_health_watch *w1 = watch_start("victim", &one);
    grpc_health_watch *w2 = watch_start("", &whole);
    grpc_health_watch *w3 = watch_start("t", &other);
    kill_and_wait_up("victim");
    reports_wait(&one, 3);
    reports_wait(&whole, 3);
    grpc_health_watch_free(w1);
    grpc_health_watch_free(w2);
    grpc_health_watch_free(w3);
    /* starting, restarting and down are all NOT_SERVING: one report for the lot */
    grpc_health_status want[] = {SERVING, NOT_SERVING, SERVING};
    for (reports *r = &one; r; r = r == &one ? &whole : NULL) {
        assert_int_equal(r->n, 3);
        assert_memory_equal(r->got, want, sizeof want);
        assert_false(r->overlapped);
    }
    assert_int_equal(other.n, 1); /* t never changed */
    reports_destroy(&one);
    reports_destroy(&whole);
    reports_destroy(&other);
}

static void test_watch_of_an_unknown_name_reports_service_unknown_once(void **state) {
    (void)state;
    reports r;
    grpc_health_watch *w = watch_start("nope", &r);
    kill_and_wait_up("victim"); /* events go by: still unknown, nothing more */
    grpc_health_watch_free(w);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.got[0], SERVICE_UNKNOWN);
    reports_destroy(&r);
}

static void test_a_freed_watch_reports_nothing_more(void **state) {
    (void)state;
    reports r;
    grpc_health_watch *w = watch_start("victim", &r);
    grpc_health_watch_free(w);
    grpc_health_watch_free(NULL);
    kill_and_wait_up("victim");
    assert_int_equal(reports_count(&r), 1);
    reports_destroy(&r);
}

static void on_call_done(call *c, void *ctx) {
    (void)c;
    atomic_store((atomic_bool *)ctx, true);
}

/* Last in the group: the gateway drains and stops. */
static void test_the_drain_turns_every_watch_not_serving_at_its_start(void **state) {
    (void)state;
    reports whole, one, unknown;
    grpc_health_watch *w1 = watch_start("", &whole);
    grpc_health_watch *w2 = watch_start("t", &one);
    grpc_health_watch *w3 = watch_start("nope", &unknown);
    service_error e;
    /* A call in flight holds the drain open: no C-node changes state until it ends, so no
     * lifecycle event can be what tells the watches. */
    static call c;
    static atomic_bool done;
    call_init(&c);
    service_call_pid(svc, &c);
    c.on_done = on_call_done;
    c.ctx = &done;
    ei_x_buff x;
    assert_int_equal(ei_x_new(&x), 0);
    assert_int_equal(ei_x_encode_tuple_header(&x, 2), 0);
    assert_int_equal(ei_x_encode_atom(&x, "ping"), 0);
    assert_int_equal(ei_x_encode_atom(&x, "x"), 0);
    service_call_req q = {
        .op = SERVICE_OP_CALL, .cnode = "held", .timeout_ms = 600000, .deadline_left_ms = -1};
    assert_int_equal(service_call(svc, &service_anonymous, &q, &c, x.buff, (size_t)x.index, &e),
                     SERVICE_OK);
    ei_x_free(&x);
    for (int64_t deadline = fixture_now_ms() + WAIT_MS;;) {
        gateway_cnode_info info;
        assert_int_equal(gateway_cnode_info_by_name(fx.gw, "held", &info), 0);
        if (info.in_flight == 1) break;
        if (fixture_now_ms() > deadline) fail_msg("the call never got in flight");
        fixture_sleep_ms(5);
    }
    assert_int_equal(kill(getpid(), SIGTERM), 0); /* blocked in every thread: the loop's signalfd */
    reports_wait(&whole, 2);
    reports_wait(&one, 2);
    assert_false(atomic_load(&done)); /* the call still runs: this is the drain, not the end */
    assert_true(gateway_draining(fx.gw));
    grpc_health_status want[] = {SERVING, NOT_SERVING};
    assert_memory_equal(whole.got, want, sizeof want);
    assert_memory_equal(one.got, want, sizeof want);
    grpc_health_status now;
    assert_int_equal(grpc_health_check(svc, NULL, "t", &now, &e), SERVICE_OK);
    assert_int_equal(now, NOT_SERVING); /* Check says the same: calls to t are refused */
    grpc_health_watch_free(w1);
    grpc_health_watch_free(w2);
    grpc_health_watch_free(w3);
    assert_int_equal(unknown.n, 1); /* still SERVICE_UNKNOWN: nothing more */
    assert_int_equal(unknown.got[0], SERVICE_UNKNOWN);
    fixture_gateway_stop_loop(&fx); /* the held call ends with the loop */
    assert_true(atomic_load(&done));
    call_clear(&c);
    reports_destroy(&whole);
    reports_destroy(&one);
    reports_destroy(&unknown);
}

int main(void) {
    fixture_process_init(); /* before any thread */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_names_the_gateway_and_each_cnode),
        cmocka_unit_test(test_check_of_an_unknown_name_is_not_found_naming_it),
        cmocka_unit_test(test_watch_reports_the_current_status_before_it_returns),
        cmocka_unit_test(test_watch_reports_each_change_once_when_a_cnode_is_killed),
        cmocka_unit_test(test_watch_of_an_unknown_name_reports_service_unknown_once),
        cmocka_unit_test(test_a_freed_watch_reports_nothing_more),
        cmocka_unit_test(test_the_drain_turns_every_watch_not_serving_at_its_start),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
