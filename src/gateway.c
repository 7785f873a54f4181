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

#include "cnodes.h"
#include "conns.h"
#include "dist.h"
#include "entry.h"
#include "events.h"
#include "ei_sock.h"
#include "log.h"
#include "loop.h"
#include "nodes.h"
#include "routing.h"
#include "sdnotify.h"

#define GW_SWEEP_MS 50 /* supervisor timers and ticks are checked this often */
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
    cnodes *cnodes;   /* the configured C-nodes */
    entry_list nodes; /* Erlang nodes: linked under mu by any thread, retired by the loop */
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
    entry_host host; /* what its entries act with (set up once, read by the loop) */
};

/* ------------------------------------------------------------------------------------------ */
/* Small helpers */

static void gw_wake(gateway *gw) {
    loop_wake(gw->loop);
}

/* ------------------------------------------------------------------------------------------ */
/* Entries: configured C-nodes, then Erlang nodes */

/* The entry after `prev` (NULL: the first): every C-node instance, then the Erlang nodes. Loop
 * thread: the only one that adds groups, unlinks entries and frees either. */
static entry *gw_entry_next(gateway *gw, entry *prev) {
    if (prev && entry_kind_of(prev) != ENTRY_CNODE) return entry_list_next(prev);
    entry *next = cnodes_next(gw->cnodes, prev);
    return next ? next : entry_list_first(&gw->host);
}

/* A new Erlang-node entry, linked (or the one already listed for its node). Loop thread (the
 * pointer stays valid: only it retires). */
static entry *gw_node_entry_new(gateway *gw, entry_kind kind, const char *node,
                                unsigned child_index) {
    entry *cn = entry_new_node(&gw->host, kind, node, child_index);
    if (!cn) return NULL;
    pthread_mutex_lock(&gw->mu);
    cn = entry_list_link_locked(&gw->nodes, cn);
    pthread_mutex_unlock(&gw->mu);
    return cn;
}

/* A node connected in that is not a C-node of ours: a peer (an Erlang node, usually). If an
 * entry is already connecting to it, this connection serves it. */
static void gw_accept_peer(gateway *gw, conns_conn *gc, const char *node) {
    pthread_mutex_lock(&gw->mu);
    entry *cn = entry_list_find_locked(&gw->nodes, node);
    pthread_mutex_unlock(&gw->mu);
    if (!cn && !(cn = gw_node_entry_new(gw, ENTRY_PEER, node, 0))) {
        conns_close(gw->conns, gc);
        return;
    }
    entry_peer_connected(cn, gc);
}

/* conns: a connector's attempt for `owner` ended. */
static void gw_on_connected(void *ctx, void *owner, unsigned generation, int fd, const char *peer,
                            const char *error) {
    (void)ctx;
    entry_on_connected(owner, generation, fd, peer, error);
}

/* conns: a node connected in: a `back` C-node we started, or a peer. */
static void gw_on_accepted(void *ctx, int fd, const char *peer) {
    gateway *gw = ctx;
    entry *cn = cnodes_back_instance(gw->cnodes, peer);
    if (cn && !entry_expects_connection(cn)) {
        log_warn("connection from %s while it is not expected; closed", peer);
        ei_close_connection(fd);
        return;
    }
    conns_conn *gc = conns_add(gw->conns, fd, peer);
    if (gc && cn)
        entry_connected_back(cn, gc);
    else if (gc)
        gw_accept_peer(gw, gc, peer);
}

/* conns: the connection of `owner` is lost. The process usually exits right after its connection
 * drops (by_peer): give it the shutdown timeout, then it is killed; a silent one is killed now. */
static void gw_on_lost(void *ctx, void *owner, const char *peer, const char *why, bool by_peer) {
    (void)ctx;
    entry_down(owner, !by_peer, "%s: %s", peer, why);
}

/* ------------------------------------------------------------------------------------------ */
/* Replies */

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
    entry *owner = conns_owner(gc);
    if (!m->to_pid) {
        if (m->to_name && strcmp(m->to_name, "net_kernel") == 0)
            gw_answer_net_kernel(dc, m);
        else
            log_debug("message to registered name %s from %s ignored",
                      m->to_name ? m->to_name : "?", dc->peer);
        return;
    }
    routing_on_message(gw->routing, owner ? entry_route(owner) : NULL, m);
}

/* ------------------------------------------------------------------------------------------ */
/* The loop */

static void gw_reap_all(gateway *gw) {
    for (entry *cn = gw_entry_next(gw, NULL), *nx; cn; cn = nx) {
        nx = gw_entry_next(gw, cn);
        entry_reap(cn);
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

/* Stops everything: C-nodes get SIGTERM (and their connection closed: Nodex C-nodes then exit
 * 0); child Erlang nodes get init:stop, then SIGTERM at half their shutdown timeout; whatever
 * still runs at its shutdown timeout gets SIGKILL. Every process is reaped. */
static void gw_stop_all(gateway *gw) {
    int64_t start = dist_now_ms();
    for (entry *cn = gw_entry_next(gw, NULL); cn; cn = gw_entry_next(gw, cn)) entry_stop_begin(cn);
    for (;;) {
        bool running = false;
        int64_t waited = dist_now_ms() - start;
        for (entry *cn = gw_entry_next(gw, NULL); cn; cn = gw_entry_next(gw, cn))
            running |= entry_stop_wait(cn, waited);
        if (!running) break;
        usleep(10000);
    }
    for (entry *cn = gw_entry_next(gw, NULL); cn; cn = gw_entry_next(gw, cn)) entry_stop_end(cn);
    conns_close_all(gw->conns);
}

/* Reports spawn requests whose children are all up, or of which one went down. */
static void gw_check_spawns(gateway *gw) {
    nodes_spawns_check(gw->spawns, gw->shutting_down);
}

/* The C-nodes' duties, then the Erlang nodes': new ones start, stop requests are acted on;
 * every phase timer runs. */
static void gw_service_entries(gateway *gw, int64_t now) {
    cnodes_service(gw->cnodes, now);
    for (entry *cn = entry_list_first(&gw->host), *nx; cn; cn = nx) {
        nx = entry_list_next(cn);
        if (entry_stop_requested(cn)) {
            entry_child_stop(cn);
            continue;
        }
        if (entry_idle(cn)) {
            entry_start(cn);
            continue;
        }
        entry_timers(cn, now);
    }
    gw_check_spawns(gw);
}

/* The sweep timer: supervisor timers and connection ticks, every GW_SWEEP_MS. */
static void gw_sweep(void *ctx) {
    gateway *gw = ctx;
    int64_t now = dist_now_ms();
    gw_service_entries(gw, now);
    conns_tick(gw->conns, now);
    entry_list_free_retired(&gw->nodes, &gw->host, gw->spawns);
    loop_timer_arm(gw->sweep, now + GW_SWEEP_MS);
}

int gateway_run(gateway *gw, void (*on_started)(void *ctx), void *ctx) {
    cnodes_start(gw->cnodes);
    for (unsigned i = 0; i < gw->cfg->child_count; i++) {
        char node[MAXNODELEN * 4];
        nodes_child_name(gw->cfg, ++gw->child_max_index, gw->hostname, node, sizeof node);
        if (!gw_node_entry_new(gw, ENTRY_CHILD, node, gw->child_max_index))
            log_error("cannot set up child node %s (is %s installed?)", node,
                      gw->cfg->erl_executable);
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
        !(gw->spawns = nodes_spawns_new(entry_child_status))) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    /* What the entries act with; the loop, conns and child_home follow once made. */
    gw->host = (entry_host){.mu = &gw->mu,
                            .cfg = cfg,
                            .ec = &gw->ec,
                            .routing = gw->routing,
                            .events = gw->events,
                            .nodes = &gw->nodes,
                            .cookie = gw->cookie,
                            .sname = gw->sname,
                            .hostname = gw->hostname,
                            .node_name = gw->node_name,
                            .shutting_down = &gw->shutting_down};
    routing_set_monitor_end(gw->routing, entry_on_monitor_end, &gw->host);
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
    if (!(gw->cnodes = cnodes_new(&gw->host, cfg, err, err_len))) goto fail;
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
    gw->host.loop = gw->loop;
    gw->host.conns = gw->conns;
    gw->host.child_home = gw->child_home;
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
    cnodes_free(gw->cnodes);
    entry_list_free(&gw->nodes);
    nodes_spawns_free(gw->spawns);
    nodes_home_remove(gw->child_home);
    if (gw->conns) conns_close_all(gw->conns);
    /* made through ei_sock: ei_close_connection frees their context too */
    if (gw->publish_fd >= 0) ei_close_connection(gw->publish_fd);
    if (gw->listen_fd >= 0) ei_close_connection(gw->listen_fd);
    routing_free(gw->routing);
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
    entry_host_make_pid(&gw->host, pid);
}

gateway_error gateway_call(gateway *gw, const char *name, call *c, const char *msg, size_t msg_len,
                           unsigned timeout_ms, bool wait) {
    c->key = dist_pid_key(&c->pid);
    call_clear(c);
    char prefix[MAXATOMLEN_UTF8 * 2 + 128];
    int plen = 0;
    int64_t now = dist_now_ms(); /* read before taking mu: the lock is held as briefly as can be */
    pthread_mutex_lock(&gw->mu);
    entry *first = cnodes_find_locked(gw->cnodes, name);
    if (!first) {
        pthread_mutex_unlock(&gw->mu);
        return GATEWAY_NOT_FOUND;
    }
    const config_cnode *cfg = entry_cfg(first); /* configs outlive every call */
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
    entry *cn = entry_pick_instance_locked(first);
    gateway_error e = GATEWAY_OK;
    dist_conn *dc = NULL;
    bool waiting = false;
    if (gw->shutting_down || gw->draining)
        e = GATEWAY_SHUTTING_DOWN;
    else if (!cn && wait)
        waiting = (e = entry_hold_call_locked(first, c, prefix, (size_t)plen, msg, msg_len)) ==
                  GATEWAY_OK;
    else if (!cn)
        e = GATEWAY_UNAVAILABLE;
    else if ((e = entry_take_call_locked(cn, c, GW_BACKLOG_SOFT_MAX, &dc)) == GATEWAY_OK)
        c->monitored = gen_call && cfg->monitor; /* the monitor goes out first, below */
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
    entry *first = cnodes_find_locked(gw->cnodes, name);
    if (!first) {
        pthread_mutex_unlock(&gw->mu);
        return GATEWAY_NOT_FOUND;
    }
    const config_cnode *cfg = entry_cfg(first);
    entry *cn = entry_pick_instance_locked(first);
    dist_conn *dc = cn && !gw->shutting_down && !gw->draining ? entry_live_locked(cn) : NULL;
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
    size_t n = cnodes_count_locked(gw->cnodes);
    pthread_mutex_unlock(&gw->mu);
    return n;
}

int gateway_cnode_info_at(gateway *gw, size_t index, gateway_cnode_info *out) {
    pthread_mutex_lock(&gw->mu);
    entry *first = cnodes_at_locked(gw->cnodes, index);
    if (first) entry_group_info_locked(first, out);
    pthread_mutex_unlock(&gw->mu);
    return first ? 0 : -1;
}

int gateway_cnode_instance_at(gateway *gw, size_t index, unsigned instance,
                              gateway_cnode_info *out) {
    pthread_mutex_lock(&gw->mu);
    entry *first = cnodes_at_locked(gw->cnodes, index);
    bool known = first && instance >= 1 && instance <= entry_cfg(first)->instances;
    if (known) entry_info_locked(entry_at(first, instance - 1), dist_now_ms(), out);
    pthread_mutex_unlock(&gw->mu);
    return known ? 0 : -1;
}

gateway_error gateway_restart_cnode(gateway *gw, const char *name) {
    pthread_mutex_lock(&gw->mu);
    entry *first = cnodes_find_locked(gw->cnodes, name);
    if (!first) {
        pthread_mutex_unlock(&gw->mu);
        return GATEWAY_NOT_FOUND;
    }
    bool stopping = gw->shutting_down || gw->draining;
    if (!stopping) entry_group_request_restart_locked(first);
    pthread_mutex_unlock(&gw->mu);
    if (stopping) return GATEWAY_SHUTTING_DOWN;
    gw_wake(gw);
    return GATEWAY_OK;
}

int gateway_cnode_info_by_name(gateway *gw, const char *name, gateway_cnode_info *out) {
    pthread_mutex_lock(&gw->mu);
    const entry *first = cnodes_find_locked(gw->cnodes, name);
    if (first) entry_group_info_locked(first, out);
    pthread_mutex_unlock(&gw->mu);
    return first ? 0 : -1;
}

bool gateway_is_ready(gateway *gw) {
    bool ready = true;
    pthread_mutex_lock(&gw->mu);
    for (size_t i = 0; i < cnodes_count_locked(gw->cnodes) && ready; i++)
        ready = entry_group_ready_locked(cnodes_at_locked(gw->cnodes, i));
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

int gateway_reload_cnodes(gateway *gw, const config *next, gateway_reload_counts *out, char *err,
                          size_t err_len) {
    if (cnodes_reload(gw->cnodes, next, out, err, err_len) != 0) return -1;
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
    entry *cn = entry_list_find_locked(&gw->nodes, node);
    if (!cn && !gw->shutting_down && !gw->draining) {
        /* Not known yet: connect on demand (the loop starts it). */
        pthread_mutex_unlock(&gw->mu);
        entry *fresh = entry_new_node(&gw->host, ENTRY_PEER, node, 0);
        pthread_mutex_lock(&gw->mu);
        if (fresh) cn = entry_list_link_locked(&gw->nodes, fresh); /* or the one a racer made */
        if (!cn) e = GATEWAY_NO_MEMORY;
    }
    if (e == GATEWAY_OK && (gw->shutting_down || gw->draining))
        e = GATEWAY_SHUTTING_DOWN;
    else if (e == GATEWAY_OK && !entry_takes_rpc_locked(cn))
        e = GATEWAY_UNAVAILABLE;
    if (e == GATEWAY_OK) {
        c->deadline_ms = dist_now_ms() + (timeout_ms ? timeout_ms : entry_cfg(cn)->call_timeout_ms);
        dc = entry_live_locked(cn);
        if (!dc) { /* waits in the call until the node is connected */
            c->outbox = x.buff;
            c->outbox_len = (size_t)x.index;
            x.buff = NULL;
        } else {
            dist_conn_ref(dc);
        }
        if (routing_register_locked(gw->routing, entry_route(cn), c) != 0) {
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
    const entry *cn = entry_list_find_locked(&gw->nodes, node);
    bool known = cn && entry_node_known_locked(cn);
    pthread_mutex_unlock(&gw->mu);
    return known;
}

void gateway_node_entries(gateway *gw, size_t *listed, size_t *retired) {
    pthread_mutex_lock(&gw->mu);
    entry_list_counts_locked(&gw->nodes, listed, retired);
    pthread_mutex_unlock(&gw->mu);
}

int gateway_list_nodes(gateway *gw, gateway_node_info **out) {
    pthread_mutex_lock(&gw->mu);
    int n = entry_list_info_locked(&gw->nodes, out);
    pthread_mutex_unlock(&gw->mu);
    return n;
}

gateway_error gateway_spawn_nodes(gateway *gw, unsigned count, gateway_spawn_fn done, void *ctx) {
    nodes_spawn *r = nodes_spawn_new(count, done, ctx);
    if (!r) return GATEWAY_NO_MEMORY;
    pthread_mutex_lock(&gw->mu);
    size_t children = entry_list_children_locked(&gw->nodes);
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
    entry **made = calloc(count, sizeof *made);
    for (unsigned i = 0; made && i < count; i++) {
        char node[MAXNODELEN * 4];
        nodes_child_name(gw->cfg, first + i, gw->hostname, node, sizeof node);
        if (!(made[i] = entry_new_node(&gw->host, ENTRY_CHILD, node, first + i))) {
            e = GATEWAY_UNAVAILABLE; /* `erl` not found, or out of memory */
            break;
        }
    }
    if (!made) e = GATEWAY_NO_MEMORY;
    pthread_mutex_lock(&gw->mu);
    if (e == GATEWAY_OK && gw->shutting_down) e = GATEWAY_SHUTTING_DOWN;
    for (unsigned i = 0; e == GATEWAY_OK && i < count; i++)
        nodes_spawn_add(r, entry_list_link_locked(&gw->nodes, made[i]));
    if (e == GATEWAY_OK) nodes_spawns_submit(gw->spawns, r);
    pthread_mutex_unlock(&gw->mu);
    if (e != GATEWAY_OK) {
        for (unsigned i = 0; made && i < count && made[i]; i++) entry_free(made[i]);
        nodes_spawn_discard(r);
    }
    free(made);
    if (e == GATEWAY_OK) gw_wake(gw);
    return e;
}

gateway_error gateway_stop_node(gateway *gw, const char *node) {
    pthread_mutex_lock(&gw->mu);
    entry *cn = entry_list_find_locked(&gw->nodes, node);
    gateway_error e = cn && entry_request_stop_locked(cn) ? GATEWAY_OK : GATEWAY_NOT_FOUND;
    pthread_mutex_unlock(&gw->mu);
    if (e == GATEWAY_OK) gw_wake(gw);
    return e;
}
