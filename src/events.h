/* events: lifecycle events: numbered, time-stamped and passed to every subscriber. */
#ifndef NODEX_EVENTS_H
#define NODEX_EVENTS_H

#include <stdint.h>

#include "gateway.h" /* gateway_event, gateway_event_fn: the public vocabulary */

/* Thread safety: every function may be called from any thread, except that events_unsubscribe
 * and events_subscribe must not be called from inside a subscriber's callback (the module lock
 * is held while callbacks run: that is what makes unsubscribe wait for them). */
typedef struct events events;

/* An empty subscriber list, seq at 0. Returns NULL when out of memory. Free with events_free. */
events *events_new(void);
/* Frees the list and its subscriptions. No other thread may use `ev` any more. */
void events_free(events *ev);
/* Registers `fn(ev, ctx)` for every event emitted from now on. Returns a subscription id (> 0,
 * never reused), or 0 when out of memory. */
uint64_t events_subscribe(events *ev, gateway_event_fn fn, void *ctx);
/* Ends a subscription: when this returns, its `fn` is not running and never runs again. An
 * unknown or already ended id is ignored. */
void events_unsubscribe(events *ev, uint64_t id);
/* Stamps `e` with the next seq (one more than the last event's, whether anyone listened or not)
 * and the wall clock (ms since the epoch), then calls every subscriber with it on the calling
 * thread. Returns the seq given. */
uint64_t events_emit(events *ev, gateway_event *e);

#endif
