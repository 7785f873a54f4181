/* gateway: the composition: the node's entries, the actions of their supervision, the call path. */
#include "gateway.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "child.h"
#include "conns.h"
#include "dist.h"
#include "events.h"
#include "ei_sock.h"
#include "log.h"
#include "loop.h"
#include "nodes.h"
#include "routing.h"
#include "sdnotify.h"
#include "supervisor.h"
#include "template.h"

#define GW_OUTPUT_LINES_PER_S 100  /* C-node output lines logged per second and process */
#define GW_OUTPUT_LINE_MAX    1024 /* bytes of one output line in the log */
#define GW_SWEEP_MS           50   /* supervisor timers and ticks are checked this often */
/* Calls and casts to a C-node with this much input waiting get 503 overloaded (backpressure). */
#define GW_BACKLOG_SOFT_MAX    ((size_t)32 << 20)
#define GW_BUSY_POLL_MAX_CALLS 2 /* the loop busy-polls after traffic only with this few calls */
#define GW_HANDSHAKE_MS        3000
#define GW_ACCEPTORS           4 /* a stalled handshake holds one acceptor, not all of them */

static const char *const cnode_state_names[] = {
#define X(id, name) name,
    CNODE_STATES(X)
#undef X
};
static const char *const gateway_error_codes[] = {
#define X(id, code) code,
    GATEWAY_ERRORS(X)
#undef X
};

const char *cnode_state_name(cnode_state s) {
    return cnode_state_names[s];
}
const char *gateway_error_code(gateway_error e) {
    return gateway_error_codes[e];
}

typedef struct gw_cnode gw_cnode;
typedef struct gw_group gw_group;

/* What a supervised entry is. C-nodes come from the config; Erlang nodes come and go. */
typedef enum gw_entry_kind {
    ENTRY_CNODE, /* a configured C-node */
    ENTRY_CHILD, /* a child Erlang node started by nodexd */
    ENTRY_PEER,  /* another node of the cluster, connected for rpc or because it connected */
} gw_entry_kind;

struct gw_cnode {
    const config_cnode *cfg;
    gateway *gw;
    log_limiter output_limit; /* its stdout/stderr lines in the log */
    gw_entry_kind kind;
    unsigned instance;      /* C-nodes: 1..cfg->instances */
    gw_group *group;        /* C-nodes: the configured C-node it is an instance of */
    config_cnode own_cfg;   /* children and peers: their synthesized config (cfg points here) */
    unsigned child_index;   /* children: N of <prefix>N */
    bool removing;          /* being stopped for good: retire instead of restarting */
    bool stop_requested;    /* gateway_stop_node asked; the loop acts on it (guarded by mu) */
    bool retired;           /* off the list; freed once nothing refers to it (gw_free_retired) */
    unsigned stop_stage;    /* SUPERVISOR_STOPPING: 0 asked to stop, 1 SIGTERM sent */
    gw_cnode *next;         /* in gw->nodes (Erlang nodes only) */
    gw_cnode *retired_next; /* in gw->retired */
    char *executable;       /* resolved path; NULL for adopt */
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
    /* shared with API threads: guarded by gw->mu */
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

/* A configured C-node: its instances, made from one config_cnode. A reload that removes or
 * changes it takes it off gw->groups (no thread finds it from then on) and onto gw->retired_groups,
 * where its instances finish their calls in flight and stop; it is freed once all have. */
struct gw_group {
    const config_cnode *cfg; /* lives as long as the process (configs are kept until exit) */
    gw_cnode *inst;          /* cfg->instances entries */
    size_t index;            /* in gw->groups while not removed */
    bool removed;            /* on gw->retired_groups (loop thread; set under mu) */
    bool started;            /* its instances were started (loop thread) */
    gw_group *retired_next;
};

struct gateway {
    const config *cfg;
    ei_cnode ec;         /* the node: pids, refs, the acceptors' handshakes */
    ei_cnode ec_connect; /* the same node for outgoing handshakes, on deadline-bound sockets */
    char node_name[MAXNODELEN * 4];
    char sname[MAXATOMLEN];
    char hostname[MAXATOMLEN];
    char *cookie;
    int listen_fd;
    int publish_fd;
    loop *loop;
    loop_timer *sweep;    /* supervisor timers and ticks */
    loop_watch *external; /* gateway_watch_fd */
    void (*external_fn)(void *ctx);
    void *external_ctx;
    int (*iteration_hook)(void *ctx);
    void *iteration_ctx;
    void (*reload_fn)(void *ctx); /* SIGHUP: gateway_on_reload */
    void *reload_ctx;
    void (*drain_fn)(void *ctx); /* SIGTERM with shutdown.drain_ms: gateway_on_drain */
    void *drain_ctx;
    int64_t drain_until_ms; /* monotonic end of the drain; 0 while not draining (loop thread) */
    loop_timer *watchdog;   /* WATCHDOG=1 to systemd when WatchdogSec= asks for it */
    int64_t watchdog_ms;
    conns *conns; /* distribution connections, acceptors and connectors */
    atomic_bool stop_requested;
    gw_group **groups; /* the configured C-nodes, in config order: changed by the loop under mu */
    size_t group_count;
    gw_group *retired_groups; /* removed or replaced by a reload, still stopping (loop thread) */
    gw_cnode *nodes;      /* Erlang nodes: prepended under mu by any thread, unlinked by the loop */
    gw_cnode *retired;    /* unlinked entries (loop thread), freed by gw_free_retired */
    size_t retired_count; /* entries on gw->retired (guarded by mu) */
    size_t node_count;    /* entries on gw->nodes (guarded by mu) */
    unsigned child_max_index;
    char *child_home;     /* private HOME holding .erlang.cookie for child nodes */
    nodes_spawns *spawns; /* POST /nodes requests in progress */
    /* call path: guarded by mu */
    pthread_mutex_t mu;
    routing *routing; /* in-flight calls, guarded by mu */
    bool shutting_down;
    bool draining;        /* SIGTERM came: calls in flight finish, no new ones, not ready */
    uint32_t ref_counter; /* gen_call references (routing_make_ref) */
    events *events;
};

/* ------------------------------------------------------------------------------------------ */
/* Small helpers */

static void gw_wake(gateway *gw) {
    loop_wake(gw->loop);
}

/* Looks for a bare executable name beside nodexd, then in ../libexec/nodex. */
static char *gw_resolve_executable(const char *name, char *err, size_t err_len) {
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

/* ------------------------------------------------------------------------------------------ */
/* Entries: configured C-nodes, then Erlang nodes */

static gw_cnode *gw_nodes_head(gateway *gw) {
    pthread_mutex_lock(&gw->mu);
    gw_cnode *head = gw->nodes;
    pthread_mutex_unlock(&gw->mu);
    return head;
}

/* The group after `g` (NULL: the first): the configured ones, then those still stopping. */
static gw_group *gw_group_next(gateway *gw, const gw_group *g) {
    if (!g) return gw->group_count ? gw->groups[0] : gw->retired_groups;
    if (g->removed) return g->retired_next;
    return g->index + 1 < gw->group_count ? gw->groups[g->index + 1] : gw->retired_groups;
}

/* The entry after `prev` (NULL: the first): every C-node instance, then the Erlang nodes. Loop
 * thread: the only one that adds groups, unlinks entries and frees either. */
static gw_cnode *gw_entry_next(gateway *gw, gw_cnode *prev) {
    gw_group *g;
    if (!prev) {
        g = gw_group_next(gw, NULL);
    } else if (prev->kind == ENTRY_CNODE) {
        if (prev->instance < prev->group->cfg->instances) return &prev->group->inst[prev->instance];
        g = gw_group_next(gw, prev->group);
    } else {
        return prev->next;
    }
    return g ? &g->inst[0] : gw_nodes_head(gw);
}

static void gw_cnode_disconnect(gw_cnode *cn);
static void gw_group_free(gw_group *g);

/* Takes an Erlang-node entry off the list for good: no thread can find it from now on. Its
 * connection (a child that exited before its connection was seen lost) is closed and its calls
 * failed; the memory goes once no connector attempt refers to it (gw_free_retired). Loop
 * thread. */
static void gw_entry_retire(gw_cnode *cn) {
    gateway *gw = cn->gw;
    if (cn->kind == ENTRY_CNODE || cn->retired) return;
    cn->connect_generation++;
    gw_cnode_disconnect(cn);
    routing_fail_owner(gw->routing, &cn->route, CALL_UNAVAILABLE, "the node was forgotten");
    pthread_mutex_lock(&gw->mu);
    for (gw_cnode **pp = &gw->nodes; *pp; pp = &(*pp)->next) {
        if (*pp == cn) {
            *pp = cn->next;
            gw->node_count--;
            break;
        }
    }
    cn->retired = true;
    gw->retired_count++;
    pthread_mutex_unlock(&gw->mu);
    cn->retired_next = gw->retired;
    gw->retired = cn;
    log_info("node %s: forgotten", cn->node);
}

/* Finds an Erlang-node entry by node name (caller holds mu). */
static gw_cnode *gw_find_node_locked(gateway *gw, const char *node) {
    for (gw_cnode *cn = gw->nodes; cn; cn = cn->next)
        if (strcmp(cn->node, node) == 0) return cn;
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Supervisor */

/* "cnode" or "node", for log lines. */
static const char *gw_what(const gw_cnode *cn) {
    return cn->kind == ENTRY_CNODE ? "cnode" : "node";
}

/* A configured C-node's first instance: where its waiting calls are held. */
static gw_cnode *gw_group_first(gw_cnode *cn) {
    return &cn->group->inst[0];
}

/* True while an instance of the C-node whose first instance is `first` may still come up, so
 * a call may wait for it: none has failed or stopped for good (caller holds mu). */
static bool gw_group_may_come_up_locked(const gw_cnode *first) {
    for (unsigned i = 0; i < first->cfg->instances; i++)
        if (first[i].state != CNODE_FAILED && first[i].state != CNODE_STOPPED) return true;
    return false;
}

/* A C-node that took its calls_per_process and has none left in flight goes down as planned:
 * it is started again at once, and not counted as a failure. */
static bool gw_cnode_recycle_due(gw_cnode *cn) {
    if (cn->kind != ENTRY_CNODE) return false;
    pthread_mutex_lock(&cn->gw->mu);
    bool due = cn->draining && routing_owner_in_flight(&cn->route) == 0;
    pthread_mutex_unlock(&cn->gw->mu);
    return due;
}

/* Loop thread (the only writer of the fields read here). */
static void gw_emit(gateway *gw, const gw_cnode *cn, cnode_state s) {
    gateway_event ev = {.erlang_node = cn->kind != ENTRY_CNODE, .state = s, .os_pid = cn->os_pid};
    snprintf(ev.name, sizeof ev.name, "%s", cn->cfg->name);
    snprintf(ev.node, sizeof ev.node, "%s", cn->node);
    if (s == CNODE_DOWN || s == CNODE_FAILED || s == CNODE_RESTARTING)
        snprintf(ev.reason, sizeof ev.reason, "%s", cn->last_error);
    events_emit(gw->events, &ev);
}

static void gw_set_state(gw_cnode *cn, cnode_state s) {
    if (cn->state == s) return;
    log_info("%s %s: %s -> %s", gw_what(cn), cn->cfg->name, cnode_state_name(cn->state),
             cnode_state_name(s));
    pthread_mutex_lock(&cn->gw->mu);
    cn->state = s;
    cn->up_since_ms = s == CNODE_UP ? dist_now_ms() : 0;
    pthread_mutex_unlock(&cn->gw->mu);
    gw_emit(cn->gw, cn, s);
}

static void gw_set_error(gw_cnode *cn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void gw_set_error(gw_cnode *cn, const char *fmt, ...) {
    char msg[sizeof cn->last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&cn->gw->mu);
    memcpy(cn->last_error, msg, sizeof msg);
    pthread_mutex_unlock(&cn->gw->mu);
}

static void gw_cnode_close_output(gw_cnode *cn) {
    for (int s = 0; s < 2; s++) {
        loop_watch_remove(cn->gw->loop, cn->out_watch[s]);
        cn->out_watch[s] = NULL;
    }
}

/* Drops the C-node's connection (if any) from the call path and closes it. */
static void gw_cnode_disconnect(gw_cnode *cn) {
    gateway *gw = cn->gw;
    pthread_mutex_lock(&gw->mu);
    dist_conn *live = cn->live;
    cn->live = NULL;
    for (int k = 0; live && k < DIST_CTL_KINDS; k++)
        cn->ignored[k] += dist_ignored_count(live, (dist_ignored_control)k);
    if (live) {
        cn->bytes_in += dist_bytes_in(live);
        cn->bytes_out += dist_bytes_out(live);
    }
    pthread_mutex_unlock(&gw->mu);
    if (live) dist_conn_unref(live);
    if (cn->conn) {
        conns_close(gw->conns, cn->conn);
        cn->conn = NULL;
    }
}

static void gw_cnode_start(gw_cnode *cn);

/* Calls waiting for a C-node none of whose instances can come up any more fail now. */
static void gw_group_fail_waiting(gw_cnode *cn) {
    if (cn->kind != ENTRY_CNODE) return;
    gw_cnode *first = gw_group_first(cn);
    pthread_mutex_lock(&cn->gw->mu);
    bool hopeless = !gw_group_may_come_up_locked(first);
    pthread_mutex_unlock(&cn->gw->mu);
    if (!hopeless) return;
    char detail[200];
    snprintf(detail, sizeof detail, "C-node %.64s is %s: %.100s", cn->cfg->name,
             cnode_state_name(cn->state), cn->last_error);
    routing_fail_owner(cn->gw->routing, &first->waiting, CALL_UNAVAILABLE, detail);
}

/* Restart decision once the C-node is gone (process reaped, or never had one). */
static void gw_cnode_after_exit(gw_cnode *cn, bool normal_exit) {
    const config_cnode *cfg = cn->cfg;
    bool for_good = cn->gw->shutting_down || cn->removing;
    switch (supervisor_entry_after_exit(&cn->sup, cfg, normal_exit, for_good,
                                        cn->kind == ENTRY_PEER, dist_now_ms())) {
    case SUPERVISOR_DO_START: gw_cnode_start(cn); break;
    case SUPERVISOR_DO_RETIRE:
        gw_set_state(cn, CNODE_STOPPED);
        if (!cn->gw->shutting_down) gw_entry_retire(cn);
        break;
    case SUPERVISOR_DO_SET_STOPPED:
        gw_set_state(cn, CNODE_STOPPED);
        gw_group_fail_waiting(cn);
        break;
    case SUPERVISOR_DO_SET_FAILED:
        log_error("%s %s: failed: more than %u restarts in %u s (last: %s)%s", gw_what(cn),
                  cfg->name, cfg->max_restarts, cfg->max_seconds, cn->last_error,
                  cfg->retry_failed_after_ms ? "; trying again after retry_failed_after_ms" : "");
        gw_set_state(cn, CNODE_FAILED);
        gw_group_fail_waiting(cn);
        break;
    case SUPERVISOR_DO_SET_RESTARTING: gw_set_state(cn, CNODE_RESTARTING); break;
    default: break;
    }
}

/* The C-node is lost or failed to start: fail its calls, stop its process, then decide. */
static void gw_cnode_down(gw_cnode *cn, bool kill_now, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void gw_cnode_down(gw_cnode *cn, bool kill_now, const char *fmt, ...) {
    char reason[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    const char *what = cn->kind == ENTRY_CNODE ? "C-node" : "node";
    if (gw_cnode_recycle_due(cn)) supervisor_entry_restart_soon(&cn->sup);
    if (supervisor_entry_restart_due(&cn->sup))
        log_info("%s %s: restarting: %s", what, cn->cfg->name, reason);
    else
        log_warn("%s %s: down: %s", what, cn->cfg->name, reason);
    gw_set_error(cn, "%s", reason);
    cn->connect_generation++; /* any connector still running is now stale */
    gw_cnode_disconnect(cn);
    char detail[200];
    snprintf(detail, sizeof detail, "%s %s went down during the call: %s", what, cn->cfg->name,
             reason);
    routing_fail_owner(cn->gw->routing, &cn->route, CALL_UNAVAILABLE, detail);
    if (cn->proc && !child_exited(cn->proc)) {
        child_signal(cn->proc, kill_now ? SIGKILL : SIGTERM);
        cn->kill_sent = kill_now;
        supervisor_entry_stopping(&cn->sup, dist_now_ms() + cn->cfg->shutdown_timeout_ms);
        gw_set_state(cn, CNODE_DOWN);
        return;
    }
    gw_set_state(cn, CNODE_DOWN);
    gw_cnode_after_exit(cn, false);
}

/* Reaps the process once it exited; records how. Returns true if it had exited. */
static bool gw_cnode_reap(gw_cnode *cn) {
    int status;
    if (!cn->proc || !child_poll_exit(cn->proc, &status)) return false;
    char how[96];
    child_describe_status(status, how, sizeof how);
    gw_cnode_close_output(cn);
    /* Read what is left in the pipes so the last lines are logged. */
    child_free(cn->proc);
    cn->proc = NULL;
    pthread_mutex_lock(&cn->gw->mu);
    snprintf(cn->last_exit, sizeof cn->last_exit, "%s", how);
    cn->os_pid = 0;
    pthread_mutex_unlock(&cn->gw->mu);
    bool normal = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    switch (supervisor_entry_phase(&cn->sup)) {
    case SUPERVISOR_SPAWNED:
        log_warn("%s %s: exited before it was up: %s", gw_what(cn), cn->cfg->name, how);
        gw_set_error(cn, "exited before it was up: %s", how);
        gw_cnode_disconnect(cn);
        routing_fail_owner(cn->gw->routing, &cn->route, CALL_UNAVAILABLE, "C-node exited");
        gw_set_state(cn, CNODE_DOWN);
        gw_cnode_after_exit(cn, normal);
        break;
    case SUPERVISOR_UP:
    case SUPERVISOR_CONNECTING:
        if (gw_cnode_recycle_due(cn)) supervisor_entry_restart_soon(&cn->sup);
        if (supervisor_entry_restart_due(&cn->sup))
            log_info("%s %s: process %s; starting again", gw_what(cn), cn->cfg->name, how);
        else
            log_warn("%s %s: process %s", gw_what(cn), cn->cfg->name, how);
        gw_set_error(cn, "process %s", how);
        cn->connect_generation++;
        gw_cnode_disconnect(cn);
        routing_fail_owner(cn->gw->routing, &cn->route, CALL_UNAVAILABLE,
                           "C-node process exited during the call");
        gw_set_state(cn, CNODE_DOWN);
        gw_cnode_after_exit(cn, normal);
        break;
    case SUPERVISOR_STOPPING: gw_cnode_after_exit(cn, normal && !cn->kill_sent); break;
    default: break;
    }
    return true;
}

/* Sends a call that waited (its message in c->outbox) on `dc`, its monitor first (gen_call). */
static void gw_send_outbox(dist_conn *dc, const config_cnode *cfg, call *c) {
    if (c->monitored) dist_send_monitor(dc, &c->pid, cfg->registered_name, &c->ref);
    dist_send_reg(dc, &c->pid, cfg->registered_name, NULL, 0, c->outbox, c->outbox_len);
    free(c->outbox);
    c->outbox = NULL;
    c->outbox_len = 0;
}

/* An instance that is up takes the calls waiting for its C-node, oldest first, as many as
 * max_in_flight and calls_per_process leave room for. Loop thread. */
static void gw_flush_waiting(gw_cnode *cn) {
    gateway *gw = cn->gw;
    const config_cnode *cfg = cn->cfg;
    gw_cnode *first = gw_group_first(cn);
    call **taken = NULL;
    size_t n = 0;
    pthread_mutex_lock(&gw->mu);
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
    pthread_mutex_unlock(&gw->mu);
    /* Only this thread ends calls, so the taken ones stay valid after the unlock. */
    for (size_t i = 0; i < n; i++) gw_send_outbox(dc, cfg, taken[i]);
    if (n) dist_conn_unref(dc);
    free(taken);
}

static void gw_cnode_became_up(gw_cnode *cn) {
    gateway *gw = cn->gw;
    supervisor_entry_up(&cn->sup);
    dist_conn *dc = conns_dist(cn->conn);
    dist_conn_ref(dc);
    /* Calls that waited for this connection (rpc to a node not yet connected) go out now.
     * Only this thread unregisters calls, so the pointers stay valid after the unlock. */
    call **waiting;
    pthread_mutex_lock(&gw->mu);
    cn->live = dc;
    cn->last_error[0] = '\0';
    size_t n = routing_owner_outboxes_locked(&cn->route, &waiting);
    pthread_mutex_unlock(&gw->mu);
    gw_set_state(cn, CNODE_UP);
    for (size_t i = 0; i < n; i++) gw_send_outbox(dc, cn->cfg, waiting[i]);
    free(waiting);
    /* Out of memory for the list: the waiting calls time out (504) rather than hang. */
    if (cn->kind == ENTRY_CNODE) gw_flush_waiting(cn);
}

static void gw_start_connector(gw_cnode *cn) {
    unsigned generation = ++cn->connect_generation;
    supervisor_entry_connecting(&cn->sup, cn->cfg, dist_now_ms());
    /* A C-node we just started ("to") may need a moment to appear in epmd: retry briefly.
     * An adopted node or a peer is there or not: one attempt (adoption retries with backoff). */
    bool retry = cn->cfg->direction == CNODE_DIRECTION_TO;
    if (conns_connect(cn->gw->conns, cn, generation, cn->node, cn->cfg->connect_timeout_ms,
                      retry) == 0)
        cn->connectors++; /* the attempt refers to cn until gw_on_connected */
    else
        gw_cnode_down(cn, true, "%s",
                      errno == ENOMEM ? "out of memory starting a connection"
                                      : "cannot start a connector thread");
}

static void gw_on_child_line(void *ctx, int stream, const char *line, size_t len) {
    gw_cnode *cn = ctx;
    /* a chatty or hostile process cannot flood the log: lines capped, and a rate per process */
    uint64_t suppressed = 0;
    if (log_limiter_allow(&cn->output_limit, dist_now_ms(), &suppressed)) {
        if (suppressed)
            log_warn("[%s] %llu output lines not logged (over %d a second)", cn->cfg->name,
                     (unsigned long long)suppressed, GW_OUTPUT_LINES_PER_S);
        if (len > GW_OUTPUT_LINE_MAX)
            log_info("[%s%s] %.*s... (%zu bytes)", cn->cfg->name, stream ? " stderr" : "",
                     GW_OUTPUT_LINE_MAX, line, len);
        else
            log_info("[%s%s] %.*s", cn->cfg->name, stream ? " stderr" : "", (int)len, line);
    }
    if (cn->ready_seen || supervisor_entry_phase(&cn->sup) != SUPERVISOR_SPAWNED) return;
    if (strlen(cn->ready_line) != len || memcmp(cn->ready_line, line, len) != 0) return;
    cn->ready_seen = true;
    if (cn->cfg->direction == CNODE_DIRECTION_TO) {
        gw_start_connector(cn);
    } else if (cn->conn) {
        gw_cnode_became_up(cn);
    }
    /* direction back without a connection yet: wait for it within the spawn timeout */
}

static void gw_on_child_stdout(void *ctx, unsigned ready);
static void gw_on_child_stderr(void *ctx, unsigned ready);

static void gw_cnode_spawn(gw_cnode *cn) {
    gateway *gw = cn->gw;
    const config_cnode *cfg = cn->cfg;
    const template_var vars[] = {
        {"sname", cn->sname},         {"hostname", cn->hostname},      {"cookie", gw->cookie},
        {"gateway_sname", gw->sname}, {"gateway_node", gw->node_name}, {"name", cfg->name},
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
        gw_set_error(cn, "cannot start %s: %s", cn->executable,
                     ok ? strerror(spawn_errno) : "out of memory");
        gw_set_state(cn, CNODE_DOWN);
        gw_cnode_after_exit(cn, false);
        return;
    }
    cn->proc = proc;
    cn->ready_seen = false;
    cn->kill_sent = false;
    cn->out_watch[0] = loop_watch_add(gw->loop, child_output_fd(proc, 0), gw_on_child_stdout, cn);
    cn->out_watch[1] = loop_watch_add(gw->loop, child_output_fd(proc, 1), gw_on_child_stderr, cn);
    pthread_mutex_lock(&gw->mu);
    cn->os_pid = child_pid(proc);
    pthread_mutex_unlock(&gw->mu);
    supervisor_entry_spawned(&cn->sup, cfg, dist_now_ms());
    log_info("%s %s: started %s as pid %d (node %s)", gw_what(cn), cfg->name, cn->executable,
             (int)cn->os_pid, cn->node);
}

static void gw_cnode_start(gw_cnode *cn) {
    pthread_mutex_lock(&cn->gw->mu);
    if (supervisor_entry_restarting(&cn->sup)) cn->restarts++;
    cn->calls_sent = 0; /* a new process: a fresh calls_per_process */
    cn->draining = false;
    pthread_mutex_unlock(&cn->gw->mu);
    if (cn->state == CNODE_STARTING)
        gw_emit(cn->gw, cn, CNODE_STARTING); /* a first start */
    else
        gw_set_state(cn, CNODE_STARTING);
    if (cn->cfg->direction == CNODE_DIRECTION_ADOPT)
        gw_start_connector(cn);
    else
        gw_cnode_spawn(cn);
}

static void gw_send_init_stop(gw_cnode *cn);

/* Stops a child node for good: init:stop (a {stop, stop} message to `init`), then SIGTERM,
 * then SIGKILL, each after half the shutdown timeout; then the entry is retired. */
static void gw_child_stop(gw_cnode *cn) {
    cn->removing = true;
    cn->connect_generation++;
    if (cn->conn) gw_send_init_stop(cn);
    gw_set_error(cn, "stopped on request");
    routing_fail_owner(cn->gw->routing, &cn->route, CALL_UNAVAILABLE, "the node is being stopped");
    if (cn->proc && !child_exited(cn->proc)) {
        cn->stop_stage = cn->conn ? 0 : 1;
        if (!cn->conn) child_signal(cn->proc, SIGTERM);
        supervisor_entry_stopping(&cn->sup, dist_now_ms() + cn->cfg->shutdown_timeout_ms / 2 + 1);
        gw_set_state(cn, CNODE_DOWN);
        return; /* the connection closes when the node exits */
    }
    gw_cnode_disconnect(cn);
    gw_set_state(cn, CNODE_DOWN);
    gw_cnode_after_exit(cn, true);
}

/* Phase deadlines: spawn timeout, connect timeout, kill escalation, backoff. */
static void gw_cnode_timers(gw_cnode *cn, int64_t now) {
    switch (supervisor_entry_timer(&cn->sup, now)) {
    case SUPERVISOR_DO_SPAWN_TIMEOUT:
        gw_cnode_down(cn, true,
                      cn->ready_seen ? "ready line seen but no connection within %u ms"
                                     : "no ready line within %u ms (spawn_inactive_timeout)",
                      cn->cfg->spawn_inactive_timeout_ms);
        break;
    case SUPERVISOR_DO_CONNECT_TIMEOUT:
        gw_cnode_down(cn, true, "could not connect to %s in time", cn->node);
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
    case SUPERVISOR_DO_START: gw_cnode_start(cn); break;
    case SUPERVISOR_DO_RETRY: /* retry_failed_after_ms passed: a fresh try, as after a restart */
        log_info("%s %s: trying again after %u ms failed", gw_what(cn), cn->cfg->name,
                 cn->cfg->retry_failed_after_ms);
        gw_cnode_start(cn);
        break;
    default: break;
    }
}

/* gateway_restart_cnode, on the loop: start the instance again now, with a clean restart
 * record; one that runs is stopped first (its calls in flight fail, waiting ones wait). */
static void gw_cnode_restart(gw_cnode *cn) {
    log_info("cnode %s: restart requested", cn->cfg->name);
    switch (supervisor_entry_restart(&cn->sup)) {
    case SUPERVISOR_DO_START: gw_cnode_start(cn); break;
    case SUPERVISOR_DO_TAKE_DOWN: gw_cnode_down(cn, false, "restart requested"); break;
    default: break;
    }
}

/* A C-node instance's periodic duties: a restart asked for, a process to recycle, calls that
 * wait while it has room. */
static void gw_cnode_service(gw_cnode *cn) {
    pthread_mutex_lock(&cn->gw->mu);
    bool restart = cn->restart_requested;
    cn->restart_requested = false;
    pthread_mutex_unlock(&cn->gw->mu);
    if (restart) {
        gw_cnode_restart(cn);
        return;
    }
    if (supervisor_entry_phase(&cn->sup) != SUPERVISOR_UP) return;
    if (gw_cnode_recycle_due(cn)) {
        supervisor_entry_restart_soon(&cn->sup);
        gw_cnode_down(cn, false, "recycled after %u calls (calls_per_process)",
                      cn->cfg->calls_per_process);
        return;
    }
    gw_flush_waiting(cn);
}

/* The configured `back` C-node instance named `node` (loop thread). */
static gw_cnode *gw_cnode_by_node(gateway *gw, const char *node) {
    for (size_t i = 0; i < gw->group_count; i++) {
        gw_group *g = gw->groups[i];
        if (g->cfg->direction != CNODE_DIRECTION_BACK) continue;
        for (unsigned k = 0; k < g->cfg->instances; k++)
            if (strcmp(g->inst[k].node, node) == 0) return &g->inst[k];
    }
    return NULL;
}

/* Drops the entry's connection reference and closes its connection, at gateway_free. */
static void gw_entry_close(gw_cnode *cn) {
    if (cn->live) dist_conn_unref(cn->live);
    if (cn->conn) conns_close(cn->gw->conns, cn->conn);
    cn->live = NULL;
    cn->conn = NULL;
}

static void gw_entry_free(gw_cnode *cn) {
    nodes_config_free(&cn->own_cfg);
    child_free(cn->proc);
    free(cn->executable);
    free(cn->ready_line);
    free(cn);
}

/* Makes an Erlang-node entry, not linked yet (any thread). Children get a process spec; peers
 * are connected to (or were accepted). Returns NULL when out of memory or when the child's
 * `erl` cannot be found. */
static gw_cnode *gw_node_entry_make(gateway *gw, gw_entry_kind kind, const char *node) {
    gw_cnode *cn = calloc(1, sizeof *cn);
    if (!cn) return NULL;
    config_cnode *o = &cn->own_cfg;
    cn->gw = gw;
    log_limiter_init(&cn->output_limit, GW_OUTPUT_LINES_PER_S, 1000);
    cn->kind = kind;
    cn->cfg = o;
    routing_owner_init(&cn->route, o, cn->node);
    supervisor_entry_init(&cn->sup);
    cn->state = CNODE_STARTING;
    snprintf(cn->node, sizeof cn->node, "%s", node);
    const char *at = strchr(node, '@');
    snprintf(cn->sname, sizeof cn->sname, "%.*s", at ? (int)(at - node) : 0, node);
    snprintf(cn->hostname, sizeof cn->hostname, "%s", at ? at + 1 : "");
    if (nodes_config(gw->cfg, kind == ENTRY_CHILD, node, gw->child_home, o, &cn->executable,
                     &cn->ready_line) != 0) {
        gw_entry_free(cn);
        return NULL;
    }
    return cn;
}

/* Links an entry from gw_node_entry_make, or frees it and returns the entry that already exists
 * for its node (another thread made it meanwhile: one entry per node). Caller holds mu; the
 * entry stays valid while it does (only the loop retires entries, under mu). */
static gw_cnode *gw_node_entry_link_locked(gateway *gw, gw_cnode *cn) {
    gw_cnode *existing = gw_find_node_locked(gw, cn->node);
    if (existing) {
        gw_entry_free(cn);
        return existing;
    }
    cn->next = gw->nodes;
    gw->nodes = cn;
    gw->node_count++;
    return cn;
}

/* gw_node_entry_make and link. Loop thread (the pointer stays valid: only it retires). */
static gw_cnode *gw_node_entry_new(gateway *gw, gw_entry_kind kind, const char *node) {
    gw_cnode *cn = gw_node_entry_make(gw, kind, node);
    if (!cn) return NULL;
    pthread_mutex_lock(&gw->mu);
    cn = gw_node_entry_link_locked(gw, cn);
    pthread_mutex_unlock(&gw->mu);
    return cn;
}

/* Frees retired entries no connector attempt refers to any more. A retired child has been
 * reported by the spawn tracker (stopped), which then no longer holds it. Loop thread. */
static void gw_free_retired(gateway *gw) {
    for (gw_cnode **pp = &gw->retired; *pp;) {
        gw_cnode *cn = *pp;
        if (cn->connectors || nodes_spawns_holds(gw->spawns, cn)) {
            pp = &cn->retired_next;
            continue;
        }
        *pp = cn->retired_next;
        pthread_mutex_lock(&gw->mu);
        gw->retired_count--;
        pthread_mutex_unlock(&gw->mu);
        gw_entry_free(cn);
    }
}

/* True once nothing of a retired group's runs or refers to it: processes reaped, connections
 * closed, connector attempts reported, calls ended (loop thread). */
static bool gw_group_done(gateway *gw, const gw_group *g) {
    bool done = true;
    pthread_mutex_lock(&gw->mu);
    for (unsigned i = 0; i < g->cfg->instances && done; i++) {
        const gw_cnode *cn = &g->inst[i];
        done = !cn->proc && !cn->conn && !cn->live && !cn->connectors &&
               supervisor_entry_phase(&cn->sup) == SUPERVISOR_STOPPED &&
               !routing_owner_in_flight(&cn->route) && !routing_owner_in_flight(&cn->waiting);
    }
    pthread_mutex_unlock(&gw->mu);
    return done;
}

/* Frees the groups a reload retired that have stopped (loop thread). */
static void gw_free_retired_groups(gateway *gw) {
    for (gw_group **pp = &gw->retired_groups; *pp;) {
        gw_group *g = *pp;
        if (!gw_group_done(gw, g)) {
            pp = &g->retired_next;
            continue;
        }
        *pp = g->retired_next;
        log_info("cnode %s: the instances a reload retired have stopped", g->cfg->name);
        gw_group_free(g);
    }
}

/* Attaches a connection to its entry (both ways). Peers tick at their own net_ticktime, which
 * we cannot know: they get node.peer_tick_time_ms; C-nodes and children the tick time. */
static void gw_attach(gw_cnode *cn, conns_conn *c) {
    int64_t silence = cn->kind == ENTRY_PEER ? (int64_t)cn->gw->cfg->peer_tick_time_ms : 0;
    conns_set_owner(c, cn, silence);
    cn->conn = c;
}

/* A node connected in that is not a C-node of ours: a peer (an Erlang node, usually). If an
 * entry is already connecting to it, this connection serves it. */
static void gw_accept_peer(gateway *gw, conns_conn *gc, const char *node) {
    pthread_mutex_lock(&gw->mu);
    gw_cnode *cn = gw_find_node_locked(gw, node);
    pthread_mutex_unlock(&gw->mu);
    if (cn && cn->conn) {
        log_warn("node %s connected twice; closing the new connection", node);
        conns_close(gw->conns, gc);
        return;
    }
    if (!cn && !(cn = gw_node_entry_new(gw, ENTRY_PEER, node))) {
        conns_close(gw->conns, gc);
        return;
    }
    log_info("node %s connected", node);
    cn->connect_generation++; /* a connector of ours still running is now stale */
    gw_attach(cn, gc);
    gw_cnode_became_up(cn);
}

/* conns: a connector's attempt for `owner` ended. */
static void gw_on_connected(void *ctx, void *owner, unsigned generation, int fd, const char *peer,
                            const char *error) {
    gateway *gw = ctx;
    gw_cnode *cn = owner;
    conns_conn *gc;
    cn->connectors--;
    bool current = !cn->retired && generation == cn->connect_generation &&
                   supervisor_entry_phase(&cn->sup) == SUPERVISOR_CONNECTING;
    if (!current) {
        if (fd >= 0) ei_close_connection(fd);
    } else if (fd < 0) {
        gw_cnode_down(cn, cn->cfg->direction != CNODE_DIRECTION_ADOPT, "%s", error);
    } else if ((gc = conns_add(gw->conns, fd, peer)) != NULL) {
        gw_attach(cn, gc);
        log_info("%s %s: connected to %s", gw_what(cn), cn->cfg->name, peer);
        gw_cnode_became_up(cn);
    } else {
        gw_cnode_down(cn, true, "cannot watch the connection");
    }
}

/* conns: a node connected in: a `back` C-node we started, or a peer. */
static void gw_on_accepted(void *ctx, int fd, const char *peer) {
    gateway *gw = ctx;
    gw_cnode *cn = gw_cnode_by_node(gw, peer);
    if (cn && (supervisor_entry_phase(&cn->sup) != SUPERVISOR_SPAWNED || cn->conn)) {
        log_warn("connection from %s while it is not expected; closed", peer);
        ei_close_connection(fd);
        return;
    }
    conns_conn *gc = conns_add(gw->conns, fd, peer);
    if (gc && cn) {
        gw_attach(cn, gc);
        log_info("cnode %s: connected back from %s", cn->cfg->name, peer);
        if (cn->ready_seen) gw_cnode_became_up(cn);
    } else if (gc) {
        gw_accept_peer(gw, gc, peer);
    }
}

/* conns: the connection of `owner` is lost. The process usually exits right after its connection
 * drops (by_peer): give it the shutdown timeout, then it is killed; a silent one is killed now. */
static void gw_on_lost(void *ctx, void *owner, const char *peer, const char *why, bool by_peer) {
    (void)ctx;
    gw_cnode_down(owner, !by_peer, "%s: %s", peer, why);
}

/* ------------------------------------------------------------------------------------------ */
/* Replies */

/* routing: a gen_call ended with its monitor open: DEMONITOR_P, so the target's node does not
 * keep one monitor per call for as long as the process lives. */
static void gw_on_monitor_end(call *c, routing_owner *o, void *ctx) {
    gateway *gw = ctx;
    gw_cnode *cn = (gw_cnode *)(void *)((char *)o - offsetof(gw_cnode, route));
    pthread_mutex_lock(&gw->mu);
    dist_conn *dc = cn->live;
    if (dc) dist_conn_ref(dc);
    pthread_mutex_unlock(&gw->mu);
    if (!dc) return;
    dist_send_demonitor(dc, &c->pid, cn->cfg->registered_name, &c->ref);
    dist_conn_unref(dc);
}

/* net_adm:ping/1 asks net_kernel {'$gen_call', {From, Tag}, {is_auth, Node}}: answer
 * {Tag, yes} to From, as an Erlang node does (Tag may be [alias | Ref]: copied verbatim). */
static void gw_answer_net_kernel(dist_conn *dc, const dist_message *m) {
    char reply[1200];
    erlang_pid from;
    int r = routing_net_kernel_reply(m->msg, m->msg_len, &from, reply, sizeof reply);
    if (r >= 0) dist_send_pid(dc, &from, NULL, 0, reply, (size_t)r);
}

static void gw_on_message(void *ctx, conns_conn *gc, const dist_message *m) {
    gateway *gw = ctx;
    dist_conn *dc = conns_dist(gc);
    gw_cnode *owner = conns_owner(gc);
    if (!m->to_pid) {
        if (m->to_name && strcmp(m->to_name, "net_kernel") == 0)
            gw_answer_net_kernel(dc, m);
        else
            log_debug("message to registered name %s from %s ignored",
                      m->to_name ? m->to_name : "?", dc->peer);
        return;
    }
    routing_on_message(gw->routing, owner ? &owner->route : NULL, m);
}

/* ------------------------------------------------------------------------------------------ */
/* The loop */

static void gw_on_child_output(gw_cnode *cn, int stream) {
    if (!cn->proc) return;
    int r = child_read_lines(cn->proc, stream, gw_on_child_line, cn);
    if (r <= 0) { /* out of epoll while the fd is open, then closed */
        loop_watch_remove(cn->gw->loop, cn->out_watch[stream]);
        cn->out_watch[stream] = NULL;
        child_close_output(cn->proc, stream);
    }
}

static void gw_on_child_stdout(void *ctx, unsigned ready) {
    (void)ready;
    gw_on_child_output(ctx, 0);
}

static void gw_on_child_stderr(void *ctx, unsigned ready) {
    (void)ready;
    gw_on_child_output(ctx, 1);
}

static void gw_reap_all(gateway *gw) {
    for (gw_cnode *cn = gw_entry_next(gw, NULL), *nx; cn; cn = nx) {
        nx = gw_entry_next(gw, cn);
        gw_cnode_reap(cn);
    }
}

static void gw_on_signal(void *ctx, int signo) {
    gateway *gw = ctx;
    if (signo == SIGCHLD) {
        gw_reap_all(gw);
        return;
    }
    if (signo == SIGHUP) {
        log_info("SIGHUP: reloading");
        if (gw->reload_fn) gw->reload_fn(gw->reload_ctx);
        return;
    }
    unsigned drain_ms = gw->cfg->shutdown_drain_ms;
    if (gw->drain_until_ms || drain_ms == 0) { /* a second signal ends the drain at once */
        log_info("signal %d: stopping", signo);
        atomic_store(&gw->stop_requested, true);
        return;
    }
    pthread_mutex_lock(&gw->mu);
    gw->draining = true;
    size_t in_flight = routing_in_flight_locked(gw->routing);
    pthread_mutex_unlock(&gw->mu);
    gw->drain_until_ms = dist_now_ms() + drain_ms;
    log_info("signal %d: draining: not ready, no new calls; %zu in flight get up to %u ms "
             "(shutdown.drain_ms; another signal stops at once)",
             signo, in_flight, drain_ms);
    if (gw->drain_fn) gw->drain_fn(gw->drain_ctx);
}

/* Draining: once no call is in flight, or the drain time is up, the loop stops. */
static void gw_check_drain(gateway *gw, int64_t now) {
    if (!gw->drain_until_ms) return;
    pthread_mutex_lock(&gw->mu);
    size_t in_flight = routing_in_flight_locked(gw->routing);
    pthread_mutex_unlock(&gw->mu);
    if (in_flight && now < gw->drain_until_ms) return;
    if (in_flight)
        log_warn("drain: shutdown.drain_ms passed with %zu calls in flight: they fail now",
                 in_flight);
    else
        log_info("drain: no call in flight; stopping");
    atomic_store(&gw->stop_requested, true);
}

/* WATCHDOG=1 twice per interval, from the loop: a stuck loop stops the pings. */
static void gw_watchdog(void *ctx) {
    gateway *gw = ctx;
    sdnotify_watchdog();
    loop_timer_arm(gw->watchdog, dist_now_ms() + gw->watchdog_ms / 2);
}

/* Requests from other threads: connections handed over, backlogs to watch, and whatever made
 * them wake the loop (rpc, spawn, stop): the sweep runs in this iteration. */
static void gw_on_wake(void *ctx) {
    gateway *gw = ctx;
    conns_on_wake(gw->conns);
    loop_timer_arm(gw->sweep, 0);
}

/* Tells a child node's `init` to stop, from a fresh pid. */
static void gw_send_init_stop(gw_cnode *cn) {
    erlang_pid from;
    gateway_make_pid(cn->gw, &from);
    nodes_send_init_stop(conns_dist(cn->conn), &from);
}

/* Stops everything: C-nodes get SIGTERM (and their connection closed: Nodex C-nodes then exit
 * 0); child Erlang nodes get init:stop, then SIGTERM at half their shutdown timeout; whatever
 * still runs at its shutdown timeout gets SIGKILL. Every process is reaped. */
static void gw_stop_all(gateway *gw) {
    int64_t start = dist_now_ms();
    for (gw_cnode *cn = gw_entry_next(gw, NULL); cn; cn = gw_entry_next(gw, cn)) {
        cn->connect_generation++;
        if (cn->kind == ENTRY_CHILD && cn->conn) gw_send_init_stop(cn);
        gw_cnode_disconnect(cn);
        routing_fail_owner(cn->gw->routing, &cn->route, CALL_SHUTDOWN,
                           "the gateway is shutting down");
        routing_fail_owner(cn->gw->routing, &cn->waiting, CALL_SHUTDOWN,
                           "the gateway is shutting down");
        cn->stop_stage = 0;
        if (cn->proc && cn->kind != ENTRY_CHILD) {
            child_signal(cn->proc, SIGTERM);
            cn->stop_stage = 1;
        }
        supervisor_entry_stopping(&cn->sup, INT64_MAX); /* the loop's timers no longer run */
    }
    for (;;) {
        bool running = false;
        int64_t waited = dist_now_ms() - start;
        for (gw_cnode *cn = gw_entry_next(gw, NULL); cn; cn = gw_entry_next(gw, cn)) {
            if (!cn->proc) continue;
            gw_cnode_reap(cn);
            if (!cn->proc) continue;
            running = true;
            unsigned t = cn->cfg->shutdown_timeout_ms;
            if (cn->stop_stage == 0 && waited >= t / 2) {
                child_signal(cn->proc, SIGTERM);
                cn->stop_stage = 1;
            } else if (cn->stop_stage == 1 && waited >= t) {
                log_warn("%s: did not stop in %u ms; SIGKILL", cn->cfg->name, t);
                child_signal(cn->proc, SIGKILL);
                cn->stop_stage = 2;
            }
        }
        if (!running) break;
        usleep(10000);
    }
    for (gw_cnode *cn = gw_entry_next(gw, NULL); cn; cn = gw_entry_next(gw, cn)) {
        supervisor_entry_stopped(&cn->sup);
        gw_set_state(cn, CNODE_STOPPED);
    }
    conns_close_all(gw->conns);
}

/* nodes_spawns: a child as the spawn tracker sees it (loop thread, the writer of these). */
static void gw_child_status(const void *child, nodes_child_status *out) {
    const gw_cnode *cn = child;
    out->state = cn->state;
    out->node = cn->node;
    out->last_error = cn->last_error;
}

/* Reports spawn requests whose children are all up, or of which one went down. */
static void gw_check_spawns(gateway *gw) {
    nodes_spawns_check(gw->spawns, gw->shutting_down);
}

/* Starts every instance of a C-node. */
static void gw_group_start(gw_group *g) {
    g->started = true;
    for (unsigned i = 0; i < g->cfg->instances; i++) gw_cnode_start(&g->inst[i]);
}

/* True while a group that is still stopping has an instance with one of `g`'s node names: the
 * name is taken (epmd, the C-node's own checks) until that process is gone. */
static bool gw_group_blocked(gateway *gw, const gw_group *g) {
    for (const gw_group *old = gw->retired_groups; old; old = old->retired_next)
        for (unsigned i = 0; i < old->cfg->instances; i++)
            for (unsigned k = 0; k < g->cfg->instances; k++)
                if (strcmp(old->inst[i].node, g->inst[k].node) == 0) return true;
    return false;
}

/* An instance of a C-node a reload removed or replaced: no new call reaches it; it stops for
 * good once it has no call in flight (those finish within their own deadlines). */
static void gw_cnode_retire_service(gw_cnode *cn) {
    switch (supervisor_entry_phase(&cn->sup)) {
    case SUPERVISOR_STOPPING:
    case SUPERVISOR_STOPPED: return; /* on its way out, or out */
    case SUPERVISOR_UP: {
        pthread_mutex_lock(&cn->gw->mu);
        size_t in_flight = routing_owner_in_flight(&cn->route);
        pthread_mutex_unlock(&cn->gw->mu);
        if (in_flight) return;
    } /* fall through */
    case SUPERVISOR_SPAWNED:
    case SUPERVISOR_CONNECTING: gw_cnode_down(cn, false, "removed from the configuration"); return;
    default: /* not started, waiting to restart, or failed: nothing runs */
        supervisor_entry_stopped(&cn->sup);
        gw_set_state(cn, CNODE_STOPPED);
        return;
    }
}

/* Starts new Erlang-node entries, acts on stop requests and runs every phase timer. */
static void gw_service_entries(gateway *gw, int64_t now) {
    for (gw_cnode *cn = gw_entry_next(gw, NULL), *nx; cn; cn = nx) {
        nx = gw_entry_next(gw, cn);
        if (cn->kind != ENTRY_CNODE) {
            pthread_mutex_lock(&gw->mu);
            bool stop = cn->stop_requested && !cn->removing;
            pthread_mutex_unlock(&gw->mu);
            if (stop) {
                gw_child_stop(cn);
                continue;
            }
            if (supervisor_entry_phase(&cn->sup) == SUPERVISOR_IDLE) {
                gw_cnode_start(cn);
                continue;
            }
        } else if (cn->group->removed) {
            gw_cnode_retire_service(cn);
        } else if (!cn->group->started) {
            if (cn->instance == 1 && !gw_group_blocked(gw, cn->group)) gw_group_start(cn->group);
            continue; /* a reload's group waits until the one it replaces has stopped */
        } else {
            gw_cnode_service(cn);
        }
        gw_cnode_timers(cn, now);
    }
    gw_check_spawns(gw);
}

/* The sweep timer: supervisor timers and connection ticks, every GW_SWEEP_MS. */
static void gw_sweep(void *ctx) {
    gateway *gw = ctx;
    int64_t now = dist_now_ms();
    gw_service_entries(gw, now);
    conns_tick(gw->conns, now);
    if (gw->retired) gw_free_retired(gw);
    if (gw->retired_groups) gw_free_retired_groups(gw);
    loop_timer_arm(gw->sweep, now + GW_SWEEP_MS);
}

int gateway_run(gateway *gw, void (*on_started)(void *ctx), void *ctx) {
    for (size_t i = 0; i < gw->group_count; i++) gw_group_start(gw->groups[i]);
    for (unsigned i = 0; i < gw->cfg->child_count; i++) {
        char node[MAXNODELEN * 4];
        nodes_child_name(gw->cfg, ++gw->child_max_index, gw->hostname, node, sizeof node);
        gw_cnode *cn = gw_node_entry_new(gw, ENTRY_CHILD, node);
        if (!cn)
            log_error("cannot set up child node %s (is %s installed?)", node,
                      gw->cfg->erl_executable);
        else
            cn->child_index = gw->child_max_index;
    }
    gw_service_entries(gw, dist_now_ms());
    if (on_started) on_started(ctx);
    loop_timer_arm(gw->sweep, 0);
    if ((gw->watchdog_ms = sdnotify_watchdog_ms()) > 0) {
        log_info("systemd watchdog: WATCHDOG=1 every %lld ms", (long long)gw->watchdog_ms / 2);
        loop_timer_arm(gw->watchdog, 0);
    }
    int rc = 0;
    loop_enter(gw->loop);
    /* Sends made on this thread are queued and written once per iteration, never blocking. */
    dist_cork_begin();
    int hook_wait = -1;
    size_t corked_busy = 0;
    while (!atomic_load(&gw->stop_requested)) {
        int64_t now = dist_now_ms();
        pthread_mutex_lock(&gw->mu);
        int64_t deadline = routing_next_deadline_locked(gw->routing);
        size_t in_flight = routing_in_flight_locked(gw->routing);
        pthread_mutex_unlock(&gw->mu);
        if (hook_wait >= 0 && now + hook_wait < deadline) deadline = now + hook_wait;
        if (corked_busy && now + 1 < deadline) deadline = now + 1;
        if (gw->drain_until_ms && gw->drain_until_ms < deadline) deadline = gw->drain_until_ms;
        /* Right after light traffic, poll a little before sleeping: the next request or the
         * reply usually comes within microseconds. With more calls in flight, spinning would
         * take CPU from the C-nodes. */
        if (loop_poll(gw->loop, deadline, in_flight <= GW_BUSY_POLL_MAX_CALLS) < 0) {
            log_error("epoll_wait: %s", strerror(errno));
            rc = -1;
            break;
        }
        routing_run_cancels(gw->routing);
        now = dist_now_ms();
        routing_expire(gw->routing, now);
        loop_run_timers(gw->loop, now);
        /* Last, so that it serves every connection resumed in this iteration. */
        if (gw->iteration_hook) hook_wait = gw->iteration_hook(gw->iteration_ctx);
        corked_busy = conns_flush_corked(gw->conns);
        conns_bury(gw->conns);
        gw_check_drain(gw, now);
    }
    dist_cork_end();
    loop_leave(gw->loop);
    pthread_mutex_lock(&gw->mu);
    gw->shutting_down = true;
    pthread_mutex_unlock(&gw->mu);
    gw_stop_all(gw);
    gw_check_spawns(gw); /* report spawns still waiting: the gateway is shutting down */
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Construction */

void gateway_block_signals(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Splits "name@host" (or plain "name") into the gateway's sname and hostname. */
static int gw_split_node(gateway *gw, const char *node, char *err, size_t err_len) {
    const char *at = strchr(node, '@');
    size_t alive = at ? (size_t)(at - node) : strlen(node);
    if (alive == 0 || alive >= sizeof gw->sname) {
        snprintf(err, err_len, "node.name %s: bad alive part", node);
        return -1;
    }
    memcpy(gw->sname, node, alive);
    gw->sname[alive] = '\0';
    if (at) {
        snprintf(gw->hostname, sizeof gw->hostname, "%s", at + 1);
    } else if (gethostname(gw->hostname, sizeof gw->hostname) != 0) {
        snprintf(err, err_len, "gethostname: %s", strerror(errno));
        return -1;
    } else {
        char *dot = strchr(gw->hostname, '.');
        if (dot) *dot = '\0';
    }
    if (!gw->hostname[0]) {
        snprintf(err, err_len, "node.name %s: empty host part", node);
        return -1;
    }
    snprintf(gw->node_name, sizeof gw->node_name, "%s@%s", gw->sname, gw->hostname);
    return 0;
}

static int gw_cnode_init(gateway *gw, gw_cnode *cn, const config_cnode *cfg, unsigned instance,
                         char *err, size_t err_len) {
    cn->cfg = cfg;
    cn->gw = gw;
    log_limiter_init(&cn->output_limit, GW_OUTPUT_LINES_PER_S, 1000);
    cn->instance = instance;
    routing_owner_init(&cn->route, cfg, cn->node);
    routing_owner_init(&cn->waiting, cfg, cn->node);
    supervisor_entry_init(&cn->sup);
    cn->state = CNODE_STARTING;
    snprintf(cn->hostname, sizeof cn->hostname, "%s", cfg->hostname ? cfg->hostname : gw->hostname);
    const template_var base[] = {{"name", cfg->name},
                                 {"gateway_sname", gw->sname},
                                 {"hostname", cn->hostname},
                                 {"gateway_node", gw->node_name}};
    char *sname =
        template_expand(cfg->sname ? cfg->sname : "{gateway_sname}_{name}", base, 4, NULL);
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
    const template_var vars[] = {{"name", cfg->name},
                                 {"gateway_sname", gw->sname},
                                 {"hostname", cn->hostname},
                                 {"gateway_node", gw->node_name},
                                 {"sname", cn->sname}};
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
    const template_var rvars[] = {{"name", cfg->name},        {"gateway_sname", gw->sname},
                                  {"hostname", cn->hostname}, {"gateway_node", gw->node_name},
                                  {"sname", cn->sname},       {"node", cn->node}};
    cn->ready_line = template_expand(cfg->ready_line ? cfg->ready_line : "{sname}@{hostname} ready",
                                     rvars, 6, NULL);
    if (!cn->ready_line) {
        snprintf(err, err_len, "cnode %s: bad ready_line", cfg->name);
        return -1;
    }
    if (cfg->direction != CNODE_DIRECTION_ADOPT) {
        char why[256];
        cn->executable = gw_resolve_executable(cfg->executable, why, sizeof why);
        if (!cn->executable) {
            snprintf(err, err_len, "cnode %s: %s", cfg->name, why);
            return -1;
        }
    }
    return 0;
}

/* Frees a group and what its instances hold. */
static void gw_group_free(gw_group *g) {
    if (!g) return;
    for (unsigned i = 0; g->inst && i < g->cfg->instances; i++) {
        gw_cnode *cn = &g->inst[i];
        gw_entry_close(cn);
        child_free(cn->proc);
        free(cn->executable);
        free(cn->ready_line);
    }
    free(g->inst);
    free(g);
}

/* A configured C-node's instances, set up but not started. NULL with err. */
static gw_group *gw_group_new(gateway *gw, const config_cnode *cfg, char *err, size_t err_len) {
    gw_group *g = calloc(1, sizeof *g);
    if (g) g->cfg = cfg;
    if (!g || !(g->inst = calloc(cfg->instances, sizeof *g->inst))) {
        snprintf(err, err_len, "out of memory");
        free(g);
        return NULL;
    }
    for (unsigned i = 0; i < cfg->instances; i++) {
        g->inst[i].group = g;
        if (gw_cnode_init(gw, &g->inst[i], cfg, i + 1, err, err_len) != 0) {
            gw_group_free(g);
            return NULL;
        }
    }
    return g;
}

gateway *gateway_new(const config *cfg, const char *cookie, char *err, size_t err_len) {
    gateway *gw = calloc(1, sizeof *gw);
    if (!gw) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    gw->cfg = cfg;
    gw->listen_fd = gw->publish_fd = -1;
    pthread_mutex_init(&gw->mu, NULL);
    atomic_init(&gw->stop_requested, false);
    if (!(gw->cookie = strdup(cookie)) || !(gw->events = events_new())) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    if (gw_split_node(gw, cfg->node_name, err, err_len) != 0) goto fail;
    if (!(gw->routing = routing_new(&gw->mu, gw->node_name)) ||
        !(gw->spawns = nodes_spawns_new(gw_child_status))) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    routing_set_monitor_end(gw->routing, gw_on_monitor_end, gw);
    if (ei_init() != 0) {
        snprintf(err, err_len, "ei_init failed");
        goto fail;
    }
    struct in_addr addr;
    if (inet_pton(AF_INET, cfg->dist_listen, &addr) != 1) {
        snprintf(err, err_len, "node.listen %s: not an IPv4 address", cfg->dist_listen);
        goto fail;
    }
    /* A creation that differs per incarnation, as the node's pids must. */
    unsigned creation = (unsigned)time(NULL) ^ ((unsigned)getpid() << 16);
    if (creation == 0) creation = 1;
    /* The accepting side on ei_sock too: each accepted handshake has one deadline in all. */
    ei_sock_set_accept_deadline(GW_HANDSHAKE_MS);
    if (ei_connect_xinit_ussi(&gw->ec, gw->hostname, gw->sname, gw->node_name, &addr, gw->cookie,
                              creation, &ei_sock_callbacks, sizeof ei_sock_callbacks, NULL) < 0) {
        snprintf(err, err_len, "ei_connect_xinit_ussi failed for %s", gw->node_name);
        goto fail;
    }
    if (ei_connect_xinit_ussi(&gw->ec_connect, gw->hostname, gw->sname, gw->node_name, &addr,
                              gw->cookie, creation, &ei_sock_callbacks, sizeof ei_sock_callbacks,
                              NULL) < 0) {
        snprintf(err, err_len, "ei_connect_xinit_ussi failed for %s", gw->node_name);
        goto fail;
    }
    int port = (int)cfg->dist_port;
    gw->listen_fd = ei_xlisten(&gw->ec, &addr, &port, 1024);
    if (gw->listen_fd < 0) {
        snprintf(err, err_len, "cannot listen on %s:%u: %s", cfg->dist_listen, cfg->dist_port,
                 strerror(errno));
        goto fail;
    }
    /* A connection that sends nothing is never handed to accept() at all (TCP_DEFER_ACCEPT),
     * so idle connections to the port cannot hold the acceptors. */
    int defer_s = 30;
    setsockopt(gw->listen_fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer_s, sizeof defer_s);
    gw->publish_fd = ei_publish(&gw->ec, port);
    if (gw->publish_fd < 0) {
        snprintf(err, err_len,
                 "cannot register %s with epmd (is epmd running? is the name already taken?)",
                 gw->node_name);
        goto fail;
    }
    if (!(gw->groups = calloc(cfg->cnode_count ? cfg->cnode_count : 1, sizeof *gw->groups))) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < cfg->cnode_count; i++, gw->group_count++) {
        if (!(gw->groups[i] = gw_group_new(gw, &cfg->cnodes[i], err, err_len))) goto fail;
        gw->groups[i]->index = i;
    }
    if (nodes_home_create(gw->cookie, &gw->child_home, err, err_len) != 0) goto fail;
    static const int signals[] = {SIGTERM, SIGINT, SIGCHLD, SIGHUP};
    if (!(gw->loop = loop_new(signals, sizeof signals / sizeof signals[0], err, err_len)))
        goto fail;
    if (!(gw->sweep = loop_timer_new(gw->loop, gw_sweep, gw)) ||
        !(gw->watchdog = loop_timer_new(gw->loop, gw_watchdog, gw))) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    loop_on_wake(gw->loop, gw_on_wake, gw);
    loop_on_signal(gw->loop, gw_on_signal, gw);
    static const conns_callbacks conn_cb = {.on_message = gw_on_message,
                                            .on_accepted = gw_on_accepted,
                                            .on_connected = gw_on_connected,
                                            .on_lost = gw_on_lost};
    if (!(gw->conns = conns_new(gw->loop, &gw->ec, &gw->ec_connect, &gw->stop_requested,
                                cfg->tick_time_ms, &conn_cb, gw))) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    if (conns_start_acceptors(gw->conns, gw->listen_fd, GW_ACCEPTORS) != 0) {
        snprintf(err, err_len, "cannot start the acceptor threads");
        goto fail;
    }
    log_info("node %s listening for distribution on %s:%d", gw->node_name, cfg->dist_listen, port);
    return gw;
fail:
    gateway_free(gw);
    return NULL;
}

const char *gateway_node_name(const gateway *gw) {
    return gw->node_name;
}

static void gw_on_external(void *ctx, unsigned ready) {
    gateway *gw = ctx;
    (void)ready;
    gw->external_fn(gw->external_ctx);
}

int gateway_watch_fd(gateway *gw, int fd, void (*fn)(void *ctx), void *ctx) {
    if (gw->external) return -1;
    gw->external_fn = fn;
    gw->external_ctx = ctx;
    gw->external = loop_watch_add(gw->loop, fd, gw_on_external, gw);
    return gw->external ? 0 : -1;
}

void gateway_on_drain(gateway *gw, void (*fn)(void *ctx), void *ctx) {
    gw->drain_fn = fn;
    gw->drain_ctx = ctx;
}

bool gateway_draining(gateway *gw) {
    pthread_mutex_lock(&gw->mu);
    bool d = gw->draining;
    pthread_mutex_unlock(&gw->mu);
    return d;
}

void gateway_on_reload(gateway *gw, void (*fn)(void *ctx), void *ctx) {
    gw->reload_fn = fn;
    gw->reload_ctx = ctx;
}

void gateway_set_iteration_hook(gateway *gw, int (*fn)(void *ctx), void *ctx) {
    gw->iteration_hook = fn;
    gw->iteration_ctx = ctx;
}

void gateway_wake(gateway *gw) {
    gw_wake(gw);
}

bool gateway_on_loop_thread(const gateway *gw) {
    return loop_on_thread(gw->loop);
}

void gateway_request_stop(gateway *gw) {
    atomic_store(&gw->stop_requested, true);
    gw_wake(gw);
}

void gateway_free(gateway *gw) {
    if (!gw) return;
    atomic_store(&gw->stop_requested, true);
    bool connectors_left = gw->conns && !conns_stop(gw->conns);
    for (size_t i = 0; i < gw->group_count; i++) gw_group_free(gw->groups[i]);
    for (gw_group *g = gw->retired_groups, *next; g; g = next) {
        next = g->retired_next;
        gw_group_free(g);
    }
    for (gw_cnode *cn = gw->nodes, *next; cn; cn = next) {
        next = cn->next;
        gw_entry_close(cn);
        gw_entry_free(cn);
    }
    for (gw_cnode *cn = gw->retired, *next; cn; cn = next) {
        next = cn->retired_next;
        gw_entry_close(cn);
        gw_entry_free(cn);
    }
    gw->nodes = gw->retired = NULL;
    nodes_spawns_free(gw->spawns);
    nodes_home_remove(gw->child_home);
    if (gw->conns) conns_close_all(gw->conns);
    /* made through ei_sock: ei_close_connection frees their context too */
    if (gw->publish_fd >= 0) ei_close_connection(gw->publish_fd);
    if (gw->listen_fd >= 0) ei_close_connection(gw->listen_fd);
    routing_free(gw->routing);
    free(gw->groups);
    free(gw->cookie);
    /* A connector still uses conns, the loop and gw's stop flag: leave them (the process is
     * exiting). */
    if (connectors_left) return;
    loop_free(gw->loop);
    pthread_mutex_destroy(&gw->mu);
    conns_free(gw->conns);
    events_free(gw->events);
    free(gw);
}

/* ------------------------------------------------------------------------------------------ */
/* The call path (any thread) */

void gateway_make_pid(gateway *gw, erlang_pid *pid) {
    pthread_mutex_lock(&gw->mu);
    ei_make_pid(&gw->ec, pid);
    pthread_mutex_unlock(&gw->mu);
}

/* The first instance of the configured C-node `name`, or NULL. Caller holds mu, and uses the
 * entry only while it does: a reload may retire the group once it is released. */
static gw_cnode *gw_find_cnode_locked(gateway *gw, const char *name) {
    for (size_t i = 0; i < gw->group_count; i++)
        if (strcmp(gw->groups[i]->cfg->name, name) == 0) return &gw->groups[i]->inst[0];
    return NULL;
}

/* The instance a call goes to: the least loaded one that is up and takes calls, or NULL.
 * Caller holds mu. */
static gw_cnode *gw_pick_instance(gw_cnode *first) {
    gw_cnode *best = NULL;
    for (unsigned i = 0; i < first->cfg->instances; i++) {
        gw_cnode *cn = first + i;
        if (cn->state != CNODE_UP || !cn->live || cn->draining) continue;
        if (!best || routing_owner_in_flight(&cn->route) < routing_owner_in_flight(&best->route))
            best = cn;
    }
    return best;
}

/* No instance is up: the call waits in the C-node's queue, its message kept in c->outbox,
 * until one comes up (gw_flush_waiting) or its deadline passes (504, ROUTING_NOT_SENT). */
static gateway_error gw_call_wait_locked(gateway *gw, gw_cnode *first, call *c, const char *prefix,
                                         size_t plen, const char *msg, size_t msg_len) {
    const config_cnode *cfg = first->cfg;
    if (!cfg->max_waiting || !gw_group_may_come_up_locked(first)) return GATEWAY_UNAVAILABLE;
    if (routing_owner_in_flight(&first->waiting) >= cfg->max_waiting) return GATEWAY_OVERLOADED;
    c->outbox = malloc(plen + msg_len ? plen + msg_len : 1);
    if (!c->outbox) return GATEWAY_NO_MEMORY;
    memcpy(c->outbox, prefix, plen);
    memcpy(c->outbox + plen, msg, msg_len);
    c->outbox_len = plen + msg_len;
    if (routing_register_locked(gw->routing, &first->waiting, c) != 0) {
        free(c->outbox);
        c->outbox = NULL;
        return GATEWAY_NO_MEMORY;
    }
    return GATEWAY_OK;
}

gateway_error gateway_call(gateway *gw, const char *name, call *c, const char *msg, size_t msg_len,
                           unsigned timeout_ms, bool wait) {
    c->key = dist_pid_key(&c->pid);
    call_clear(c);
    char prefix[MAXATOMLEN_UTF8 * 2 + 128];
    int plen = 0;
    int64_t now = dist_now_ms(); /* read before taking mu: the lock is held as briefly as can be */
    pthread_mutex_lock(&gw->mu);
    gw_cnode *first = gw_find_cnode_locked(gw, name);
    if (!first) {
        pthread_mutex_unlock(&gw->mu);
        return GATEWAY_NOT_FOUND;
    }
    const config_cnode *cfg = first->cfg; /* configs outlive every call */
    c->deadline_ms = now + (timeout_ms ? timeout_ms : cfg->call_timeout_ms);
    bool gen_call = cfg->protocol == CNODE_PROTOCOL_GEN_CALL;
    if (gen_call) {
        /* {'$gen_call', {Pid, Ref}, Request}: the request's bytes follow the prefix. The
         * reference is made from the pid, so a reply sent to it as an alias finds the call. */
        routing_make_ref(&c->pid, ++gw->ref_counter, &c->ref);
        ei_encode_tuple_header(prefix, &plen, 3);
        ei_encode_atom(prefix, &plen, "$gen_call");
        ei_encode_tuple_header(prefix, &plen, 2);
        ei_encode_pid(prefix, &plen, &c->pid);
        ei_encode_ref(prefix, &plen, &c->ref);
    }
    gw_cnode *cn = gw_pick_instance(first);
    gateway_error e = GATEWAY_OK;
    dist_conn *dc = cn ? cn->live : NULL;
    bool waiting = false;
    if (gw->shutting_down || gw->draining)
        e = GATEWAY_SHUTTING_DOWN;
    else if (!cn && wait)
        waiting = (e = gw_call_wait_locked(gw, first, c, prefix, (size_t)plen, msg, msg_len)) ==
                  GATEWAY_OK;
    else if (!cn)
        e = GATEWAY_UNAVAILABLE;
    else if (routing_owner_in_flight(&cn->route) >= cfg->max_in_flight ||
             dist_pending_bytes(dc) > GW_BACKLOG_SOFT_MAX)
        e = GATEWAY_OVERLOADED; /* too many calls, or the C-node does not take its input */
    else if (routing_register_locked(gw->routing, &cn->route, c) != 0)
        e = GATEWAY_NO_MEMORY;
    else {
        dist_conn_ref(dc);
        c->monitored = gen_call && cfg->monitor; /* the monitor goes out first, below */
        if (cfg->calls_per_process && ++cn->calls_sent >= cfg->calls_per_process)
            cn->draining = true; /* its last call: the next ones wait for the next process */
    }
    /* The loop may be sleeping past this call's deadline if it is now the earliest. */
    bool wake = e == GATEWAY_OK && routing_next_deadline_locked(gw->routing) == c->deadline_ms;
    /* Once unlocked the loop may end (and its owner free) the call at any time: from here on
     * nothing of `c` is read (14.1), only these copies of its pid and reference. */
    erlang_pid from = c->pid;
    erlang_ref ref = c->ref;
    pthread_mutex_unlock(&gw->mu);
    if (e != GATEWAY_OK) return e;
    if (!waiting) {
        /* From here the loop owns the outcome: a failed send shuts the connection down, which
         * the loop sees and answers every call on it, this one included, with 503. */
        if (gen_call && cfg->monitor) dist_send_monitor(dc, &from, cfg->registered_name, &ref);
        dist_send_reg(dc, &from, cfg->registered_name, prefix, (size_t)plen, msg, msg_len);
        dist_conn_unref(dc);
    }
    if (wake && !gateway_on_loop_thread(gw)) gw_wake(gw);
    return GATEWAY_OK;
}

bool gateway_cancel(gateway *gw, call *c) {
    bool taken = routing_cancel(gw->routing, c);
    if (taken) gw_wake(gw);
    return taken;
}

gateway_error gateway_cast(gateway *gw, const char *name, const char *msg, size_t msg_len) {
    erlang_pid from;
    pthread_mutex_lock(&gw->mu);
    gw_cnode *first = gw_find_cnode_locked(gw, name);
    if (!first) {
        pthread_mutex_unlock(&gw->mu);
        return GATEWAY_NOT_FOUND;
    }
    const config_cnode *cfg = first->cfg;
    gw_cnode *cn = gw_pick_instance(first);
    dist_conn *dc = cn && !gw->shutting_down && !gw->draining ? cn->live : NULL;
    bool behind = dc && dist_pending_bytes(dc) > GW_BACKLOG_SOFT_MAX;
    if (dc && !behind) dist_conn_ref(dc);
    ei_make_pid(&gw->ec, &from);
    /* written by the loop under mu: read under mu (14.12) */
    bool stopping = gw->shutting_down || gw->draining;
    pthread_mutex_unlock(&gw->mu);
    if (behind) return GATEWAY_OVERLOADED;
    if (!dc) return stopping ? GATEWAY_SHUTTING_DOWN : GATEWAY_UNAVAILABLE;
    int rc = dist_send_reg(dc, &from, cfg->registered_name, NULL, 0, msg, msg_len);
    /* The caller answers "accepted" right away: put the cast on the wire (or in the backlog,
     * which later sends from any thread follow) before that, not at the iteration's end. */
    if (rc == 0 && gateway_on_loop_thread(gw)) conns_flush_corked(gw->conns);
    dist_conn_unref(dc);
    return rc == 0 ? GATEWAY_OK : GATEWAY_UNAVAILABLE;
}

size_t gateway_cnode_count(gateway *gw) {
    pthread_mutex_lock(&gw->mu);
    size_t n = gw->group_count;
    pthread_mutex_unlock(&gw->mu);
    return n;
}

/* Fills `out` from one instance (caller holds mu). */
static void gw_instance_info_locked(const gw_cnode *cn, int64_t now, gateway_cnode_info *out) {
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

/* A C-node's snapshot: a pool reads as its first instance, with the counters summed and the
 * best state (caller holds mu). */
static void gw_group_info_locked(const gw_cnode *first, gateway_cnode_info *out) {
    int64_t now = dist_now_ms();
    gw_instance_info_locked(first, now, out);
    /* A pool reads as its first instance, with the counters summed and the best state. */
    for (unsigned i = 1; i < first->cfg->instances; i++) {
        gateway_cnode_info one;
        gw_instance_info_locked(first + i, now, &one);
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

int gateway_cnode_info_at(gateway *gw, size_t index, gateway_cnode_info *out) {
    pthread_mutex_lock(&gw->mu);
    bool known = index < gw->group_count;
    if (known) gw_group_info_locked(&gw->groups[index]->inst[0], out);
    pthread_mutex_unlock(&gw->mu);
    return known ? 0 : -1;
}

int gateway_cnode_instance_at(gateway *gw, size_t index, unsigned instance,
                              gateway_cnode_info *out) {
    pthread_mutex_lock(&gw->mu);
    const gw_group *g = index < gw->group_count ? gw->groups[index] : NULL;
    bool known = g && instance >= 1 && instance <= g->cfg->instances;
    if (known) gw_instance_info_locked(&g->inst[instance - 1], dist_now_ms(), out);
    pthread_mutex_unlock(&gw->mu);
    return known ? 0 : -1;
}

gateway_error gateway_restart_cnode(gateway *gw, const char *name) {
    pthread_mutex_lock(&gw->mu);
    gw_cnode *first = gw_find_cnode_locked(gw, name);
    if (!first) {
        pthread_mutex_unlock(&gw->mu);
        return GATEWAY_NOT_FOUND;
    }
    bool stopping = gw->shutting_down || gw->draining;
    for (unsigned i = 0; i < first->cfg->instances && !stopping; i++)
        first[i].restart_requested = true;
    pthread_mutex_unlock(&gw->mu);
    if (stopping) return GATEWAY_SHUTTING_DOWN;
    gw_wake(gw);
    return GATEWAY_OK;
}

int gateway_cnode_info_by_name(gateway *gw, const char *name, gateway_cnode_info *out) {
    pthread_mutex_lock(&gw->mu);
    const gw_cnode *first = gw_find_cnode_locked(gw, name);
    if (first) gw_group_info_locked(first, out);
    pthread_mutex_unlock(&gw->mu);
    return first ? 0 : -1;
}

bool gateway_is_ready(gateway *gw) {
    bool ready = true;
    pthread_mutex_lock(&gw->mu);
    for (size_t i = 0; i < gw->group_count && ready; i++) {
        const gw_group *g = gw->groups[i];
        for (unsigned k = 0; k < g->cfg->instances && ready; k++) {
            cnode_state st = g->inst[k].state;
            ready = st == CNODE_STOPPED || st == CNODE_UP; /* every one that should run runs */
        }
    }
    if (gw->shutting_down || gw->draining) ready = false;
    pthread_mutex_unlock(&gw->mu);
    return ready;
}

uint64_t gateway_subscribe(gateway *gw, gateway_event_fn fn, void *ctx) {
    return events_subscribe(gw->events, fn, ctx);
}

void gateway_unsubscribe(gateway *gw, uint64_t id) {
    events_unsubscribe(gw->events, id);
}

/* ------------------------------------------------------------------------------------------ */
/* Reload (loop thread) */

/* The configured group named `name`, or NULL (loop thread: the only writer of gw->groups). */
static gw_group *gw_group_by_name(gateway *gw, const char *name) {
    for (size_t i = 0; i < gw->group_count; i++)
        if (strcmp(gw->groups[i]->cfg->name, name) == 0) return gw->groups[i];
    return NULL;
}

/* True when `g` is one of the `n` groups in `list`. */
static bool gw_group_listed(gw_group *const *list, size_t n, const gw_group *g) {
    for (size_t i = 0; i < n; i++)
        if (list[i] == g) return true;
    return false;
}

/* True when one of the `n` groups in `list` is named `name`. */
static bool gw_group_named(gw_group *const *list, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i]->cfg->name, name) == 0) return true;
    return false;
}

int gateway_reload_cnodes(gateway *gw, const config *next, gateway_reload_counts *out, char *err,
                          size_t err_len) {
    *out = (gateway_reload_counts){0};
    size_t n = next->cnode_count;
    gw_group **groups = calloc(n ? n : 1, sizeof *groups);
    if (!groups) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    /* Everything new is set up first: a C-node that cannot be (its executable is gone) refuses
     * the whole reload, and nothing has changed yet. */
    for (size_t i = 0; i < n; i++) {
        const config_cnode *want = &next->cnodes[i];
        gw_group *had = gw_group_by_name(gw, want->name);
        if (had && had->cfg->fingerprint == want->fingerprint) {
            groups[i] = had; /* unchanged: it runs on, untouched */
            continue;
        }
        if (!(groups[i] = gw_group_new(gw, want, err, err_len))) {
            for (size_t k = 0; k < i; k++)
                if (groups[k]->cfg == &next->cnodes[k]) gw_group_free(groups[k]);
            free(groups);
            return -1;
        }
    }
    pthread_mutex_lock(&gw->mu);
    gw_group **was = gw->groups;
    size_t was_count = gw->group_count;
    for (size_t i = 0; i < was_count; i++) {
        gw_group *g = was[i];
        if (gw_group_listed(groups, n, g)) continue;
        g->removed = true; /* from now on no call, cast or lookup finds it */
        for (unsigned k = 0; k < g->cfg->instances; k++) g->inst[k].removing = true;
        g->retired_next = gw->retired_groups;
        gw->retired_groups = g;
    }
    for (size_t i = 0; i < n; i++) groups[i]->index = i;
    gw->groups = groups;
    gw->group_count = n;
    pthread_mutex_unlock(&gw->mu);
    for (size_t i = 0; i < n; i++) {
        if (groups[i]->cfg != &next->cnodes[i]) {
            out->kept++;
            continue;
        }
        bool had = gw_group_named(was, was_count, groups[i]->cfg->name);
        if (had)
            out->changed++;
        else
            out->added++;
        log_info("reload: cnode %s %s", groups[i]->cfg->name,
                 had ? "changed: its instances finish their calls in flight and stop, then the "
                       "new ones start (calls meanwhile wait: max_waiting)"
                     : "added: starting");
    }
    for (size_t i = 0; i < was_count; i++) {
        gw_group *g = was[i];
        if (!g->removed) continue;
        bool replaced = gw_group_named(groups, n, g->cfg->name);
        if (!replaced) {
            out->removed++;
            log_info("reload: cnode %s removed: its instances finish their calls in flight and "
                     "stop",
                     g->cfg->name);
        }
        char detail[160];
        snprintf(detail, sizeof detail, "C-node %.64s was %s by a reload", g->cfg->name,
                 replaced ? "reconfigured" : "removed");
        routing_fail_owner(gw->routing, &g->inst[0].waiting, CALL_UNAVAILABLE, detail);
    }
    free(was);
    loop_timer_arm(gw->sweep, 0); /* new groups start, old ones stop, in this iteration */
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Erlang nodes (any thread) */

bool gateway_node_callable(const gateway *gw, const char *node) {
    return nodes_valid_name(node) && strcmp(node, gw->node_name) != 0;
}

gateway_error gateway_rpc(gateway *gw, const char *node, call *c, const char *module,
                          const char *function, const char *args, size_t args_len,
                          unsigned timeout_ms) {
    if (!gateway_node_callable(gw, node) || !*module || !*function) return GATEWAY_BAD_REQUEST;
    /* {Pid, {call, Module, Function, Args, user}} for rex */
    ei_x_buff x;
    if (ei_x_new(&x) != 0) return GATEWAY_NO_MEMORY;
    if (nodes_encode_rpc(&x, &c->pid, module, function, args, args_len) != 0) {
        ei_x_free(&x);
        return GATEWAY_BAD_REQUEST; /* an atom over 255 characters */
    }
    call_clear(c);
    c->key = dist_pid_key(&c->pid);
    gateway_error e = GATEWAY_OK;
    dist_conn *dc = NULL;
    /* Everything about the entry happens under mu: the loop retires (and later frees) entries
     * under it, so the pointer is not used once it is released. */
    pthread_mutex_lock(&gw->mu);
    gw_cnode *cn = gw_find_node_locked(gw, node);
    if (!cn && !gw->shutting_down && !gw->draining) {
        /* Not known yet: connect on demand (the loop starts it). */
        pthread_mutex_unlock(&gw->mu);
        gw_cnode *fresh = gw_node_entry_make(gw, ENTRY_PEER, node);
        pthread_mutex_lock(&gw->mu);
        if (fresh) cn = gw_node_entry_link_locked(gw, fresh); /* or the one a racer made */
        if (!cn) e = GATEWAY_NO_MEMORY;
    }
    if (e == GATEWAY_OK && (gw->shutting_down || gw->draining))
        e = GATEWAY_SHUTTING_DOWN;
    else if (e == GATEWAY_OK &&
             (cn->removing || cn->stop_requested || (!cn->live && cn->state != CNODE_STARTING)))
        e = GATEWAY_UNAVAILABLE;
    if (e == GATEWAY_OK) {
        c->deadline_ms = dist_now_ms() + (timeout_ms ? timeout_ms : cn->cfg->call_timeout_ms);
        dc = cn->live;
        if (!dc) { /* waits in the call until the node is connected */
            c->outbox = x.buff;
            c->outbox_len = (size_t)x.index;
            x.buff = NULL;
        } else {
            dist_conn_ref(dc);
        }
        if (routing_register_locked(gw->routing, &cn->route, c) != 0) {
            e = GATEWAY_NO_MEMORY;
            if (!dc) { /* hand the message back: the call is not registered */
                x.buff = c->outbox;
                c->outbox = NULL;
                c->outbox_len = 0;
            }
        }
    }
    erlang_pid from = c->pid; /* unlocked, the loop may end and free the call: see gateway_call */
    pthread_mutex_unlock(&gw->mu);
    if (e != GATEWAY_OK) {
        if (dc) dist_conn_unref(dc);
        if (x.buff) ei_x_free(&x);
        return e;
    }
    if (dc) {
        dist_send_reg(dc, &from, "rex", NULL, 0, x.buff, (size_t)x.index);
        dist_conn_unref(dc);
    }
    if (x.buff) ei_x_free(&x);
    gw_wake(gw); /* a new deadline, and maybe a connection to start */
    return GATEWAY_OK;
}

bool gateway_node_known(gateway *gw, const char *node) {
    pthread_mutex_lock(&gw->mu);
    const gw_cnode *cn = gw_find_node_locked(gw, node);
    bool known = cn && (cn->kind == ENTRY_CHILD || cn->live);
    pthread_mutex_unlock(&gw->mu);
    return known;
}

void gateway_node_entries(gateway *gw, size_t *listed, size_t *retired) {
    pthread_mutex_lock(&gw->mu);
    *listed = gw->node_count;
    *retired = gw->retired_count;
    pthread_mutex_unlock(&gw->mu);
}

int gateway_list_nodes(gateway *gw, gateway_node_info **out) {
    pthread_mutex_lock(&gw->mu);
    size_t n = 0;
    for (gw_cnode *cn = gw->nodes; cn; cn = cn->next) n++;
    gateway_node_info *list = calloc(n ? n : 1, sizeof *list);
    if (!list) {
        pthread_mutex_unlock(&gw->mu);
        return -1;
    }
    size_t i = 0;
    for (gw_cnode *cn = gw->nodes; cn; cn = cn->next, i++) {
        gateway_node_info *ni = &list[i];
        snprintf(ni->node, sizeof ni->node, "%s", cn->node);
        ni->connected = cn->live != NULL;
        ni->child = cn->kind == ENTRY_CHILD;
        ni->state = cn->state;
        ni->os_pid = cn->os_pid;
        ni->restarts = cn->restarts;
    }
    pthread_mutex_unlock(&gw->mu);
    *out = list;
    return (int)n;
}

gateway_error gateway_spawn_nodes(gateway *gw, unsigned count, gateway_spawn_fn done, void *ctx) {
    nodes_spawn *r = nodes_spawn_new(count, done, ctx);
    if (!r) return GATEWAY_NO_MEMORY;
    pthread_mutex_lock(&gw->mu);
    size_t children = 0;
    for (gw_cnode *cn = gw->nodes; cn; cn = cn->next)
        children += cn->kind == ENTRY_CHILD && !cn->removing && !cn->stop_requested;
    gateway_error e = GATEWAY_OK;
    if (gw->shutting_down || gw->draining)
        e = GATEWAY_SHUTTING_DOWN;
    else if (count == 0 || children + count > gw->cfg->max_children)
        e = GATEWAY_BAD_REQUEST;
    unsigned first = gw->child_max_index + 1;
    if (e == GATEWAY_OK) gw->child_max_index += count; /* numbering goes on from the highest */
    pthread_mutex_unlock(&gw->mu);
    if (e != GATEWAY_OK) {
        nodes_spawn_discard(r);
        return e;
    }
    /* The entries are made first and linked together with the request's submission, under mu:
     * until then no other thread sees them, and from then on the tracker holds them. */
    gw_cnode **made = calloc(count, sizeof *made);
    for (unsigned i = 0; made && i < count; i++) {
        char node[MAXNODELEN * 4];
        nodes_child_name(gw->cfg, first + i, gw->hostname, node, sizeof node);
        if (!(made[i] = gw_node_entry_make(gw, ENTRY_CHILD, node))) {
            e = GATEWAY_UNAVAILABLE; /* `erl` not found, or out of memory */
            break;
        }
        made[i]->child_index = first + i;
    }
    if (!made) e = GATEWAY_NO_MEMORY;
    pthread_mutex_lock(&gw->mu);
    if (e == GATEWAY_OK && gw->shutting_down) e = GATEWAY_SHUTTING_DOWN;
    for (unsigned i = 0; e == GATEWAY_OK && i < count; i++)
        nodes_spawn_add(r, gw_node_entry_link_locked(gw, made[i]));
    if (e == GATEWAY_OK) nodes_spawns_submit(gw->spawns, r);
    pthread_mutex_unlock(&gw->mu);
    if (e != GATEWAY_OK) {
        for (unsigned i = 0; made && i < count && made[i]; i++) gw_entry_free(made[i]);
        nodes_spawn_discard(r);
    }
    free(made);
    if (e == GATEWAY_OK) gw_wake(gw);
    return e;
}

gateway_error gateway_stop_node(gateway *gw, const char *node) {
    pthread_mutex_lock(&gw->mu);
    gw_cnode *cn = gw_find_node_locked(gw, node);
    gateway_error e =
        cn && cn->kind == ENTRY_CHILD && !cn->removing ? GATEWAY_OK : GATEWAY_NOT_FOUND;
    if (e == GATEWAY_OK) cn->stop_requested = true;
    pthread_mutex_unlock(&gw->mu);
    if (e == GATEWAY_OK) gw_wake(gw);
    return e;
}
