/* entry: one supervised process or node: its life cycle, from spawn to reap, and its events. */
#include "entry.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "nodes.h"
#include "template.h"

/* "cnode" or "node", for log lines. */
const char *entry_what(const entry *cn) {
    return cn->kind == ENTRY_CNODE ? "cnode" : "node";
}

/* A configured C-node's first instance: where its waiting calls are held. */
static entry *entry_first(entry *cn) {
    return cn->first;
}

/* True while an instance of the C-node whose first instance is `first` may still come up, so
 * a call may wait for it: none has failed or stopped for good (caller holds mu). */
bool entry_group_may_come_up_locked(const entry *first) {
    for (unsigned i = 0; i < first->cfg->instances; i++)
        if (first[i].state != CNODE_FAILED && first[i].state != CNODE_STOPPED) return true;
    return false;
}

/* A C-node that took its calls_per_process and has none left in flight goes down as planned:
 * it is started again at once, and not counted as a failure. */
static bool entry_recycle_due(entry *cn) {
    if (cn->kind != ENTRY_CNODE) return false;
    pthread_mutex_lock(cn->host->mu);
    bool due = cn->draining && routing_owner_in_flight(&cn->route) == 0;
    pthread_mutex_unlock(cn->host->mu);
    return due;
}

/* Loop thread (the only writer of the fields read here). */
static void entry_emit(const entry *cn, cnode_state s) {
    gateway_event ev = {.erlang_node = cn->kind != ENTRY_CNODE, .state = s, .os_pid = cn->os_pid};
    snprintf(ev.name, sizeof ev.name, "%s", cn->cfg->name);
    snprintf(ev.node, sizeof ev.node, "%s", cn->node);
    if (s == CNODE_DOWN || s == CNODE_FAILED || s == CNODE_RESTARTING)
        snprintf(ev.reason, sizeof ev.reason, "%s", cn->last_error);
    events_emit(cn->host->events, &ev);
}

void entry_set_state(entry *cn, cnode_state s) {
    if (cn->state == s) return;
    log_info("%s %s: %s -> %s", entry_what(cn), cn->cfg->name, cnode_state_name(cn->state),
             cnode_state_name(s));
    pthread_mutex_lock(cn->host->mu);
    cn->state = s;
    cn->up_since_ms = s == CNODE_UP ? dist_now_ms() : 0;
    pthread_mutex_unlock(cn->host->mu);
    entry_emit(cn, s);
}

static void entry_set_error(entry *cn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void entry_set_error(entry *cn, const char *fmt, ...) {
    char msg[sizeof cn->last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(cn->host->mu);
    memcpy(cn->last_error, msg, sizeof msg);
    pthread_mutex_unlock(cn->host->mu);
}

static void entry_close_output(entry *cn) {
    for (int s = 0; s < 2; s++) {
        loop_watch_remove(cn->host->loop, cn->out_watch[s]);
        cn->out_watch[s] = NULL;
    }
}

/* Drops the C-node's connection (if any) from the call path and closes it. */
void entry_disconnect(entry *cn) {
    const entry_host *h = cn->host;
    pthread_mutex_lock(h->mu);
    dist_conn *live = cn->live;
    cn->live = NULL;
    for (int k = 0; live && k < DIST_CTL_KINDS; k++)
        cn->ignored[k] += dist_ignored_count(live, (dist_ignored_control)k);
    if (live) {
        cn->bytes_in += dist_bytes_in(live);
        cn->bytes_out += dist_bytes_out(live);
    }
    pthread_mutex_unlock(h->mu);
    if (live) dist_conn_unref(live);
    if (cn->conn) {
        conns_close(h->conns, cn->conn);
        cn->conn = NULL;
    }
}

/* Calls waiting for a C-node none of whose instances can come up any more fail now. */
static void entry_group_fail_waiting(entry *cn) {
    if (cn->kind != ENTRY_CNODE) return;
    entry *first = entry_first(cn);
    pthread_mutex_lock(cn->host->mu);
    bool hopeless = !entry_group_may_come_up_locked(first);
    pthread_mutex_unlock(cn->host->mu);
    if (!hopeless) return;
    char detail[200];
    snprintf(detail, sizeof detail, "C-node %.64s is %s: %.100s", cn->cfg->name,
             cnode_state_name(cn->state), cn->last_error);
    routing_fail_owner(cn->host->routing, &first->waiting, CALL_UNAVAILABLE, detail);
}

/* Restart decision once the C-node is gone (process reaped, or never had one). */
static void entry_after_exit(entry *cn, bool normal_exit) {
    const config_cnode *cfg = cn->cfg;
    bool for_good = *cn->host->shutting_down || cn->removing;
    switch (supervisor_entry_after_exit(&cn->sup, cfg, normal_exit, for_good,
                                        cn->kind == ENTRY_PEER, dist_now_ms())) {
    case SUPERVISOR_DO_START: entry_start(cn); break;
    case SUPERVISOR_DO_RETIRE:
        entry_set_state(cn, CNODE_STOPPED);
        if (!*cn->host->shutting_down) cn->host->retire(cn);
        break;
    case SUPERVISOR_DO_SET_STOPPED:
        entry_set_state(cn, CNODE_STOPPED);
        entry_group_fail_waiting(cn);
        break;
    case SUPERVISOR_DO_SET_FAILED:
        log_error("%s %s: failed: more than %u restarts in %u s (last: %s)%s", entry_what(cn),
                  cfg->name, cfg->max_restarts, cfg->max_seconds, cn->last_error,
                  cfg->retry_failed_after_ms ? "; trying again after retry_failed_after_ms" : "");
        entry_set_state(cn, CNODE_FAILED);
        entry_group_fail_waiting(cn);
        break;
    case SUPERVISOR_DO_SET_RESTARTING: entry_set_state(cn, CNODE_RESTARTING); break;
    default: break;
    }
}

/* The C-node is lost or failed to start: fail its calls, stop its process, then decide. */
void entry_down(entry *cn, bool kill_now, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void entry_down(entry *cn, bool kill_now, const char *fmt, ...) {
    char reason[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    const char *what = cn->kind == ENTRY_CNODE ? "C-node" : "node";
    if (entry_recycle_due(cn)) supervisor_entry_restart_soon(&cn->sup);
    if (supervisor_entry_restart_due(&cn->sup))
        log_info("%s %s: restarting: %s", what, cn->cfg->name, reason);
    else
        log_warn("%s %s: down: %s", what, cn->cfg->name, reason);
    entry_set_error(cn, "%s", reason);
    cn->connect_generation++; /* any connector still running is now stale */
    entry_disconnect(cn);
    char detail[200];
    snprintf(detail, sizeof detail, "%s %s went down during the call: %s", what, cn->cfg->name,
             reason);
    routing_fail_owner(cn->host->routing, &cn->route, CALL_UNAVAILABLE, detail);
    if (cn->proc && !child_exited(cn->proc)) {
        child_signal(cn->proc, kill_now ? SIGKILL : SIGTERM);
        cn->kill_sent = kill_now;
        supervisor_entry_stopping(&cn->sup, dist_now_ms() + cn->cfg->shutdown_timeout_ms);
        entry_set_state(cn, CNODE_DOWN);
        return;
    }
    entry_set_state(cn, CNODE_DOWN);
    entry_after_exit(cn, false);
}

/* Reaps the process once it exited; records how. Returns true if it had exited. */
bool entry_reap(entry *cn) {
    int status;
    if (!cn->proc || !child_poll_exit(cn->proc, &status)) return false;
    char how[96];
    child_describe_status(status, how, sizeof how);
    entry_close_output(cn);
    /* Read what is left in the pipes so the last lines are logged. */
    child_free(cn->proc);
    cn->proc = NULL;
    pthread_mutex_lock(cn->host->mu);
    snprintf(cn->last_exit, sizeof cn->last_exit, "%s", how);
    cn->os_pid = 0;
    pthread_mutex_unlock(cn->host->mu);
    bool normal = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    switch (supervisor_entry_phase(&cn->sup)) {
    case SUPERVISOR_SPAWNED:
        log_warn("%s %s: exited before it was up: %s", entry_what(cn), cn->cfg->name, how);
        entry_set_error(cn, "exited before it was up: %s", how);
        entry_disconnect(cn);
        routing_fail_owner(cn->host->routing, &cn->route, CALL_UNAVAILABLE, "C-node exited");
        entry_set_state(cn, CNODE_DOWN);
        entry_after_exit(cn, normal);
        break;
    case SUPERVISOR_UP:
    case SUPERVISOR_CONNECTING:
        if (entry_recycle_due(cn)) supervisor_entry_restart_soon(&cn->sup);
        if (supervisor_entry_restart_due(&cn->sup))
            log_info("%s %s: process %s; starting again", entry_what(cn), cn->cfg->name, how);
        else
            log_warn("%s %s: process %s", entry_what(cn), cn->cfg->name, how);
        entry_set_error(cn, "process %s", how);
        cn->connect_generation++;
        entry_disconnect(cn);
        routing_fail_owner(cn->host->routing, &cn->route, CALL_UNAVAILABLE,
                           "C-node process exited during the call");
        entry_set_state(cn, CNODE_DOWN);
        entry_after_exit(cn, normal);
        break;
    case SUPERVISOR_STOPPING: entry_after_exit(cn, normal && !cn->kill_sent); break;
    default: break;
    }
    return true;
}

/* Sends a call that waited (its message in c->outbox) on `dc`, its monitor first (gen_call). */
static void entry_send_outbox(dist_conn *dc, const config_cnode *cfg, call *c) {
    if (c->monitored) dist_send_monitor(dc, &c->pid, cfg->registered_name, &c->ref);
    dist_send_reg(dc, &c->pid, cfg->registered_name, NULL, 0, c->outbox, c->outbox_len);
    free(c->outbox);
    c->outbox = NULL;
    c->outbox_len = 0;
}

/* An instance that is up takes the calls waiting for its C-node, oldest first, as many as
 * max_in_flight and calls_per_process leave room for. Loop thread. */
void entry_flush_waiting(entry *cn) {
    const entry_host *h = cn->host;
    const config_cnode *cfg = cn->cfg;
    entry *first = entry_first(cn);
    call **taken = NULL;
    size_t n = 0;
    pthread_mutex_lock(h->mu);
    dist_conn *dc = cn->live;
    size_t in_flight = routing_owner_in_flight(&cn->route);
    size_t room = in_flight < cfg->max_in_flight ? cfg->max_in_flight - in_flight : 0;
    if (cfg->calls_per_process) {
        size_t left = cn->calls_sent < cfg->calls_per_process
                          ? (size_t)(cfg->calls_per_process - cn->calls_sent)
                          : 0;
        if (left < room) room = left;
    }
    if (dc && cn->state == CNODE_UP && !cn->draining && room &&
        routing_owner_in_flight(&first->waiting))
        n = routing_owner_take_locked(&first->waiting, &cn->route, room, &taken);
    cn->calls_sent += (unsigned)n;
    if (cfg->calls_per_process && cn->calls_sent >= cfg->calls_per_process) cn->draining = true;
    for (size_t i = 0; i < n; i++)
        taken[i]->monitored = cfg->protocol == CNODE_PROTOCOL_GEN_CALL && cfg->monitor;
    if (n) dist_conn_ref(dc);
    pthread_mutex_unlock(h->mu);
    /* Only this thread ends calls, so the taken ones stay valid after the unlock. */
    for (size_t i = 0; i < n; i++) entry_send_outbox(dc, cfg, taken[i]);
    if (n) dist_conn_unref(dc);
    free(taken);
}

void entry_became_up(entry *cn) {
    const entry_host *h = cn->host;
    supervisor_entry_up(&cn->sup);
    dist_conn *dc = conns_dist(cn->conn);
    dist_conn_ref(dc);
    /* Calls that waited for this connection (rpc to a node not yet connected) go out now.
     * Only this thread unregisters calls, so the pointers stay valid after the unlock. */
    call **waiting;
    pthread_mutex_lock(h->mu);
    cn->live = dc;
    cn->last_error[0] = '\0';
    size_t n = routing_owner_outboxes_locked(&cn->route, &waiting);
    pthread_mutex_unlock(h->mu);
    entry_set_state(cn, CNODE_UP);
    for (size_t i = 0; i < n; i++) entry_send_outbox(dc, cn->cfg, waiting[i]);
    free(waiting);
    /* Out of memory for the list: the waiting calls time out (504) rather than hang. */
    if (cn->kind == ENTRY_CNODE) entry_flush_waiting(cn);
}

static void entry_start_connector(entry *cn) {
    unsigned generation = ++cn->connect_generation;
    supervisor_entry_connecting(&cn->sup, cn->cfg, dist_now_ms());
    /* A C-node we just started ("to") may need a moment to appear in epmd: retry briefly.
     * An adopted node or a peer is there or not: one attempt (adoption retries with backoff). */
    bool retry = cn->cfg->direction == CNODE_DIRECTION_TO;
    if (conns_connect(cn->host->conns, cn, generation, cn->node, cn->cfg->connect_timeout_ms,
                      retry) == 0)
        cn->connectors++; /* the attempt refers to cn until the gateway hears how it ended */
    else
        entry_down(cn, true, "%s",
                   errno == ENOMEM ? "out of memory starting a connection"
                                   : "cannot start a connector thread");
}

static void entry_on_child_line(void *ctx, int stream, const char *line, size_t len) {
    entry *cn = ctx;
    /* a chatty or hostile process cannot flood the log: lines capped, and a rate per process */
    uint64_t suppressed = 0;
    if (log_limiter_allow(&cn->output_limit, dist_now_ms(), &suppressed)) {
        if (suppressed)
            log_warn("[%s] %llu output lines not logged (over %d a second)", cn->cfg->name,
                     (unsigned long long)suppressed, ENTRY_OUTPUT_LINES_PER_S);
        if (len > ENTRY_OUTPUT_LINE_MAX)
            log_info("[%s%s] %.*s... (%zu bytes)", cn->cfg->name, stream ? " stderr" : "",
                     ENTRY_OUTPUT_LINE_MAX, line, len);
        else
            log_info("[%s%s] %.*s", cn->cfg->name, stream ? " stderr" : "", (int)len, line);
    }
    if (cn->ready_seen || supervisor_entry_phase(&cn->sup) != SUPERVISOR_SPAWNED) return;
    if (strlen(cn->ready_line) != len || memcmp(cn->ready_line, line, len) != 0) return;
    cn->ready_seen = true;
    if (cn->cfg->direction == CNODE_DIRECTION_TO) {
        entry_start_connector(cn);
    } else if (cn->conn) {
        entry_became_up(cn);
    }
    /* direction back without a connection yet: wait for it within the spawn timeout */
}

static void entry_on_child_stdout(void *ctx, unsigned ready);
static void entry_on_child_stderr(void *ctx, unsigned ready);

static void entry_spawn(entry *cn) {
    const entry_host *h = cn->host;
    const config_cnode *cfg = cn->cfg;
    const template_var vars[] = {
        {"sname", cn->sname},        {"hostname", cn->hostname},     {"cookie", h->cookie},
        {"gateway_sname", h->sname}, {"gateway_node", h->node_name}, {"name", cfg->name},
        {"node", cn->node},
    };
    size_t nvars = sizeof vars / sizeof vars[0];
    size_t argc = cfg->arg_count;
    char **argv = calloc(argc + 2, sizeof *argv);
    char **envp = calloc(cfg->env_count + 1, sizeof *envp);
    bool ok = argv && envp;
    if (ok) argv[0] = cn->executable;
    for (size_t i = 0; ok && i < argc; i++)
        ok = (argv[i + 1] = template_expand(cfg->args[i], vars, nvars, NULL)) != NULL;
    for (size_t i = 0; ok && i < cfg->env_count; i++) {
        char *v = template_expand(cfg->env[i].value, vars, nvars, NULL);
        ok = v && asprintf(&envp[i], "%s=%s", cfg->env[i].name, v) >= 0;
        if (!ok) envp[i] = NULL;
        free(v);
    }
    child *proc = NULL;
    if (ok) {
        child_spec spec = {
            .argv = (const char *const *)argv, .env = (const char *const *)envp, .cwd = cfg->cwd};
        proc = child_spawn(&spec);
    }
    int spawn_errno = errno;
    for (size_t i = 1; argv && i <= argc; i++) free(argv[i]);
    for (size_t i = 0; envp && i < cfg->env_count; i++) free(envp[i]);
    free(argv);
    free(envp);
    if (!proc) {
        entry_set_error(cn, "cannot start %s: %s", cn->executable,
                        ok ? strerror(spawn_errno) : "out of memory");
        entry_set_state(cn, CNODE_DOWN);
        entry_after_exit(cn, false);
        return;
    }
    cn->proc = proc;
    cn->ready_seen = false;
    cn->kill_sent = false;
    cn->out_watch[0] = loop_watch_add(h->loop, child_output_fd(proc, 0), entry_on_child_stdout, cn);
    cn->out_watch[1] = loop_watch_add(h->loop, child_output_fd(proc, 1), entry_on_child_stderr, cn);
    pthread_mutex_lock(h->mu);
    cn->os_pid = child_pid(proc);
    pthread_mutex_unlock(h->mu);
    supervisor_entry_spawned(&cn->sup, cfg, dist_now_ms());
    log_info("%s %s: started %s as pid %d (node %s)", entry_what(cn), cfg->name, cn->executable,
             (int)cn->os_pid, cn->node);
}

void entry_start(entry *cn) {
    pthread_mutex_lock(cn->host->mu);
    if (supervisor_entry_restarting(&cn->sup)) cn->restarts++;
    cn->calls_sent = 0; /* a new process: a fresh calls_per_process */
    cn->draining = false;
    pthread_mutex_unlock(cn->host->mu);
    if (cn->state == CNODE_STARTING)
        entry_emit(cn, CNODE_STARTING); /* a first start */
    else
        entry_set_state(cn, CNODE_STARTING);
    if (cn->cfg->direction == CNODE_DIRECTION_ADOPT)
        entry_start_connector(cn);
    else
        entry_spawn(cn);
}

/* Stops a child node for good: init:stop (a {stop, stop} message to `init`), then SIGTERM,
 * then SIGKILL, each after half the shutdown timeout; then the entry is retired. */
void entry_child_stop(entry *cn) {
    cn->removing = true;
    cn->connect_generation++;
    if (cn->conn) entry_send_init_stop(cn);
    entry_set_error(cn, "stopped on request");
    routing_fail_owner(cn->host->routing, &cn->route, CALL_UNAVAILABLE,
                       "the node is being stopped");
    if (cn->proc && !child_exited(cn->proc)) {
        cn->stop_stage = cn->conn ? 0 : 1;
        if (!cn->conn) child_signal(cn->proc, SIGTERM);
        supervisor_entry_stopping(&cn->sup, dist_now_ms() + cn->cfg->shutdown_timeout_ms / 2 + 1);
        entry_set_state(cn, CNODE_DOWN);
        return; /* the connection closes when the node exits */
    }
    entry_disconnect(cn);
    entry_set_state(cn, CNODE_DOWN);
    entry_after_exit(cn, true);
}

/* Phase deadlines: spawn timeout, connect timeout, kill escalation, backoff. */
void entry_timers(entry *cn, int64_t now) {
    switch (supervisor_entry_timer(&cn->sup, now)) {
    case SUPERVISOR_DO_SPAWN_TIMEOUT:
        entry_down(cn, true,
                   cn->ready_seen ? "ready line seen but no connection within %u ms"
                                  : "no ready line within %u ms (spawn_inactive_timeout)",
                   cn->cfg->spawn_inactive_timeout_ms);
        break;
    case SUPERVISOR_DO_CONNECT_TIMEOUT:
        entry_down(cn, true, "could not connect to %s in time", cn->node);
        break;
    case SUPERVISOR_DO_ESCALATE:
        if (!cn->proc || child_exited(cn->proc)) break;
        if (cn->stop_stage == 0 && cn->kind == ENTRY_CHILD) {
            /* init:stop was not enough: SIGTERM (which also runs init:stop in the VM) */
            child_signal(cn->proc, SIGTERM);
            cn->stop_stage = 1;
            supervisor_entry_stopping_until(&cn->sup, now + cn->cfg->shutdown_timeout_ms / 2 + 1);
            break;
        }
        log_warn("%s: did not exit in time; SIGKILL", cn->cfg->name);
        child_signal(cn->proc, SIGKILL);
        cn->kill_sent = true;
        break;
    case SUPERVISOR_DO_START: entry_start(cn); break;
    case SUPERVISOR_DO_RETRY: /* retry_failed_after_ms passed: a fresh try, as after a restart */
        log_info("%s %s: trying again after %u ms failed", entry_what(cn), cn->cfg->name,
                 cn->cfg->retry_failed_after_ms);
        entry_start(cn);
        break;
    default: break;
    }
}

/* gateway_restart_cnode, on the loop: start the instance again now, with a clean restart
 * record; one that runs is stopped first (its calls in flight fail, waiting ones wait). */
static void entry_restart(entry *cn) {
    log_info("cnode %s: restart requested", cn->cfg->name);
    switch (supervisor_entry_restart(&cn->sup)) {
    case SUPERVISOR_DO_START: entry_start(cn); break;
    case SUPERVISOR_DO_TAKE_DOWN: entry_down(cn, false, "restart requested"); break;
    default: break;
    }
}

/* A C-node instance's periodic duties: a restart asked for, a process to recycle, calls that
 * wait while it has room. */
void entry_service(entry *cn) {
    pthread_mutex_lock(cn->host->mu);
    bool restart = cn->restart_requested;
    cn->restart_requested = false;
    pthread_mutex_unlock(cn->host->mu);
    if (restart) {
        entry_restart(cn);
        return;
    }
    if (supervisor_entry_phase(&cn->sup) != SUPERVISOR_UP) return;
    if (entry_recycle_due(cn)) {
        supervisor_entry_restart_soon(&cn->sup);
        entry_down(cn, false, "recycled after %u calls (calls_per_process)",
                   cn->cfg->calls_per_process);
        return;
    }
    entry_flush_waiting(cn);
}

/* Drops the entry's connection reference and closes its connection, at gateway_free. */
void entry_close(entry *cn) {
    if (cn->live) dist_conn_unref(cn->live);
    if (cn->conn) conns_close(cn->host->conns, cn->conn);
    cn->live = NULL;
    cn->conn = NULL;
}

void entry_free(entry *cn) {
    nodes_config_free(&cn->own_cfg);
    child_free(cn->proc);
    free(cn->executable);
    free(cn->ready_line);
    free(cn);
}

static void entry_on_child_output(entry *cn, int stream) {
    if (!cn->proc) return;
    int r = child_read_lines(cn->proc, stream, entry_on_child_line, cn);
    if (r <= 0) { /* out of epoll while the fd is open, then closed */
        loop_watch_remove(cn->host->loop, cn->out_watch[stream]);
        cn->out_watch[stream] = NULL;
        child_close_output(cn->proc, stream);
    }
}

static void entry_on_child_stdout(void *ctx, unsigned ready) {
    (void)ready;
    entry_on_child_output(ctx, 0);
}

static void entry_on_child_stderr(void *ctx, unsigned ready) {
    (void)ready;
    entry_on_child_output(ctx, 1);
}

/* Tells a child node's `init` to stop, from a fresh pid. */
void entry_send_init_stop(entry *cn) {
    erlang_pid from;
    gateway_make_pid(cn->gw, &from);
    nodes_send_init_stop(conns_dist(cn->conn), &from);
}

/* An instance of a C-node a reload removed or replaced: no new call reaches it; it stops for
 * good once it has no call in flight (those finish within their own deadlines). */
void entry_retire_service(entry *cn) {
    switch (supervisor_entry_phase(&cn->sup)) {
    case SUPERVISOR_STOPPING:
    case SUPERVISOR_STOPPED: return; /* on its way out, or out */
    case SUPERVISOR_UP: {
        pthread_mutex_lock(cn->host->mu);
        size_t in_flight = routing_owner_in_flight(&cn->route);
        pthread_mutex_unlock(cn->host->mu);
        if (in_flight) return;
    } /* fall through */
    case SUPERVISOR_SPAWNED:
    case SUPERVISOR_CONNECTING: entry_down(cn, false, "removed from the configuration"); return;
    default: /* not started, waiting to restart, or failed: nothing runs */
        supervisor_entry_stopped(&cn->sup);
        entry_set_state(cn, CNODE_STOPPED);
        return;
    }
}
