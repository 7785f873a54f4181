/* test_routing: reply matching (tagged, gen_call {Ref, Reply}, any, by node), the net_kernel
 * is_auth answer, and the registry's ways to end a call (reply, drop, stream, expiry, cancel,
 * failure of an owner) without the rest of the gateway: terms are encoded with ei. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "routing.h"

#define NODE "nodexd@127.0.0.1"

static erlang_pid pid_of(unsigned num) {
    erlang_pid p;
    memset(&p, 0, sizeof p);
    snprintf(p.node, sizeof p.node, "%s", NODE);
    p.num = num;
    p.creation = 7;
    return p;
}

static erlang_ref ref_of(unsigned a, unsigned b, unsigned c) {
    erlang_ref r;
    memset(&r, 0, sizeof r);
    snprintf(r.node, sizeof r.node, "%s", NODE);
    r.len = 3;
    r.n[0] = a;
    r.n[1] = b;
    r.n[2] = c;
    r.creation = 7;
    return r;
}

/* {Atom, 42} */
static int encode_tagged(char *buf, const char *atom) {
    int i = 0;
    ei_encode_tuple_header(buf, &i, 2);
    ei_encode_atom(buf, &i, atom);
    ei_encode_long(buf, &i, 42);
    return i;
}

/* {Ref, 42} */
static int encode_ref_reply(char *buf, const erlang_ref *ref) {
    int i = 0;
    ei_encode_tuple_header(buf, &i, 2);
    ei_encode_ref(buf, &i, ref);
    ei_encode_long(buf, &i, 42);
    return i;
}

static long decode_long_at(const char *buf, long offset) {
    int i = (int)offset;
    long v = -1;
    assert_int_equal(ei_decode_long(buf, &i, &v), 0);
    return v;
}

static void test_match_tagged_finds_the_reply_after_its_tag(void **state) {
    (void)state;
    char buf[64];
    int n = encode_tagged(buf, "rex");
    long off = routing_match_tagged(buf, (size_t)n, "rex");
    assert_true(off > 0);
    assert_int_equal(decode_long_at(buf, off), 42);
    assert_int_equal(routing_match_tagged(buf, (size_t)n, "other"), -1);
    assert_int_equal(routing_match_tagged(buf, (size_t)n, "re"), -1);
    /* Cut before the reply: no match, no read past the end. */
    assert_int_equal(routing_match_tagged(buf, (size_t)off, "rex"), -1);
}

static void test_match_ref_finds_a_gen_call_reply_to_its_own_ref_only(void **state) {
    (void)state;
    erlang_ref ref = ref_of(1, 2, 3), other = ref_of(1, 2, 4);
    char buf[128];
    int n = encode_ref_reply(buf, &ref);
    long off = routing_match_ref(buf, (size_t)n, &ref);
    assert_true(off > 0);
    assert_int_equal(decode_long_at(buf, off), 42);
    assert_int_equal(routing_match_ref(buf, (size_t)n, &other), -1);
    for (size_t cut = 0; cut < (size_t)off + 1; cut++)
        assert_int_equal(routing_match_ref(buf, cut, &ref), -1);
    char tagged[64];
    int tn = encode_tagged(tagged, "rex");
    assert_int_equal(routing_match_ref(tagged, (size_t)tn, &ref), -1);
}

static void test_match_reply_follows_protocol_and_filter(void **state) {
    (void)state;
    config_cnode cfg = {
        .protocol = CNODE_PROTOCOL_RAW, .reply_filter = REPLY_FILTER_TAG, .reply_tag = "ok"};
    routing_owner o;
    routing_owner_init(&o, &cfg, "c1@host");
    call c = {.ref = ref_of(9, 9, 9)};
    char buf[128];
    int n = encode_tagged(buf, "ok");
    assert_true(routing_match_reply(&o, &c, buf, (size_t)n) > 0);
    cfg.reply_filter = REPLY_FILTER_ANY;
    assert_int_equal(routing_match_reply(&o, &c, buf, (size_t)n), 0);
    cfg.reply_filter = REPLY_FILTER_NODE;
    assert_int_equal(routing_match_reply(&o, &c, buf, (size_t)n), -1);
    n = encode_tagged(buf, "c1@host");
    assert_true(routing_match_reply(&o, &c, buf, (size_t)n) > 0);
    cfg.protocol = CNODE_PROTOCOL_GEN_CALL;
    assert_int_equal(routing_match_reply(&o, &c, buf, (size_t)n), -1);
    n = encode_ref_reply(buf, &c.ref);
    assert_true(routing_match_reply(&o, &c, buf, (size_t)n) > 0);
}

static void test_net_kernel_is_auth_is_answered_yes_with_the_tag_verbatim(void **state) {
    (void)state;
    erlang_pid from = pid_of(5);
    erlang_ref tag = ref_of(4, 5, 6);
    char req[256];
    int i = 0;
    ei_encode_tuple_header(req, &i, 3);
    ei_encode_atom(req, &i, "$gen_call");
    ei_encode_tuple_header(req, &i, 2);
    ei_encode_pid(req, &i, &from);
    ei_encode_ref(req, &i, &tag);
    ei_encode_tuple_header(req, &i, 2);
    ei_encode_atom(req, &i, "is_auth");
    ei_encode_atom(req, &i, "other@host");
    char out[256];
    erlang_pid to;
    int n = routing_net_kernel_reply(req, (size_t)i, &to, out, sizeof out);
    assert_true(n > 0);
    assert_int_equal(to.num, 5);
    assert_string_equal(to.node, NODE);
    int k = 0, arity;
    erlang_ref got;
    char atom[MAXATOMLEN];
    assert_int_equal(ei_decode_tuple_header(out, &k, &arity), 0);
    assert_int_equal(arity, 2);
    assert_int_equal(ei_decode_ref(out, &k, &got), 0);
    assert_int_equal(got.n[2], 6);
    assert_int_equal(ei_decode_atom(out, &k, atom), 0);
    assert_string_equal(atom, "yes");
    assert_int_equal(k, n);
    /* Not an is_auth request: nothing to answer. */
    int t = encode_tagged(req, "rex");
    assert_int_equal(routing_net_kernel_reply(req, (size_t)t, &to, out, sizeof out), -1);
}

/* ---- the registry ---- */

typedef struct fixture {
    pthread_mutex_t mu;
    routing *r;
    config_cnode cfg;
    routing_owner owner;
} fixture;

typedef struct tcall {
    call c;
    int done;
    int messages;
    call_outcome outcome;
} tcall;

static void on_done(call *c, void *ctx) {
    tcall *t = ctx;
    (void)c;
    t->done++;
    t->outcome = c->outcome;
}

static void on_message(call *c, const char *msg, size_t len, void *ctx) {
    (void)c;
    (void)msg;
    (void)len;
    ((tcall *)ctx)->messages++;
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    pthread_mutex_init(&f->mu, NULL);
    f->r = routing_new(&f->mu, NODE);
    if (!f->r) return -1;
    f->cfg = (config_cnode){
        .protocol = CNODE_PROTOCOL_RAW, .reply_filter = REPLY_FILTER_TAG, .reply_tag = "ok"};
    routing_owner_init(&f->owner, &f->cfg, "c1@host");
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    routing_free(f->r);
    pthread_mutex_destroy(&f->mu);
    free(f);
    return 0;
}

static void start(fixture *f, tcall *t, unsigned num, int64_t deadline) {
    memset(t, 0, sizeof *t);
    t->c.pid = pid_of(num);
    t->c.key = dist_pid_key(&t->c.pid);
    t->c.deadline_ms = deadline;
    t->c.on_done = on_done;
    t->c.ctx = t;
    pthread_mutex_lock(&f->mu);
    assert_int_equal(routing_register_locked(f->r, &f->owner, &t->c), 0);
    pthread_mutex_unlock(&f->mu);
}

static dist_message message_to(unsigned num, const char *msg, size_t len) {
    dist_message m = {.type = 2, .to_pid = true, .to = pid_of(num), .msg = msg, .msg_len = len};
    return m;
}

static void test_tagged_reply_completes_its_call_with_the_reply_bytes(void **state) {
    fixture *f = *state;
    tcall t;
    start(f, &t, 1, INT64_MAX);
    assert_int_equal(routing_owner_in_flight(&f->owner), 1);
    char buf[64];
    int n = encode_tagged(buf, "ok");
    dist_message m = message_to(1, buf, (size_t)n);
    routing_on_message(f->r, &f->owner, &m);
    assert_int_equal(t.done, 1);
    assert_int_equal(t.outcome, CALL_REPLIED);
    assert_int_equal(t.c.reply_len, n);
    assert_int_equal(decode_long_at(t.c.reply, (long)t.c.reply_offset), 42);
    assert_int_equal(routing_owner_in_flight(&f->owner), 0);
    assert_int_equal(routing_owner_calls_total(&f->owner), 1);
    assert_int_equal(routing_owner_dropped(&f->owner), 0);
    /* The same reply again: its call has ended, so it is dropped and counted. */
    routing_on_message(f->r, &f->owner, &m);
    assert_int_equal(t.done, 1);
    assert_int_equal(routing_owner_dropped(&f->owner), 1);
    call_clear(&t.c);
}

static void test_gen_call_reply_matches_by_ref(void **state) {
    fixture *f = *state;
    f->cfg.protocol = CNODE_PROTOCOL_GEN_CALL;
    tcall t;
    start(f, &t, 2, INT64_MAX);
    t.c.ref = ref_of(7, 8, 9);
    char buf[128];
    erlang_ref wrong = ref_of(7, 8, 10);
    int n = encode_ref_reply(buf, &wrong);
    dist_message m = message_to(2, buf, (size_t)n);
    routing_on_message(f->r, &f->owner, &m);
    assert_int_equal(t.done, 0);
    assert_int_equal(routing_owner_dropped(&f->owner), 1);
    n = encode_ref_reply(buf, &t.c.ref);
    m = message_to(2, buf, (size_t)n);
    routing_on_message(f->r, &f->owner, &m);
    assert_int_equal(t.done, 1);
    assert_int_equal(t.outcome, CALL_REPLIED);
    assert_int_equal(decode_long_at(t.c.reply, (long)t.c.reply_offset), 42);
    call_clear(&t.c);
}

static void test_unmatched_messages_are_counted_as_dropped_where_they_belong(void **state) {
    fixture *f = *state;
    char buf[64];
    int n = encode_tagged(buf, "ok");
    /* To a pid of no call: counted for the connection's owner, or as unknown without one. */
    dist_message m = message_to(99, buf, (size_t)n);
    routing_on_message(f->r, &f->owner, &m);
    assert_int_equal(routing_owner_dropped(&f->owner), 1);
    routing_on_message(f->r, NULL, &m);
    assert_int_equal(routing_dropped_unknown_locked(f->r), 1);
    /* To a call's pid but of another node: no call of ours. */
    tcall t;
    start(f, &t, 3, INT64_MAX);
    m = message_to(3, buf, (size_t)n);
    snprintf(m.to.node, sizeof m.to.node, "%s", "other@host");
    routing_on_message(f->r, NULL, &m);
    assert_int_equal(t.done, 0);
    assert_int_equal(routing_dropped_unknown_locked(f->r), 2);
    routing_fail_owner(f->r, &f->owner, CALL_SHUTDOWN, NULL);
    assert_int_equal(t.done, 1);
}

static void test_streaming_call_gets_other_messages_and_stays_in_flight(void **state) {
    fixture *f = *state;
    tcall t;
    start(f, &t, 4, INT64_MAX);
    t.c.on_message = on_message;
    char buf[64];
    int n = encode_tagged(buf, "progress");
    dist_message m = message_to(4, buf, (size_t)n);
    routing_on_message(f->r, &f->owner, &m);
    routing_on_message(f->r, &f->owner, &m);
    assert_int_equal(t.messages, 2);
    assert_int_equal(t.done, 0);
    assert_int_equal(routing_owner_dropped(&f->owner), 0);
    assert_int_equal(routing_in_flight_locked(f->r), 1);
    n = encode_tagged(buf, "ok");
    m = message_to(4, buf, (size_t)n);
    routing_on_message(f->r, &f->owner, &m);
    assert_int_equal(t.done, 1);
    assert_int_equal(t.messages, 2);
    call_clear(&t.c);
}

static void test_expire_ends_only_calls_past_their_deadline(void **state) {
    fixture *f = *state;
    tcall early, late;
    start(f, &early, 5, 1000);
    start(f, &late, 6, 2000);
    assert_int_equal(routing_next_deadline_locked(f->r), 1000);
    routing_expire(f->r, 999);
    assert_int_equal(early.done, 0);
    routing_expire(f->r, 1000);
    assert_int_equal(early.done, 1);
    assert_int_equal(early.outcome, CALL_TIMEOUT);
    assert_string_equal(early.c.detail, "no reply within the call's timeout");
    assert_int_equal(late.done, 0);
    assert_int_equal(routing_next_deadline_locked(f->r), 2000);
    routing_fail_owner(f->r, &f->owner, CALL_UNAVAILABLE, "down");
    assert_int_equal(late.done, 1);
    assert_int_equal(late.outcome, CALL_UNAVAILABLE);
    assert_string_equal(late.c.detail, "down");
    assert_int_equal(routing_next_deadline_locked(f->r), INT64_MAX);
}

/* Metrics: every way a call ends is counted once under its outcome, with its latency. */
static void test_each_ending_is_counted_by_outcome_with_its_latency(void **state) {
    fixture *f = *state;
    tcall replied, expired, cancelled, failed;
    start(f, &replied, 20, INT64_MAX);
    start(f, &expired, 21, 1000);
    start(f, &cancelled, 22, INT64_MAX);
    start(f, &failed, 23, INT64_MAX);
    char buf[64];
    int n = encode_tagged(buf, "ok");
    dist_message m = message_to(20, buf, (size_t)n);
    routing_on_message(f->r, &f->owner, &m);
    routing_expire(f->r, 1000);
    assert_true(routing_cancel(f->r, &cancelled.c));
    routing_run_cancels(f->r);
    routing_fail_owner(f->r, &f->owner, CALL_UNAVAILABLE, "down");
    routing_on_message(f->r, &f->owner, &m); /* late: no call */
    const routing_stats *st = routing_owner_stats(&f->owner);
    assert_int_equal(st->outcomes[CALL_REPLIED], 1);
    assert_int_equal(st->outcomes[CALL_TIMEOUT], 1);
    assert_int_equal(st->outcomes[CALL_CANCELLED], 1);
    assert_int_equal(st->outcomes[CALL_UNAVAILABLE], 1);
    assert_int_equal(st->outcomes[CALL_SHUTDOWN], 0);
    uint64_t in_buckets = 0;
    for (size_t b = 0; b < ROUTING_LATENCY_BUCKETS; b++) in_buckets += st->latency[b];
    assert_int_equal(in_buckets, 4);
    assert_int_equal(st->dropped_unmatched, 1);
    assert_int_equal(st->dropped_filtered, 0);
    routing_stats sum = {0};
    routing_stats_add(&sum, st);
    routing_stats_add(&sum, st);
    assert_int_equal(sum.outcomes[CALL_REPLIED], 2);
    assert_int_equal(sum.dropped_unmatched, 2);
    call_clear(&replied.c);
}

static void test_latency_buckets_follow_their_bounds(void **state) {
    (void)state;
    assert_int_equal(routing_latency_bucket(0), 0);
    assert_int_equal(routing_latency_bucket(100), 0); /* le: a bound holds itself */
    assert_int_equal(routing_latency_bucket(101), 1);
    assert_int_equal(routing_latency_bucket(10000000), ROUTING_LATENCY_BUCKETS - 2);
    assert_int_equal(routing_latency_bucket(10000001), ROUTING_LATENCY_BUCKETS - 1);
    for (size_t b = 1; b + 1 < ROUTING_LATENCY_BUCKETS; b++)
        assert_true(routing_latency_bounds_us[b] > routing_latency_bounds_us[b - 1]);
}

static void test_cancel_is_taken_once_and_ends_the_call_in_run_cancels(void **state) {
    fixture *f = *state;
    tcall t;
    start(f, &t, 7, INT64_MAX);
    assert_true(routing_cancel(f->r, &t.c));
    assert_false(routing_cancel(f->r, &t.c));
    assert_int_equal(t.done, 0);
    routing_run_cancels(f->r);
    assert_int_equal(t.done, 1);
    assert_int_equal(t.outcome, CALL_CANCELLED);
    assert_false(routing_cancel(f->r, &t.c)); /* ended: nothing to take */
    routing_run_cancels(f->r);
    assert_int_equal(t.done, 1);
}

static void test_a_cancelled_call_that_ends_otherwise_leaves_the_cancel_list(void **state) {
    fixture *f = *state;
    tcall t;
    start(f, &t, 8, 10);
    assert_true(routing_cancel(f->r, &t.c));
    routing_expire(f->r, 10);
    assert_int_equal(t.done, 1);
    assert_int_equal(t.outcome, CALL_TIMEOUT);
    routing_run_cancels(f->r); /* must not touch the ended call again */
    assert_int_equal(t.done, 1);
}

static void test_outboxes_lists_the_calls_waiting_for_a_connection(void **state) {
    fixture *f = *state;
    tcall a, b;
    start(f, &a, 9, INT64_MAX);
    start(f, &b, 10, INT64_MAX);
    call **waiting;
    pthread_mutex_lock(&f->mu);
    assert_int_equal(routing_owner_outboxes_locked(&f->owner, &waiting), 0);
    assert_null(waiting);
    b.c.outbox = malloc(1);
    assert_int_equal(routing_owner_outboxes_locked(&f->owner, &waiting), 1);
    pthread_mutex_unlock(&f->mu);
    assert_ptr_equal(waiting[0], &b.c);
    free(waiting);
    routing_fail_owner(f->r, &f->owner, CALL_SHUTDOWN, NULL);
    assert_int_equal(a.done + b.done, 2);
    call_clear(&b.c);
}

static void test_a_reply_over_another_connection_or_to_an_earlier_run_is_dropped(void **state) {
    fixture *f = *state;
    tcall t;
    start(f, &t, 11, INT64_MAX);
    char buf[64];
    int n = encode_tagged(buf, "ok");
    dist_message m = message_to(11, buf, (size_t)n);
    /* Another C-node's connection names our call's pid: not its call to complete. */
    routing_owner other;
    routing_owner_init(&other, &f->cfg, "c2@host");
    routing_on_message(f->r, &other, &m);
    assert_int_equal(t.done, 0);
    assert_int_equal(routing_owner_dropped(&other), 1);
    /* A connection of no owner: neither. */
    routing_on_message(f->r, NULL, &m);
    assert_int_equal(t.done, 0);
    assert_int_equal(routing_dropped_unknown_locked(f->r), 1);
    /* The right connection, but the pid of an earlier nodexd run (another creation). */
    m.to.creation = 6;
    routing_on_message(f->r, &f->owner, &m);
    assert_int_equal(t.done, 0);
    assert_int_equal(routing_owner_dropped(&f->owner), 1);
    m.to.creation = 7;
    routing_on_message(f->r, &f->owner, &m);
    assert_int_equal(t.done, 1);
    assert_int_equal(t.outcome, CALL_REPLIED);
    call_clear(&t.c);
}

static int monitor_ends;
static void on_monitor_end(call *c, routing_owner *o, void *ctx) {
    (void)ctx;
    assert_true(c->registered == false);
    assert_non_null(o);
    monitor_ends++;
}

/* A gen_call with its monitor open and a ref made from its pid. */
static void start_gen_call(fixture *f, tcall *t, unsigned num, int64_t deadline) {
    f->cfg.protocol = CNODE_PROTOCOL_GEN_CALL;
    f->cfg.registered_name = "example_server";
    start(f, t, num, deadline);
    routing_make_ref(&t->c.pid, 77, &t->c.ref);
    t->c.monitored = true;
}

static void test_a_monitor_exit_ends_its_gen_call_with_the_reason(void **state) {
    fixture *f = *state;
    monitor_ends = 0;
    routing_set_monitor_end(f->r, on_monitor_end, NULL);
    tcall t;
    start_gen_call(f, &t, 12, INT64_MAX);
    char reason[32];
    int n = 0;
    ei_encode_atom(reason, &n, "noproc");
    dist_message m = {.type = 21,
                      .to_pid = true,
                      .monitor_exit = true,
                      .to = pid_of(12),
                      .msg = reason,
                      .msg_len = (size_t)n};
    /* Another monitor's ref: not this call's. */
    m.ref = ref_of(1, 2, 3);
    routing_on_message(f->r, &f->owner, &m);
    assert_int_equal(t.done, 0);
    m.ref = t.c.ref;
    routing_on_message(f->r, &f->owner, &m);
    assert_int_equal(t.done, 1);
    assert_int_equal(t.outcome, CALL_UNAVAILABLE);
    assert_non_null(strstr(t.c.detail, "example_server"));
    assert_non_null(strstr(t.c.detail, "noproc"));
    assert_int_equal(monitor_ends, 0); /* the peer ended that monitor itself */
    call_clear(&t.c);
}

static void test_a_reply_to_the_calls_alias_completes_it_and_ends_the_monitor(void **state) {
    fixture *f = *state;
    monitor_ends = 0;
    routing_set_monitor_end(f->r, on_monitor_end, NULL);
    tcall t;
    start_gen_call(f, &t, 13, INT64_MAX);
    char buf[128];
    int n = encode_ref_reply(buf, &t.c.ref);
    dist_message m = {
        .type = 33, .to_alias = true, .ref = t.c.ref, .msg = buf, .msg_len = (size_t)n};
    routing_on_message(f->r, &f->owner, &m);
    assert_int_equal(t.done, 1);
    assert_int_equal(t.outcome, CALL_REPLIED);
    assert_int_equal(decode_long_at(t.c.reply, (long)t.c.reply_offset), 42);
    assert_int_equal(monitor_ends, 1);
    call_clear(&t.c);
    /* An alias no call holds is dropped. */
    m.ref.n[2] = 78;
    routing_on_message(f->r, &f->owner, &m);
    assert_int_equal(routing_owner_dropped(&f->owner), 1);
}

static void test_timeouts_and_cancels_end_the_monitor_and_a_failed_owner_does_not(void **state) {
    fixture *f = *state;
    monitor_ends = 0;
    routing_set_monitor_end(f->r, on_monitor_end, NULL);
    tcall a, b, c;
    start_gen_call(f, &a, 14, 5);
    start_gen_call(f, &b, 15, INT64_MAX);
    start_gen_call(f, &c, 16, INT64_MAX);
    routing_expire(f->r, 5);
    assert_int_equal(a.outcome, CALL_TIMEOUT);
    assert_int_equal(monitor_ends, 1);
    routing_cancel(f->r, &b.c);
    routing_run_cancels(f->r);
    assert_int_equal(monitor_ends, 2);
    routing_fail_owner(f->r, &f->owner, CALL_UNAVAILABLE, "down");
    assert_int_equal(monitor_ends, 2);
    assert_int_equal(a.done + b.done + c.done, 3);
}

static void test_take_moves_the_oldest_waiting_calls_in_order(void **state) {
    fixture *f = *state;
    tcall t[4];
    for (unsigned i = 0; i < 4; i++) start(f, &t[i], 20 + i, INT64_MAX);
    routing_owner up;
    routing_owner_init(&up, &f->cfg, "c2@host");
    call **taken;
    pthread_mutex_lock(&f->mu);
    assert_int_equal(routing_owner_take_locked(&f->owner, &up, 3, &taken), 3);
    assert_int_equal(routing_owner_in_flight(&f->owner), 1);
    assert_int_equal(routing_owner_in_flight(&up), 3);
    assert_int_equal(routing_owner_calls_total(&up), 3);
    pthread_mutex_unlock(&f->mu);
    for (unsigned i = 0; i < 3; i++) {
        assert_ptr_equal(taken[i], &t[i].c);
        assert_ptr_equal(t[i].c.cnode, &up);
    }
    free(taken);
    /* A reply now comes over the connection of the owner it moved to. */
    char buf[64];
    int n = encode_tagged(buf, "ok");
    dist_message m = message_to(20, buf, (size_t)n);
    routing_on_message(f->r, &up, &m);
    assert_int_equal(t[0].done, 1);
    call_clear(&t[0].c);
    routing_fail_owner(f->r, &up, CALL_SHUTDOWN, NULL);
    routing_fail_owner(f->r, &f->owner, CALL_SHUTDOWN, NULL);
    for (unsigned i = 0; i < 4; i++) assert_int_equal(t[i].done, 1);
}

static void test_a_call_that_times_out_unsent_says_its_target_never_came_up(void **state) {
    fixture *f = *state;
    tcall sent, unsent;
    start(f, &sent, 30, 100);
    start(f, &unsent, 31, 100);
    unsent.c.outbox = malloc(4);
    unsent.c.outbox_len = 4;
    routing_expire(f->r, 100);
    assert_int_equal(sent.outcome, CALL_TIMEOUT);
    assert_int_equal(unsent.outcome, CALL_TIMEOUT);
    assert_string_equal(sent.c.detail, "no reply within the call's timeout");
    assert_string_equal(unsent.c.detail, ROUTING_NOT_SENT);
    call_clear(&unsent.c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_tagged_finds_the_reply_after_its_tag),
        cmocka_unit_test(test_match_ref_finds_a_gen_call_reply_to_its_own_ref_only),
        cmocka_unit_test(test_match_reply_follows_protocol_and_filter),
        cmocka_unit_test(test_net_kernel_is_auth_is_answered_yes_with_the_tag_verbatim),
        cmocka_unit_test_setup_teardown(test_tagged_reply_completes_its_call_with_the_reply_bytes,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_gen_call_reply_matches_by_ref, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_unmatched_messages_are_counted_as_dropped_where_they_belong, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streaming_call_gets_other_messages_and_stays_in_flight,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_each_ending_is_counted_by_outcome_with_its_latency,
                                        setup, teardown),
        cmocka_unit_test(test_latency_buckets_follow_their_bounds),
        cmocka_unit_test_setup_teardown(test_expire_ends_only_calls_past_their_deadline, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cancel_is_taken_once_and_ends_the_call_in_run_cancels,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_cancelled_call_that_ends_otherwise_leaves_the_cancel_list, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_reply_over_another_connection_or_to_an_earlier_run_is_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_monitor_exit_ends_its_gen_call_with_the_reason,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_reply_to_the_calls_alias_completes_it_and_ends_the_monitor, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_timeouts_and_cancels_end_the_monitor_and_a_failed_owner_does_not, setup, teardown),
        cmocka_unit_test_setup_teardown(test_take_moves_the_oldest_waiting_calls_in_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_a_call_that_times_out_unsent_says_its_target_never_came_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outboxes_lists_the_calls_waiting_for_a_connection,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
