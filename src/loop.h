/* loop: the event loop: fd readiness (epoll), wake-ups from any thread, signals, timers. */
#ifndef NODEX_LOOP_H
#define NODEX_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Threading: loop_wake and loop_on_thread may be called from any thread. Everything else, and
 * every callback, runs on the thread that calls loop_poll (the loop thread); set-up calls may
 * also come before that thread starts polling. Times are monotonic milliseconds (dist_now_ms's
 * clock, CLOCK_MONOTONIC). */
typedef struct loop loop;
/* One watched fd; owned by the loop, removed with loop_watch_remove. */
typedef struct loop_watch loop_watch;
/* One timer; owned by the loop (freed by loop_free). */
typedef struct loop_timer loop_timer;

/* Readiness passed to a watch's callback. */
#define LOOP_READABLE 1u /* readable, hung up or in error: reading tells which */
#define LOOP_WRITABLE 2u /* only while loop_watch_set_writable is on */

typedef void (*loop_fd_fn)(void *ctx, unsigned ready);
typedef void (*loop_fn)(void *ctx);
typedef void (*loop_signal_fn)(void *ctx, int signo);

/* Creates the loop: an epoll set, a wake-up eventfd and a signalfd for `signals` (those must be
 * blocked in every thread, or they are delivered the usual way). Returns NULL with a message in
 * err. Free with loop_free. */
loop *loop_new(const int *signals, size_t signal_count, char *err, size_t err_len);
/* Closes the loop's own fds and frees every watch and timer (not the watched fds). */
void loop_free(loop *l);
/* `fn(ctx)` runs on the loop thread in the loop_poll that follows a loop_wake (one call for any
 * number of wakes since the last). Set before polling. */
void loop_on_wake(loop *l, loop_fn fn, void *ctx);
/* `fn(ctx, signo)` runs on the loop thread for every signal received. Set before polling. */
void loop_on_signal(loop *l, loop_signal_fn fn, void *ctx);

/* Watches `fd` for reading (level-triggered): `fn(ctx, ready)` runs from loop_poll while it is
 * readable. Returns NULL when out of memory or when epoll refuses the fd (errno set). */
loop_watch *loop_watch_add(loop *l, int fd, loop_fd_fn fn, void *ctx);
/* Also watches for room to write (on) or stops (off). Returns 0, or -1 when epoll refused. */
int loop_watch_set_writable(loop *l, loop_watch *w, bool on);
/* Stops watching (the fd stays open, the caller's to close): `fn` is never called again, not even
 * for events already collected in the current loop_poll. NULL is ignored. */
void loop_watch_remove(loop *l, loop_watch *w);

/* A disarmed timer that runs `fn(ctx)` from loop_run_timers once due. NULL when out of memory. */
loop_timer *loop_timer_new(loop *l, loop_fn fn, void *ctx);
/* (Re)arms the timer for `due_ms`; INT64_MAX disarms it. A callback may re-arm its own timer. */
void loop_timer_arm(loop_timer *t, int64_t due_ms);
/* When the timer is due, or INT64_MAX when disarmed. */
int64_t loop_timer_due(const loop_timer *t);
/* Runs every timer due at `now` (earliest first), each disarmed before its callback runs; a timer
 * re-armed for `now` or earlier by a callback waits for the next call. Returns how many ran. */
int loop_run_timers(loop *l, int64_t now_ms);

/* Waits until an fd is ready, a wake-up or a signal arrives, `deadline_ms` passes (INT64_MAX:
 * none; in the past: no wait) or the earliest timer is due, then runs the callbacks of what was
 * ready (not the timers: see loop_run_timers). With `may_spin`, right after a poll that found
 * events, polls without sleeping for a short while first (waking an idle CPU costs tens of us).
 * Returns the number of events, 0 on timeout or EINTR, -1 on a fatal epoll error (errno set). */
int loop_poll(loop *l, int64_t deadline_ms, bool may_spin);

/* Wakes loop_poll (any thread, never blocks). */
void loop_wake(loop *l);
/* Marks the calling thread as the loop thread until loop_leave. */
void loop_enter(loop *l);
void loop_leave(loop *l);
/* True on the loop thread between loop_enter and loop_leave (any thread). */
bool loop_on_thread(const loop *l);

#endif
