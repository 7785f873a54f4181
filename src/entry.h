/* entry: one supervised process or node (a C-node instance, a child or a peer): its record and
 * its life cycle: spawn, ready line, connect, up, down, reap, stop, restart timers, events. */
#ifndef NODEX_ENTRY_H
#define NODEX_ENTRY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "child.h"
#include "config.h"
#include "conns.h"
#include "dist.h"
#include "events.h"
#include "gateway.h"
#include "log.h"
#include "loop.h"
#include "routing.h"
#include "supervisor.h"

/* Threading: every function runs on the loop thread (the only writer of an entry's supervisor
 * fields) unless it says otherwise. The fields under "shared with API threads" are read by
 * other threads under host->mu and written by the loop under it. The gateway owns the entries'
 * memory (C-node instances in its groups, Erlang nodes on its list) and links them; an entry
 * owns its process, its output watches and its connection. */

#define ENTRY_OUTPUT_LINES_PER_S 100  /* output lines logged per second and process */
#define ENTRY_OUTPUT_LINE_MAX    1024 /* bytes of one output line in the log */

typedef struct entry entry;

/* What entries act with: the gateway's shared parts, fixed for the gateway's life. */
typedef struct entry_host {
    pthread_mutex_t *mu; /* guards the shared fields of every entry, and routing */
    loop *loop;
    conns *conns;
    routing *routing;
    events *events;
    const char *cookie, *sname, *node_name; /* the gateway's, for the C-nodes' args and env */
    const bool *shutting_down;              /* true once the gateway stops: no restarts */
    void (*retire)(entry *e); /* takes an Erlang-node entry off the gateway's list for good */
} entry_host;

/* What a supervised entry is. C-nodes come from the config; Erlang nodes come and go. */
typedef enum entry_kind {
    ENTRY_CNODE, /* a configured C-node */
    ENTRY_CHILD, /* a child Erlang node started by nodexd */
    ENTRY_PEER,  /* another node of the cluster, connected for rpc or because it connected */
} entry_kind;

struct entry {
    const config_cnode *cfg;
    gateway *gw;              /* its gateway (for gateway_make_pid) */
    const entry_host *host;   /* what it acts with */
    log_limiter output_limit; /* its stdout/stderr lines in the log */
    entry_kind kind;
    unsigned instance;      /* C-nodes: 1..cfg->instances */
    struct gw_group *group; /* C-nodes: the configured C-node it is an instance of (gateway's) */
    entry *first;           /* C-nodes: its C-node's first instance, where waiting calls are held */
    config_cnode own_cfg;   /* children and peers: their synthesized config (cfg points here) */
    unsigned child_index;   /* children: N of <prefix>N */
    bool removing;          /* being stopped for good: retire instead of restarting */
    bool stop_requested;    /* gateway_stop_node asked; the loop acts on it (guarded by host->mu) */
    bool retired;           /* off the list; freed once nothing refers to it (gw_free_retired) */
    unsigned stop_stage;    /* SUPERVISOR_STOPPING: 0 asked to stop, 1 SIGTERM sent */
    entry *next;            /* in gw->nodes (Erlang nodes only) */
    entry *retired_next;    /* in gw->retired */
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

/* "cnode" or "node", for log lines. */
const char *entry_what(const entry *cn);
/* True while an instance of the C-node whose first instance is `first` may still come up, so a
 * call may wait for it: none has failed or stopped for good. Caller holds host->mu. */
bool entry_group_may_come_up_locked(const entry *first);
/* Sets the state (under host->mu), logs the change and emits its event; no-op if unchanged. */
void entry_set_state(entry *cn, cnode_state s);
/* Drops the entry's connection from the call path (folding its counters in) and closes it. */
void entry_disconnect(entry *cn);
/* The entry is lost or failed to start: fails its calls, stops its process (SIGKILL with
 * `kill_now`, else SIGTERM), then decides on a restart. */
void entry_down(entry *cn, bool kill_now, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Reaps the process once it exited, records how and acts on it. True if it had exited. */
bool entry_reap(entry *cn);
/* An instance that is up takes the calls waiting for its C-node, oldest first, as many as
 * max_in_flight and calls_per_process leave room for. */
void entry_flush_waiting(entry *cn);
/* Its connection (cn->conn) is up: calls go through, those that waited for it are sent. */
void entry_became_up(entry *cn);
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
/* Tells a child node's `init` to stop, from a fresh pid (its connection must be there). */
void entry_send_init_stop(entry *cn);
/* Drops the connection reference and closes the connection, at gateway_free. */
void entry_close(entry *cn);
/* Frees an Erlang-node entry (calloc'ed) and what it holds. */
void entry_free(entry *cn);

#endif
