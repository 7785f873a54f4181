/* service: every gateway operation once, for HTTP and gRPC alike: checks, limits, timeouts, access.
 */
#include "service.h"

#include "routing.h"

#include <fnmatch.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "events.h"
#include "routing.h"
#include "strbuf.h"
#include "term_common.h"

struct service {
    const config *cfg;
    gateway *gw;
    _Atomic(auth *) auth;           /* swapped by service_reload_auth */
    _Atomic(const config *) cnodes; /* where C-nodes are looked up: swapped by a reload */
    pthread_mutex_t reload_mu;
    auth **old_auths; /* replaced sets: a request may still hold one of their principals */
    size_t old_auth_count;
    term_limits limits;
    metrics *metrics; /* the transports count their requests here; GET /metrics renders it */
    events *health;   /* health watches: the gateway's lifecycle events, and the drain's start */
    uint64_t health_feed; /* the gateway subscription that feeds `health` */
};

const service_principal service_anonymous = {.name = "anonymous", .all = true};

static const char *const service_op_names[] = {
#define X(id, name) name,
    SERVICE_OPS(X)
#undef X
};

static const struct {
    int http, grpc;
    const char *code;
} service_statuses[] = {
#define X(id, http, grpc, code) {http, grpc, code},
    SERVICE_ERRORS(X)
#undef X
};

const char *service_op_name(service_op op) {
    return op < SERVICE_OP_COUNT ? service_op_names[op] : "?";
}

int service_status_http(service_status s) {
    return service_statuses[s].http;
}

int service_status_grpc(service_status s) {
    return service_statuses[s].grpc;
}

const char *service_status_code(service_status s) {
    return service_statuses[s].code;
}

service_status service_status_of_term(term_status s) {
    switch (s) {
    case TERM_OK: return SERVICE_OK;
    case TERM_ERR_SYNTAX: return SERVICE_BAD_SYNTAX;
    case TERM_ERR_TAG: return SERVICE_BAD_TAG;
    case TERM_ERR_DEPTH: return SERVICE_TOO_DEEP;
    case TERM_ERR_SIZE: return SERVICE_TOO_LARGE;
    case TERM_ERR_SELF: return SERVICE_NO_SELF_PID;
    case TERM_ERR_UNSUPPORTED: return SERVICE_UNSUPPORTED;
    case TERM_ERR_NOMEM: return SERVICE_NO_MEMORY;
    }
    return SERVICE_BAD_REQUEST;
}

static service_status service_fail(service_error *err, service_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static service_status service_fail(service_error *err, service_status s, const char *fmt, ...) {
    err->status = s;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return s;
}

static service_status service_ok(service_error *err) {
    err->status = SERVICE_OK;
    err->message[0] = '\0';
    return SERVICE_OK;
}

/* The service status of a gateway refusal. */
static service_status service_of_gateway(gateway_error e) {
    switch (e) {
    case GATEWAY_OK: return SERVICE_OK;
    case GATEWAY_BAD_REQUEST: return SERVICE_BAD_REQUEST;
    case GATEWAY_NOT_FOUND: return SERVICE_NOT_FOUND;
    case GATEWAY_UNAVAILABLE: return SERVICE_UNAVAILABLE;
    case GATEWAY_OVERLOADED: return SERVICE_OVERLOADED;
    case GATEWAY_SHUTTING_DOWN: return SERVICE_SHUTTING_DOWN;
    case GATEWAY_NO_MEMORY: return SERVICE_NO_MEMORY;
    }
    return SERVICE_UNAVAILABLE;
}

/* A lifecycle event (loop thread): on to the health watches, which read their status again. */
static void service_feed_health(const gateway_event *ev, void *ctx) {
    service *s = ctx;
    gateway_event copy = *ev;
    events_emit(s->health, &copy);
}

service *service_new(const config *cfg, gateway *gw, char *err, size_t err_len) {
    service *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    s->cfg = cfg;
    atomic_init(&s->cnodes, cfg);
    s->gw = gw;
    s->limits.max_depth = cfg->term_max_depth;
    s->limits.max_bytes = cfg->term_max_bytes;
    if (!(s->metrics = metrics_new())) {
        snprintf(err, err_len, "out of memory");
        free(s);
        return NULL;
    }
    auth *a = auth_new(cfg, err, err_len);
    if (!a) {
        metrics_free(s->metrics);
        free(s);
        return NULL;
    }
    atomic_init(&s->auth, a);
    pthread_mutex_init(&s->reload_mu, NULL);
    if (!(s->health = events_new()) ||
        !(s->health_feed = gateway_subscribe(gw, service_feed_health, s))) {
        snprintf(err, err_len, "out of memory");
        service_free(s);
        return NULL;
    }
    return s;
}

void service_free(service *s) {
    if (!s) return;
    if (s->health_feed) gateway_unsubscribe(s->gw, s->health_feed);
    events_free(s->health);
    auth_free(atomic_load(&s->auth));
    for (size_t i = 0; i < s->old_auth_count; i++) auth_free(s->old_auths[i]);
    free(s->old_auths);
    pthread_mutex_destroy(&s->reload_mu);
    metrics_free(s->metrics);
    free(s);
}

metrics *service_metrics(service *s) {
    return s->metrics;
}

service_status service_metrics_render(service *s, const service_principal *p, strbuf *out,
                                      service_error *err) {
    if (service_authorize(s, p, SERVICE_OP_METRICS, NULL, err) != SERVICE_OK) return err->status;
    if (metrics_render(s->metrics, s->gw, out) != 0)
        return service_fail(err, SERVICE_NO_MEMORY, "out of memory rendering the metrics");
    return service_ok(err);
}

service_status service_authenticate(const service *s, const auth_credentials *cr,
                                    const service_principal **out, service_error *err) {
    return auth_authenticate(atomic_load(&s->auth), cr, out, err);
}

bool service_auth_required(const service *s) {
    return auth_required(atomic_load(&s->auth));
}

int service_reload_auth(service *s, const config *cfg, size_t *principals, char *err,
                        size_t err_len) {
    pthread_mutex_lock(&s->reload_mu);
    auth *old = atomic_load(&s->auth);
    auth **kept = realloc(s->old_auths, (s->old_auth_count + 1) * sizeof *kept);
    auth *next = kept ? auth_renew(cfg, old, err, err_len) : NULL;
    if (kept) s->old_auths = kept;
    if (!kept) snprintf(err, err_len, "out of memory");
    if (next) {
        s->old_auths[s->old_auth_count++] = old; /* freed with the service */
        atomic_store(&s->auth, next);
        *principals = cfg->principal_count;
    }
    pthread_mutex_unlock(&s->reload_mu);
    return next ? 0 : -1;
}

void service_reload_cnodes(service *s, const config *cfg) {
    atomic_store(&s->cnodes, cfg);
}

const term_limits *service_limits(const service *s) {
    return &s->limits;
}

const char *service_node_name(const service *s) {
    return gateway_node_name(s->gw);
}

/* The erlang_nodes switch an operation needs (NULL: none), and whether it is on. */
static const char *service_switch(const config *cfg, service_op op, bool *on) {
    switch (op) {
    case SERVICE_OP_RPC: *on = cfg->allow_rpc; return "erlang_nodes.rpc";
    case SERVICE_OP_LOAD: *on = cfg->allow_load_modules; return "erlang_nodes.load_modules";
    case SERVICE_OP_SPAWN:
    case SERVICE_OP_STOP: *on = cfg->allow_spawn; return "erlang_nodes.spawn";
    default: *on = true; return NULL;
    }
}

bool service_op_is_probe(service_op op) {
    return op == SERVICE_OP_HEALTH;
}

/* What does not depend on the target: a principal, the operation's switch. *open: any
 * principal may run it (probes and status). */
static service_status service_gate(const service *s, const service_principal *p, service_op op,
                                   bool *open, service_error *err) {
    *open = op == SERVICE_OP_HEALTH || op == SERVICE_OP_LIST_CNODES || op == SERVICE_OP_GET_CNODE ||
            op == SERVICE_OP_LIST_NODES || op == SERVICE_OP_REFLECTION ||
            op == SERVICE_OP_METRICS || op == SERVICE_OP_DESCRIBE;
    if (!p && service_op_is_probe(op)) return service_ok(err);
    if (!p)
        return service_fail(err, SERVICE_UNAUTHENTICATED, "authentication is required for %s",
                            service_op_name(op));
    bool on;
    const char *key = service_switch(s->cfg, op, &on);
    if (!on) /* off for everyone, whatever the principal */
        return service_fail(err, SERVICE_PERMISSION_DENIED,
                            "%s is turned off in this nodexd (set %s: true to allow it)",
                            service_op_name(op), key);
    return service_ok(err);
}

/* A grant of `op` on `target`; with `any_target`, a grant of `op` on anything at all. */
static bool service_granted(const service_principal *p, service_op op, const char *target,
                            bool any_target) {
    if (p->all) return true;
    for (size_t i = 0; i < p->grant_count; i++) {
        const service_grant *g = &p->grants[i];
        if (g->op == op &&
            (any_target || !g->pattern || (target && fnmatch(g->pattern, target, 0) == 0)))
            return true;
    }
    return false;
}

static service_status service_deny(const service_principal *p, service_op op, const char *target,
                                   service_error *err) {
    if (target)
        return service_fail(err, SERVICE_PERMISSION_DENIED,
                            "%s lacks the permission '%s' for %.200s", p->name, service_op_name(op),
                            target);
    return service_fail(err, SERVICE_PERMISSION_DENIED, "%s lacks the permission '%s'", p->name,
                        service_op_name(op));
}

service_status service_authorize(const service *s, const service_principal *p, service_op op,
                                 const char *target, service_error *err) {
    bool open;
    if (service_gate(s, p, op, &open, err) != SERVICE_OK || !p) return err->status;
    if (open || service_granted(p, op, target, false)) return service_ok(err);
    return service_deny(p, op, target, err);
}

/* The wait: `requested` (1..max; 0 means `deflt`), clamped to the client's deadline. */
static service_status service_timeout(unsigned requested, unsigned deflt, unsigned max,
                                      int64_t deadline_left_ms, unsigned *out, service_error *err) {
    if (requested == SERVICE_TIMEOUT_INVALID || requested > max)
        return service_fail(err, SERVICE_BAD_REQUEST, "timeout_ms must be an integer from 1 to %u",
                            max);
    if (deadline_left_ms == 0)
        return service_fail(err, SERVICE_TIMEOUT, "the deadline passed before the call began");
    unsigned t = requested ? requested : deflt;
    if (deadline_left_ms > 0 && (!requested || deadline_left_ms < (int64_t)requested))
        t = deadline_left_ms < (int64_t)max ? (unsigned)deadline_left_ms : max;
    *out = t ? t : 1;
    return service_ok(err);
}

/* An atom's text: 1 to 255 characters of valid UTF-8. */
static bool service_atom_ok(const char *s) {
    long n = s ? term_utf8_count(s, strlen(s)) : -1;
    return n > 0 && n <= 255;
}

/* ------------------------------------------------------------------------------------------ */
/* Calls, casts, streams */

service_status service_call_check(service *s, const service_principal *p, service_call_req *r,
                                  service_error *err) {
    r->checked_for = NULL;
    /* the name asked for first: who may not call it learns nothing, not even whether it exists */
    if (service_authorize(s, p, r->op, r->cnode, err) != SERVICE_OK) return err->status;
    const config_cnode *cn = r->cnode ? config_find_cnode(atomic_load(&s->cnodes), r->cnode) : NULL;
    if (!cn)
        return service_fail(err, SERVICE_NOT_FOUND, "no C-node named '%.64s'",
                            r->cnode ? r->cnode : "");
    r->name = cn->name;
    r->timeout_used = 0;
    if (r->op != SERVICE_OP_CAST &&
        service_timeout(r->timeout_ms, cn->call_timeout_ms, cn->max_call_timeout_ms,
                        r->deadline_left_ms, &r->timeout_used, err) != SERVICE_OK)
        return err->status;
    r->checked_for = p;
    return service_ok(err);
}

void service_call_pid(service *s, call *c) {
    gateway_make_pid(s->gw, &c->pid);
}

/* A call or cast the gateway refused, with the C-node's state and its last error. */
static service_status service_call_refused(service *s, const char *name, gateway_error ge,
                                           service_error *err) {
    gateway_cnode_info i;
    bool known = gateway_cnode_info_by_name(s->gw, name, &i) == 0;
    if (!known || (ge != GATEWAY_UNAVAILABLE && ge != GATEWAY_OVERLOADED))
        return service_fail(err, service_of_gateway(ge), "C-node %s is not available (%s)", name,
                            gateway_error_code(ge));
    if (ge == GATEWAY_OVERLOADED && i.state != CNODE_UP)
        return service_fail(err, SERVICE_OVERLOADED,
                            "C-node %s is %s and %zu calls already wait for it (max_waiting)", name,
                            cnode_state_name(i.state), i.waiting);
    if (ge == GATEWAY_OVERLOADED)
        return service_fail(err, SERVICE_OVERLOADED,
                            "C-node %s is overloaded (%zu calls in flight, or its input backlog "
                            "is full)",
                            name, i.in_flight);
    if (i.last_error[0])
        return service_fail(err, SERVICE_UNAVAILABLE, "C-node %s is %s: %.150s", name,
                            cnode_state_name(i.state), i.last_error);
    return service_fail(err, SERVICE_UNAVAILABLE, "C-node %s is %s", name,
                        cnode_state_name(i.state));
}

service_status service_call(service *s, const service_principal *p, service_call_req *r, call *c,
                            const char *msg, size_t msg_len, service_error *err) {
    if (r->op != SERVICE_OP_CALL && r->op != SERVICE_OP_STREAM && r->op != SERVICE_OP_CAST)
        return service_fail(err, SERVICE_BAD_REQUEST, "%s is not a call", service_op_name(r->op));
    if ((!p || r->checked_for != p) && service_call_check(s, p, r, err) != SERVICE_OK)
        return err->status;
    r->checked_for = NULL; /* one check, one run: a request changed and run again is checked */
    if (msg_len > s->limits.max_bytes)
        return service_fail(err, SERVICE_TOO_LARGE, "the message is over terms.max_bytes (%zu)",
                            s->limits.max_bytes);
    gateway_error ge;
    if (r->op == SERVICE_OP_CAST) {
        ge = gateway_cast(s->gw, r->name, msg, msg_len);
    } else {
        if (r->op == SERVICE_OP_CALL) c->on_message = NULL;
        ge = gateway_call(s->gw, r->name, c, msg, msg_len, r->timeout_used, !r->no_wait);
    }
    if (ge != GATEWAY_OK) return service_call_refused(s, r->name, ge, err);
    return service_ok(err);
}

service_status service_restart_cnode(service *s, const service_principal *p, const char *name,
                                     service_error *err) {
    if (service_authorize(s, p, SERVICE_OP_RESTART, name, err) != SERVICE_OK) return err->status;
    const config_cnode *cn = name ? config_find_cnode(atomic_load(&s->cnodes), name) : NULL;
    if (!cn)
        return service_fail(err, SERVICE_NOT_FOUND, "no C-node named '%.64s'", name ? name : "");
    gateway_error ge = gateway_restart_cnode(s->gw, cn->name);
    if (ge != GATEWAY_OK)
        return service_fail(err, service_of_gateway(ge), "cannot restart C-node %s (%s)", cn->name,
                            gateway_error_code(ge));
    return service_ok(err);
}

bool service_cancel(service *s, call *c) {
    return gateway_cancel(s->gw, c);
}

service_status service_call_outcome(const call *c, const char *what, const char *target,
                                    unsigned timeout_ms, service_error *err) {
    switch (c->outcome) {
    case CALL_REPLIED: return service_ok(err);
    case CALL_TIMEOUT:
        if (strcmp(c->detail, ROUTING_NOT_SENT) == 0)
            return service_fail(err, SERVICE_TIMEOUT,
                                "%s %s did not come up within %u ms (the call waited and was not "
                                "sent)",
                                what, target, timeout_ms);
        return service_fail(err, SERVICE_TIMEOUT, "%s %s did not reply within %u ms", what, target,
                            timeout_ms);
    case CALL_SHUTDOWN:
        return service_fail(err, SERVICE_SHUTTING_DOWN, "%s",
                            c->detail[0] ? c->detail : "nodexd is shutting down");
    case CALL_CANCELLED:
        return service_fail(err, SERVICE_CANCELLED, "%s", c->detail[0] ? c->detail : "cancelled");
    case CALL_PENDING:
    case CALL_UNAVAILABLE: break;
    }
    if (c->detail[0]) return service_fail(err, SERVICE_UNAVAILABLE, "%s", c->detail);
    return service_fail(err, SERVICE_UNAVAILABLE, "%s %s is not available", what, target);
}

/* ------------------------------------------------------------------------------------------ */
/* rpc and code loading */

service_status service_authorize_op(const service *s, const service_principal *p, service_op op,
                                    service_error *err) {
    bool open;
    if (service_gate(s, p, op, &open, err) != SERVICE_OK || !p) return err->status;
    if (open || service_granted(p, op, NULL, true)) return service_ok(err);
    return service_deny(p, op, NULL, err);
}

/* True when rpc may reach `node`: a child, a connected peer, or one erlang_nodes.rpc_nodes
 * names. Any other name is refused before a packet leaves (no scans, no cookie oracle). */
static bool service_node_known(service *s, const char *node) {
    for (size_t i = 0; i < s->cfg->rpc_node_count; i++)
        if (fnmatch(s->cfg->rpc_nodes[i], node, 0) == 0) return true;
    return gateway_node_known(s->gw, node);
}

static service_status service_rpc_check_op(service *s, const service_principal *p, service_op op,
                                           service_rpc_req *r, service_error *err) {
    bool names = service_atom_ok(r->node) && service_atom_ok(r->module) &&
                 (op == SERVICE_OP_LOAD || service_atom_ok(r->function));
    if (!names) {
        /* who may not run it at all learns nothing about names */
        if (service_authorize_op(s, p, op, err) != SERVICE_OK) return err->status;
        return service_fail(err, SERVICE_BAD_REQUEST,
                            op == SERVICE_OP_LOAD
                                ? "node and module must be names of 1 to 255 characters"
                                : "node, module and function must be names of 1 to 255 "
                                  "characters");
    }
    char target[520];
    if (op == SERVICE_OP_RPC)
        snprintf(target, sizeof target, "%s:%s", r->module, r->function);
    else
        snprintf(target, sizeof target, "%s", r->module);
    if (service_authorize(s, p, op, target, err) != SERVICE_OK) return err->status;
    if (!gateway_node_callable(s->gw, r->node))
        return service_fail(err, SERVICE_BAD_REQUEST,
                            "'%s' is not a node nodexd can call: expected name@host, not nodexd "
                            "itself, with module and function atoms of at most 255 characters",
                            r->node);
    if (!service_node_known(s, r->node))
        return service_fail(err, SERVICE_PERMISSION_DENIED,
                            "node %s is not one nodexd knows: rpc reaches its children, "
                            "connected peers and the nodes erlang_nodes.rpc_nodes names",
                            r->node);
    return service_timeout(r->timeout_ms, s->cfg->rpc_timeout_ms, s->cfg->max_rpc_timeout_ms,
                           r->deadline_left_ms, &r->timeout_used, err);
}

service_status service_load_check(service *s, const service_principal *p, service_rpc_req *r,
                                  service_error *err) {
    return service_rpc_check_op(s, p, SERVICE_OP_LOAD, r, err);
}

service_status service_rpc_check(service *s, const service_principal *p, service_rpc_req *r,
                                 service_error *err) {
    r->checked_for = NULL;
    if (service_rpc_check_op(s, p, SERVICE_OP_RPC, r, err) != SERVICE_OK) return err->status;
    r->checked_for = p;
    return SERVICE_OK;
}

static service_status service_rpc_send(service *s, service_rpc_req *r, call *c, const char *module,
                                       const char *function, const char *args, size_t args_len,
                                       service_error *err) {
    c->on_message = NULL;
    gateway_error ge =
        gateway_rpc(s->gw, r->node, c, module, function, args, args_len, r->timeout_used);
    if (ge == GATEWAY_BAD_REQUEST)
        return service_fail(err, SERVICE_BAD_REQUEST, "cannot encode the rpc to %s", r->node);
    if (ge != GATEWAY_OK)
        return service_fail(err, service_of_gateway(ge), "node %s is not available (%s)", r->node,
                            gateway_error_code(ge));
    return service_ok(err);
}

service_status service_rpc(service *s, const service_principal *p, service_rpc_req *r, call *c,
                           const char *args, size_t args_len, service_error *err) {
    if ((!p || r->checked_for != p) && service_rpc_check(s, p, r, err) != SERVICE_OK)
        return err->status;
    r->checked_for = NULL; /* one check, one run: a request changed and run again is checked */
    unsigned char t = args_len ? (unsigned char)args[0] : 0;
    if (t != ERL_NIL_EXT && t != ERL_STRING_EXT && t != ERL_LIST_EXT)
        return service_fail(err, SERVICE_BAD_REQUEST, "args must be a list");
    if (args_len > s->limits.max_bytes)
        return service_fail(err, SERVICE_TOO_LARGE, "args are over terms.max_bytes (%zu)",
                            s->limits.max_bytes);
    return service_rpc_send(s, r, c, r->module, r->function, args, args_len, err);
}

/* Reads {Tag, Value} at *idx of checked bytes: Tag's name into tag, *idx at Value. */
static bool service_tagged_pair(const char *buf, int *idx, char tag[MAXATOMLEN_UTF8]) {
    int i = *idx, arity;
    if (ei_decode_tuple_header(buf, &i, &arity) != 0 || arity != 2) return false;
    unsigned char t = (unsigned char)buf[i];
    if (t != ERL_ATOM_EXT && t != ERL_SMALL_ATOM_EXT && t != ERL_ATOM_UTF8_EXT &&
        t != ERL_SMALL_ATOM_UTF8_EXT)
        return false;
    size_t n = term_atom_utf8(buf, &i, tag);
    tag[n] = '\0';
    *idx = i;
    return true;
}

/* The term at idx as Erlang text, for messages. */
static void service_text_of(const service *s, const call *c, int idx, char *out, size_t cap) {
    strbuf sb = {0};
    term_error terr;
    if (term_to_text(c->reply, c->reply_len, &idx, &s->limits, &sb, &terr) == 0 && sb.data)
        snprintf(out, cap, "%.*s", (int)(sb.len < cap ? sb.len : cap - 1), sb.data);
    else
        snprintf(out, cap, "(unprintable)");
    strbuf_free(&sb);
}

/* Checks the reply term and reads its {Tag, _} shape. */
static service_status service_reply_shape(const service *s, const call *c, const char *node,
                                          int *idx, int *inner, char tag[MAXATOMLEN_UTF8],
                                          bool *pair, service_error *err) {
    term_error terr = {0};
    *idx = *inner = (int)c->reply_offset;
    *pair = false;
    tag[0] = '\0';
    int end = *idx;
    if (term_etf_check(c->reply, c->reply_len, &end, &s->limits, &terr) != 0)
        return service_fail(err, SERVICE_BAD_REPLY,
                            "node %s sent a reply that cannot be decoded: %s", node, terr.message);
    *pair = service_tagged_pair(c->reply, inner, tag);
    return service_ok(err);
}

service_status service_rpc_result(const service *s, const call *c, const char *node, int *at,
                                  service_error *err) {
    int idx, inner;
    char tag[MAXATOMLEN_UTF8];
    bool pair;
    if (service_reply_shape(s, c, node, &idx, &inner, tag, &pair, err) != SERVICE_OK)
        return err->status;
    if (pair && strcmp(tag, "badrpc") == 0) {
        char text[400];
        service_text_of(s, c, inner, text, sizeof text);
        *at = inner;
        return service_fail(err, SERVICE_BADRPC, "rpc on %s failed: %s", node, text);
    }
    *at = idx;
    return service_ok(err);
}

service_status service_load(service *s, const service_principal *p, service_rpc_req *r, call *c,
                            const void *beam, size_t beam_len, service_error *err) {
    if (service_rpc_check_op(s, p, SERVICE_OP_LOAD, r, err) != SERVICE_OK) return err->status;
    if (beam_len == 0)
        return service_fail(err, SERVICE_BAD_REQUEST, "the body must be the module's .beam file");
    /* [Module, "Module.beam", Beam] for code:load_binary/3 */
    size_t ml = strlen(r->module);
    uint32_t cps[255 + 5];
    size_t n = 0, i = 0;
    while (i < ml && n < 255) term_utf8_next((const unsigned char *)r->module, ml, &i, &cps[n++]);
    memcpy(&cps[n], (const uint32_t[]){'.', 'b', 'e', 'a', 'm'}, 5 * sizeof cps[0]);
    n += 5;
    ei_x_buff x;
    if (ei_x_new(&x) != 0) return service_fail(err, SERVICE_NO_MEMORY, "out of memory");
    service_status st;
    if (ei_x_encode_list_header(&x, 3) != 0 ||
        ei_x_encode_atom_len_as(&x, r->module, (int)ml, ERLANG_UTF8, ERLANG_UTF8) != 0 ||
        term_enc_charlist(&x, cps, n) != 0 || term_enc_binary(&x, beam, beam_len) != 0 ||
        ei_x_encode_empty_list(&x) != 0)
        st = service_fail(err, SERVICE_NO_MEMORY, "out of memory");
    else
        st = service_rpc_send(s, r, c, "code", "load_binary", x.buff, (size_t)x.index, err);
    ei_x_free(&x);
    return st;
}

service_status service_load_result(const service *s, const call *c, const char *node,
                                   const char *module, service_error *err) {
    int idx, inner;
    char tag[MAXATOMLEN_UTF8], text[400];
    bool pair;
    if (service_reply_shape(s, c, node, &idx, &inner, tag, &pair, err) != SERVICE_OK)
        return err->status;
    if (pair && strcmp(tag, "module") == 0) return service_ok(err);
    if (pair && strcmp(tag, "badrpc") == 0) {
        service_text_of(s, c, inner, text, sizeof text);
        return service_fail(err,
                            strcmp(text, "nodedown") == 0 ? SERVICE_UNAVAILABLE : SERVICE_BADRPC,
                            "rpc to %s failed: %s", node, text);
    }
    service_text_of(s, c, idx, text, sizeof text);
    return service_fail(err, SERVICE_LOAD_FAILED, "code:load_binary(%s) on %s returned %.300s",
                        module, node, text);
}

/* ------------------------------------------------------------------------------------------ */
/* Erlang nodes */

service_status service_list_nodes(service *s, const service_principal *p, gateway_node_info **out,
                                  size_t *count, service_error *err) {
    *out = NULL;
    *count = 0;
    if (service_authorize(s, p, SERVICE_OP_LIST_NODES, NULL, err) != SERVICE_OK) return err->status;
    int n = gateway_list_nodes(s->gw, out);
    if (n < 0) return service_fail(err, SERVICE_NO_MEMORY, "out of memory");
    *count = (size_t)n;
    return service_ok(err);
}

service_status service_spawn_nodes(service *s, const service_principal *p, unsigned count,
                                   gateway_spawn_fn done, void *ctx, service_error *err) {
    if (service_authorize(s, p, SERVICE_OP_SPAWN, NULL, err) != SERVICE_OK) return err->status;
    if (count == 0) return service_fail(err, SERVICE_BAD_REQUEST, "count must be >= 1");
    gateway_error ge = gateway_spawn_nodes(s->gw, count, done, ctx);
    if (ge == GATEWAY_BAD_REQUEST)
        return service_fail(err, SERVICE_OVER_LIMIT,
                            "count must be 1 or more, and at most erlang_nodes.max_children (%u) "
                            "children in all",
                            s->cfg->max_children);
    if (ge != GATEWAY_OK)
        return service_fail(err, service_of_gateway(ge), "cannot start child nodes (%s)",
                            gateway_error_code(ge));
    return service_ok(err);
}

service_status service_stop_node(service *s, const service_principal *p, const char *node,
                                 service_error *err) {
    if (service_authorize(s, p, SERVICE_OP_STOP, node, err) != SERVICE_OK) return err->status;
    gateway_error ge = gateway_stop_node(s->gw, node);
    if (ge == GATEWAY_NOT_FOUND)
        return service_fail(err, SERVICE_NOT_FOUND, "no child node named '%.200s'", node);
    if (ge != GATEWAY_OK)
        return service_fail(err, service_of_gateway(ge), "cannot stop %s (%s)", node,
                            gateway_error_code(ge));
    return service_ok(err);
}

/* ------------------------------------------------------------------------------------------ */
/* C-node status, health, events */

service_status service_list_cnodes(service *s, const service_principal *p, gateway_cnode_info **out,
                                   size_t *count, service_error *err) {
    *out = NULL;
    *count = 0;
    if (service_authorize(s, p, SERVICE_OP_LIST_CNODES, NULL, err) != SERVICE_OK)
        return err->status;
    size_t n = gateway_cnode_count(s->gw), k = 0;
    gateway_cnode_info *infos = calloc(n ? n : 1, sizeof *infos);
    if (!infos) return service_fail(err, SERVICE_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < n; i++)
        if (gateway_cnode_info_at(s->gw, i, &infos[k]) == 0) k++;
    *out = infos;
    *count = k;
    return service_ok(err);
}

service_status service_get_cnode(service *s, const service_principal *p, const char *name,
                                 gateway_cnode_info *info, gateway_cnode_info **instances,
                                 size_t *count, service_error *err) {
    if (instances) *instances = NULL;
    if (count) *count = 0;
    if (!count) instances = NULL; /* both or neither */
    if (service_authorize(s, p, SERVICE_OP_GET_CNODE, name, err) != SERVICE_OK) return err->status;
    if (gateway_cnode_info_by_name(s->gw, name, info) != 0)
        return service_fail(err, SERVICE_NOT_FOUND, "no C-node named '%.64s'", name);
    if (!instances || info->instances <= 1) return service_ok(err);
    size_t index = 0, n = gateway_cnode_count(s->gw);
    for (; index < n; index++) {
        gateway_cnode_info probe;
        if (gateway_cnode_info_at(s->gw, index, &probe) == 0 && strcmp(probe.name, name) == 0)
            break;
    }
    gateway_cnode_info *all = calloc(info->instances, sizeof *all);
    if (!all) return service_fail(err, SERVICE_NO_MEMORY, "out of memory");
    size_t k = 0;
    for (unsigned i = 1; i <= info->instances; i++)
        if (gateway_cnode_instance_at(s->gw, index, i, &all[k]) == 0) all[k++].instance = i;
    *instances = all;
    *count = k;
    return service_ok(err);
}

bool service_health(service *s, const char ***not_ready, size_t *count) {
    bool ready = gateway_is_ready(s->gw);
    if (!not_ready || !count) return ready;
    *not_ready = NULL;
    *count = 0;
    size_t n = gateway_cnode_count(s->gw);
    const char **names = calloc(n ? n : 1, sizeof *names); /* NOLINT(bugprone-sizeof-expression) */
    if (!names) return ready;
    for (size_t i = 0; i < n; i++) {
        gateway_cnode_info info;
        if (gateway_cnode_info_at(s->gw, i, &info) != 0) continue;
        if (info.state != CNODE_STOPPED && info.instances_up < info.instances)
            names[(*count)++] = info.name;
    }
    *not_ready = names;
    return ready;
}

service_status service_health_check(service *s, const service_principal *p, const char *cnode,
                                    bool *serving, service_error *err) {
    *serving = false;
    if (service_authorize(s, p, SERVICE_OP_HEALTH, cnode, err) != SERVICE_OK) return err->status;
    if (!cnode) {
        *serving = gateway_is_ready(s->gw);
        return service_ok(err);
    }
    gateway_cnode_info info;
    if (gateway_cnode_info_by_name(s->gw, cnode, &info) != 0)
        return service_fail(err, SERVICE_NOT_FOUND, "no C-node named '%.64s'", cnode);
    *serving = info.instances_up > 0 && !gateway_draining(s->gw); /* draining: calls refused */
    return service_ok(err);
}

static int64_t service_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Every node's current state as events with seq 0. */
static void service_snapshot(service *s, gateway_event_fn fn, void *ctx) {
    int64_t now = service_wall_ms();
    for (size_t i = 0; i < gateway_cnode_count(s->gw); i++) {
        gateway_cnode_info info;
        if (gateway_cnode_info_at(s->gw, i, &info) != 0) continue;
        gateway_event ev = {.time_ms = now, .state = info.state, .os_pid = info.os_pid};
        snprintf(ev.name, sizeof ev.name, "%s", info.name);
        snprintf(ev.node, sizeof ev.node, "%s", info.node);
        if (info.state == CNODE_DOWN || info.state == CNODE_FAILED ||
            info.state == CNODE_RESTARTING)
            snprintf(ev.reason, sizeof ev.reason, "%s", info.last_error);
        fn(&ev, ctx);
    }
    gateway_node_info *nodes = NULL;
    int n = gateway_list_nodes(s->gw, &nodes);
    for (int i = 0; i < n; i++) {
        gateway_event ev = {.time_ms = now,
                            .erlang_node = true,
                            .state = nodes[i].state,
                            .os_pid = nodes[i].os_pid};
        snprintf(ev.name, sizeof ev.name, "%.*s", (int)sizeof ev.name - 1, nodes[i].node);
        snprintf(ev.node, sizeof ev.node, "%s", nodes[i].node);
        fn(&ev, ctx);
    }
    free(nodes);
}

service_status service_watch(service *s, const service_principal *p, bool include_current,
                             gateway_event_fn fn, void *ctx, uint64_t *id, service_error *err) {
    *id = 0;
    if (service_authorize(s, p, SERVICE_OP_WATCH, NULL, err) != SERVICE_OK) return err->status;
    *id = gateway_subscribe(s->gw, fn, ctx);
    if (!*id) return service_fail(err, SERVICE_NO_MEMORY, "out of memory");
    if (include_current) service_snapshot(s, fn, ctx);
    return service_ok(err);
}

service_status service_watch_health(service *s, const service_principal *p, gateway_event_fn fn,
                                    void *ctx, uint64_t *id, service_error *err) {
    *id = 0;
    if (service_authorize(s, p, SERVICE_OP_HEALTH, NULL, err) != SERVICE_OK) return err->status;
    *id = events_subscribe(s->health, fn, ctx);
    if (!*id) return service_fail(err, SERVICE_NO_MEMORY, "out of memory");
    return service_ok(err);
}

void service_unwatch_health(service *s, uint64_t id) {
    if (id) events_unsubscribe(s->health, id);
}

void service_drain_began(service *s) {
    /* no node changed state: an event of the gateway itself, which only health watches get */
    gateway_event ev = {.state = CNODE_STOPPED};
    snprintf(ev.name, sizeof ev.name, "%s", gateway_node_name(s->gw));
    snprintf(ev.node, sizeof ev.node, "%s", gateway_node_name(s->gw));
    snprintf(ev.reason, sizeof ev.reason, "draining");
    events_emit(s->health, &ev);
}

void service_unwatch(service *s, uint64_t id) {
    if (id) gateway_unsubscribe(s->gw, id);
}
