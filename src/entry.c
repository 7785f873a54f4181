/* entry: one supervised process or node: its life cycle, from spawn to reap, and its events. */
#include "entry.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "log.h"
#include "supervisor.h"
#include "template.h"

struct entry {
    const config_cnode *cfg;
    const entry_host *host;   /* what it acts with */
    log_limiter output_limit; /* its stdout/stderr lines in the log */
    entry_kind kind;
    unsigned instance;    /* C-nodes: 1..cfg->instances */
    void *group;          /* C-nodes: the gateway's record of the configured C-node */
    entry *first;         /* C-nodes: its C-node's first instance, where waiting calls are held */
    config_cnode own_cfg; /* children and peers: their synthesized config (cfg points here) */
    unsigned child_index; /* children: N of <prefix>N */
    bool removing;        /* being stopped for good: retire instead of restarting */
    bool stop_requested;  /* gateway_stop_node asked; the loop acts on it (guarded by host->mu) */
    bool retired;         /* off the list; freed once nothing refers to it */
    unsigned stop_stage;  /* SUPERVISOR_STOPPING: 0 asked to stop, 1 SIGTERM sent */
    entry *next;          /* in its entry_list (Erlang nodes only) */
    entry *retired_next;  /* in its entry_list's retired ones */
    char *executable;     /* resolved path; NULL for adopt */
    char sname[MAXATOMLEN];
    char hostname[MAXATOMLEN];
    char node[MAXNODELEN * 4]; /* the node name it has in the cluster */
    char *ready_line;
    /* supervisor (loop thread) */
    supervisor_entry sup; /* phase, its deadline, restarts (supervisor's accessors) */
    bool ready_seen;
    bool kill_sent;
    child *proc;
    loop_watch *out_watch[2]; /* stdout, stderr */
    conns_conn *conn;         /* its connection, owned by conns */
    unsigned connect_generation;
    unsigned connectors; /* conns_connect attempts not yet reported back: they hold `cn` */
    /* shared with API threads: guarded by host->mu */
    cnode_state state;
    dist_conn *live;       /* the connection calls use; a reference is held */
    routing_owner route;   /* its calls in flight and their counters (routing's accessors) */
    routing_owner waiting; /* a C-node's first instance: calls held until an instance is up */
    uint64_t ignored[DIST_CTL_KINDS]; /* control messages dropped on its closed connections */
    uint64_t bytes_in, bytes_out;     /* received and sent on its closed connections */
    unsigned calls_sent;              /* to this process since it started (calls_per_process) */
    bool draining;          /* took its calls_per_process: no more calls, recycled when idle */
    bool restart_requested; /* gateway_restart_cnode asked; the loop acts on it */
    pid_t os_pid;
    unsigned restarts;
    char last_exit[96];
    char last_error[192];
    int64_t up_since_ms;
};

static const char *entry_what(const entry *cn);
static bool entry_group_may_come_up_locked(const entry *first);
static void entry_set_state(entry *cn, cnode_state s);
static void entry_disconnect(entry *cn);
static void entry_flush_waiting(entry *cn);
static void entry_became_up(entry *cn);
static void entry_send_init_stop(entry *cn);
static void entry_list_retire(entry *cn);

/* "cnode" or "node", for log lines. */
static const char *entry_what(const entry *cn) {
    return cn->kind == ENTRY_CNODE ? "cnode" : "node";
}

/* A configured C-node's first instance: where its waiting calls are held. */
static entry *entry_first(entry *cn) {
    return cn->first;
}

/* True while an instance of the C-node whose first instance is `first` may still come up, so
 * a call may wait for it: none has failed or stopped for good (caller holds mu). */
static bool entry_group_may_come_up_locked(const entry *first) {
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

static void entry_set_state(entry *cn, cnode_state s) {
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
static void entry_disconnect(entry *cn) {
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
        if (!*cn->host->shutting_down) entry_list_retire(cn);
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
static void entry_flush_waiting(entry *cn) {
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

static void entry_became_up(entry *cn) {
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
static void entry_close(entry *cn) {
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
static void entry_send_init_stop(entry *cn) {
    erlang_pid from;
    entry_host_make_pid(cn->host, &from);
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

/* ------------------------------------------------------------------------------------------ */
/* Set-up and tear-down */

entry *entry_array_new(unsigned n) {
    return calloc(n ? n : 1, sizeof(entry));
}

entry *entry_at(entry *first, unsigned i) {
    return first + i;
}

/* Looks for a bare executable name beside nodexd, then in ../libexec/nodex. */
static char *entry_resolve_executable(const char *name, char *err, size_t err_len) {
    if (strchr(name, '/')) {
        if (access(name, X_OK) == 0) return strdup(name);
        snprintf(err, err_len, "executable %s: %s", name, strerror(errno));
        return NULL;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) *slash = '\0';
        const char *const dirs[] = {"%s/%s", "%s/../libexec/nodex/%s"};
        for (size_t i = 0; i < 2; i++) {
            char path[PATH_MAX * 2];
            snprintf(path, sizeof path, dirs[i], self, name);
            if (access(path, X_OK) == 0) return realpath(path, NULL);
        }
    }
    snprintf(err, err_len, "executable %s: not found beside nodexd or in ../libexec/nodex", name);
    return NULL;
}

/* The fields every entry starts with. */
static void entry_init_common(entry *cn, const entry_host *h, const config_cnode *cfg,
                              entry_kind kind) {
    cn->cfg = cfg;
    cn->host = h;
    cn->kind = kind;
    log_limiter_init(&cn->output_limit, ENTRY_OUTPUT_LINES_PER_S, 1000);
    routing_owner_init(&cn->route, cfg, cn->node);
    supervisor_entry_init(&cn->sup);
    cn->state = CNODE_STARTING;
}

/* The C-node's names: sname (pools: <sname>_<instance>), node, hostname, ready line. */
static int entry_cnode_names(entry *cn, const entry_host *h, const config_cnode *cfg,
                             unsigned instance, char *err, size_t err_len) {
    snprintf(cn->hostname, sizeof cn->hostname, "%s", cfg->hostname ? cfg->hostname : h->hostname);
    const template_var vars[] = {{"name", cfg->name},        {"gateway_sname", h->sname},
                                 {"hostname", cn->hostname}, {"gateway_node", h->node_name},
                                 {"sname", cn->sname},       {"node", cn->node}};
    char *sname =
        template_expand(cfg->sname ? cfg->sname : "{gateway_sname}_{name}", vars, 4, NULL);
    if (!sname || strlen(sname) + 12 >= sizeof cn->sname) {
        snprintf(err, err_len, "cnode %s: bad sname", cfg->name);
        free(sname);
        return -1;
    }
    /* A pool's instances need distinct node names: <sname>_<instance>. */
    if (cfg->instances > 1)
        snprintf(cn->sname, sizeof cn->sname, "%s_%u", sname, instance);
    else
        snprintf(cn->sname, sizeof cn->sname, "%s", sname);
    free(sname);
    if (cfg->node && cfg->instances > 1) {
        snprintf(err, err_len, "cnode %s: `node` names one node, so `instances` must be 1",
                 cfg->name);
        return -1;
    }
    if (cfg->node) {
        char *node = template_expand(cfg->node, vars, 5, NULL);
        if (!node || strlen(node) >= sizeof cn->node || !strchr(node, '@')) {
            snprintf(err, err_len, "cnode %s: bad node name", cfg->name);
            free(node);
            return -1;
        }
        snprintf(cn->node, sizeof cn->node, "%s", node);
        free(node);
    } else {
        snprintf(cn->node, sizeof cn->node, "%s@%s", cn->sname, cn->hostname);
    }
    cn->ready_line = template_expand(cfg->ready_line ? cfg->ready_line : "{sname}@{hostname} ready",
                                     vars, 6, NULL);
    if (!cn->ready_line) {
        snprintf(err, err_len, "cnode %s: bad ready_line", cfg->name);
        return -1;
    }
    return 0;
}

int entry_init_cnode(entry *first, unsigned instance, const entry_host *h, const config_cnode *cfg,
                     void *group, char *err, size_t err_len) {
    entry *cn = first + (instance - 1);
    entry_init_common(cn, h, cfg, ENTRY_CNODE);
    cn->instance = instance;
    cn->group = group;
    cn->first = first;
    routing_owner_init(&cn->waiting, cfg, cn->node);
    if (entry_cnode_names(cn, h, cfg, instance, err, err_len) != 0) return -1;
    if (cfg->direction != CNODE_DIRECTION_ADOPT) {
        char why[256];
        cn->executable = entry_resolve_executable(cfg->executable, why, sizeof why);
        if (!cn->executable) {
            snprintf(err, err_len, "cnode %s: %s", cfg->name, why);
            return -1;
        }
    }
    return 0;
}

void entry_array_free(entry *first, unsigned n) {
    for (unsigned i = 0; first && i < n; i++) {
        entry *cn = &first[i];
        if (cn->host) entry_close(cn); /* set up (entry_init_cnode ran) */
        child_free(cn->proc);
        free(cn->executable);
        free(cn->ready_line);
    }
    free(first);
}

entry *entry_new_node(const entry_host *h, entry_kind kind, const char *node,
                      unsigned child_index) {
    entry *cn = calloc(1, sizeof *cn);
    if (!cn) return NULL;
    entry_init_common(cn, h, &cn->own_cfg, kind);
    cn->child_index = child_index;
    snprintf(cn->node, sizeof cn->node, "%s", node);
    const char *at = strchr(node, '@');
    snprintf(cn->sname, sizeof cn->sname, "%.*s", at ? (int)(at - node) : 0, node);
    snprintf(cn->hostname, sizeof cn->hostname, "%s", at ? at + 1 : "");
    if (nodes_config(h->cfg, kind == ENTRY_CHILD, node, h->child_home, &cn->own_cfg,
                     &cn->executable, &cn->ready_line) != 0) {
        entry_free(cn);
        return NULL;
    }
    return cn;
}

/* ------------------------------------------------------------------------------------------ */
/* What it is */

entry_kind entry_kind_of(const entry *cn) {
    return cn->kind;
}
const config_cnode *entry_cfg(const entry *cn) {
    return cn->cfg;
}
const char *entry_node(const entry *cn) {
    return cn->node;
}
unsigned entry_instance(const entry *cn) {
    return cn->instance;
}
void *entry_group(const entry *cn) {
    return cn->group;
}
routing_owner *entry_route(entry *cn) {
    return &cn->route;
}

/* ------------------------------------------------------------------------------------------ */
/* The Erlang-node list */

entry *entry_list_find_locked(const entry_list *l, const char *node) {
    for (entry *cn = l->head; cn; cn = cn->next)
        if (strcmp(cn->node, node) == 0) return cn;
    return NULL;
}

entry *entry_list_link_locked(entry_list *l, entry *cn) {
    entry *existing = entry_list_find_locked(l, cn->node);
    if (existing) {
        entry_free(cn);
        return existing;
    }
    cn->next = l->head;
    l->head = cn;
    l->count++;
    return cn;
}

entry *entry_list_first(const entry_host *h) {
    pthread_mutex_lock(h->mu);
    entry *head = h->nodes->head;
    pthread_mutex_unlock(h->mu);
    return head;
}

entry *entry_list_next(const entry *cn) {
    return cn->next;
}

static void entry_list_retire(entry *cn) {
    const entry_host *h = cn->host;
    entry_list *l = h->nodes;
    if (cn->kind == ENTRY_CNODE || cn->retired) return;
    cn->connect_generation++;
    entry_disconnect(cn);
    routing_fail_owner(h->routing, &cn->route, CALL_UNAVAILABLE, "the node was forgotten");
    pthread_mutex_lock(h->mu);
    for (entry **pp = &l->head; *pp; pp = &(*pp)->next) {
        if (*pp == cn) {
            *pp = cn->next;
            l->count--;
            break;
        }
    }
    cn->retired = true;
    l->retired_count++;
    pthread_mutex_unlock(h->mu);
    cn->retired_next = l->retired;
    l->retired = cn;
    log_info("node %s: forgotten", cn->node);
}

/* A retired child has been reported by the spawn tracker (stopped), which then no longer
 * holds it. */
void entry_list_free_retired(entry_list *l, const entry_host *h, nodes_spawns *spawns) {
    for (entry **pp = &l->retired; *pp;) {
        entry *cn = *pp;
        if (cn->connectors || nodes_spawns_holds(spawns, cn)) {
            pp = &cn->retired_next;
            continue;
        }
        *pp = cn->retired_next;
        pthread_mutex_lock(h->mu);
        l->retired_count--;
        pthread_mutex_unlock(h->mu);
        entry_free(cn);
    }
}

void entry_list_counts_locked(const entry_list *l, size_t *listed, size_t *retired) {
    *listed = l->count;
    *retired = l->retired_count;
}

size_t entry_list_children_locked(const entry_list *l) {
    size_t n = 0;
    for (const entry *cn = l->head; cn; cn = cn->next)
        n += cn->kind == ENTRY_CHILD && !cn->removing && !cn->stop_requested;
    return n;
}

int entry_list_info_locked(const entry_list *l, gateway_node_info **out) {
    size_t n = 0;
    for (const entry *cn = l->head; cn; cn = cn->next) n++;
    gateway_node_info *list = calloc(n ? n : 1, sizeof *list);
    if (!list) return -1;
    size_t i = 0;
    for (const entry *cn = l->head; cn; cn = cn->next, i++) {
        gateway_node_info *ni = &list[i];
        snprintf(ni->node, sizeof ni->node, "%s", cn->node);
        ni->connected = cn->live != NULL;
        ni->child = cn->kind == ENTRY_CHILD;
        ni->state = cn->state;
        ni->os_pid = cn->os_pid;
        ni->restarts = cn->restarts;
    }
    *out = list;
    return (int)n;
}

void entry_list_free(entry_list *l) {
    for (entry *cn = l->head, *next; cn; cn = next) {
        next = cn->next;
        entry_close(cn);
        entry_free(cn);
    }
    for (entry *cn = l->retired, *next; cn; cn = next) {
        next = cn->retired_next;
        entry_close(cn);
        entry_free(cn);
    }
    *l = (entry_list){0};
}

/* ------------------------------------------------------------------------------------------ */
/* Shared state (caller holds host->mu) */

dist_conn *entry_live_locked(const entry *cn) {
    return cn->live;
}

entry *entry_pick_instance_locked(entry *first) {
    entry *best = NULL;
    for (unsigned i = 0; i < first->cfg->instances; i++) {
        entry *cn = first + i;
        if (cn->state != CNODE_UP || !cn->live || cn->draining) continue;
        if (!best || routing_owner_in_flight(&cn->route) < routing_owner_in_flight(&best->route))
            best = cn;
    }
    return best;
}

gateway_error entry_take_call_locked(entry *cn, call *c, size_t backlog_max, dist_conn **dc) {
    const config_cnode *cfg = cn->cfg;
    /* too many calls, or the C-node does not take its input */
    if (routing_owner_in_flight(&cn->route) >= cfg->max_in_flight ||
        dist_pending_bytes(cn->live) > backlog_max)
        return GATEWAY_OVERLOADED;
    if (routing_register_locked(cn->host->routing, &cn->route, c) != 0) return GATEWAY_NO_MEMORY;
    dist_conn_ref(cn->live);
    *dc = cn->live;
    if (cfg->calls_per_process && ++cn->calls_sent >= cfg->calls_per_process)
        cn->draining = true; /* its last call: the next ones wait for the next process */
    return GATEWAY_OK;
}

gateway_error entry_hold_call_locked(entry *first, call *c, const char *prefix, size_t plen,
                                     const char *msg, size_t msg_len) {
    const config_cnode *cfg = first->cfg;
    if (!cfg->max_waiting || !entry_group_may_come_up_locked(first)) return GATEWAY_UNAVAILABLE;
    if (routing_owner_in_flight(&first->waiting) >= cfg->max_waiting) return GATEWAY_OVERLOADED;
    c->outbox = malloc(plen + msg_len ? plen + msg_len : 1);
    if (!c->outbox) return GATEWAY_NO_MEMORY;
    memcpy(c->outbox, prefix, plen);
    memcpy(c->outbox + plen, msg, msg_len);
    c->outbox_len = plen + msg_len;
    if (routing_register_locked(first->host->routing, &first->waiting, c) != 0) {
        free(c->outbox);
        c->outbox = NULL;
        return GATEWAY_NO_MEMORY;
    }
    return GATEWAY_OK;
}

bool entry_takes_rpc_locked(const entry *cn) {
    return !cn->removing && !cn->stop_requested && (cn->live || cn->state == CNODE_STARTING);
}

bool entry_node_known_locked(const entry *cn) {
    return cn->kind == ENTRY_CHILD || cn->live;
}

bool entry_request_stop_locked(entry *cn) {
    if (cn->kind != ENTRY_CHILD || cn->removing) return false;
    cn->stop_requested = true;
    return true;
}

void entry_group_request_restart_locked(entry *first) {
    for (unsigned i = 0; i < first->cfg->instances; i++) first[i].restart_requested = true;
}

bool entry_group_ready_locked(const entry *first) {
    for (unsigned i = 0; i < first->cfg->instances; i++) {
        cnode_state st = first[i].state;
        if (st != CNODE_STOPPED && st != CNODE_UP) return false;
    }
    return true;
}

void entry_group_set_removing_locked(entry *first) {
    for (unsigned i = 0; i < first->cfg->instances; i++) first[i].removing = true;
}

bool entry_done_locked(const entry *cn) {
    return !cn->proc && !cn->conn && !cn->live && !cn->connectors &&
           supervisor_entry_phase(&cn->sup) == SUPERVISOR_STOPPED &&
           !routing_owner_in_flight(&cn->route) && !routing_owner_in_flight(&cn->waiting);
}

void entry_info_locked(const entry *cn, int64_t now, gateway_cnode_info *out) {
    out->name = cn->cfg->name;
    out->instance = cn->instance;
    out->instances = cn->cfg->instances;
    out->instances_up = cn->state == CNODE_UP;
    out->state = cn->state;
    snprintf(out->node, sizeof out->node, "%s", cn->node);
    out->os_pid = cn->os_pid;
    out->restarts = cn->restarts;
    snprintf(out->last_exit, sizeof out->last_exit, "%s", cn->last_exit);
    snprintf(out->last_error, sizeof out->last_error, "%s", cn->last_error);
    out->in_flight = routing_owner_in_flight(&cn->route);
    out->uptime_ms = cn->state == CNODE_UP ? now - cn->up_since_ms : 0;
    out->calls_total = routing_owner_calls_total(&cn->route);
    out->waiting = routing_owner_in_flight(&cn->waiting);
    for (int k = 0; k < DIST_CTL_KINDS; k++)
        out->ignored_controls[k] =
            cn->ignored[k] + (cn->live ? dist_ignored_count(cn->live, (dist_ignored_control)k) : 0);
    out->dropped_messages = routing_owner_dropped(&cn->route);
    out->stats = *routing_owner_stats(&cn->route);
    memset(&out->waited, 0, sizeof out->waited);
    out->bytes_in = cn->bytes_in + (cn->live ? dist_bytes_in(cn->live) : 0);
    out->bytes_out = cn->bytes_out + (cn->live ? dist_bytes_out(cn->live) : 0);
    out->direction = cn->cfg->direction;
    out->protocol = cn->cfg->protocol;
}

void entry_group_info_locked(const entry *first, gateway_cnode_info *out) {
    int64_t now = dist_now_ms();
    entry_info_locked(first, now, out);
    for (unsigned i = 1; i < first->cfg->instances; i++) {
        gateway_cnode_info one;
        entry_info_locked(first + i, now, &one);
        out->instances_up += one.instances_up;
        out->restarts += one.restarts;
        out->in_flight += one.in_flight;
        out->waiting += one.waiting;
        for (int k = 0; k < DIST_CTL_KINDS; k++)
            out->ignored_controls[k] += one.ignored_controls[k];
        out->calls_total += one.calls_total;
        out->dropped_messages += one.dropped_messages;
        routing_stats_add(&out->stats, &one.stats);
        out->bytes_in += one.bytes_in;
        out->bytes_out += one.bytes_out;
        if (out->state != CNODE_UP && one.state == CNODE_UP) {
            out->state = CNODE_UP;
            out->uptime_ms = one.uptime_ms;
        }
    }
    out->waited = *routing_owner_stats(&first->waiting); /* calls never sent */
    routing_stats_add(&out->stats, &out->waited);
    out->instance = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Connections (loop thread) */

/* Attaches a connection to its entry (both ways). Peers tick at their own net_ticktime, which
 * we cannot know: they get node.peer_tick_time_ms; C-nodes and children the tick time. */
static void entry_attach(entry *cn, conns_conn *c) {
    int64_t silence = cn->kind == ENTRY_PEER ? (int64_t)cn->host->cfg->peer_tick_time_ms : 0;
    conns_set_owner(c, cn, silence);
    cn->conn = c;
}

void entry_on_connected(entry *cn, unsigned generation, int fd, const char *peer,
                        const char *error) {
    conns_conn *gc;
    cn->connectors--;
    bool current = !cn->retired && generation == cn->connect_generation &&
                   supervisor_entry_phase(&cn->sup) == SUPERVISOR_CONNECTING;
    if (!current) {
        if (fd >= 0) ei_close_connection(fd);
    } else if (fd < 0) {
        entry_down(cn, cn->cfg->direction != CNODE_DIRECTION_ADOPT, "%s", error);
    } else if ((gc = conns_add(cn->host->conns, fd, peer)) != NULL) {
        entry_attach(cn, gc);
        log_info("%s %s: connected to %s", entry_what(cn), cn->cfg->name, peer);
        entry_became_up(cn);
    } else {
        entry_down(cn, true, "cannot watch the connection");
    }
}

bool entry_expects_connection(const entry *cn) {
    return supervisor_entry_phase(&cn->sup) == SUPERVISOR_SPAWNED && !cn->conn;
}

void entry_connected_back(entry *cn, conns_conn *c) {
    entry_attach(cn, c);
    log_info("cnode %s: connected back from %s", cn->cfg->name, cn->node);
    if (cn->ready_seen) entry_became_up(cn);
}

void entry_peer_connected(entry *cn, conns_conn *c) {
    if (cn->conn) {
        log_warn("node %s connected twice; closing the new connection", cn->node);
        conns_close(cn->host->conns, c);
        return;
    }
    log_info("node %s connected", cn->node);
    cn->connect_generation++; /* a connector of ours still running is now stale */
    entry_attach(cn, c);
    entry_became_up(cn);
}

void entry_on_monitor_end(call *c, routing_owner *o, void *ctx) {
    const entry_host *h = ctx;
    entry *cn = (entry *)(void *)((char *)o - offsetof(entry, route));
    pthread_mutex_lock(h->mu);
    dist_conn *dc = cn->live;
    if (dc) dist_conn_ref(dc);
    pthread_mutex_unlock(h->mu);
    if (!dc) return;
    dist_send_demonitor(dc, &c->pid, cn->cfg->registered_name, &c->ref);
    dist_conn_unref(dc);
}

/* ------------------------------------------------------------------------------------------ */
/* Supervision (loop thread) */

bool entry_idle(const entry *cn) {
    return supervisor_entry_phase(&cn->sup) == SUPERVISOR_IDLE;
}

bool entry_stop_requested(const entry *cn) {
    pthread_mutex_lock(cn->host->mu);
    bool stop = cn->stop_requested && !cn->removing;
    pthread_mutex_unlock(cn->host->mu);
    return stop;
}

void entry_child_status(const void *child, nodes_child_status *out) {
    const entry *cn = child;
    out->state = cn->state;
    out->node = cn->node;
    out->last_error = cn->last_error;
}

void entry_stop_begin(entry *cn) {
    const entry_host *h = cn->host;
    cn->connect_generation++;
    if (cn->kind == ENTRY_CHILD && cn->conn) entry_send_init_stop(cn);
    entry_disconnect(cn);
    routing_fail_owner(h->routing, &cn->route, CALL_SHUTDOWN, "the gateway is shutting down");
    routing_fail_owner(h->routing, &cn->waiting, CALL_SHUTDOWN, "the gateway is shutting down");
    cn->stop_stage = 0;
    if (cn->proc && cn->kind != ENTRY_CHILD) {
        child_signal(cn->proc, SIGTERM);
        cn->stop_stage = 1;
    }
    supervisor_entry_stopping(&cn->sup, INT64_MAX); /* the loop's timers no longer run */
}

bool entry_stop_wait(entry *cn, int64_t waited) {
    if (!cn->proc) return false;
    entry_reap(cn);
    if (!cn->proc) return false;
    unsigned t = cn->cfg->shutdown_timeout_ms;
    if (cn->stop_stage == 0 && waited >= t / 2) {
        child_signal(cn->proc, SIGTERM);
        cn->stop_stage = 1;
    } else if (cn->stop_stage == 1 && waited >= t) {
        log_warn("%s: did not stop in %u ms; SIGKILL", cn->cfg->name, t);
        child_signal(cn->proc, SIGKILL);
        cn->stop_stage = 2;
    }
    return true;
}

void entry_stop_end(entry *cn) {
    supervisor_entry_stopped(&cn->sup);
    entry_set_state(cn, CNODE_STOPPED);
}

void entry_host_make_pid(const entry_host *h, erlang_pid *pid) {
    pthread_mutex_lock(h->mu);
    ei_make_pid(h->ec, pid);
    pthread_mutex_unlock(h->mu);
}

void entry_fail_waiting(entry *first, const char *detail) {
    routing_fail_owner(first->host->routing, &first->waiting, CALL_UNAVAILABLE, detail);
}
