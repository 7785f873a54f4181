/* call: one in-flight call and the registry that matches replies to calls by their pid. */
#ifndef NODEX_CALL_H
#define NODEX_CALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ei.h>

/* How a call ended, with the HTTP status and error code each maps to, from one list. */
#define CALL_OUTCOMES(X)                                                                           \
    X(CALL_PENDING, 0, "pending")                                                                  \
    X(CALL_REPLIED, 200, "ok")                                                                     \
    X(CALL_TIMEOUT, 504, "timeout")                                                                \
    X(CALL_UNAVAILABLE, 503, "unavailable")                                                        \
    X(CALL_SHUTDOWN, 503, "shutting_down")                                                         \
    X(CALL_CANCELLED, 499, "cancelled") /* the caller gave up (gateway_cancel) */

typedef enum call_outcome {
#define X(id, http, code) id,
    CALL_OUTCOMES(X)
#undef X
} call_outcome;

/* Number of outcomes (arrays indexed by call_outcome): the enumerators counted. */
enum {
#define X(id, http, code) id##_COUNTED,
    CALL_OUTCOMES(X)
#undef X
        CALL_OUTCOME_COUNT
};

/* HTTP status for an outcome (504). */
int call_outcome_http(call_outcome o);
/* Error code for an outcome ("timeout"). */
const char *call_outcome_code(call_outcome o);

typedef struct call call;
/* Called exactly once when the call ends, from the event loop thread (or from the thread that
 * stops the gateway). The callee owns the call again from then on. */
typedef void (*call_done_fn)(call *c, void *ctx);
/* Streaming calls only: called for every message that reaches the call's pid and is NOT its
 * reply (it failed the reply filter), on the event loop thread, while the call stays in flight.
 * `msg` (no version byte) is valid only during the callback; the callee must not block. No
 * gateway lock is held. */
typedef void (*call_message_fn)(call *c, const char *msg, size_t len, void *ctx);

/* One in-flight call. Owned by the frontend that made it (HTTP request, gRPC call); while
 * registered, the registry only links it and fills the result. */
struct call {
    erlang_pid pid;      /* fresh per call: replies are matched by it */
    erlang_ref ref;      /* gen_call protocol: the reference of the envelope */
    uint64_t key;        /* dist_pid_key(&pid) */
    int64_t deadline_ms; /* monotonic */
    int64_t started_us;  /* monotonic µs when first registered: the start of its latency */
    void *cnode;         /* while registered: its owner (routing_owner) */
    call_done_fn on_done;
    call_message_fn on_message; /* NULL: such messages are dropped and counted */
    void *ctx;
    /* result, valid once on_done ran */
    call_outcome outcome;
    char *reply; /* malloc'd message bytes (no version byte), freed by call_clear */
    size_t reply_len;
    size_t reply_offset; /* where the reply term starts inside `reply` (after a filter's tag) */
    char detail[160];    /* human-readable reason for errors */
    char *outbox;        /* message waiting for its node's connection, freed by call_clear */
    size_t outbox_len;
    bool monitored; /* gen_call: a MONITOR_P on the target is open (ended with the call) */
    /* registry links */
    call *hash_next;
    call *node_prev, *node_next;
    size_t heap_index;
    bool registered;
    bool cancel_requested; /* gateway_cancel asked; the loop completes it */
    call *cancel_next;     /* in the gateway's cancel list */
};

/* Frees the reply and resets the result fields (keeps pid, on_done, ctx). */
void call_clear(call *c);
/* Zeroes every field of a fresh call except `pid` and `ref` (2 KiB of node-name buffers), which
 * are written before they are read (service_call_pid, the gen_call envelope): what a frontend
 * does instead of zeroing the whole struct per request. Any thread, on a call it owns. */
void call_init(call *c);

/* The registry: a hash of calls by pid key, a deadline heap, and per-owner lists (an owner is a
 * C-node). NOT thread-safe: the gateway guards it with its lock. */
typedef struct call_registry {
    call **buckets;
    size_t bucket_count; /* power of two */
    size_t count;
    call **heap; /* min-heap by deadline_ms */
    size_t heap_len, heap_cap;
} call_registry;

/* A per-owner list head; owners keep one and pass it to add/remove. */
typedef struct call_list {
    call *head;
    size_t count;
} call_list;

/* Initializes an empty registry. Returns 0 or -1 (out of memory). */
int call_registry_init(call_registry *r);
/* Frees the registry's own memory (not the calls). */
void call_registry_destroy(call_registry *r);
/* Registers a call (key and deadline set) on the owner's list. Returns 0 or -1 (out of memory). */
int call_registry_add(call_registry *r, call_list *owner, call *c);
/* Finds a registered call by pid key, or NULL. */
call *call_registry_find(const call_registry *r, uint64_t key);
/* Moves a registered call from the owner list `from` to `to` (hash and heap unchanged). */
void call_list_move(call_list *from, call_list *to, call *c);
/* Unregisters a call from the hash, the heap and the owner's list. */
void call_registry_remove(call_registry *r, call_list *owner, call *c);
/* The earliest deadline, or INT64_MAX when empty. */
int64_t call_registry_next_deadline(const call_registry *r);
/* The call with the earliest deadline, if that deadline is <= now; else NULL. */
call *call_registry_expired(const call_registry *r, int64_t now_ms);

#endif
