/* gateway: the hidden Erlang node: the composition of loop, entries, connections and routing. */
#ifndef NODEX_GATEWAY_H
#define NODEX_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <ei.h>

#include "call.h"
#include "config.h"
#include "dist.h"
#include "routing.h"

/* Externally visible C-node states, from one list. */
#define CNODE_STATES(X)                                                                            \
    X(CNODE_STARTING, "starting")     /* spawned or connecting, not yet usable */                  \
    X(CNODE_UP, "up")                 /* connected: calls go through */                            \
    X(CNODE_DOWN, "down")             /* lost; being stopped before a restart decision */          \
    X(CNODE_RESTARTING, "restarting") /* waiting out the backoff before the next start */          \
    X(CNODE_FAILED, "failed")         /* too many restarts: given up, the gateway lives on */      \
    X(CNODE_STOPPED, "stopped")       /* ended and not to be restarted */

typedef enum cnode_state {
#define X(id, name) id,
    CNODE_STATES(X)
#undef X
} cnode_state;

/* "up", "failed", ... */
const char *cnode_state_name(cnode_state s);

/* Results of the synchronous part of gateway_call / gateway_cast, from one list (service.c
 * maps each to the transports' statuses). */
#define GATEWAY_ERRORS(X)                                                                          \
    X(GATEWAY_OK, "ok")                                                                            \
    X(GATEWAY_BAD_REQUEST, "bad_request")                                                          \
    X(GATEWAY_NOT_FOUND, "not_found")                                                              \
    X(GATEWAY_UNAVAILABLE, "unavailable")                                                          \
    X(GATEWAY_OVERLOADED, "overloaded")                                                            \
    X(GATEWAY_SHUTTING_DOWN, "shutting_down")                                                      \
    X(GATEWAY_NO_MEMORY, "out_of_memory")

typedef enum gateway_error {
#define X(id, code) id,
    GATEWAY_ERRORS(X)
#undef X
} gateway_error;

/* "unavailable", ... */
const char *gateway_error_code(gateway_error e);

/* A snapshot of one C-node for the API. */
typedef struct gateway_cnode_info {
    const char *name;      /* points into the config */
    unsigned instance;     /* 1..instances for one instance; 0 for the pool as a whole */
    unsigned instances;    /* processes configured for this name */
    unsigned instances_up; /* of those, how many are up */
    cnode_state state;
    char node[MAXNODELEN * 4];
    pid_t os_pid; /* 0 when no process */
    unsigned restarts;
    char last_exit[96];   /* "exit status 3", "killed by signal 9 (Killed)", or "" */
    char last_error[192]; /* why it last went down or failed to start, or "" */
    size_t in_flight;
    int64_t uptime_ms; /* time since it came up; 0 when not up */
    uint64_t calls_total;
    size_t waiting; /* calls held until an instance is up (the C-node's, not an instance's) */
    uint64_t ignored_controls[DIST_CTL_KINDS]; /* control messages read and not acted on, by
                                                  kind (dist_ignored_control_name) */
    uint64_t dropped_messages; /* replies after their call ended, filtered or unmatched messages */
    routing_stats stats;       /* how its calls ended (outcomes, latency), drops by cause; a
                                  C-node's (instance 0) includes `waited` */
    routing_stats waited;      /* instance 0 only: calls that ended before reaching an instance
                                  (they waited out a restart and timed out or were cancelled) */
    uint64_t bytes_in;         /* distribution bytes received from it, all connections */
    uint64_t bytes_out;        /* and sent to it */
    cnode_direction direction;
    cnode_protocol protocol;
} gateway_cnode_info;

typedef struct gateway gateway;

/* Creates the node: initializes ei with the config's node name and `cookie`, binds the
 * distribution listener and publishes it in epmd (which must be running). Resolves executables.
 * Spawns nothing yet. Returns NULL with a message in err. The caller frees with gateway_free;
 * `cfg` must outlive the gateway. Call from the main thread before any other thread exists. */
gateway *gateway_new(const config *cfg, const char *cookie, char *err, size_t err_len);
/* The node name ("nodexd@127.0.0.1"). */
const char *gateway_node_name(const gateway *gw);
/* Runs the event loop on the calling thread (children are spawned from it, so it must live as
 * long as the process: PR_SET_PDEATHSIG follows the spawning thread) until SIGTERM/SIGINT (after
 * the drain, see gateway_on_drain) or gateway_request_stop; sends WATCHDOG=1 to systemd when
 * WatchdogSec= asks for it. `on_started` (may be NULL) runs once the C-nodes have been started.
 * Then fails calls still in flight with CALL_SHUTDOWN and stops every C-node (SIGTERM, SIGKILL
 * after its shutdown timeout). Returns 0, or -1 on a fatal loop error. The signals must be
 * blocked in every thread before any thread is created (see gateway_block_signals). */
int gateway_run(gateway *gw, void (*on_started)(void *ctx), void *ctx);
/* Blocks SIGTERM, SIGINT, SIGCHLD, SIGHUP and ignores SIGPIPE in the calling thread: call in
 * main() before creating threads so they all inherit the mask. */
void gateway_block_signals(void);
/* Asks the loop to stop (any thread). */
void gateway_request_stop(gateway *gw);
/* Lets another event source share the loop thread: `fn(ctx)` runs on the loop thread whenever
 * `fd` is readable (level-triggered). One such fd; call before gateway_run. Returns 0 or -1. */
int gateway_watch_fd(gateway *gw, int fd, void (*fn)(void *ctx), void *ctx);
/* `fn(ctx)` runs on the loop thread once per iteration, after events and call outcomes and
 * before the iteration's queued sends are written; it returns how long the loop may sleep (ms,
 * -1 for no limit of its own). Call before gateway_run. */
void gateway_set_iteration_hook(gateway *gw, int (*fn)(void *ctx), void *ctx);
/* `fn(ctx)` runs on the loop thread once, when the first SIGTERM/SIGINT begins the drain
 * (shutdown.drain_ms > 0): from then on the gateway is not ready, refuses new calls, casts, rpcs
 * and spawns (GATEWAY_SHUTTING_DOWN) and stops once no call is in flight or the drain time is
 * up (the rest then fail with CALL_SHUTDOWN); a second signal stops at once. The place to stop
 * the listeners accepting. Call before gateway_run. */
void gateway_on_drain(gateway *gw, void (*fn)(void *ctx), void *ctx);
/* True once the drain began (any thread). */
bool gateway_draining(gateway *gw);
/* `fn(ctx)` runs on the loop thread for every SIGHUP (reload); without it SIGHUP is only
 * logged. Call before gateway_run. */
void gateway_on_reload(gateway *gw, void (*fn)(void *ctx), void *ctx);
/* What gateway_reload_cnodes did, by C-node. */
typedef struct gateway_reload_counts {
    size_t added, removed, changed, kept;
} gateway_reload_counts;
/* Applies the C-nodes of a reloaded configuration `next` (it must outlive the gateway): one whose
 * YAML is unchanged runs on untouched; an added one starts; a removed one takes no new call,
 * finishes those in flight (within their deadlines) and stops; a changed one is replaced: the
 * old instances finish and stop, then the new ones start (calls meanwhile wait, max_waiting).
 * Calls that were waiting for a removed or changed C-node fail (CALL_UNAVAILABLE). When a new
 * C-node cannot be set up (its executable is not found, say) nothing changes. Loop thread (the
 * reload callback). Returns 0 with *out, or -1 with err. */
int gateway_reload_cnodes(gateway *gw, const config *next, gateway_reload_counts *out, char *err,
                          size_t err_len);
/* Wakes the loop so it runs an iteration soon (any thread). */
void gateway_wake(gateway *gw);
/* True when called on the loop thread while gateway_run runs. */
bool gateway_on_loop_thread(const gateway *gw);
/* Frees everything. The loop must have returned. */
void gateway_free(gateway *gw);

/* Makes a fresh pid for a call (any thread). Fill c->pid with it before encoding a request that
 * refers to its own pid. */
void gateway_make_pid(gateway *gw, erlang_pid *pid);
/* Starts a call: `msg` (encoded term without version byte) goes to the C-node per its protocol;
 * with c->on_message set it is a streaming call (messages before the reply are passed on);
 * c->pid must come from gateway_make_pid; c->on_done/c->ctx set. timeout_ms 0 means the C-node's
 * default. With `wait`, a call to a C-node none of whose instances is up yet (starting,
 * restarting, being recycled) waits for one, up to its max_waiting calls, until its deadline;
 * without it (or once the C-node failed or stopped) it gets GATEWAY_UNAVAILABLE at once. A
 * gen_call monitors its target (MONITOR_P) so a missing or dead process ends it at once.
 * On GATEWAY_OK the call is in flight and on_done runs exactly once later, on another
 * thread; on any other result on_done is never called. Any thread. */
gateway_error gateway_call(gateway *gw, const char *cnode, call *c, const char *msg, size_t msg_len,
                           unsigned timeout_ms, bool wait);
/* Ends an in-flight call (gateway_call or gateway_rpc) because its caller gave up: if it is
 * still in flight, the loop thread soon unregisters it and runs on_done with CALL_CANCELLED
 * (like every other outcome, on the loop thread: never concurrently with on_message); a reply
 * that comes later is dropped and counted. Returns true if the cancellation was taken, false
 * when the call had already ended or was cancelled before. Any thread. */
bool gateway_cancel(gateway *gw, call *c);
/* Starts every instance of the C-node again now, with a clean restart record (out of `failed`
 * or `stopped`; one that runs is stopped first: its calls in flight fail, waiting calls wait).
 * GATEWAY_OK once asked; the loop acts on it. Any thread. */
gateway_error gateway_restart_cnode(gateway *gw, const char *cnode);
/* Sends `msg` to the C-node without waiting for anything. Any thread. */
gateway_error gateway_cast(gateway *gw, const char *cnode, const char *msg, size_t msg_len);
/* --- Lifecycle events (for Watch streams) ---------------------------------------------- */

/* One state change of a C-node or an Erlang node. */
typedef struct gateway_event {
    uint64_t seq;              /* increases by one per event */
    int64_t time_ms;           /* wall clock, ms since the epoch */
    bool erlang_node;          /* false: a C-node; true: an Erlang node (child or peer) */
    char name[MAXNODELEN * 4]; /* the C-node's API name, or the Erlang node's name */
    char node[MAXNODELEN * 4];
    cnode_state state; /* the state entered */
    char reason[192];  /* why (down, failed, restarting), else "" */
    pid_t os_pid;      /* 0 when none */
} gateway_event;

/* Receives events on the event loop thread; it must not block and must not call
 * gateway_subscribe or gateway_unsubscribe. `ev` is valid only during the call. */
typedef void (*gateway_event_fn)(const gateway_event *ev, void *ctx);
/* Registers `fn` for every state change from now on. Returns a subscription id (> 0), or 0
 * when out of memory. Any thread. */
uint64_t gateway_subscribe(gateway *gw, gateway_event_fn fn, void *ctx);
/* Ends a subscription: when this returns, `fn` is not running and never runs again. Any thread,
 * but not from inside an event callback. */
void gateway_unsubscribe(gateway *gw, uint64_t id);

/* --- C-nodes -------------------------------------------------------------------------- */

/* Number of configured C-nodes (a reload may change it: an index past the end is -1 below). */
size_t gateway_cnode_count(gateway *gw);
/* Snapshot of the C-node at `index` (any thread). Returns 0, or -1 when out of range. */
int gateway_cnode_info_at(gateway *gw, size_t index, gateway_cnode_info *out);
/* Snapshot of one instance (1-based) of the C-node at `index`. Returns 0, or -1 when out of
 * range. A pool's gateway_cnode_info_at reads as its first instance with summed counters and
 * the best state. */
int gateway_cnode_instance_at(gateway *gw, size_t index, unsigned instance,
                              gateway_cnode_info *out);
/* Snapshot by name. Returns 0, or -1 when unknown. */
int gateway_cnode_info_by_name(gateway *gw, const char *name, gateway_cnode_info *out);
/* --- Erlang nodes ----------------------------------------------------------------------- */

/* A snapshot of one Erlang node: a child started by nodexd, or a peer connected either way. */
typedef struct gateway_node_info {
    char node[MAXNODELEN * 4];
    bool connected;
    bool child;        /* started and supervised by nodexd */
    cnode_state state; /* children: their supervisor state; peers: up */
    pid_t os_pid;      /* children only, 0 otherwise */
    unsigned restarts;
} gateway_node_info;

/* Snapshot of every known Erlang node (C-nodes are listed by gateway_cnode_info_at). Returns
 * how many, with *out malloc'd (the caller frees it), or -1 when out of memory. Any thread. */
int gateway_list_nodes(gateway *gw, gateway_node_info **out);
/* Erlang-node entries in memory: `listed` (children and peers, as gateway_list_nodes) and
 * `retired` (forgotten, freed once no connector attempt refers to them). Any thread. */
void gateway_node_entries(gateway *gw, size_t *listed, size_t *retired);
/* True when `node` is one of nodexd's children or a connected peer (any thread). */
bool gateway_node_known(gateway *gw, const char *node);
/* True when `node` is a name rpc could reach: name@host, no quotes or spaces, not nodexd. */
bool gateway_node_callable(const gateway *gw, const char *node);
/* rpc:call(node, module, function, args): sends {Pid, {call, M, F, Args, user}} to `rex` on
 * `node` from c->pid, connecting to the node on demand through epmd. `args` is an encoded list
 * without version byte. The reply {rex, Reply} completes the call (CALL_REPLIED with
 * c->reply_offset at Reply; a {badrpc, Reason} Reply is the caller's to interpret); an
 * unreachable node completes it with CALL_UNAVAILABLE. Same on_done contract as gateway_call. */
gateway_error gateway_rpc(gateway *gw, const char *node, call *c, const char *module,
                          const char *function, const char *args, size_t args_len,
                          unsigned timeout_ms);
/* Reports the outcome of gateway_spawn_nodes once, on the loop thread: the new nodes' names
 * (valid during the call) when all came up, or `error` (names then holds those that did). */
typedef void (*gateway_spawn_fn)(void *ctx, const char *const *nodes, size_t count,
                                 const char *error);
/* Starts `count` child Erlang nodes named <prefix><N>@<host>, numbering on from the highest
 * existing index. On GATEWAY_OK `done` runs later exactly once. Any thread. */
gateway_error gateway_spawn_nodes(gateway *gw, unsigned count, gateway_spawn_fn done, void *ctx);
/* Stops a child node (init:stop, then SIGTERM, then SIGKILL) and forgets it. Returns
 * GATEWAY_NOT_FOUND when `node` is not a child. Asynchronous: events report the stop. */
gateway_error gateway_stop_node(gateway *gw, const char *node);

/* True when every C-node that should run is up (for /readyz). */
bool gateway_is_ready(gateway *gw);

#endif
