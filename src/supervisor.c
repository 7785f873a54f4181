/* supervisor: a supervised entry's state machine: its phases, their deadlines and the restart
 * policy. */
#include "supervisor.h"

/* backoff_initial_ms doubled per failure so far, at most backoff_max_ms; counts this failure. */
static int64_t supervisor_backoff(const config_cnode *cfg, supervisor_history *h) {
    uint64_t backoff = cfg->backoff_initial_ms;
    for (unsigned i = 0; i < h->consecutive_failures && backoff < cfg->backoff_max_ms; i++)
        backoff *= 2;
    if (backoff > cfg->backoff_max_ms) backoff = cfg->backoff_max_ms;
    h->consecutive_failures++;
    return (int64_t)backoff;
}

supervisor_decision supervisor_restart(const config_cnode *cfg, supervisor_history *h,
                                       bool normal_exit, int64_t now_ms, int64_t *due_ms) {
    *due_ms = INT64_MAX;
    if (cfg->direction == CNODE_DIRECTION_ADOPT) {
        /* Not ours to give up on: reconnect with backoff for as long as we run. */
        *due_ms = now_ms + supervisor_backoff(cfg, h);
        return SUPERVISOR_RESTART;
    }
    if (cfg->restart == CNODE_RESTART_TEMPORARY ||
        (cfg->restart == CNODE_RESTART_TRANSIENT && normal_exit))
        return SUPERVISOR_STOP;
    /* Restart intensity, as OTP: more than max_restarts within max_seconds means failed. */
    size_t kept = 0;
    for (size_t i = 0; i < h->len; i++)
        if (now_ms - h->restarts[i] < (int64_t)cfg->max_seconds * 1000)
            h->restarts[kept++] = h->restarts[i];
    h->len = kept;
    if (kept >= cfg->max_restarts || kept >= SUPERVISOR_MAX_RESTART_LOG) return SUPERVISOR_FAIL;
    h->restarts[h->len++] = now_ms;
    *due_ms = now_ms + supervisor_backoff(cfg, h);
    return SUPERVISOR_RESTART;
}

void supervisor_history_up(supervisor_history *h) {
    h->consecutive_failures = 0;
}

void supervisor_entry_init(supervisor_entry *e) {
    *e = (supervisor_entry){.phase = SUPERVISOR_IDLE, .deadline_ms = INT64_MAX};
}

supervisor_phase supervisor_entry_phase(const supervisor_entry *e) {
    return e->phase;
}

void supervisor_entry_spawned(supervisor_entry *e, const config_cnode *cfg, int64_t now_ms) {
    e->phase = SUPERVISOR_SPAWNED;
    e->deadline_ms = now_ms + cfg->spawn_inactive_timeout_ms;
}

void supervisor_entry_connecting(supervisor_entry *e, const config_cnode *cfg, int64_t now_ms) {
    e->phase = SUPERVISOR_CONNECTING;
    e->deadline_ms = now_ms + cfg->connect_timeout_ms + 1000;
}

void supervisor_entry_up(supervisor_entry *e) {
    e->phase = SUPERVISOR_UP;
    e->deadline_ms = INT64_MAX;
    supervisor_history_up(&e->history);
}

void supervisor_entry_stopping(supervisor_entry *e, int64_t deadline_ms) {
    e->phase = SUPERVISOR_STOPPING;
    e->deadline_ms = deadline_ms;
}

void supervisor_entry_stopping_until(supervisor_entry *e, int64_t deadline_ms) {
    e->deadline_ms = deadline_ms;
}

void supervisor_entry_stopped(supervisor_entry *e) {
    e->phase = SUPERVISOR_STOPPED;
    e->deadline_ms = INT64_MAX;
}

void supervisor_entry_restart_soon(supervisor_entry *e) {
    e->restart_now = true;
}

bool supervisor_entry_restart_due(const supervisor_entry *e) {
    return e->restart_now;
}

bool supervisor_entry_restarting(const supervisor_entry *e) {
    return e->phase == SUPERVISOR_BACKOFF;
}

supervisor_action supervisor_entry_after_exit(supervisor_entry *e, const config_cnode *cfg,
                                              bool normal_exit, bool for_good, bool peer,
                                              int64_t now_ms) {
    if (e->restart_now && !for_good) {
        /* recycled (calls_per_process) or restarted on request: not a failure */
        e->restart_now = false;
        e->phase = SUPERVISOR_BACKOFF;
        return SUPERVISOR_DO_START;
    }
    if (for_good || peer) {
        supervisor_entry_stopped(e);
        return SUPERVISOR_DO_RETIRE;
    }
    int64_t due;
    switch (supervisor_restart(cfg, &e->history, normal_exit, now_ms, &due)) {
    case SUPERVISOR_STOP: supervisor_entry_stopped(e); return SUPERVISOR_DO_SET_STOPPED;
    case SUPERVISOR_FAIL:
        e->phase = SUPERVISOR_FAILED;
        /* crash-loop mode: after a long pause, another try with a clean record */
        e->deadline_ms =
            cfg->retry_failed_after_ms ? now_ms + cfg->retry_failed_after_ms : INT64_MAX;
        return SUPERVISOR_DO_SET_FAILED;
    case SUPERVISOR_RESTART: break;
    }
    e->phase = SUPERVISOR_BACKOFF;
    e->deadline_ms = due;
    return SUPERVISOR_DO_SET_RESTARTING;
}

supervisor_action supervisor_entry_timer(supervisor_entry *e, int64_t now_ms) {
    if (now_ms < e->deadline_ms) return SUPERVISOR_DO_NOTHING;
    e->deadline_ms = INT64_MAX;
    switch (e->phase) {
    case SUPERVISOR_SPAWNED: return SUPERVISOR_DO_SPAWN_TIMEOUT;
    case SUPERVISOR_CONNECTING: return SUPERVISOR_DO_CONNECT_TIMEOUT;
    case SUPERVISOR_STOPPING: return SUPERVISOR_DO_ESCALATE;
    case SUPERVISOR_BACKOFF: return SUPERVISOR_DO_START;
    case SUPERVISOR_FAILED: /* retry_failed_after_ms passed: a fresh try, as after a restart */
        e->history = (supervisor_history){0};
        e->phase = SUPERVISOR_BACKOFF;
        return SUPERVISOR_DO_RETRY;
    default: return SUPERVISOR_DO_NOTHING;
    }
}

supervisor_action supervisor_entry_restart(supervisor_entry *e) {
    e->history = (supervisor_history){0};
    switch (e->phase) {
    case SUPERVISOR_IDLE: return SUPERVISOR_DO_NOTHING; /* about to start anyway */
    case SUPERVISOR_FAILED:
    case SUPERVISOR_STOPPED:
    case SUPERVISOR_BACKOFF: e->phase = SUPERVISOR_BACKOFF; return SUPERVISOR_DO_START;
    case SUPERVISOR_STOPPING: e->restart_now = true; return SUPERVISOR_DO_NOTHING;
    case SUPERVISOR_SPAWNED:
    case SUPERVISOR_CONNECTING:
    case SUPERVISOR_UP: e->restart_now = true; return SUPERVISOR_DO_TAKE_DOWN;
    }
    return SUPERVISOR_DO_NOTHING;
}
