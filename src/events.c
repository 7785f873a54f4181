/* events: lifecycle events: numbered, time-stamped and passed to every subscriber. */
#include "events.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

typedef struct subscriber {
    uint64_t id;
    gateway_event_fn fn;
    void *ctx;
    struct subscriber *next;
} subscriber;

/* mu guards everything and is held while callbacks run (so unsubscribe waits for them). */
struct events {
    pthread_mutex_t mu;
    subscriber *subscribers;
    uint64_t next_id;
    uint64_t seq;
};

events *events_new(void) {
    events *ev = calloc(1, sizeof *ev);
    if (ev) pthread_mutex_init(&ev->mu, NULL);
    return ev;
}

void events_free(events *ev) {
    if (!ev) return;
    for (subscriber *s = ev->subscribers, *next; s; s = next) {
        next = s->next;
        free(s);
    }
    pthread_mutex_destroy(&ev->mu);
    free(ev);
}

uint64_t events_subscribe(events *ev, gateway_event_fn fn, void *ctx) {
    subscriber *s = calloc(1, sizeof *s);
    if (!s) return 0;
    s->fn = fn;
    s->ctx = ctx;
    pthread_mutex_lock(&ev->mu);
    s->id = ++ev->next_id;
    s->next = ev->subscribers;
    ev->subscribers = s;
    pthread_mutex_unlock(&ev->mu);
    return s->id;
}

void events_unsubscribe(events *ev, uint64_t id) {
    pthread_mutex_lock(&ev->mu);
    for (subscriber **pp = &ev->subscribers; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            subscriber *s = *pp;
            *pp = s->next;
            free(s);
            break;
        }
    }
    pthread_mutex_unlock(&ev->mu);
}

uint64_t events_emit(events *ev, gateway_event *e) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    e->time_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    pthread_mutex_lock(&ev->mu);
    uint64_t seq = e->seq = ++ev->seq;
    for (subscriber *s = ev->subscribers; s; s = s->next) s->fn(e, s->ctx);
    pthread_mutex_unlock(&ev->mu);
    return seq;
}
