/* supervisor: the restart policy: restart intensity, backoff and the decision after an exit. */
#ifndef NODEX_SUPERVISOR_H
#define NODEX_SUPERVISOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Threading: no shared state; a supervisor_history belongs to one entry and is used by one
 * thread at a time (the loop thread, for the gateway's entries). Times are monotonic ms. */

/* Restarts remembered for the intensity check, at most (more within max_seconds: failed). */
#define SUPERVISOR_MAX_RESTART_LOG 64

/* One entry's restart record. Zero-initialised means no restart and no failure yet; read it
 * through the functions below. */
typedef struct supervisor_history {
    int64_t restarts[SUPERVISOR_MAX_RESTART_LOG]; /* when each counted restart was decided */
    size_t len;
    unsigned consecutive_failures; /* since the entry was last up */
} supervisor_history;

/* What to do once an entry's process is gone (or it never came up). */
typedef enum supervisor_decision {
    SUPERVISOR_STOP,    /* not to be restarted (temporary, or transient after a normal exit) */
    SUPERVISOR_FAIL,    /* too many restarts within max_seconds: give up */
    SUPERVISOR_RESTART, /* start it again at *due_ms (after the backoff) */
} supervisor_decision;

/* The decision for an entry configured by `cfg` that went down at `now_ms` (`normal_exit`: it
 * exited with status 0), as OTP decides: temporary never and transient after a normal exit are
 * not restarted; more than max_restarts within max_seconds fail; else a restart after a
 * backoff that doubles per consecutive failure from backoff_initial_ms up to backoff_max_ms.
 * Adopted nodes (not ours to give up on) are always restarted, with the backoff. Records the
 * restart and the failure in `h`. */
supervisor_decision supervisor_restart(const config_cnode *cfg, supervisor_history *h,
                                       bool normal_exit, int64_t now_ms, int64_t *due_ms);
/* The entry is up: the next failure backs off from backoff_initial_ms again. */
void supervisor_history_up(supervisor_history *h);

#endif
