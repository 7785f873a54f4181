/* routing: in-flight calls by pid, replies matched to them, and every way a call ends. */
#ifndef NODEX_ROUTING_H
#define NODEX_ROUTING_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ei.h>

#include "call.h"
#include "config.h"
#include "dist.h"

/* Threading. One lock guards the registry, the cancel list and every owner's calls and
 * counters: the lock given to routing_new, which its creator (the gateway) also holds around its
 * own state. Functions ending in _locked expect that lock held; the others take it themselves.
 * Calls end (on_done runs) only outside the lock, on the thread that ends them: routing_on_message,
 * routing_expire, routing_run_cancels and routing_fail_owner run on the loop thread, the only
 * thread that unregisters calls (so a call found under the lock stays valid after it). The pure
 * functions (routing_match_*, routing_net_kernel_reply) touch no state and run on any thread. */
typedef struct routing routing;

/* The detail of a call that timed out before it could be sent (its target never came up). */
#define ROUTING_NOT_SENT "not sent: the target did not come up within the call's timeout"

/* Upper bounds (µs) of the call latency histogram's buckets, from one list (Prometheus-style
 * le bounds); one more bucket holds the slower calls (+Inf). */
#define ROUTING_LATENCY_BOUNDS_US(X)                                                               \
    X(100)                                                                                         \
    X(250)                                                                                         \
    X(500)                                                                                         \
    X(1000)                                                                                        \
    X(2500)                                                                                        \
    X(5000)                                                                                        \
    X(10000)                                                                                       \
    X(25000)                                                                                       \
    X(50000)                                                                                       \
    X(100000)                                                                                      \
    X(250000)                                                                                      \
    X(500000)                                                                                      \
    X(1000000)                                                                                     \
    X(2500000)                                                                                     \
    X(5000000)                                                                                     \
    X(10000000)

/* Buckets in routing_stats.latency: one per bound, then +Inf. */
enum {
#define X(us) ROUTING_LATENCY_BUCKET_##us,
    ROUTING_LATENCY_BOUNDS_US(X)
#undef X
        ROUTING_LATENCY_INF,
    ROUTING_LATENCY_BUCKETS
};

/* The bounds of ROUTING_LATENCY_BOUNDS_US, in order (ROUTING_LATENCY_BUCKETS - 1 of them). */
extern const uint32_t routing_latency_bounds_us[];

/* What the calls of an owner came to, counted when each ended (for metrics). */
typedef struct routing_stats {
    uint64_t outcomes[CALL_OUTCOME_COUNT];     /* calls ended, by outcome */
    uint64_t latency[ROUTING_LATENCY_BUCKETS]; /* ended calls per latency bucket (not cumulative) */
    uint64_t latency_sum_us;                   /* their latencies summed */
    uint64_t dropped_filtered;  /* messages to a call's pid that were not its reply */
    uint64_t dropped_unmatched; /* messages on its connection to no call (late replies, ...) */
} routing_stats;

/* Adds every counter of `from` to `into`. Pure. */
void routing_stats_add(routing_stats *into, const routing_stats *from);
/* The bucket of a latency of `us` microseconds. Pure. */
size_t routing_latency_bucket(int64_t us);

/* What a call is routed to: a C-node instance or an Erlang node. Embedded by its owner (the
 * gateway's entry), set up with routing_owner_init, read through the accessors below. A
 * registered call's `cnode` points at its routing_owner. */
typedef struct routing_owner {
    const config_cnode *cfg; /* protocol, reply filter and tag */
    const char *node;        /* the node name a {Node, Reply} reply is tagged with */
    call_list calls;         /* its calls in flight */
    uint64_t calls_total;    /* calls registered so far */
    routing_stats stats;     /* how its calls ended; messages dropped */
} routing_owner;

/* --- Pure matching (any thread) ----------------------------------------------------------- */

/* {Tag, Reply} at msg (no version byte): the offset of Reply when Tag is the atom `tag`, else -1.
 */
long routing_match_tagged(const char *msg, size_t len, const char *tag);
/* {Ref, Reply} at msg: the offset of Reply when Ref equals `ref`, else -1. */
long routing_match_ref(const char *msg, size_t len, const erlang_ref *ref);
/* The reply offset of `msg` for a call `c` of `o` under its protocol and reply filter (gen_call
 * {Ref, Reply}; filter any: 0; tag: {Tag, Reply}; node: {Node, Reply}), or -1: not its reply. */
long routing_match_reply(const routing_owner *o, const call *c, const char *msg, size_t len);
/* net_adm:ping/1 sends net_kernel {'$gen_call', {From, Tag}, {is_auth, Node}}: writes the answer
 * {Tag, yes} (Tag copied verbatim) into `out` and From into `to`. Returns the answer's length
 * (no version byte), or -1 when msg is not that request or the answer does not fit. */
int routing_net_kernel_reply(const char *msg, size_t len, erlang_pid *to, char *out, size_t cap);

/* A gen_call's reference, made from its pid so an alias send (whose only address is the ref)
 * finds its call: {pid's node and creation, [num, serial, counter]}. Any thread. */
void routing_make_ref(const erlang_pid *pid, uint32_t counter, erlang_ref *out);

/* --- The registry ------------------------------------------------------------------------- */

/* An empty registry guarded by `lock` (which must outlive it); `node_name` is this node's name
 * (messages to pids of another node match no call). NULL when out of memory. */
routing *routing_new(pthread_mutex_t *lock, const char *node_name);
/* Frees the registry (not the calls, which must all have ended). */
void routing_free(routing *r);
/* Called on the loop thread, outside the lock, for every call that ends with its monitor still
 * open (c->monitored: a reply, a timeout or a cancel; not a monitor exit, and not when its owner
 * fails, whose connection goes with the monitor) before its on_done: the place to demonitor.
 * Set once, before the first call. */
void routing_set_monitor_end(routing *r, void (*fn)(call *c, routing_owner *o, void *ctx),
                             void *ctx);

/* Sets an owner up with no calls; `cfg` and `node` must outlive it. */
void routing_owner_init(routing_owner *o, const config_cnode *cfg, const char *node);
/* Calls of `o` in flight (_locked). */
size_t routing_owner_in_flight(const routing_owner *o);
/* Calls ever registered for `o` (_locked). */
uint64_t routing_owner_calls_total(const routing_owner *o);
/* Messages dropped for `o`: late replies, filtered or unmatched messages (_locked). */
uint64_t routing_owner_dropped(const routing_owner *o);
/* How the calls of `o` ended, and what it dropped (_locked). */
const routing_stats *routing_owner_stats(const routing_owner *o);
/* The calls of `o` that hold an outbox (a message waiting for a connection), malloc'd into
 * *out (the caller frees it); returns how many, 0 with *out NULL when none or out of memory.
 * _locked; the calls stay valid after the unlock on the loop thread. */
size_t routing_owner_outboxes_locked(const routing_owner *o, call ***out);

/* Moves up to `max` of the calls of `from` (oldest first) to `to`, counted in its calls_total,
 * into *out in that order (malloc'd; the caller frees it). Returns how many; 0 with *out NULL
 * when none or out of memory. _locked; the calls stay valid after the unlock on the loop thread.
 */
size_t routing_owner_take_locked(routing_owner *from, routing_owner *to, size_t max, call ***out);

/* Registers `c` (key and deadline set) for `o`, counted in its calls_total; c->cnode becomes
 * `o`. Returns 0, or -1 when out of memory. _locked, any thread. */
int routing_register_locked(routing *r, routing_owner *o, call *c);
/* The earliest deadline of a call in flight, or INT64_MAX (_locked). */
int64_t routing_next_deadline_locked(const routing *r);
/* Calls in flight across all owners (_locked). */
size_t routing_in_flight_locked(const routing *r);
/* Messages to pids of no call on connections of no owner (_locked). */
uint64_t routing_dropped_unknown_locked(const routing *r);

/* A message to a pid (m->to_pid) or to an alias (m->to_alias: a gen_call's ref) arrived on a
 * connection of `conn_owner` (NULL: a connection of no owner). It belongs to a call only when
 * it came over the connection the call went out on (the call's owner is conn_owner) and names
 * the call's pid with its creation (not a pid of an earlier run). Then: its reply is
 * unregistered and completed with CALL_REPLIED (reply bytes copied, reply_offset set); a
 * monitor exit of a gen_call (m->monitor_exit, its ref) completes it with CALL_UNAVAILABLE and
 * the reason; a streaming call's other messages go to its on_message. Anything else is counted
 * as dropped (the call's owner, else conn_owner, else unknown). Loop thread. */
void routing_on_message(routing *r, routing_owner *conn_owner, const dist_message *m);
/* Ends every call whose deadline is <= now with CALL_TIMEOUT; a call still in its owner's
 * outbox (never sent) gets the detail ROUTING_NOT_SENT. Loop thread. */
void routing_expire(routing *r, int64_t now_ms);
/* Asks for `c` to end with CALL_CANCELLED. True if taken (it is in flight and was not cancelled
 * before); then wake the loop, which ends it in routing_run_cancels. Any thread. */
bool routing_cancel(routing *r, call *c);
/* Ends the calls routing_cancel took with CALL_CANCELLED. Loop thread. */
void routing_run_cancels(routing *r);
/* Ends every call of `o` with `outcome` and `detail` (cut to fit). Loop thread (or the thread
 * that stops the gateway, once the loop has returned). */
void routing_fail_owner(routing *r, routing_owner *o, call_outcome outcome, const char *detail);

#endif
