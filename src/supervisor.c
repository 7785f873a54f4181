/* supervisor: the restart policy: restart intensity, backoff and the decision after an exit. */
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
