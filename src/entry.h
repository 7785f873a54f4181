/* entry: one supervised process or node (a C-node instance, a child or a peer): its record and
 * its life cycle: spawn, ready line, connect, up, down, reap, stop, restart timers, events. */
#ifndef NODEX_ENTRY_H
#define NODEX_ENTRY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "conns.h"
#include "dist.h"
#include "events.h"
#include "gateway.h"
#include "loop.h"
#include "nodes.h"
#include "routing.h"

/* The record is opaque: other modules act on an entry only through these functions.
 * Threading: every function runs on the loop thread (the only writer of an entry) unless it
 * says otherwise; `_locked` ones may run on any thread and need host->mu held (they read or set
 * what API threads share: state, connection, calls, requests). Ownership: cnodes.c owns the
 * C-node arrays (entry_array_new/free, one per configured C-node); an entry_list owns its
 * Erlang-node entries; an entry owns its process, its output watches and its connection. */

#define ENTRY_OUTPUT_LINES_PER_S 100  /* output lines logged per second and process */
#define ENTRY_OUTPUT_LINE_MAX    1024 /* bytes of one output line in the log */

typedef struct entry entry;
typedef struct entry_list entry_list;

/* What entries act with: the gateway's shared parts, fixed for the gateway's life (the names
 * from the start, the rest once the gateway has made them, before any entry starts). */
typedef struct entry_host {
    pthread_mutex_t *mu; /* guards the shared fields of every entry, routing and `ec`'s pids */
    const config *cfg;   /* the gateway's (erl for children, peer_tick_time_ms) */
    ei_cnode *ec;        /* the node, for fresh pids */
    loop *loop;
    conns *conns;
    routing *routing;
    events *events;
    entry_list *nodes; /* the Erlang nodes: an entry stopped for good is retired from it */
    const char *cookie, *sname, *hostname, *node_name; /* the gateway's */
    const char *child_home;    /* HOME with .erlang.cookie for child nodes */
    const bool *shutting_down; /* true once the gateway stops: no restarts */
} entry_host;

/* What a supervised entry is. C-nodes come from the config; Erlang nodes come and go. */
typedef enum entry_kind {
    ENTRY_CNODE, /* a configured C-node */
    ENTRY_CHILD, /* a child Erlang node started by nodexd */
    ENTRY_PEER,  /* another node of the cluster, connected for rpc or because it connected */
} entry_kind;

/* The Erlang-node entries: listed ones (found by node name), and retired ones waiting until
 * nothing refers to them. The gateway embeds it zeroed; its fields are entry.c's. Linked and
 * searched under host->mu by any thread; unlinked and freed by the loop. */
struct entry_list {
    entry *head, *retired;
    size_t count, retired_count;
};

/* Life cycle (loop thread) */

/* The entry is lost or failed to start: fails its calls, stops its process (SIGKILL with
 * `kill_now`, else SIGTERM), then decides on a restart. */
void entry_down(entry *cn, bool kill_now, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Reaps the process once it exited, records how and acts on it. True if it had exited. */
bool entry_reap(entry *cn);
/* Starts it: spawns its process (or connects, for adopt and peers); STARTING. */
void entry_start(entry *cn);
/* Stops a child node for good: init:stop, then SIGTERM, then SIGKILL, each after half the
 * shutdown timeout; then the entry is retired. */
void entry_child_stop(entry *cn);
/* Acts on its phase deadline: spawn and connect timeouts, kill escalation, backoff, retry. */
void entry_timers(entry *cn, int64_t now);
/* A C-node instance's periodic duties: a restart asked for, a recycle due, waiting calls. */
void entry_service(entry *cn);
/* A C-node instance a reload removed or replaced: stops once it has no call in flight. */
void entry_retire_service(entry *cn);

/* Set-up and tear-down */

/* An array of `n` zeroed C-node entries (one configured C-node's instances), or NULL. */
entry *entry_array_new(unsigned n);
/* Instance i (0-based) of the array that starts with `first`. */
entry *entry_at(entry *first, unsigned i);
/* Sets up instance `instance` (1-based) of C-node `cfg` in the array `first` (from
 * entry_array_new), owned by the gateway's `group`: its node name, ready line, resolved
 * executable. Not started. Returns 0, or -1 with err. Loop thread or before the loop runs. */
int entry_init_cnode(entry *first, unsigned instance, const entry_host *h, const config_cnode *cfg,
                     void *group, char *err, size_t err_len);
/* Frees an array of `n` C-node entries and what each holds (closing its connection). */
void entry_array_free(entry *first, unsigned n);
/* A new Erlang-node entry for `node`, not linked yet (any thread); children (numbered
 * `child_index`) get their `erl` process spec. NULL when out of memory or `erl` is missing. */
entry *entry_new_node(const entry_host *h, entry_kind kind, const char *node, unsigned child_index);
/* Frees an Erlang-node entry that was never linked. */
void entry_free(entry *cn);

/* What it is (any thread: fixed at set-up) */

entry_kind entry_kind_of(const entry *cn);
const config_cnode *entry_cfg(const entry *cn);
/* Its node name in the cluster. */
const char *entry_node(const entry *cn);
/* C-nodes: 1..instances; 0 for Erlang nodes. */
unsigned entry_instance(const entry *cn);
/* C-nodes: the group given to entry_init_cnode. */
void *entry_group(const entry *cn);
/* Its calls in flight (routing's owner), for the replies its connection brings. */
routing_owner *entry_route(entry *cn);

/* The Erlang-node list */

/* The listed entry for `node`, or NULL. Caller holds host->mu; the entry stays valid while it
 * does (only the loop retires entries, under mu). */
entry *entry_list_find_locked(const entry_list *l, const char *node);
/* Links `cn` (from entry_new_node), or frees it and returns the entry already listed for its
 * node (another thread made it meanwhile: one entry per node). Caller holds host->mu. */
entry *entry_list_link_locked(entry_list *l, entry *cn);
/* The first listed entry (takes mu), or NULL; then entry_list_next. Loop thread. */
entry *entry_list_first(const entry_host *h);
entry *entry_list_next(const entry *cn);
/* Frees retired entries no connector attempt and no spawn request refers to. Loop thread. */
void entry_list_free_retired(entry_list *l, const entry_host *h, nodes_spawns *spawns);
/* Listed and retired entries in memory. Caller holds host->mu. */
void entry_list_counts_locked(const entry_list *l, size_t *listed, size_t *retired);
/* Children listed and not being stopped. Caller holds host->mu. */
size_t entry_list_children_locked(const entry_list *l);
/* A snapshot of every listed node: how many, with *out malloc'd (caller frees), or -1. Caller
 * holds host->mu. */
int entry_list_info_locked(const entry_list *l, gateway_node_info **out);
/* Closes and frees every entry, listed and retired (gateway_free). */
void entry_list_free(entry_list *l);

/* Shared state, read and changed by API threads: the caller holds host->mu */

/* The connection calls use, or NULL (no reference taken). */
dist_conn *entry_live_locked(const entry *cn);
/* The instance a call goes to: the least loaded one that is up and takes calls, or NULL. */
entry *entry_pick_instance_locked(entry *first);
/* Registers call `c` on instance `cn` unless it is at max_in_flight or its connection has more
 * than `backlog_max` bytes waiting; on GATEWAY_OK *dc is its connection, referenced (the caller
 * sends, then unrefs) and the call counts towards calls_per_process. */
gateway_error entry_take_call_locked(entry *cn, call *c, size_t backlog_max, dist_conn **dc);
/* No instance of C-node `first` is up: holds the call (its message, prefix + msg, copied to
 * c->outbox) until one is (entry_flush_waiting) or its deadline passes. UNAVAILABLE when none
 * may come up or max_waiting is 0, OVERLOADED when max_waiting calls already wait. */
gateway_error entry_hold_call_locked(entry *first, call *c, const char *prefix, size_t plen,
                                     const char *msg, size_t msg_len);
/* An Erlang node takes an rpc: it is neither being stopped nor down (connected, or starting). */
bool entry_takes_rpc_locked(const entry *cn);
/* A child, or a connected peer. */
bool entry_node_known_locked(const entry *cn);
/* Asks the loop to stop a child node for good; false when `cn` is not a child or already
 * stopping. */
bool entry_request_stop_locked(entry *cn);
/* Asks the loop to restart every instance of C-node `first`. */
void entry_group_request_restart_locked(entry *first);
/* Every instance of C-node `first` that should run runs (up, or stopped for good). */
bool entry_group_ready_locked(const entry *first);
/* Marks every instance of C-node `first` as removed by a reload: stopped for good. */
void entry_group_set_removing_locked(entry *first);
/* True once nothing of it runs or refers to it: process reaped, connection closed, connector
 * attempts reported, calls ended. */
bool entry_done_locked(const entry *cn);
/* Fills `out` from one instance, its uptime as of `now`. */
void entry_info_locked(const entry *cn, int64_t now, gateway_cnode_info *out);
/* A C-node's snapshot: its first instance's, with the counters summed, the best state, and the
 * calls that ended while waiting. */
void entry_group_info_locked(const entry *first, gateway_cnode_info *out);

/* Connections (loop thread) */

/* conns: a connector's attempt for `cn` ended, with fd or error; stale generations are dropped. */
void entry_on_connected(entry *cn, unsigned generation, int fd, const char *peer,
                        const char *error);
/* True when a connection in from its node is expected now (a `back` C-node just spawned). */
bool entry_expects_connection(const entry *cn);
/* A `back` C-node connected in: up once its ready line came too. */
void entry_connected_back(entry *cn, conns_conn *c);
/* A peer connected in: it serves this entry, unless the entry has a connection already (then
 * the new one is closed). */
void entry_peer_connected(entry *cn, conns_conn *c);
/* routing: a gen_call ended with its monitor open: DEMONITOR_P on its entry's connection.
 * `ctx` is the entry_host. */
void entry_on_monitor_end(call *c, routing_owner *o, void *ctx);

/* Supervision (loop thread) */

/* True while it waits to be started for the first time. */
bool entry_idle(const entry *cn);
/* True when gateway_stop_node asked for a stop that has not begun (entry_child_stop begins it). */
bool entry_stop_requested(const entry *cn);
/* nodes_spawns: a child as the spawn tracker sees it. */
void entry_child_status(const void *child, nodes_child_status *out);
/* The gateway stops: its calls fail (CALL_SHUTDOWN), its connection closes, C-nodes and peers
 * get SIGTERM, children init:stop (SIGTERM from entry_stop_wait). */
void entry_stop_begin(entry *cn);
/* `waited` ms after entry_stop_begin: reaps, escalates (SIGTERM at half the shutdown timeout,
 * SIGKILL at it). True while its process still runs. */
bool entry_stop_wait(entry *cn, int64_t waited);
/* The stop is over: STOPPED. */
void entry_stop_end(entry *cn);
/* Makes a fresh pid of the node (any thread; takes host->mu). */
void entry_host_make_pid(const entry_host *h, erlang_pid *pid);
/* Fails the calls waiting for C-node `first` (a reload removed or replaced it). */
void entry_fail_waiting(entry *first, const char *detail);

#endif
