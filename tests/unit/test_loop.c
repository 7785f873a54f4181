/* test_loop: fd readiness and writability, watches removed mid-batch, wake-ups from another
 * thread, signals through the signalfd, timers (due order, re-arm, disarm) and poll deadlines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static loop *new_loop(void) {
    static const int signals[] = {SIGCHLD};
    char err[128];
    loop *l = loop_new(signals, 1, err, sizeof err);
    if (!l) fail_msg("loop_new: %s", err);
    return l;
}

typedef struct hits {
    int n;
    unsigned ready[8];
} hits;

static void on_ready(void *ctx, unsigned ready) {
    hits *h = ctx;
    if (h->n < 8) h->ready[h->n] = ready;
    h->n++;
}

static void test_readable_fd_runs_its_callback_until_drained(void **state) {
    (void)state;
    loop *l = new_loop();
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    hits h = {0};
    loop_watch *w = loop_watch_add(l, sv[0], on_ready, &h);
    assert_non_null(w);
    assert_int_equal(loop_poll(l, now_ms(), false), 0); /* nothing yet: a past deadline, no wait */
    assert_int_equal(h.n, 0);
    assert_int_equal(write(sv[1], "x", 1), 1);
    assert_int_equal(loop_poll(l, now_ms() + 1000, false), 1);
    assert_int_equal(h.n, 1);
    assert_int_equal(h.ready[0], LOOP_READABLE);
    /* Level-triggered: still readable, so reported again. */
    assert_int_equal(loop_poll(l, now_ms() + 1000, false), 1);
    assert_int_equal(h.n, 2);
    char c;
    assert_int_equal(read(sv[0], &c, 1), 1);
    assert_int_equal(loop_poll(l, now_ms(), false), 0);
    assert_int_equal(h.n, 2);
    loop_watch_remove(l, w);
    loop_free(l);
    close(sv[0]);
    close(sv[1]);
}

static void test_writable_is_reported_only_while_asked_for(void **state) {
    (void)state;
    loop *l = new_loop();
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    hits h = {0};
    loop_watch *w = loop_watch_add(l, sv[0], on_ready, &h);
    assert_int_equal(loop_poll(l, now_ms(), false), 0);
    assert_int_equal(loop_watch_set_writable(l, w, true), 0);
    assert_int_equal(loop_watch_set_writable(l, w, true), 0); /* twice: no change */
    assert_int_equal(loop_poll(l, now_ms() + 1000, false), 1);
    assert_int_equal(h.n, 1);
    assert_int_equal(h.ready[0], LOOP_WRITABLE);
    assert_int_equal(loop_watch_set_writable(l, w, false), 0);
    assert_int_equal(loop_poll(l, now_ms(), false), 0);
    assert_int_equal(h.n, 1);
    loop_free(l); /* frees the watch still registered */
    close(sv[0]);
    close(sv[1]);
}

/* Two readable fds: whichever callback runs first removes the other's watch. */
typedef struct pair {
    loop *l;
    loop_watch *w[2];
    int calls[2];
} pair;

static void remove_other(pair *p, int me) {
    p->calls[me]++;
    loop_watch_remove(p->l, p->w[1 - me]);
    p->w[1 - me] = NULL;
}

static void on_first(void *ctx, unsigned ready) {
    (void)ready;
    remove_other(ctx, 0);
}

static void on_second(void *ctx, unsigned ready) {
    (void)ready;
    remove_other(ctx, 1);
}

static void test_a_watch_removed_in_the_batch_is_not_called_for_it(void **state) {
    (void)state;
    loop *l = new_loop();
    int a[2], b[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, a), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, b), 0);
    pair p = {.l = l};
    p.w[0] = loop_watch_add(l, a[0], on_first, &p);
    p.w[1] = loop_watch_add(l, b[0], on_second, &p);
    assert_int_equal(write(a[1], "x", 1), 1);
    assert_int_equal(write(b[1], "x", 1), 1);
    assert_int_equal(loop_poll(l, now_ms() + 1000, false), 2);
    assert_int_equal(p.calls[0] + p.calls[1], 1);
    /* And never afterwards, though its fd stays readable. */
    assert_int_equal(loop_poll(l, now_ms() + 50, false), 1);
    assert_int_equal(p.calls[0] + p.calls[1], 2);
    loop_free(l);
    for (int i = 0; i < 2; i++) close(a[i]), close(b[i]);
}

static void on_wake(void *ctx) {
    atomic_int *n = ctx;
    atomic_fetch_add(n, 1);
}

static void *wake_later(void *arg) {
    usleep(20000);
    loop_wake(arg);
    return NULL;
}

static void test_wake_from_another_thread_ends_the_wait_and_runs_on_wake_once(void **state) {
    (void)state;
    loop *l = new_loop();
    atomic_int wakes = 0;
    loop_on_wake(l, on_wake, &wakes);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, wake_later, l), 0);
    assert_int_equal(loop_poll(l, INT64_MAX, false), 1); /* no deadline: only the wake ends it */
    pthread_join(t, NULL);
    assert_int_equal(atomic_load(&wakes), 1);
    /* Several wakes before a poll: one callback. */
    loop_wake(l);
    loop_wake(l);
    loop_wake(l);
    assert_int_equal(loop_poll(l, now_ms() + 1000, false), 1);
    assert_int_equal(atomic_load(&wakes), 2);
    assert_int_equal(loop_poll(l, now_ms(), false), 0);
    assert_int_equal(atomic_load(&wakes), 2);
    loop_free(l);
}

static void on_signal(void *ctx, int signo) {
    int *got = ctx;
    *got = signo;
}

static void test_a_blocked_signal_arrives_through_the_loop(void **state) {
    (void)state;
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    loop *l = new_loop();
    int got = 0;
    loop_on_signal(l, on_signal, &got);
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    assert_true(pid > 0);
    int64_t deadline = now_ms() + 5000;
    while (got == 0 && now_ms() < deadline) loop_poll(l, deadline, false);
    assert_int_equal(got, SIGCHLD);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    loop_free(l);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

typedef struct timer_log {
    loop_timer *self;
    int *order;
    int *n;
    int id;
    int64_t rearm; /* re-arm own timer for this when > 0 */
} timer_log;

static void on_timer(void *ctx) {
    timer_log *t = ctx;
    t->order[(*t->n)++] = t->id;
    if (t->rearm) loop_timer_arm(t->self, t->rearm);
}

/* A timer that logs its id to order[*n] when it runs. */
static void add_timer(loop *l, timer_log *t, int *order, int *n, int id) {
    *t = (timer_log){.order = order, .n = n, .id = id};
    t->self = loop_timer_new(l, on_timer, t);
    assert_non_null(t->self);
}

static void test_timers_run_when_due_earliest_first_and_once(void **state) {
    (void)state;
    loop *l = new_loop();
    int order[8], n = 0;
    timer_log a, b, c;
    add_timer(l, &a, order, &n, 1);
    add_timer(l, &b, order, &n, 2);
    add_timer(l, &c, order, &n, 3);
    assert_int_equal(loop_timer_due(a.self), INT64_MAX); /* disarmed when new */
    loop_timer_arm(a.self, 300);
    loop_timer_arm(b.self, 100);
    loop_timer_arm(c.self, 200);
    assert_int_equal(loop_run_timers(l, 99), 0);
    assert_int_equal(loop_run_timers(l, 250), 2);
    assert_int_equal(n, 2);
    assert_int_equal(order[0], 2);
    assert_int_equal(order[1], 3);
    assert_int_equal(loop_timer_due(b.self), INT64_MAX); /* ran: disarmed */
    assert_int_equal(loop_run_timers(l, 250), 0);        /* not again */
    loop_timer_arm(a.self, INT64_MAX);                   /* disarm */
    assert_int_equal(loop_run_timers(l, 1000), 0);
    assert_int_equal(n, 2);
    loop_free(l);
}

static void test_a_timer_rearmed_for_now_waits_for_the_next_run(void **state) {
    (void)state;
    loop *l = new_loop();
    int order[8], n = 0;
    timer_log a;
    add_timer(l, &a, order, &n, 1);
    a.rearm = 5;
    loop_timer_arm(a.self, 10);
    assert_int_equal(loop_run_timers(l, 10), 1); /* re-armed for 5 <= 10: not run again now */
    assert_int_equal(loop_timer_due(a.self), 5);
    a.rearm = 0;
    assert_int_equal(loop_run_timers(l, 10), 1);
    assert_int_equal(n, 2);
    loop_free(l);
}

static void test_poll_returns_by_the_earliest_timer_or_deadline(void **state) {
    (void)state;
    loop *l = new_loop();
    int order[8], n = 0;
    timer_log a;
    add_timer(l, &a, order, &n, 1);
    int64_t t0 = now_ms();
    loop_timer_arm(a.self, t0 + 30);
    /* No deadline of its own: the timer bounds the wait; poll does not run it. */
    assert_int_equal(loop_poll(l, INT64_MAX, false), 0);
    assert_true(now_ms() >= t0 + 30);
    assert_int_equal(n, 0);
    assert_int_equal(loop_run_timers(l, now_ms()), 1);
    /* Disarmed timers do not bound it: the deadline does. */
    t0 = now_ms();
    assert_int_equal(loop_poll(l, t0 + 20, true), 0);
    assert_true(now_ms() >= t0 + 20);
    loop_free(l);
}

static void *on_thread_main(void *arg) {
    return (void *)(intptr_t)loop_on_thread(arg);
}

static void test_on_thread_is_true_only_on_the_entered_thread(void **state) {
    (void)state;
    loop *l = new_loop();
    assert_false(loop_on_thread(l));
    loop_enter(l);
    assert_true(loop_on_thread(l));
    pthread_t t;
    void *rc;
    assert_int_equal(pthread_create(&t, NULL, on_thread_main, l), 0);
    pthread_join(t, &rc);
    assert_false((intptr_t)rc);
    loop_leave(l);
    assert_false(loop_on_thread(l));
    loop_free(l);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_readable_fd_runs_its_callback_until_drained),
        cmocka_unit_test(test_writable_is_reported_only_while_asked_for),
        cmocka_unit_test(test_a_watch_removed_in_the_batch_is_not_called_for_it),
        cmocka_unit_test(test_wake_from_another_thread_ends_the_wait_and_runs_on_wake_once),
        cmocka_unit_test(test_a_blocked_signal_arrives_through_the_loop),
        cmocka_unit_test(test_timers_run_when_due_earliest_first_and_once),
        cmocka_unit_test(test_a_timer_rearmed_for_now_waits_for_the_next_run),
        cmocka_unit_test(test_poll_returns_by_the_earliest_timer_or_deadline),
        cmocka_unit_test(test_on_thread_is_true_only_on_the_entered_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
