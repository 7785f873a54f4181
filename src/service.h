/* service: every gateway operation once, for HTTP and gRPC alike: checks, limits, timeouts, access.
 */
#ifndef NODEX_SERVICE_H
#define NODEX_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "call.h"
#include "config.h"
#include "gateway.h"
#include "metrics.h"
#include "strbuf.h"
#include "term.h"

/* The operations, from one list: id, permission name (what a policy grants). */
#define SERVICE_OPS(X)                                                                             \
    X(SERVICE_OP_CALL, "call")                                                                     \
    X(SERVICE_OP_CAST, "cast")                                                                     \
    X(SERVICE_OP_STREAM, "stream")                                                                 \
    X(SERVICE_OP_LIST_CNODES, "cnodes.list")                                                       \
    X(SERVICE_OP_GET_CNODE, "cnodes.get")                                                          \
    X(SERVICE_OP_WATCH, "watch")                                                                   \
    X(SERVICE_OP_LIST_NODES, "nodes.list")                                                         \
    X(SERVICE_OP_RPC, "rpc")                                                                       \
    X(SERVICE_OP_LOAD, "modules.load")                                                             \
    X(SERVICE_OP_SPAWN, "nodes.spawn")                                                             \
    X(SERVICE_OP_STOP, "nodes.stop")                                                               \
    X(SERVICE_OP_RESTART, "cnodes.restart")                                                        \
    X(SERVICE_OP_HEALTH, "health")                                                                 \
    X(SERVICE_OP_REFLECTION, "reflection")                                                         \
    X(SERVICE_OP_METRICS, "metrics")                                                               \
    X(SERVICE_OP_DESCRIBE, "api.describe")

typedef enum service_op {
#define X(id, name) id,
    SERVICE_OPS(X)
#undef X
        SERVICE_OP_COUNT
} service_op;

/* "call", "nodes.spawn", ... */
const char *service_op_name(service_op op);

/* Every result of every operation, from one list: id, HTTP status, gRPC status code (numeric,
 * grpc_status_code), error code of the JSON error body. */
#define SERVICE_ERRORS(X)                                                                          \
    X(SERVICE_OK, 200, 0 /* OK */, "ok")                                                           \
    X(SERVICE_BAD_REQUEST, 400, 3 /* INVALID_ARGUMENT */, "bad_request")                           \
    X(SERVICE_BAD_SYNTAX, 400, 3 /* INVALID_ARGUMENT */, "bad_syntax")                             \
    X(SERVICE_BAD_TAG, 400, 3 /* INVALID_ARGUMENT */, "bad_tag")                                   \
    X(SERVICE_TOO_DEEP, 400, 3 /* INVALID_ARGUMENT */, "too_deep")                                 \
    X(SERVICE_NO_SELF_PID, 400, 3 /* INVALID_ARGUMENT */, "no_self_pid")                           \
    X(SERVICE_UNSUPPORTED, 400, 3 /* INVALID_ARGUMENT */, "unsupported")                           \
    X(SERVICE_LOAD_FAILED, 400, 3 /* INVALID_ARGUMENT */, "load_failed")                           \
    X(SERVICE_OVER_LIMIT, 400, 8 /* RESOURCE_EXHAUSTED */, "bad_request")                          \
    X(SERVICE_UNAUTHENTICATED, 401, 16 /* UNAUTHENTICATED */, "unauthenticated")                   \
    X(SERVICE_PERMISSION_DENIED, 403, 7 /* PERMISSION_DENIED */, "permission_denied")              \
    X(SERVICE_NOT_FOUND, 404, 5 /* NOT_FOUND */, "not_found")                                      \
    X(SERVICE_TOO_LARGE, 413, 8 /* RESOURCE_EXHAUSTED */, "too_large")                             \
    X(SERVICE_PAYLOAD_TOO_LARGE, 413, 8 /* RESOURCE_EXHAUSTED */, "payload_too_large")             \
    X(SERVICE_CANCELLED, 499, 1 /* CANCELLED */, "cancelled")                                      \
    X(SERVICE_NO_MEMORY, 500, 8 /* RESOURCE_EXHAUSTED */, "out_of_memory")                         \
    X(SERVICE_BAD_REPLY, 502, 13 /* INTERNAL */, "bad_reply")                                      \
    X(SERVICE_BADRPC, 502, 13 /* INTERNAL */, "badrpc")                                            \
    X(SERVICE_UNAVAILABLE, 503, 14 /* UNAVAILABLE */, "unavailable")                               \
    X(SERVICE_OVERLOADED, 503, 8 /* RESOURCE_EXHAUSTED */, "overloaded")                           \
    X(SERVICE_SHUTTING_DOWN, 503, 14 /* UNAVAILABLE */, "shutting_down")                           \
    X(SERVICE_SPAWN_FAILED, 503, 14 /* UNAVAILABLE */, "spawn_failed")                             \
    X(SERVICE_TIMEOUT, 504, 4 /* DEADLINE_EXCEEDED */, "timeout")

typedef enum service_status {
#define X(id, http, grpc, code) id,
    SERVICE_ERRORS(X)
#undef X
} service_status;

/* HTTP status of a result (504). */
int service_status_http(service_status s);
/* gRPC status code of a result (4, DEADLINE_EXCEEDED). */
int service_status_grpc(service_status s);
/* Error code of a result ("timeout"). */
const char *service_status_code(service_status s);
/* The result a term conversion error stands for (TERM_ERR_SIZE: SERVICE_TOO_LARGE). */
service_status service_status_of_term(term_status s);

/* A result with its human-readable message (what the transports send). */
typedef struct service_error {
    service_status status;
    char message[512];
} service_error;

/* One permission of a principal: an operation, on the targets a glob names (fnmatch: a C-node
 * name for call/cast/stream, "module:function" for rpc, a module for modules.load). */
typedef struct service_grant {
    service_op op;
    const char *pattern; /* NULL: every target */
} service_grant;

/* Who asks: the authenticated caller and what it may do. Listing and reading C-nodes and nodes,
 * health, metrics, gRPC server reflection and the API's description need no grant; health needs
 * no principal either (probes); rpc, loading and spawning also need their erlang_nodes switch. */
typedef struct service_principal {
    const char *name;
    bool all; /* every operation on every target (no authentication configured) */
    const service_grant *grants;
    size_t grant_count;
} service_principal;

/* The caller when no authentication is configured: every operation. */
extern const service_principal service_anonymous;

/* The operation layer of one transport. Thread-safe: every function may be called from any
 * thread; completion callbacks run as gateway.h says (the loop thread). */
typedef struct service service;
struct auth_credentials;

/* A layer over `gw` with the limits, timeouts and principals of `cfg` (both must outlive it);
 * reads the principals' tokens (auth_new). One per process, shared by both transports. Returns
 * NULL with a message in err. Free with service_free. */
service *service_new(const config *cfg, gateway *gw, char *err, size_t err_len);
void service_free(service *s);
/* The term limits (terms.max_depth, terms.max_bytes) every conversion uses. */
const term_limits *service_limits(const service *s);
/* The gateway's own node name. */
const char *service_node_name(const service *s);

/* The registry the transports count their requests in (lives as long as the service). */
metrics *service_metrics(service *s);
/* GET /metrics: the Prometheus exposition into `out` (any authenticated principal; none needed
 * without authentication). */
service_status service_metrics_render(service *s, const service_principal *p, strbuf *out,
                                      service_error *err);

/* The principal that `cr` proves (see auth_authenticate): every transport asks here. */
service_status service_authenticate(const service *s, const struct auth_credentials *cr,
                                    const service_principal **out, service_error *err);
/* True when every request must prove a principal. */
bool service_auth_required(const service *s);
/* SIGHUP: the principals of `cfg` (which must outlive the service) replace the current ones for
 * every request from now on; token files are read again (see auth_renew). On failure the
 * current ones stay and err says why. Returns 0 (*principals: how many now) or -1. Any
 * thread. */
int service_reload_auth(service *s, const config *cfg, size_t *principals, char *err,
                        size_t err_len);
/* SIGHUP: C-nodes are looked up in `cfg` (which must outlive the service) from now on: their
 * names, timeouts and permissions' targets. Call after gateway_reload_cnodes. Any thread. */
void service_reload_cnodes(service *s, const config *cfg);

/* True when `op` needs no credentials on any transport: the probes (/healthz, /readyz, gRPC
 * health), since an orchestrator has no token. Transports do not authenticate those requests
 * and pass a NULL principal. */
bool service_op_is_probe(service_op op);

/* Refuses with SERVICE_PERMISSION_DENIED unless `p` may run `op` (on `target`, may be NULL),
 * and with SERVICE_UNAUTHENTICATED when `p` is NULL (unless `op` is a probe). Every operation
 * below calls it first; transports need it only to fail early. */
service_status service_authorize(const service *s, const service_principal *p, service_op op,
                                 const char *target, service_error *err);
/* service_authorize for `op` on some target: refuses unless `p` holds `op` with any pattern (or
 * `op` is open). What a transport asks first, before it reads a request's arguments (an HTTP
 * body, query or Accept header, a gRPC message), so that a principal who may not run `op` at all
 * gets SERVICE_PERMISSION_DENIED whatever the arguments, and learns nothing from their checks;
 * the operation then authorizes its target itself, before its own argument checks. */
service_status service_authorize_op(const service *s, const service_principal *p, service_op op,
                                    service_error *err);

/* --- calls, casts, streams to C-nodes ---------------------------------------------------- */

/* timeout_ms that a transport could not parse (HTTP's "?timeout_ms=abc"). */
#define SERVICE_TIMEOUT_INVALID UINT32_MAX

/* One call, cast or stream: what the caller asked, and (out) what the service made of it. */
typedef struct service_call_req {
    service_op op;            /* SERVICE_OP_CALL, _STREAM or _CAST */
    const char *cnode;        /* the C-node's API name */
    unsigned timeout_ms;      /* 0: the C-node's default; SERVICE_TIMEOUT_INVALID: unparsable */
    int64_t deadline_left_ms; /* the client's own deadline (gRPC), -1 for none */
    bool no_wait; /* fail at once (503) instead of waiting while the C-node (re)starts */
    /* out, set by service_call_check */
    const char *name;      /* the configured name (lives as long as the config) */
    unsigned timeout_used; /* what the call waits: requested, default or clamped to the deadline */
    const service_principal *checked_for; /* passed the check for this principal */
} service_call_req;

/* Checks `r` before its term exists (so HTTP can answer before reading a body): the permission
 * for the name asked for (before whether it exists), the C-node, the timeout. Sets r->name,
 * r->timeout_used and r->checked_for; `r` must not change between it and the service_call it spares
 * its check. */
service_status service_call_check(service *s, const service_principal *p, service_call_req *r,
                                  service_error *err);
/* A fresh pid for `c` (any thread): set it before encoding a term that refers to self(). */
void service_call_pid(service *s, call *c);
/* Runs `r` with the encoded term `msg` (no version byte), after service_call_check unless `r`
 * already passed it for `p` (a call is checked once). Call/stream: c->pid
 * from service_call_pid, c->on_done, c->ctx (and c->on_message for streams) set; on SERVICE_OK
 * the call is in flight and on_done runs exactly once later (gateway_call's contract), on any
 * other result never. Cast: `c` is NULL; SERVICE_OK means sent. */
service_status service_call(service *s, const service_principal *p, service_call_req *r, call *c,
                            const char *msg, size_t msg_len, service_error *err);
/* Asks to end an in-flight call whose caller gave up (gateway_cancel). */
bool service_cancel(service *s, call *c);
/* How a finished call of `what` ("C-node", "node") `target` ended: SERVICE_OK when it replied,
 * else the error with its message (timeout_ms: the wait, for the message). */
service_status service_call_outcome(const call *c, const char *what, const char *target,
                                    unsigned timeout_ms, service_error *err);

/* Restarts every instance of C-node `name` now (out of `failed` too), with a clean restart
 * record; needs cnodes.restart on `name` (checked before whether it exists). SERVICE_OK once asked
 * (the gateway acts on it). */
service_status service_restart_cnode(service *s, const service_principal *p, const char *name,
                                     service_error *err);

/* --- Erlang nodes: rpc and code loading --------------------------------------------------- */

/* One rpc:call(node, module, function, args) or code load, and (out) its timeout. */
typedef struct service_rpc_req {
    const char *node;
    const char *module;
    const char *function; /* rpc only */
    unsigned timeout_ms;  /* 0: erlang_nodes.rpc_timeout_ms; SERVICE_TIMEOUT_INVALID */
    int64_t deadline_left_ms;
    unsigned timeout_used;                /* out */
    const service_principal *checked_for; /* out: passed service_rpc_check for this principal */
} service_rpc_req;

/* Checks an rpc before its arguments exist: names, permission, the node, timeout. `r` must not
 * change after it; service_rpc then does not check again. */
service_status service_rpc_check(service *s, const service_principal *p, service_rpc_req *r,
                                 service_error *err);
/* service_rpc_check for a code load (r->module, no function): what service_load checks first,
 * for a transport to run before it reads the module's bytes. */
service_status service_load_check(service *s, const service_principal *p, service_rpc_req *r,
                                  service_error *err);
/* rpc:call with `args`, an encoded list (no version byte). Same call contract as service_call. */
service_status service_rpc(service *s, const service_principal *p, service_rpc_req *r, call *c,
                           const char *args, size_t args_len, service_error *err);
/* Where an rpc's reply stands, once it replied: SERVICE_OK with *at on the result, SERVICE_BADRPC
 * with *at on the reason of {badrpc, Reason}, SERVICE_BAD_REPLY when the reply is malformed. */
service_status service_rpc_result(const service *s, const call *c, const char *node, int *at,
                                  service_error *err);
/* code:load_binary(Module, "Module.beam", Beam) on r->node (r->module, no function). */
service_status service_load(service *s, const service_principal *p, service_rpc_req *r, call *c,
                            const void *beam, size_t beam_len, service_error *err);
/* A load's reply: SERVICE_OK for {module, M}; SERVICE_LOAD_FAILED for {error, _} or anything
 * else; SERVICE_UNAVAILABLE for {badrpc, nodedown}; SERVICE_BADRPC for another badrpc. */
service_status service_load_result(const service *s, const call *c, const char *node,
                                   const char *module, service_error *err);

/* --- Erlang nodes: list, spawn, stop ------------------------------------------------------ */

/* Every known Erlang node (*out malloc'd, the caller frees it; *count set). */
service_status service_list_nodes(service *s, const service_principal *p, gateway_node_info **out,
                                  size_t *count, service_error *err);
/* Starts `count` children; on SERVICE_OK `done` runs later exactly once (loop thread). */
service_status service_spawn_nodes(service *s, const service_principal *p, unsigned count,
                                   gateway_spawn_fn done, void *ctx, service_error *err);
/* Stops a child node (asynchronous; events report it). */
service_status service_stop_node(service *s, const service_principal *p, const char *node,
                                 service_error *err);

/* --- C-node status, health, events -------------------------------------------------------- */

/* Snapshots of every C-node (*out malloc'd, the caller frees it; *count set). */
service_status service_list_cnodes(service *s, const service_principal *p, gateway_cnode_info **out,
                                   size_t *count, service_error *err);
/* One C-node's snapshot, and for a pool its instances (*instances malloc'd, *count of them,
 * NULL/0 when one process; instances may be NULL when not wanted). */
service_status service_get_cnode(service *s, const service_principal *p, const char *name,
                                 gateway_cnode_info *info, gateway_cnode_info **instances,
                                 size_t *count, service_error *err);
/* Readiness (no permission needed: probes): true when every C-node that should run is up; with
 * `not_ready` (may be NULL), the names of those that are not (malloc'd array of config-owned
 * names, the caller frees the array). */
bool service_health(service *s, const char ***not_ready, size_t *count);
/* Whether `cnode` serves (*serving: an instance of it is up and nodexd is not draining), or
 * with `cnode` NULL the whole gateway (*serving: service_health's readiness). A probe: `p` may be
 * NULL. SERVICE_NOT_FOUND for a name that is no C-node. */
service_status service_health_check(service *s, const service_principal *p, const char *cnode,
                                    bool *serving, service_error *err);
/* Subscribes `fn` to lifecycle events (gateway_subscribe's contract); with `include_current`,
 * first every node's current state as events with seq 0 (`fn` is then called on this thread
 * before this returns: subscribe first, so nothing between is lost). *id for service_unwatch. */
service_status service_watch(service *s, const service_principal *p, bool include_current,
                             gateway_event_fn fn, void *ctx, uint64_t *id, service_error *err);
/* Subscribes `fn` for a health watch (gateway_subscribe's contract, no current states): every
 * lifecycle event, and one more when the drain begins (service_drain_began), for health reads
 * NOT_SERVING from then on. A probe, `p` may be NULL. *id for service_unwatch_health. */
service_status service_watch_health(service *s, const service_principal *p, gateway_event_fn fn,
                                    void *ctx, uint64_t *id, service_error *err);
/* Ends a health watch's subscription (gateway_unsubscribe's contract; 0 is ignored). */
void service_unwatch_health(service *s, uint64_t id);
/* The drain began (gateway_on_drain's callback calls it, on the loop thread): every health watch
 * is called at once with an event of the gateway itself (its node name, state stopped, reason
 * "draining") and reads NOT_SERVING, rather than learning it when its stream ends. */
void service_drain_began(service *s);
/* Ends a subscription of service_watch (gateway_unsubscribe's contract; 0 is ignored). */
void service_unwatch(service *s, uint64_t id);

#endif
