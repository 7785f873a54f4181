/* supervisor: a supervised entry's state machine: its phases, their deadlines and the restart
 * policy. */
#ifndef NODEX_SUPERVISOR_H
#define NODEX_SUPERVISOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Threading: no shared state; a supervisor_history or supervisor_entry belongs to one entry and
 * is used by one thread at a time (the loop thread, for the gateway's entries). Times are
 * monotonic ms. No processes or sockets here: the functions return the action the caller takes. */

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

/* A supervised entry's phase: finer than the public cnode states. */
typedef enum supervisor_phase {
    SUPERVISOR_IDLE,       /* not started yet */
    SUPERVISOR_SPAWNED,    /* process running, waiting for the ready line and/or the connection */
    SUPERVISOR_CONNECTING, /* a connector is connecting to the node */
    SUPERVISOR_UP,
    SUPERVISOR_STOPPING, /* signalled; waiting for the exit */
    SUPERVISOR_BACKOFF,
    SUPERVISOR_FAILED,
    SUPERVISOR_STOPPED,
} supervisor_phase;

/* One supervised entry: its phase, the phase's deadline and its restart record. Set up with
 * supervisor_entry_init; read and changed only through the functions below. */
typedef struct supervisor_entry {
    supervisor_phase phase;
    int64_t deadline_ms; /* of the current phase; INT64_MAX for none */
    supervisor_history history;
    bool restart_now; /* start again once the process is gone, as no failure */
} supervisor_entry;

/* What the caller does after a transition. */
typedef enum supervisor_action {
    SUPERVISOR_DO_NOTHING,
    SUPERVISOR_DO_START,           /* start it now (spawn it, or connect to it) */
    SUPERVISOR_DO_RETRY,           /* failed for retry_failed_after_ms: start it, a fresh record */
    SUPERVISOR_DO_SPAWN_TIMEOUT,   /* no ready line or connection in time: down, SIGKILL */
    SUPERVISOR_DO_CONNECT_TIMEOUT, /* not connected in time: down, SIGKILL */
    SUPERVISOR_DO_ESCALATE,        /* stopping took its time: the next, harder signal */
    SUPERVISOR_DO_TAKE_DOWN,       /* a restart was asked while it runs: stop it (SIGTERM) */
    SUPERVISOR_DO_SET_STOPPED,     /* state stopped: not restarted; waiting calls may fail */
    SUPERVISOR_DO_SET_FAILED,      /* state failed: too many restarts; waiting calls may fail */
    SUPERVISOR_DO_SET_RESTARTING,  /* state restarting: started again at its deadline */
    SUPERVISOR_DO_RETIRE,          /* state stopped, for good: stopped on purpose, or a peer */
} supervisor_action;

/* A new entry: idle, no deadline, no restarts. */
void supervisor_entry_init(supervisor_entry *e);
/* The entry's current phase. */
supervisor_phase supervisor_entry_phase(const supervisor_entry *e);
/* The entry's process was started: waits for it up to cfg->spawn_inactive_timeout_ms. */
void supervisor_entry_spawned(supervisor_entry *e, const config_cnode *cfg, int64_t now_ms);
/* A connector was started: waits for it up to cfg->connect_timeout_ms and a second. */
void supervisor_entry_connecting(supervisor_entry *e, const config_cnode *cfg, int64_t now_ms);
/* The entry is up: no deadline, and the next failure backs off from the start again. */
void supervisor_entry_up(supervisor_entry *e);
/* The entry's process was signalled to stop; `deadline_ms` is when to escalate. */
void supervisor_entry_stopping(supervisor_entry *e, int64_t deadline_ms);
/* Sets the escalation deadline of an entry that is stopping. */
void supervisor_entry_stopping_until(supervisor_entry *e, int64_t deadline_ms);
/* The entry is stopped (the gateway is shutting down): no deadline. */
void supervisor_entry_stopped(supervisor_entry *e);
/* The entry goes down as planned (recycled after calls_per_process, or a restart asked): once
 * it is gone it starts again at once, not counted as a failure. */
void supervisor_entry_restart_soon(supervisor_entry *e);
/* True if the entry starts again at once once gone (supervisor_entry_restart_soon). */
bool supervisor_entry_restart_due(const supervisor_entry *e);
/* True if the entry is being started again after a backoff (counted as a restart). */
bool supervisor_entry_restarting(const supervisor_entry *e);
/* Its process is gone (or it never had one) at `now_ms`. `normal_exit`: status 0; `for_good`:
 * it is being stopped on purpose (shutdown, or removed); `peer`: a peer, never restarted.
 * Returns START (a planned restart), RETIRE, SET_STOPPED, SET_FAILED (waits
 * retry_failed_after_ms, if set) or SET_RESTARTING (waits the backoff). */
supervisor_action supervisor_entry_after_exit(supervisor_entry *e, const config_cnode *cfg,
                                              bool normal_exit, bool for_good, bool peer,
                                              int64_t now_ms);
/* The phase's deadline at `now_ms`: NOTHING before it; after it (once) SPAWN_TIMEOUT,
 * CONNECT_TIMEOUT, ESCALATE, START (backoff over) or RETRY (failed: a clean record). */
supervisor_action supervisor_entry_timer(supervisor_entry *e, int64_t now_ms);
/* A restart was asked: a clean record, then NOTHING (idle: it starts anyway; stopping: it
 * starts once gone), START (backoff, failed or stopped) or TAKE_DOWN (it runs: once down it
 * starts again at once). */
supervisor_action supervisor_entry_restart(supervisor_entry *e);

#endif
