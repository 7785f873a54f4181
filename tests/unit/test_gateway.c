/* test_gateway: the gateway in process against real test C-nodes and a private epmd: start-up,
 * the multiplexed call path, timeouts, cancel, cast, C-node crash and restart, events, shutdown. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "routing.h"
#include "epmd.h"
#include "gateway.h"
#include "log.h"
#include "nodex_fixture.h"
#include "strbuf.h"
#include "term.h"

/* ---- the gateway fixture (tests/unit/support/nodex_fixture.h) ---------------------------- */

static fixture_gateway fx;
static unsigned instance;

enum { CN_T, CN_TAGGED, CN_NEVER }; /* C-node indexes in the config */

static int setup(void **state) {
    (void)state;
    char yaml[8192];
    snprintf(
        yaml, sizeof yaml,
        "node:\n"
        "  name: \"gwt%d_%u@127.0.0.1\"\n"
        "  start_epmd: false\n"
        "http:\n"
        "  listen: \"127.0.0.1:0\"\n"
        "grpc:\n"
        "  listen: null\n"
        "log:\n"
        "  level: error\n"
        "cnodes:\n"
        "  - name: t\n"
        "    executable: %s\n"
        "    backoff_initial_ms: 20\n"
        "    shutdown_timeout_ms: 1000\n"
        "  - name: tagged\n"
        "    executable: %s\n"
        "    reply_filter: {tag: pong}\n"
        "  - name: never\n"
        "    executable: %s\n"
        "    args: [\"{sname}\", \"{hostname}\", \"{cookie}\", \"{gateway_sname}\", never_ready]\n"
        "    spawn_inactive_timeout_ms: 60000\n",
        (int)getpid() % 100000, ++instance, fixture_test_cnode_path(), fixture_test_cnode_path(),
        fixture_test_cnode_path());
    if (fixture_gateway_start(&fx, yaml, "test_gateway", "gwtestcookie", NULL, NULL) != 0)
        return -1;
    fixture_wait_state_at(&fx, CN_T, CNODE_UP, 5000);
    fixture_wait_state_at(&fx, CN_TAGGED, CNODE_UP, 5000);
    return 0;
}

/* gateway_run stopped and reaped every C-node it started. */
static int teardown(void **state) {
    (void)state;
    return fixture_gateway_stop(&fx, NULL, NULL);
}

/* ---- calls -------------------------------------------------------------------------------- */

static pthread_mutex_t done_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;

typedef struct tcall {
    call c;
    bool done;
    int done_count; /* must end at exactly 1 */
    pthread_t done_thread;
    int64_t done_ms;
    strbuf messages; /* streaming: text of each message, ';'-separated */
} tcall;

static void tcall_done(call *c, void *ctx) {
    tcall *t = ctx;
    (void)c;
    pthread_mutex_lock(&done_mu);
    t->done = true;
    t->done_count++;
    t->done_thread = pthread_self();
    t->done_ms = fixture_now_ms();
    pthread_cond_broadcast(&done_cv);
    pthread_mutex_unlock(&done_mu);
}

static void tcall_message(call *c, const char *msg, size_t len, void *ctx) {
    tcall *t = ctx;
    (void)c;
    int idx = 0;
    term_error err;
    pthread_mutex_lock(&done_mu);
    term_to_text(msg, len, &idx, NULL, &t->messages, &err);
    strbuf_putc(&t->messages, ';');
    pthread_cond_broadcast(&done_cv);
    pthread_mutex_unlock(&done_mu);
}

static bool tcall_wait(tcall *t, int timeout_ms) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (dl.tv_nsec >= 1000000000) dl.tv_sec++, dl.tv_nsec -= 1000000000;
    pthread_mutex_lock(&done_mu);
    while (!t->done && pthread_cond_timedwait(&done_cv, &done_mu, &dl) == 0) {
    }
    bool done = t->done;
    pthread_mutex_unlock(&done_mu);
    return done;
}

/* Encodes `text` (self() is the call's pid) and starts the call; `wait`: while the C-node is
 * not up yet. */
static gateway_error tcall_start_waiting(tcall *t, const char *cnode, const char *text,
                                         unsigned timeout_ms, bool streaming, bool wait) {
    memset(t, 0, sizeof *t);
    gateway_make_pid(fx.gw, &t->c.pid);
    t->c.on_done = tcall_done;
    t->c.on_message = streaming ? tcall_message : NULL;
    t->c.ctx = t;
    ei_x_buff x;
    ei_x_new(&x);
    term_error err;
    if (term_from_text(text, strlen(text), NULL, &t->c.pid, &x, &err) != 0)
        fail_msg("term_from_text(%s): %s", text, err.message);
    gateway_error e = gateway_call(fx.gw, cnode, &t->c, x.buff, (size_t)x.index, timeout_ms, wait);
    ei_x_free(&x);
    return e;
}

static gateway_error tcall_start(tcall *t, const char *cnode, const char *text, unsigned timeout_ms,
                                 bool streaming) {
    return tcall_start_waiting(t, cnode, text, timeout_ms, streaming, true);
}

/* The reply as Erlang text; the caller frees it. */
static char *tcall_reply_text(tcall *t) {
    assert_int_equal(t->c.outcome, CALL_REPLIED);
    strbuf sb = {0};
    term_error err;
    int idx = (int)t->c.reply_offset;
    if (term_to_text(t->c.reply, t->c.reply_len, &idx, NULL, &sb, &err) != 0)
        fail_msg("reply does not decode: %s", err.message);
    return strbuf_detach(&sb, NULL);
}

static void tcall_free(tcall *t) {
    call_clear(&t->c);
    strbuf_free(&t->messages);
}

static gateway_error cast_text(const char *cnode, const char *text, const erlang_pid *self) {
    ei_x_buff x;
    ei_x_new(&x);
    term_error err;
    if (term_from_text(text, strlen(text), NULL, self, &x, &err) != 0)
        fail_msg("term_from_text(%s): %s", text, err.message);
    gateway_error e = gateway_cast(fx.gw, cnode, x.buff, (size_t)x.index);
    ei_x_free(&x);
    return e;
}

/* Waits for the C-node's dropped_messages to reach `want`. */
static void wait_dropped(size_t index, uint64_t want, int timeout_ms) {
    gateway_cnode_info info;
    int64_t deadline = fixture_now_ms() + timeout_ms;
    for (;;) {
        gateway_cnode_info_at(fx.gw, index, &info);
        if (info.dropped_messages >= want) break;
        if (fixture_now_ms() > deadline)
            fail_msg("dropped_messages is %llu, want %llu",
                     (unsigned long long)info.dropped_messages, (unsigned long long)want);
        fixture_sleep_ms(5);
    }
    assert_int_equal(info.dropped_messages, want);
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_cnodes_come_up_with_a_process(void **state) {
    (void)state;
    assert_int_equal(gateway_cnode_count(fx.gw), 3);
    gateway_cnode_info info;
    assert_int_equal(gateway_cnode_info_at(fx.gw, CN_T, &info), 0);
    assert_string_equal(info.name, "t");
    assert_int_equal(info.state, CNODE_UP);
    assert_true(info.os_pid > 0);
    assert_false(fixture_pid_gone(info.os_pid));
    char want_node[128];
    snprintf(want_node, sizeof want_node, "%s", gateway_node_name(fx.gw));
    *strchr(want_node, '@') = '\0';
    strcat(want_node, "_t@127.0.0.1");
    assert_string_equal(info.node, want_node);
    assert_int_equal(info.restarts, 0);
    assert_int_equal(info.in_flight, 0);
    assert_int_equal(info.direction, CNODE_DIRECTION_BACK);
    assert_int_equal(info.protocol, CNODE_PROTOCOL_RAW);
    assert_int_equal(gateway_cnode_info_at(fx.gw, 3, &info), -1);
    assert_int_equal(gateway_cnode_info_by_name(fx.gw, "tagged", &info), 0);
    assert_int_equal(info.state, CNODE_UP);
    assert_int_equal(gateway_cnode_info_by_name(fx.gw, "nope", &info), -1);
    /* The never_ready C-node has a process but stays starting; so the gateway is not ready. */
    assert_int_equal(gateway_cnode_info_at(fx.gw, CN_NEVER, &info), 0);
    assert_int_equal(info.state, CNODE_STARTING);
    assert_true(info.os_pid > 0);
    fixture_remember_pid(&fx, info.os_pid);
    assert_false(gateway_is_ready(fx.gw));
}

static void test_ping_call_replies_pong_on_another_thread(void **state) {
    (void)state;
    tcall t;
    assert_int_equal(tcall_start(&t, "t", "{ping, <<\"hello\">>}", 0, false), GATEWAY_OK);
    assert_true(tcall_wait(&t, 3000));
    assert_int_equal(t.c.outcome, CALL_REPLIED);
    assert_int_equal(t.done_count, 1);
    assert_false(pthread_equal(t.done_thread, pthread_self()));
    char *text = tcall_reply_text(&t);
    assert_string_equal(text, "{pong,<<\"hello\">>}");
    free(text);
    gateway_cnode_info info;
    gateway_cnode_info_at(fx.gw, CN_T, &info);
    assert_int_equal(info.calls_total, 1);
    assert_int_equal(info.in_flight, 0);
    assert_int_equal(info.dropped_messages, 0);
    tcall_free(&t);
}

#define CONCURRENT 100
#define CALLERS    4

static tcall many[CONCURRENT];

static void *caller_main(void *arg) {
    int k = (int)(intptr_t)arg;
    for (int i = k; i < CONCURRENT; i += CALLERS) {
        char text[96];
        snprintf(text, sizeof text, "{ping, {%d, <<\"payload-%d\">>, [%d, x]}}", i, i * 7919, i);
        if (tcall_start(&many[i], "t", text, 5000, false) != GATEWAY_OK) return (void *)1;
    }
    return NULL;
}

static void test_100_concurrent_calls_each_get_their_own_reply(void **state) {
    (void)state;
    pthread_t th[CALLERS];
    for (int k = 0; k < CALLERS; k++)
        assert_int_equal(pthread_create(&th[k], NULL, caller_main, (void *)(intptr_t)k), 0);
    for (int k = 0; k < CALLERS; k++) {
        void *rc;
        pthread_join(th[k], &rc);
        assert_null(rc);
    }
    for (int i = 0; i < CONCURRENT; i++) {
        if (!tcall_wait(&many[i], 5000)) fail_msg("call %d never completed", i);
        char *text = tcall_reply_text(&many[i]);
        char want[128];
        snprintf(want, sizeof want, "{pong,{%d,<<\"payload-%d\">>,[%d,x]}}", i, i * 7919, i);
        assert_string_equal(text, want);
        assert_int_equal(many[i].done_count, 1);
        free(text);
        tcall_free(&many[i]);
    }
    gateway_cnode_info info;
    gateway_cnode_info_at(fx.gw, CN_T, &info);
    assert_int_equal(info.calls_total, CONCURRENT);
    assert_int_equal(info.in_flight, 0);
    assert_int_equal(info.dropped_messages, 0);
}

static void test_timeout_completes_the_call_and_counts_the_late_reply_as_dropped(void **state) {
    (void)state;
    tcall t;
    int64_t t0 = fixture_now_ms();
    assert_int_equal(tcall_start(&t, "t", "{sleep, 400, late}", 100, false), GATEWAY_OK);
    assert_true(tcall_wait(&t, 3000));
    int64_t took = t.done_ms - t0;
    assert_int_equal(t.c.outcome, CALL_TIMEOUT);
    assert_true(took >= 95);
    if (took > 350) fail_msg("timeout after %lld ms, want ~100", (long long)took);
    assert_null(t.c.reply);
    gateway_cnode_info info;
    gateway_cnode_info_at(fx.gw, CN_T, &info);
    assert_int_equal(info.in_flight, 0);
    assert_int_equal(info.dropped_messages, 0);
    /* The reply comes at ~400 ms, to a pid whose call has ended. */
    wait_dropped(CN_T, 1, 2000);
    assert_int_equal(t.done_count, 1);
    tcall_free(&t);
    /* The connection is fine afterwards. */
    assert_int_equal(tcall_start(&t, "t", "{ping, later}", 0, false), GATEWAY_OK);
    assert_true(tcall_wait(&t, 3000));
    char *text = tcall_reply_text(&t);
    assert_string_equal(text, "{pong,later}");
    free(text);
    tcall_free(&t);
}

static void test_unknown_cnode_is_not_found_synchronously_and_on_done_never_runs(void **state) {
    (void)state;
    tcall t;
    assert_int_equal(tcall_start(&t, "no_such_cnode", "{ping, x}", 0, false), GATEWAY_NOT_FOUND);
    assert_int_equal(cast_text("no_such_cnode", "{ping, x}", NULL), GATEWAY_NOT_FOUND);
    /* A C-node that is not up refuses too, synchronously, when the call may not wait. */
    tcall u;
    assert_int_equal(tcall_start_waiting(&u, "never", "{ping, x}", 0, false, false),
                     GATEWAY_UNAVAILABLE);
    assert_int_equal(cast_text("never", "{ping, x}", NULL), GATEWAY_UNAVAILABLE);
    fixture_sleep_ms(200);
    assert_false(t.done);
    assert_false(u.done);
    assert_int_equal(t.done_count + u.done_count, 0);
    tcall_free(&t);
    tcall_free(&u);
}

static void test_a_call_to_a_cnode_not_up_yet_waits_and_times_out_unsent(void **state) {
    (void)state;
    tcall t;
    assert_int_equal(tcall_start(&t, "never", "{ping, x}", 300, false), GATEWAY_OK);
    gateway_cnode_info info;
    assert_int_equal(gateway_cnode_info_by_name(fx.gw, "never", &info), 0);
    assert_int_equal(info.waiting, 1);
    assert_int_equal(info.in_flight, 0);
    assert_true(tcall_wait(&t, 10000));
    assert_int_equal(t.c.outcome, CALL_TIMEOUT);
    assert_string_equal(t.c.detail, ROUTING_NOT_SENT);
    assert_int_equal(t.done_count, 1);
    assert_int_equal(gateway_cnode_info_by_name(fx.gw, "never", &info), 0);
    assert_int_equal(info.waiting, 0);
    tcall_free(&t);
}

static void test_cancel_runs_on_done_once_on_the_loop_thread(void **state) {
    (void)state;
    tcall t;
    assert_int_equal(tcall_start(&t, "t", "{sleep, 300, cancelled}", 5000, false), GATEWAY_OK);
    fixture_sleep_ms(20);
    assert_false(t.done);
    assert_true(gateway_cancel(fx.gw, &t.c));
    assert_false(gateway_cancel(fx.gw, &t.c)); /* already asked */
    assert_true(tcall_wait(&t, 100));          /* at once, not at the 300 ms reply */
    assert_int_equal(t.c.outcome, CALL_CANCELLED);
    /* On the loop thread, like every outcome: never concurrently with on_message. */
    assert_false(pthread_equal(t.done_thread, pthread_self()));
    assert_int_equal(t.done_count, 1);
    assert_false(gateway_cancel(fx.gw, &t.c)); /* already ended */
    assert_int_equal(t.done_count, 1);
    gateway_cnode_info info;
    gateway_cnode_info_at(fx.gw, CN_T, &info);
    assert_int_equal(info.in_flight, 0);
    /* The reply that comes later is dropped and counted; on_done does not run again. */
    wait_dropped(CN_T, 1, 2000);
    assert_int_equal(t.done_count, 1);
    tcall_free(&t);

    /* Cancel after completion is a no-op too. */
    assert_int_equal(tcall_start(&t, "t", "{ping, done}", 0, false), GATEWAY_OK);
    assert_true(tcall_wait(&t, 3000));
    assert_false(gateway_cancel(fx.gw, &t.c));
    assert_int_equal(t.done_count, 1);
    assert_int_equal(t.c.outcome, CALL_REPLIED);
    tcall_free(&t);
}

static void test_streaming_call_passes_other_messages_and_a_cast_delivers_its_reply(void **st) {
    (void)st;
    /* On `tagged` only {pong, R} is a reply: {slept, first} is passed to on_message. */
    tcall t;
    assert_int_equal(tcall_start(&t, "tagged", "{sleep, 0, first}", 5000, true), GATEWAY_OK);
    for (int64_t deadline = fixture_now_ms() + 3000;;) {
        pthread_mutex_lock(&done_mu);
        bool got = t.messages.len > 0;
        pthread_mutex_unlock(&done_mu);
        if (got) break;
        if (fixture_now_ms() > deadline) fail_msg("no message reached the streaming call");
        fixture_sleep_ms(5);
    }
    assert_false(t.done);
    pthread_mutex_lock(&done_mu);
    assert_string_equal(t.messages.data, "{slept,first};");
    pthread_mutex_unlock(&done_mu);
    /* A cast asks the C-node to send {pong, second} to the call's pid: that is the reply. */
    assert_int_equal(cast_text("tagged", "{reply_to, self(), second}", &t.c.pid), GATEWAY_OK);
    assert_true(tcall_wait(&t, 3000));
    char *text = tcall_reply_text(&t);
    assert_string_equal(text, "second"); /* the filter's tag is stripped */
    free(text);
    gateway_cnode_info info;
    gateway_cnode_info_at(fx.gw, CN_TAGGED, &info);
    assert_int_equal(info.dropped_messages, 0);
    assert_int_equal(info.in_flight, 0);
    tcall_free(&t);

    /* A plain cast's reply goes to a pid of no call: delivered, then dropped and counted. */
    assert_int_equal(cast_text("t", "{ping, cast}", NULL), GATEWAY_OK);
    wait_dropped(CN_T, 1, 2000);
}

/* Events recorded by a subscriber. */
typedef struct event_log {
    pthread_mutex_t mu;
    cnode_state states[64];
    uint64_t seqs[64];
    pid_t pids[64];
    size_t n;
} event_log;

static void record_event(const gateway_event *ev, void *ctx) {
    event_log *l = ctx;
    if (strcmp(ev->name, "t") != 0) return;
    pthread_mutex_lock(&l->mu);
    if (l->n < 64) {
        l->states[l->n] = ev->state;
        l->seqs[l->n] = ev->seq;
        l->pids[l->n] = ev->os_pid;
        l->n++;
    }
    pthread_mutex_unlock(&l->mu);
}

static size_t events_seen(event_log *l) {
    pthread_mutex_lock(&l->mu);
    size_t n = l->n;
    pthread_mutex_unlock(&l->mu);
    return n;
}

static void test_kill_9_fails_the_call_fast_and_events_show_the_restart(void **state) {
    (void)state;
    event_log log = {.mu = PTHREAD_MUTEX_INITIALIZER};
    uint64_t sub = gateway_subscribe(fx.gw, record_event, &log);
    assert_true(sub > 0);
    gateway_cnode_info before = fixture_wait_state_at(&fx, CN_T, CNODE_UP, 1000);
    tcall t;
    assert_int_equal(tcall_start(&t, "t", "{sleep, 5000, doomed}", 10000, false), GATEWAY_OK);
    fixture_sleep_ms(50);
    int64_t t0 = fixture_now_ms();
    assert_int_equal(kill(before.os_pid, SIGKILL), 0);
    assert_true(tcall_wait(&t, 2000));
    int64_t took = t.done_ms - t0;
    assert_int_equal(t.c.outcome, CALL_UNAVAILABLE);
    if (took > 500) fail_msg("the call failed %lld ms after the kill", (long long)took);
    assert_true(t.c.detail[0] != '\0');
    tcall_free(&t);

    /* The call fails before the state changes: wait for the whole cycle to be reported. */
    for (int64_t deadline = fixture_now_ms() + 5000; events_seen(&log) < 4;) {
        if (fixture_now_ms() > deadline)
            fail_msg("%zu events after the kill, want 4", events_seen(&log));
        fixture_sleep_ms(5);
    }
    gateway_cnode_info after = fixture_wait_state_at(&fx, CN_T, CNODE_UP, 5000);
    assert_true(after.os_pid > 0);
    assert_true(after.os_pid != before.os_pid);
    assert_int_equal(after.restarts, 1);
    assert_non_null(strstr(after.last_exit, "signal 9"));
    assert_true(fixture_pid_gone(before.os_pid)); /* reaped by the gateway */

    /* down -> restarting -> starting -> up, in order, with increasing seq. */
    static const cnode_state want[] = {CNODE_DOWN, CNODE_RESTARTING, CNODE_STARTING, CNODE_UP};
    pthread_mutex_lock(&log.mu);
    if (log.n != 4) {
        for (size_t i = 0; i < log.n; i++)
            print_error("event %zu: %s\n", i, cnode_state_name(log.states[i]));
        pthread_mutex_unlock(&log.mu);
        fail_msg("%zu events, want 4", log.n);
    }
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(log.states[i], want[i]);
        if (i) assert_int_equal(log.seqs[i], log.seqs[i - 1] + 1);
    }
    assert_int_equal(log.pids[3], after.os_pid);
    pthread_mutex_unlock(&log.mu);

    /* Calls work again on the new process. */
    assert_int_equal(tcall_start(&t, "t", "{ping, again}", 0, false), GATEWAY_OK);
    assert_true(tcall_wait(&t, 3000));
    char *text = tcall_reply_text(&t);
    assert_string_equal(text, "{pong,again}");
    free(text);
    tcall_free(&t);

    /* After unsubscribe, another crash and restart reports nothing to it. */
    gateway_unsubscribe(fx.gw, sub);
    size_t seen = events_seen(&log);
    assert_int_equal(kill(after.os_pid, SIGKILL), 0);
    gateway_cnode_info again;
    for (int64_t deadline = fixture_now_ms() + 5000;;) {
        gateway_cnode_info_at(fx.gw, CN_T, &again);
        fixture_remember_pid(&fx, again.os_pid);
        if (again.state == CNODE_UP && again.os_pid != after.os_pid) break;
        if (fixture_now_ms() > deadline) fail_msg("no restart after the second kill");
        fixture_sleep_ms(5);
    }
    assert_int_equal(again.restarts, 2);
    assert_int_equal(events_seen(&log), seen);
}

static void test_cast_is_refused_while_the_cnode_is_down(void **state) {
    (void)state;
    /* Between the crash and the restart (backoff 20 ms, then spawn and connect). */
    gateway_cnode_info before = fixture_wait_state_at(&fx, CN_T, CNODE_UP, 1000);
    assert_int_equal(cast_text("t", "{ping, up}", NULL), GATEWAY_OK);
    assert_int_equal(kill(before.os_pid, SIGKILL), 0);
    /* Poll: as soon as it is no longer up, cast and call refuse synchronously. */
    gateway_cnode_info info;
    for (int64_t deadline = fixture_now_ms() + 2000;;) {
        gateway_cnode_info_at(fx.gw, CN_T, &info);
        if (info.state != CNODE_UP) break;
        if (fixture_now_ms() > deadline) fail_msg("still up after kill -9");
    }
    gateway_error e = cast_text("t", "{ping, down}", NULL);
    gateway_cnode_info_at(fx.gw, CN_T, &info);
    if (info.state != CNODE_UP) assert_int_equal(e, GATEWAY_UNAVAILABLE);
    fixture_wait_state_at(&fx, CN_T, CNODE_UP, 5000);
    assert_int_equal(cast_text("t", "{ping, up_again}", NULL), GATEWAY_OK);
}

static void test_shutdown_fails_calls_in_flight_and_stops_every_cnode(void **state) {
    (void)state;
    enum { N = 5 };
    tcall t[N];
    for (int i = 0; i < N; i++) {
        char text[64];
        snprintf(text, sizeof text, "{sleep, 2000, n%d}", i);
        assert_int_equal(tcall_start(&t[i], "t", text, 10000, false), GATEWAY_OK);
    }
    tcall s;
    assert_int_equal(tcall_start(&s, "tagged", "{sleep, 0, stream}", 10000, true), GATEWAY_OK);
    fixture_sleep_ms(50);
    gateway_cnode_info info;
    gateway_cnode_info_at(fx.gw, CN_T, &info);
    assert_int_equal(info.in_flight, N);
    for (size_t i = 0; i < 3; i++) {
        gateway_cnode_info_at(fx.gw, i, &info);
        fixture_remember_pid(&fx, info.os_pid);
    }
    int64_t t0 = fixture_now_ms();
    fixture_gateway_stop_loop(&fx);
    int64_t took = fixture_now_ms() - t0;
    assert_int_equal(fx.run_rc, 0);
    if (took > 1500) fail_msg("shutdown took %lld ms", (long long)took);
    for (int i = 0; i < N; i++) {
        assert_true(t[i].done);
        assert_int_equal(t[i].c.outcome, CALL_SHUTDOWN);
        assert_int_equal(t[i].done_count, 1);
        tcall_free(&t[i]);
    }
    assert_true(s.done);
    assert_int_equal(s.c.outcome, CALL_SHUTDOWN);
    tcall_free(&s);
    /* Every C-node process is gone (and reaped) once gateway_run has returned. */
    assert_true(fx.npids >= 3);
    for (size_t i = 0; i < fx.npids; i++) assert_true(fixture_pid_gone(fx.pids[i]));
    for (size_t i = 0; i < 3; i++) {
        gateway_cnode_info_at(fx.gw, i, &info);
        assert_int_equal(info.state, CNODE_STOPPED);
        assert_int_equal(info.os_pid, 0);
        assert_int_equal(info.in_flight, 0);
    }
    /* New work is refused. */
    tcall late;
    assert_int_equal(tcall_start(&late, "t", "{ping, late}", 0, false), GATEWAY_SHUTTING_DOWN);
    assert_int_equal(cast_text("t", "{ping, late}", NULL), GATEWAY_SHUTTING_DOWN);
    assert_false(gateway_is_ready(fx.gw));
    tcall_free(&late);
}

/* Threads of this process (/proc/self/task). */
static size_t thread_count(void) {
    size_t n = 0;
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

#define GHOST_RPCS 2000
#define GHOST_WAVE 50

/* Every rpc to a node nobody runs makes a peer entry and a connector attempt; once answered
 * (503: epmd does not know the name), the entry is freed and the connector thread gone. Before,
 * each stayed retired in memory until gateway_free: 2000 rpcs, 2000 entries. */
static void test_rpcs_to_unknown_nodes_leave_no_entries_or_threads_behind(void **state) {
    (void)state;
    size_t threads_before = thread_count(), threads_max = 0, listed, retired, held_max = 0;
    static tcall t[GHOST_WAVE];
    static const char nil[] = {ERL_NIL_EXT};
    for (int done = 0; done < GHOST_RPCS; done += GHOST_WAVE) {
        for (int k = 0; k < GHOST_WAVE; k++) {
            char node[64];
            snprintf(node, sizeof node, "ghost%d@127.0.0.1", done + k);
            memset(&t[k], 0, sizeof t[k]);
            gateway_make_pid(fx.gw, &t[k].c.pid);
            t[k].c.on_done = tcall_done;
            t[k].c.ctx = &t[k];
            assert_int_equal(gateway_rpc(fx.gw, node, &t[k].c, "erlang", "node", nil, 1, 20000),
                             GATEWAY_OK);
        }
        size_t threads = thread_count();
        if (threads > threads_max) threads_max = threads;
        for (int k = 0; k < GHOST_WAVE; k++) {
            assert_true(tcall_wait(&t[k], 20000));
            assert_int_equal(t[k].c.outcome, CALL_UNAVAILABLE);
            assert_int_equal(t[k].done_count, 1);
            tcall_free(&t[k]);
        }
        gateway_node_entries(fx.gw, &listed, &retired);
        if (listed + retired > held_max) held_max = listed + retired;
        /* The wave's connector threads end after their hand-off, a little after their calls
         * are answered: wait for them, so the next wave's count is its own. */
        int64_t wave_deadline = fixture_now_ms() + 10000;
        while (thread_count() > threads_before) {
            if (fixture_now_ms() > wave_deadline)
                fail_msg("%zu threads 10 s after a wave's calls ended (%zu before)", thread_count(),
                         threads_before);
            fixture_sleep_ms(2);
        }
    }
    /* Freed at the loop's next sweeps; connector threads end right after their hand-off. */
    int64_t deadline = fixture_now_ms() + 30000;
    for (;;) {
        gateway_node_entries(fx.gw, &listed, &retired);
        if (listed + retired == 0 && thread_count() <= threads_before) break;
        if (fixture_now_ms() > deadline)
            fail_msg("%zu entries listed, %zu retired, %zu threads (%zu before)", listed, retired,
                     thread_count(), threads_before);
        fixture_sleep_ms(20);
    }
    /* At most one wave's entries and connectors at a time (plus what the last sweep had not
     * freed yet): nothing accumulates across waves. */
    assert_true(held_max <= 2 * GHOST_WAVE);
    assert_true(threads_max <= threads_before + GHOST_WAVE);
    print_message("%d rpcs: at most %zu entries held, %zu threads (%zu before)\n", GHOST_RPCS,
                  held_max, threads_max, threads_before);
}

int main(void) {
    fixture_process_init(); /* before any thread */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cnodes_come_up_with_a_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ping_call_replies_pong_on_another_thread, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_100_concurrent_calls_each_get_their_own_reply, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_timeout_completes_the_call_and_counts_the_late_reply_as_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_unknown_cnode_is_not_found_synchronously_and_on_done_never_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_call_to_a_cnode_not_up_yet_waits_and_times_out_unsent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_runs_on_done_once_on_the_loop_thread, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_streaming_call_passes_other_messages_and_a_cast_delivers_its_reply, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_kill_9_fails_the_call_fast_and_events_show_the_restart,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_cast_is_refused_while_the_cnode_is_down, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_fails_calls_in_flight_and_stops_every_cnode,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_rpcs_to_unknown_nodes_leave_no_entries_or_threads_behind, setup, teardown),
    };
    return cmocka_run_group_tests(tests, fixture_group_setup, fixture_group_teardown);
}
