/* loop: the event loop: fd readiness (epoll), wake-ups from any thread, signals, timers. */
#include "loop.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#ifndef LOOP_BUSY_POLL_US
#define LOOP_BUSY_POLL_US 100 /* after traffic, poll this long before sleeping (0: never) */
#endif
#define LOOP_BATCH 64

struct loop_watch {
    int fd;
    loop_fd_fn fn;
    void *ctx;
    bool writable;                  /* registered for EPOLLOUT */
    bool removed;                   /* freed at the end of the current (or next) loop_poll */
    struct loop_watch *prev, *next; /* in l->watches, or (next only) in l->removed */
};

struct loop_timer {
    int64_t due_ms;
    unsigned pass; /* the loop_run_timers pass that last ran it */
    loop_fn fn;
    void *ctx;
    struct loop_timer *next;
};

struct loop {
    int epfd, wake_fd, sig_fd;
    loop_watch wake_watch, sig_watch; /* fn NULL: told apart by address */
    loop_fn on_wake;
    void *wake_ctx;
    loop_signal_fn on_signal;
    void *signal_ctx;
    loop_watch *watches; /* live watches, so loop_free can free them */
    loop_watch *removed; /* removed watches, freed after the batch */
    loop_timer *timers;
    unsigned timer_pass;
    int64_t spin_until_us;
    pthread_t thread;
    atomic_bool entered;
};

static int64_t loop_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t loop_now_ms(void) {
    return loop_now_us() / 1000;
}

static int loop_epoll_add(loop *l, int fd, loop_watch *w) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = w};
    return epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
}

loop *loop_new(const int *signals, size_t signal_count, char *err, size_t err_len) {
    loop *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < signal_count; i++) sigaddset(&set, signals[i]);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    l->sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    l->wake_watch.fd = l->wake_fd;
    l->sig_watch.fd = l->sig_fd;
    atomic_init(&l->entered, false);
    if (l->epfd < 0 || l->wake_fd < 0 || l->sig_fd < 0 ||
        loop_epoll_add(l, l->wake_fd, &l->wake_watch) != 0 ||
        loop_epoll_add(l, l->sig_fd, &l->sig_watch) != 0) {
        snprintf(err, err_len, "event loop setup: %s", strerror(errno));
        loop_free(l);
        return NULL;
    }
    return l;
}

static void loop_free_removed(loop *l) {
    while (l->removed) {
        loop_watch *w = l->removed;
        l->removed = w->next;
        free(w);
    }
}

void loop_free(loop *l) {
    if (!l) return;
    loop_free_removed(l);
    while (l->watches) {
        loop_watch *w = l->watches;
        l->watches = w->next;
        free(w);
    }
    while (l->timers) {
        loop_timer *t = l->timers;
        l->timers = t->next;
        free(t);
    }
    if (l->epfd >= 0) close(l->epfd);
    if (l->wake_fd >= 0) close(l->wake_fd);
    if (l->sig_fd >= 0) close(l->sig_fd);
    free(l);
}

void loop_on_wake(loop *l, loop_fn fn, void *ctx) {
    l->on_wake = fn;
    l->wake_ctx = ctx;
}

void loop_on_signal(loop *l, loop_signal_fn fn, void *ctx) {
    l->on_signal = fn;
    l->signal_ctx = ctx;
}

loop_watch *loop_watch_add(loop *l, int fd, loop_fd_fn fn, void *ctx) {
    loop_watch *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    *w = (loop_watch){.fd = fd, .fn = fn, .ctx = ctx, .next = l->watches};
    if (loop_epoll_add(l, fd, w) != 0) {
        free(w);
        return NULL;
    }
    if (l->watches) l->watches->prev = w;
    l->watches = w;
    return w;
}

int loop_watch_set_writable(loop *l, loop_watch *w, bool on) {
    if (w->writable == on) return 0;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = w};
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, w->fd, &ev) != 0) return -1;
    w->writable = on;
    return 0;
}

void loop_watch_remove(loop *l, loop_watch *w) {
    if (!w || w->removed) return;
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->removed = true;
    if (w->prev)
        w->prev->next = w->next;
    else
        l->watches = w->next;
    if (w->next) w->next->prev = w->prev;
    w->prev = NULL;
    w->next = l->removed;
    l->removed = w;
}

loop_timer *loop_timer_new(loop *l, loop_fn fn, void *ctx) {
    loop_timer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    *t = (loop_timer){.due_ms = INT64_MAX, .fn = fn, .ctx = ctx, .next = l->timers};
    l->timers = t;
    return t;
}

void loop_timer_arm(loop_timer *t, int64_t due_ms) {
    t->due_ms = due_ms;
}

int64_t loop_timer_due(const loop_timer *t) {
    return t->due_ms;
}

int loop_run_timers(loop *l, int64_t now_ms) {
    unsigned pass = ++l->timer_pass;
    int ran = 0;
    for (;;) {
        loop_timer *first = NULL;
        for (loop_timer *t = l->timers; t; t = t->next)
            if (t->pass != pass && t->due_ms <= now_ms && (!first || t->due_ms < first->due_ms))
                first = t;
        if (!first) return ran;
        first->pass = pass;
        first->due_ms = INT64_MAX;
        first->fn(first->ctx);
        ran++;
    }
}

static void loop_read_wake(loop *l) {
    uint64_t v;
    ssize_t r = read(l->wake_fd, &v, sizeof v);
    (void)r;
    if (l->on_wake) l->on_wake(l->wake_ctx);
}

static void loop_read_signals(loop *l) {
    struct signalfd_siginfo si;
    while (read(l->sig_fd, &si, sizeof si) == sizeof si)
        if (l->on_signal) l->on_signal(l->signal_ctx, (int)si.ssi_signo);
}

int loop_poll(loop *l, int64_t deadline_ms, bool may_spin) {
    for (const loop_timer *t = l->timers; t; t = t->next)
        if (t->due_ms < deadline_ms) deadline_ms = t->due_ms;
    int64_t now = loop_now_ms();
    int timeout = -1;
    if (deadline_ms != INT64_MAX)
        timeout = deadline_ms <= now
                      ? 0
                      : (int)(deadline_ms - now < INT_MAX ? deadline_ms - now : INT_MAX);
    struct epoll_event events[LOOP_BATCH];
    int n = 0;
    if (timeout != 0 && may_spin)
        while (n == 0 && loop_now_us() < l->spin_until_us)
            n = epoll_wait(l->epfd, events, LOOP_BATCH, 0);
    if (n == 0) n = epoll_wait(l->epfd, events, LOOP_BATCH, timeout);
    if (n > 0) l->spin_until_us = loop_now_us() + LOOP_BUSY_POLL_US;
    if (n < 0) return errno == EINTR ? 0 : -1;
    for (int i = 0; i < n; i++) {
        loop_watch *w = events[i].data.ptr;
        if (w == &l->wake_watch) {
            loop_read_wake(l);
        } else if (w == &l->sig_watch) {
            loop_read_signals(l);
        } else {
            unsigned ready = (events[i].events & EPOLLOUT ? LOOP_WRITABLE : 0) |
                             (events[i].events & ~(uint32_t)EPOLLOUT ? LOOP_READABLE : 0);
            if (!w->removed) w->fn(w->ctx, ready);
        }
    }
    loop_free_removed(l);
    return n;
}

void loop_wake(loop *l) {
    uint64_t one = 1;
    ssize_t n = write(l->wake_fd, &one, sizeof one);
    (void)n; /* a full counter still wakes the loop */
}

void loop_enter(loop *l) {
    l->thread = pthread_self();
    atomic_store(&l->entered, true);
}

void loop_leave(loop *l) {
    atomic_store(&l->entered, false);
}

bool loop_on_thread(const loop *l) {
    return atomic_load(&l->entered) && pthread_equal(pthread_self(), l->thread);
}
