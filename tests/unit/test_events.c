/* test_events: seq numbering with and without subscribers, the stamped fields, fan-out, and the
 * unsubscribe guarantees (never called again; waits for a callback that is running). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "events.h"

typedef struct seen {
    size_t n;
    uint64_t seqs[16];
    cnode_state states[16];
    int64_t times[16];
    char names[16][32];
} seen;

static void record(const gateway_event *e, void *ctx) {
    seen *s = ctx;
    if (s->n >= 16) return;
    s->seqs[s->n] = e->seq;
    s->states[s->n] = e->state;
    s->times[s->n] = e->time_ms;
    snprintf(s->names[s->n], sizeof s->names[0], "%.20s", e->name);
    s->n++;
}

static gateway_event event_of(const char *name, cnode_state st) {
    gateway_event e = {.state = st};
    snprintf(e.name, sizeof e.name, "%s", name);
    return e;
}

static void test_seq_increases_by_one_even_without_subscribers(void **state) {
    (void)state;
    events *ev = events_new();
    assert_non_null(ev);
    gateway_event e = event_of("a", CNODE_UP);
    assert_int_equal(events_emit(ev, &e), 1);
    assert_int_equal(e.seq, 1);
    assert_int_equal(events_emit(ev, &e), 2);
    seen s = {0};
    assert_true(events_subscribe(ev, record, &s) > 0);
    e = event_of("b", CNODE_DOWN);
    assert_int_equal(events_emit(ev, &e), 3);
    /* Numbering went on while nobody listened: the first event seen is 3, not 1. */
    assert_int_equal(s.n, 1);
    assert_int_equal(s.seqs[0], 3);
    assert_int_equal(s.states[0], CNODE_DOWN);
    assert_string_equal(s.names[0], "b");
    events_free(ev);
}

static void test_emit_stamps_the_wall_clock(void **state) {
    (void)state;
    events *ev = events_new();
    seen s = {0};
    events_subscribe(ev, record, &s);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t before = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    gateway_event e = event_of("a", CNODE_STARTING);
    e.time_ms = -1;
    events_emit(ev, &e);
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t after = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    assert_int_equal(s.n, 1);
    assert_true(s.times[0] >= before && s.times[0] <= after);
    assert_int_equal(e.time_ms, s.times[0]);
    events_free(ev);
}

static void test_every_subscriber_gets_every_event_with_its_own_ctx(void **state) {
    (void)state;
    events *ev = events_new();
    seen a = {0}, b = {0};
    uint64_t ia = events_subscribe(ev, record, &a);
    uint64_t ib = events_subscribe(ev, record, &b);
    assert_true(ia > 0 && ib > 0 && ia != ib);
    for (int i = 0; i < 3; i++) {
        gateway_event e = event_of("x", CNODE_UP);
        events_emit(ev, &e);
    }
    assert_int_equal(a.n, 3);
    assert_int_equal(b.n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(a.seqs[i], i + 1);
        assert_int_equal(b.seqs[i], i + 1);
    }
    events_free(ev); /* frees the subscriptions still there */
}

static void test_unsubscribed_fn_never_runs_again_and_ids_are_not_reused(void **state) {
    (void)state;
    events *ev = events_new();
    seen a = {0}, b = {0};
    uint64_t ia = events_subscribe(ev, record, &a);
    uint64_t ib = events_subscribe(ev, record, &b);
    gateway_event e = event_of("x", CNODE_UP);
    events_emit(ev, &e);
    events_unsubscribe(ev, ia);
    events_unsubscribe(ev, ia);     /* twice: ignored */
    events_unsubscribe(ev, 999999); /* unknown: ignored */
    events_emit(ev, &e);
    assert_int_equal(a.n, 1);
    assert_int_equal(b.n, 2);
    uint64_t ic = events_subscribe(ev, record, &a);
    assert_true(ic != ia && ic != ib);
    events_emit(ev, &e);
    assert_int_equal(a.n, 2);
    assert_int_equal(a.seqs[1], 3);
    events_unsubscribe(ev, ib);
    events_unsubscribe(ev, ic);
    events_emit(ev, &e);
    assert_int_equal(a.n, 2);
    assert_int_equal(b.n, 3);
    events_free(ev);
}

/* A callback that blocks until released, to prove unsubscribe waits for it. */
typedef struct slow {
    atomic_bool entered, release, returned;
} slow;

static void slow_fn(const gateway_event *e, void *ctx) {
    (void)e;
    slow *s = ctx;
    atomic_store(&s->entered, true);
    while (!atomic_load(&s->release)) usleep(1000);
    atomic_store(&s->returned, true);
}

typedef struct emitter {
    events *ev;
} emitter;

static void *emit_main(void *arg) {
    emitter *m = arg;
    gateway_event e = event_of("x", CNODE_UP);
    events_emit(m->ev, &e);
    return NULL;
}

typedef struct unsubscriber {
    events *ev;
    uint64_t id;
    atomic_bool done;
} unsubscriber;

static void *unsubscribe_main(void *arg) {
    unsubscriber *u = arg;
    events_unsubscribe(u->ev, u->id);
    atomic_store(&u->done, true);
    return NULL;
}

static void test_unsubscribe_waits_for_a_running_callback(void **state) {
    (void)state;
    events *ev = events_new();
    slow s = {0};
    uint64_t id = events_subscribe(ev, slow_fn, &s);
    emitter m = {ev};
    pthread_t te, tu;
    assert_int_equal(pthread_create(&te, NULL, emit_main, &m), 0);
    while (!atomic_load(&s.entered)) usleep(1000);
    unsubscriber u = {.ev = ev, .id = id};
    assert_int_equal(pthread_create(&tu, NULL, unsubscribe_main, &u), 0);
    usleep(50000);
    /* The callback still runs: unsubscribe has not returned. */
    assert_false(atomic_load(&u.done));
    atomic_store(&s.release, true);
    pthread_join(tu, NULL);
    /* Once it returned, the callback had finished. */
    assert_true(atomic_load(&s.returned));
    pthread_join(te, NULL);
    events_free(ev);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seq_increases_by_one_even_without_subscribers),
        cmocka_unit_test(test_emit_stamps_the_wall_clock),
        cmocka_unit_test(test_every_subscriber_gets_every_event_with_its_own_ctx),
        cmocka_unit_test(test_unsubscribed_fn_never_runs_again_and_ids_are_not_reused),
        cmocka_unit_test(test_unsubscribe_waits_for_a_running_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
