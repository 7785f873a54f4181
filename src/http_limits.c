/* http_limits: header and body deadlines per HTTP connection, one budget for buffered bodies. */
#include "http_limits.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>

struct http_limits_conn {
    int fd;
    bool cut;         /* under the lock: shut down already */
    atomic_llong due; /* deadline_ms << 1 | (1 while the body is awaited); 0: none */
    http_limits_conn *prev, *next;
};

struct http_limits {
    unsigned header_timeout_ms, body_timeout_ms;
    size_t budget;
    atomic_size_t buffered;
    atomic_uint_least64_t header_timeouts, body_timeouts, budget_refusals;
    pthread_mutex_t mu; /* the list, and a connection's fd against its close */
    http_limits_conn *conns;
};

http_limits *http_limits_new(unsigned header_timeout_ms, unsigned body_timeout_ms,
                             size_t body_budget) {
    http_limits *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->header_timeout_ms = header_timeout_ms;
    l->body_timeout_ms = body_timeout_ms;
    l->budget = body_budget;
    atomic_init(&l->buffered, 0);
    atomic_init(&l->header_timeouts, 0);
    atomic_init(&l->body_timeouts, 0);
    atomic_init(&l->budget_refusals, 0);
    pthread_mutex_init(&l->mu, NULL);
    return l;
}

void http_limits_free(http_limits *l) {
    if (!l) return;
    pthread_mutex_destroy(&l->mu);
    free(l);
}

/* The packed deadline `timeout_ms` after now (0: none). */
static long long due_after(unsigned timeout_ms, int64_t now_ms, bool in_body) {
    return timeout_ms ? (long long)(now_ms + timeout_ms) << 1 | in_body : 0;
}

http_limits_conn *http_limits_open(http_limits *l, int fd, int64_t now_ms) {
    http_limits_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->fd = fd;
    atomic_init(&c->due, due_after(l->header_timeout_ms, now_ms, false));
    pthread_mutex_lock(&l->mu);
    c->next = l->conns;
    if (l->conns) l->conns->prev = c;
    l->conns = c;
    pthread_mutex_unlock(&l->mu);
    return c;
}

void http_limits_close(http_limits *l, http_limits_conn *c) {
    if (!c) return;
    pthread_mutex_lock(&l->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    pthread_mutex_unlock(&l->mu);
    free(c);
}

void http_limits_headers_in(const http_limits *l, http_limits_conn *c, int64_t now_ms) {
    if (c) atomic_store(&c->due, due_after(l->body_timeout_ms, now_ms, true));
}

void http_limits_body_in(http_limits_conn *c) {
    if (c) atomic_store(&c->due, 0);
}

void http_limits_request_done(const http_limits *l, http_limits_conn *c, int64_t now_ms) {
    if (c) atomic_store(&c->due, due_after(l->header_timeout_ms, now_ms, false));
}

size_t http_limits_sweep(http_limits *l, int64_t now_ms) {
    size_t n = 0;
    pthread_mutex_lock(&l->mu);
    for (http_limits_conn *c = l->conns; c; c = c->next) {
        long long due = atomic_load(&c->due);
        if (!due || c->cut || now_ms < due >> 1) continue;
        c->cut = true;
        shutdown(c->fd, SHUT_RDWR); /* the fd stays open until http_limits_close returns */
        atomic_fetch_add(due & 1 ? &l->body_timeouts : &l->header_timeouts, 1);
        n++;
    }
    pthread_mutex_unlock(&l->mu);
    return n;
}

bool http_limits_reserve(http_limits *l, size_t n) {
    size_t cur = atomic_load(&l->buffered);
    do {
        if (n > l->budget - cur) {
            atomic_fetch_add(&l->budget_refusals, 1);
            return false;
        }
    } while (!atomic_compare_exchange_weak(&l->buffered, &cur, cur + n));
    return true;
}

void http_limits_release(http_limits *l, size_t n) {
    atomic_fetch_sub(&l->buffered, n);
}

http_limits_stats http_limits_stats_get(http_limits *l) {
    return (http_limits_stats){.header_timeouts = atomic_load(&l->header_timeouts),
                               .body_timeouts = atomic_load(&l->body_timeouts),
                               .budget_refusals = atomic_load(&l->budget_refusals),
                               .buffered = atomic_load(&l->buffered)};
}
