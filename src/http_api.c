/* http_api: the HTTP/1.1 front end (libmicrohttpd): routes, content negotiation, async calls. */
#include "http_api.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#include "auth.h"
#include "http_assets.h"
#include "http_limits.h"
#include "http_route.h"
#include "http_stream.h"
#include "log.h"
#include "service.h"
#include "metrics.h"
#include "access.h"
#include "strbuf.h"
#include "term.h"
#include "tls.h"

/* One GET /events stream: lifecycle events as Server-Sent Events or NDJSON. */
typedef struct http_watch {
    http_stream *stream;
    http_api *api;
    uint64_t subscription;
    bool ndjson;
    atomic_llong last_write_ms;
    struct http_watch *next;
} http_watch;

/* Finished requests kept for reuse (about 5 KiB each). Under AddressSanitizer a spare is
 * poisoned, so a use after its completion is still reported as one. */
#define HTTP_SPARE_REQUESTS 64
#if defined(__SANITIZE_ADDRESS__)
#define HTTP_SPARE_POISON(p)   ASAN_POISON_MEMORY_REGION((p), sizeof(http_request))
#define HTTP_SPARE_UNPOISON(p) ASAN_UNPOISON_MEMORY_REGION((p), sizeof(http_request))
#else
#define HTTP_SPARE_POISON(p)   ((void)(p))
#define HTTP_SPARE_UNPOISON(p) ((void)(p))
#endif

struct http_api {
    struct MHD_Daemon *daemon;
    const config *cfg;
    gateway *gw;
    service *svc; /* every operation goes through it */
    term_limits limits;
    char address[INET6_ADDRSTRLEN + 16];
    /* watch streams: the janitor thread sends keep-alives (so a gone client is noticed) and
     * ends subscriptions of streams MHD has released */
    pthread_mutex_t watch_mu;
    http_watch *watches;
    pthread_t janitor;
    bool janitor_started;
    atomic_bool stopping;
    atomic_bool draining; /* http_api_drain: not accepting; answers close their connection */
    bool loopback;        /* http.listen is a loopback address: Host is checked */
    /* threads: 0: MHD runs on the gateway's loop thread (external epoll), driven from there */
    bool on_loop;
    atomic_bool run_due; /* MHD_run needed: its epoll fd was readable or a connection resumed */
    tls_creds *tls;      /* HTTPS when non-NULL */
    http_limits *guard;  /* header and body deadlines, the body budget */
    metrics_requests *requests; /* nodex_http_requests_total */
    /* Finished requests' memory, reused: a 5 KiB malloc is glibc's slow path (no tcache, a
     * fastbin consolidation) on every request otherwise. MHD threads share it in a pool. */
    pthread_mutex_t spare_mu;
    size_t spare_count;
    struct http_request *spare[HTTP_SPARE_REQUESTS];
};

typedef enum request_kind { REQ_CALL, REQ_CAST, REQ_RPC, REQ_LOAD, REQ_SPAWN } request_kind;

/* One HTTP request's state (MHD's con_cls). Freed by the completion callback. Only the fields
 * before `call` are zeroed when it is made (http_request_new), and the call but its pid and
 * reference (call_init): about 600 of its 5.1 KiB. The rest is written before it is read. */
typedef struct http_request {
    http_api *api;
    struct MHD_Connection *conn;
    strbuf body;
    bool too_large;
    bool over_budget;          /* the body budget was full: 503 once the body is in */
    size_t reserved;           /* body bytes taken from the budget */
    http_limits_conn *guarded; /* the connection's deadlines (NULL: none) */
    bool have_response;        /* an early error response is queued, the body is discarded */
    request_kind kind;
    service_call_req creq; /* REQ_CALL, REQ_CAST */
    unsigned timeout_ms;   /* the wait the call was given, for messages */
    service_rpc_req rreq;  /* REQ_RPC, REQ_LOAD */
    strbuf spawned;        /* REQ_SPAWN: the JSON document (or error message) to answer */
    bool spawn_failed;
    http_format in, out;
    bool submitted;
    atomic_bool done;                   /* set by the gateway's loop before it resumes us */
    const service_principal *principal; /* who sent it; NULL for the open probes */
    /* for the access log and metrics */
    int64_t started_us;     /* monotonic, when the headers were in */
    uint64_t bytes_in;      /* request body bytes received */
    uint64_t bytes_out;     /* response body bytes queued (streams: not counted) */
    const char *error_code; /* the error body's code, if the answer was one */
    /* --- not zeroed: each is written before it is read --- */
    call call;             /* call_init (its pid: service_call_pid, before the body is encoded) */
    service_error refused; /* the operation's refusal, answered after the resume (status set) */
    http_route route;      /* what the method and path asked for (matched on arrival) */
    access_ids ids;        /* X-Request-Id (echoed or made) and the trace context (on arrival) */
    char method[16];       /* for the access log (on arrival) */
    char target[256];      /* the C-node's or node's name, for messages (by the *_begin) */
    char module[256];      /* REQ_RPC, REQ_LOAD (by the *_begin) */
    char function[256];    /* REQ_RPC (by http_rpc_begin) */
} http_request;

/* ------------------------------------------------------------------------------------------ */
/* Responses */

/* Headers every response carries as its status and request ask: the request id, CORS for an
 * allowed Origin (a refused one never gets this far), the Bearer challenge, Retry-After. */
static void http_common_headers(http_request *req, struct MHD_Response *r, unsigned status) {
    struct MHD_Connection *conn = req->conn;
    MHD_add_response_header(r, "X-Request-Id", req->ids.request_id);
    const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    if (origin) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        MHD_add_response_header(r, MHD_HTTP_HEADER_VARY, "Origin");
        MHD_add_response_header(r, "Access-Control-Expose-Headers", "X-Request-Id");
    }
    if (status == 401)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization")
                                    ? "Bearer realm=\"nodexd\", error=\"invalid_token\""
                                    : "Bearer realm=\"nodexd\"");
    if (status == 503) MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (atomic_load(&req->api->draining)) /* a keep-alive client moves to another instance */
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
}

/* Every response leaves here: the common headers, then MHD's queue (the response is
 * destroyed: MHD holds its own reference). */
static enum MHD_Result http_queue(http_request *req, unsigned status, struct MHD_Response *r,
                                  size_t body_len) {
    if (!r) return MHD_NO;
    http_common_headers(req, r, status);
    req->bytes_out += body_len;
    enum MHD_Result ret = MHD_queue_response(req->conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result http_send(http_request *req, unsigned status, const char *type,
                                 strbuf *body) {
    size_t len;
    char *data = strbuf_detach(body, &len);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(data);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    return http_queue(req, status, r, len);
}

/* Queues {"error":{"code":..., "message":...}}. */
static enum MHD_Result http_error(http_request *req, unsigned status, const char *code,
                                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result http_error(http_request *req, unsigned status, const char *code,
                                  const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    req->error_code = code;
    strbuf sb = {0};
    strbuf_puts(&sb, "{\"error\":{\"code\":");
    strbuf_json_string(&sb, code, strlen(code));
    strbuf_puts(&sb, ",\"message\":");
    strbuf_json_string(&sb, msg, strlen(msg));
    strbuf_puts(&sb, "}}");
    return http_send(req, status, "application/json", &sb);
}

/* Queues the error body of an operation's refusal. */
static enum MHD_Result http_fail(http_request *req, const service_error *e) {
    return http_error(req, (unsigned)service_status_http(e->status), service_status_code(e->status),
                      "%s", e->message);
}

/* Queues the error body of a term that cannot be read. */
static enum MHD_Result http_fail_term(http_request *req, const term_error *err) {
    service_status st = service_status_of_term(err->status);
    return http_error(req, (unsigned)service_status_http(st), service_status_code(st), "%s",
                      err->message);
}

/* The principal the request proved (http_authenticate ran on its headers). */
static const service_principal *http_principal(const http_request *req) {
    return req->principal;
}

static enum MHD_Result http_method_not_allowed(http_request *req, const char *allow) {
    strbuf sb = {0};
    strbuf_printf(&sb, "{\"error\":{\"code\":\"method_not_allowed\",\"message\":\"use %s\"}}",
                  allow);
    size_t len;
    char *data = strbuf_detach(&sb, &len);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(data);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    return http_queue(req, MHD_HTTP_METHOD_NOT_ALLOWED, r, len);
}

/* ------------------------------------------------------------------------------------------ */
/* Content negotiation */

/* The request body's format: Content-Type without parameters; absent means JSON. */
static http_format http_content_type(struct MHD_Connection *conn, bool *present) {
    const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
    *present = ct != NULL;
    return http_route_content_type(ct); /* HTTP_FORMAT_NONE: 415 */
}

/* The reply's format from Accept; HTTP_FORMAT_NONE: nothing acceptable (406). */
static http_format http_accept(struct MHD_Connection *conn, http_format in) {
    return http_route_accept(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Accept"), in);
}

/* Decodes the request body in the request's format into a new ei buffer (the caller frees it
 * with ei_x_free, also on error); `self` is what {"$pid":"self"} / self() stand for. */
static int http_decode_body(const http_request *req, const erlang_pid *self, ei_x_buff *x,
                            term_error *err) {
    if (ei_x_new(x) != 0) {
        err->status = TERM_ERR_NOMEM;
        snprintf(err->message, sizeof err->message, "out of memory");
        return -1;
    }
    const char *body = req->body.data ? req->body.data : "";
    const term_limits *lim = &req->api->limits;
    switch (req->in) {
    case HTTP_FORMAT_TEXT: return term_from_text(body, req->body.len, lim, self, x, err);
    case HTTP_FORMAT_ETF: return term_from_etf(body, req->body.len, lim, x, err);
    default: return term_from_json(body, req->body.len, lim, self, x, err);
    }
}

/* Renders the term at buf[*idx] in `format`. */
static int http_render_term(http_format format, const char *buf, size_t len, int *idx,
                            const term_limits *lim, strbuf *out, term_error *err) {
    switch (format) {
    case HTTP_FORMAT_TEXT: return term_to_text(buf, len, idx, lim, out, err);
    case HTTP_FORMAT_ETF: return term_to_etf(buf, len, idx, lim, out, err);
    default: return term_to_json(buf, len, idx, lim, out, err);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Status documents */

static void http_json_cnode(strbuf *sb, const gateway_cnode_info *i) {
    strbuf_puts(sb, "{\"name\":");
    strbuf_json_string(sb, i->name, strlen(i->name));
    strbuf_printf(sb, ",\"state\":\"%s\",\"node\":", cnode_state_name(i->state));
    strbuf_json_string(sb, i->node, strlen(i->node));
    if (i->os_pid)
        strbuf_printf(sb, ",\"os_pid\":%d", (int)i->os_pid);
    else
        strbuf_puts(sb, ",\"os_pid\":null");
    strbuf_printf(sb, ",\"restarts\":%u,\"last_exit\":", i->restarts);
    if (i->last_exit[0])
        strbuf_json_string(sb, i->last_exit, strlen(i->last_exit));
    else
        strbuf_puts(sb, "null");
    strbuf_puts(sb, ",\"last_error\":");
    if (i->last_error[0])
        strbuf_json_string(sb, i->last_error, strlen(i->last_error));
    else
        strbuf_puts(sb, "null");
    strbuf_printf(sb,
                  ",\"in_flight\":%zu,\"waiting\":%zu,\"uptime_ms\":%lld,\"calls_total\":%llu,"
                  "\"dropped_messages\":%llu,\"direction\":\"%s\",\"protocol\":\"%s\","
                  "\"instances\":%u,\"instances_up\":%u,\"ignored_controls\":{",
                  i->in_flight, i->waiting, (long long)i->uptime_ms,
                  (unsigned long long)i->calls_total, (unsigned long long)i->dropped_messages,
                  cnode_direction_name(i->direction), cnode_protocol_name(i->protocol),
                  i->instances, i->instances_up);
    /* control messages it sent that nodexd does not act on, by kind: {"link":2,...} */
    bool first = true;
    for (int k = 0; k < DIST_CTL_KINDS; k++) {
        if (!i->ignored_controls[k]) continue;
        strbuf_printf(sb, "%s\"%s\":%llu", first ? "" : ",",
                      dist_ignored_control_name((dist_ignored_control)k),
                      (unsigned long long)i->ignored_controls[k]);
        first = false;
    }
    strbuf_puts(sb, "}}");
}

static enum MHD_Result http_list_cnodes(http_request *req) {
    gateway_cnode_info *infos;
    size_t n;
    service_error e;
    if (service_list_cnodes(req->api->svc, http_principal(req), &infos, &n, &e) != SERVICE_OK)
        return http_fail(req, &e);
    strbuf sb = {0};
    strbuf_puts(&sb, "{\"cnodes\":[");
    for (size_t k = 0; k < n; k++) {
        if (k) strbuf_putc(&sb, ',');
        http_json_cnode(&sb, &infos[k]);
    }
    strbuf_puts(&sb, "]}");
    free(infos);
    return http_send(req, MHD_HTTP_OK, "application/json", &sb);
}

/* POST /cnodes/{name}/restart: 202 once asked; /events and GET /cnodes/{name} show it come up. */
static enum MHD_Result http_restart_cnode(http_request *req, const char *name) {
    service_error e;
    if (service_restart_cnode(req->api->svc, http_principal(req), name, &e) != SERVICE_OK)
        return http_fail(req, &e);
    strbuf sb = {0};
    strbuf_puts(&sb, "{\"name\":");
    strbuf_json_string(&sb, name, strlen(name));
    strbuf_puts(&sb, ",\"restart\":\"requested\"}");
    return http_send(req, MHD_HTTP_ACCEPTED, "application/json", &sb);
}

static enum MHD_Result http_get_cnode(http_request *req, const char *name) {
    gateway_cnode_info info, *pool;
    size_t n;
    service_error e;
    if (service_get_cnode(req->api->svc, http_principal(req), name, &info, &pool, &n, &e) !=
        SERVICE_OK)
        return http_fail(req, &e);
    strbuf sb = {0};
    http_json_cnode(&sb, &info);
    if (pool) {
        /* A pool: each instance's own state, as {"...","pool":[{...},...]} */
        sb.len--; /* reopen the object */
        strbuf_puts(&sb, ",\"pool\":[");
        for (size_t k = 0; k < n; k++) {
            const gateway_cnode_info *one = &pool[k];
            if (k) strbuf_putc(&sb, ',');
            strbuf_printf(&sb, "{\"instance\":%u,\"state\":\"%s\",\"node\":", one->instance,
                          cnode_state_name(one->state));
            strbuf_json_string(&sb, one->node, strlen(one->node));
            strbuf_printf(&sb,
                          ",\"os_pid\":%d,\"in_flight\":%zu,\"calls_total\":%llu,"
                          "\"restarts\":%u}",
                          (int)one->os_pid, one->in_flight, (unsigned long long)one->calls_total,
                          one->restarts);
        }
        strbuf_puts(&sb, "]}");
        free(pool);
    }
    return http_send(req, MHD_HTTP_OK, "application/json", &sb);
}

/* ------------------------------------------------------------------------------------------ */
/* Calls */

/* A connection was resumed: on the loop thread MHD must run again to serve it (any thread). */
static void http_resumed(void *ctx) {
    http_api *api = ctx;
    if (!api->on_loop) return;
    atomic_store(&api->run_due, true);
    if (!gateway_on_loop_thread(api->gw)) gateway_wake(api->gw);
}

/* Resumes a suspended connection (any thread). */
static void http_resume(http_api *api, struct MHD_Connection *conn) {
    MHD_resume_connection(conn);
    http_resumed(api);
}

/* Runs on the gateway's loop thread: the call ended; wake the suspended connection. */
static void http_call_done(call *c, void *ctx) {
    http_request *req = ctx;
    (void)c;
    struct MHD_Connection *conn = req->conn;
    http_api *api = req->api;
    atomic_store(&req->done, true);
    http_resume(api, conn); /* req may be freed by an MHD thread from here on */
}

static enum MHD_Result http_rpc_response(http_request *req);

static enum MHD_Result http_call_response(http_request *req) {
    call *c = &req->call;
    if (req->refused.status != SERVICE_OK) return http_fail(req, &req->refused);
    if (req->kind == REQ_SPAWN)
        return http_send(req, req->spawn_failed ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_CREATED,
                         "application/json", &req->spawned);
    service_error e;
    const char *what = req->kind == REQ_CALL ? "C-node" : "node";
    if (service_call_outcome(c, what, req->target, req->timeout_ms, &e) != SERVICE_OK)
        return http_fail(req, &e);
    if (req->kind == REQ_RPC || req->kind == REQ_LOAD) return http_rpc_response(req);
    strbuf sb = {0};
    term_error err = {0};
    int idx = (int)c->reply_offset;
    if (http_render_term(req->out, c->reply, c->reply_len, &idx, &req->api->limits, &sb, &err)) {
        strbuf_free(&sb);
        return http_error(req, MHD_HTTP_BAD_GATEWAY, "bad_reply",
                          "C-node %s sent a reply that cannot be decoded: %s", req->target,
                          err.message);
    }
    return http_send(req, MHD_HTTP_OK, http_format_mime(req->out), &sb);
}

/* Answers a refusal from the resumed connection like any other outcome (no response may be
 * queued on a connection suspended in this very handler call). */
static enum MHD_Result http_refused(http_request *req, const service_error *e) {
    req->refused = *e;
    atomic_store(&req->done, true);
    http_resume(req->api, req->conn);
    return MHD_YES;
}

/* The whole body is in: encode the term and send it. */
static enum MHD_Result http_call_submit(http_request *req) {
    http_api *api = req->api;
    struct MHD_Connection *conn = req->conn;
    if (req->too_large)
        return http_error(req, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
                          "request body over %zu bytes", api->cfg->max_body_bytes);
    ei_x_buff x;
    call *c = &req->call;
    service_call_pid(api->svc, c);
    term_error err = {0};
    if (http_decode_body(req, &c->pid, &x, &err) != 0) {
        ei_x_free(&x);
        return http_fail_term(req, &err);
    }
    service_error e;
    if (req->kind == REQ_CAST) {
        service_status st = service_call(api->svc, http_principal(req), &req->creq, NULL, x.buff,
                                         (size_t)x.index, &e);
        ei_x_free(&x);
        if (st != SERVICE_OK) return http_fail(req, &e);
        strbuf sb = {0};
        strbuf_puts(&sb, "{\"status\":\"accepted\"}");
        return http_send(req, MHD_HTTP_ACCEPTED, "application/json", &sb);
    }
    c->on_done = http_call_done;
    c->ctx = req;
    /* Suspend before submitting: the reply may arrive before this handler returns. */
    MHD_suspend_connection(conn);
    req->submitted = true;
    service_status st =
        service_call(api->svc, http_principal(req), &req->creq, c, x.buff, (size_t)x.index, &e);
    ei_x_free(&x);
    req->timeout_ms = req->creq.timeout_used;
    return st == SERVICE_OK ? MHD_YES : http_refused(req, &e);
}

/* ?timeout_ms=N as the service reads it: 0 when absent, SERVICE_TIMEOUT_INVALID when not an
 * integer from 1 up. */
static unsigned http_timeout_query(struct MHD_Connection *conn) {
    return http_route_timeout_ms(
        MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "timeout_ms"),
        SERVICE_TIMEOUT_INVALID);
}

/* ?wait=true|false (also 1|0): 1 to wait while the C-node (re)starts (the default), 0 not to,
 * -1 when it is neither. */
static int http_wait_query(struct MHD_Connection *conn) {
    const char *w = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "wait");
    if (!w || strcmp(w, "true") == 0 || strcmp(w, "1") == 0) return 1;
    if (strcmp(w, "false") == 0 || strcmp(w, "0") == 0) return 0;
    return -1;
}

/* The request's body and reply formats; queues 415 or 406 and returns false when refused. */
static bool http_negotiate(http_request *req, bool streaming) {
    struct MHD_Connection *conn = req->conn;
    bool present;
    req->in = http_content_type(conn, &present);
    if (req->in == HTTP_FORMAT_NONE) {
        http_error(req, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                   "Content-Type must be application/json, application/x-erlang-text or "
                   "application/x-erlang-binary");
        return false;
    }
    req->out = streaming ? HTTP_FORMAT_JSON : http_accept(conn, req->in);
    if (req->out == HTTP_FORMAT_NONE) {
        http_error(req, MHD_HTTP_NOT_ACCEPTABLE, "not_acceptable",
                   "Accept must allow application/json, application/x-erlang-text or "
                   "application/x-erlang-binary");
        return false;
    }
    return true;
}

/* Checks a call/cast/stream request before its body arrives. Returns MHD_YES with a response
 * queued on error (have_response), or MHD_YES to go on reading. */
static enum MHD_Result http_call_begin(http_request *req, const char *name, request_kind kind,
                                       service_op op) {
    struct MHD_Connection *conn = req->conn;
    req->kind = kind;
    strbuf_copy_str(req->target, sizeof req->target, name);
    req->have_response = true;
    int wait = http_wait_query(conn);
    req->creq = (service_call_req){.op = op,
                                   .cnode = req->target,
                                   .timeout_ms = http_timeout_query(conn),
                                   .deadline_left_ms = -1,
                                   .no_wait = wait == 0};
    service_error e;
    if (service_call_check(req->api->svc, http_principal(req), &req->creq, &e) != SERVICE_OK)
        return http_fail(req, &e);
    if (wait < 0) /* after the check: who may not call the C-node learns nothing from it */
        return http_error(req, MHD_HTTP_BAD_REQUEST, "bad_request", "wait must be true or false");
    if (!http_negotiate(req, op == SERVICE_OP_STREAM)) return MHD_YES;
    req->timeout_ms = req->creq.timeout_used;
    req->have_response = false;
    return MHD_YES;
}

/* ------------------------------------------------------------------------------------------ */
/* Erlang nodes: list, spawn, stop, rpc, load code */

static enum MHD_Result http_list_nodes(http_request *req) {
    http_api *api = req->api;
    gateway_node_info *nodes;
    size_t n;
    service_error e;
    if (service_list_nodes(api->svc, http_principal(req), &nodes, &n, &e) != SERVICE_OK)
        return http_fail(req, &e);
    strbuf sb = {0};
    strbuf_printf(&sb, "{\"self\":");
    const char *self = service_node_name(api->svc);
    strbuf_json_string(&sb, self, strlen(self));
    strbuf_puts(&sb, ",\"nodes\":[");
    for (size_t i = 0; i < n; i++) {
        const gateway_node_info *ni = &nodes[i];
        if (i) strbuf_putc(&sb, ',');
        strbuf_puts(&sb, "{\"node\":");
        strbuf_json_string(&sb, ni->node, strlen(ni->node));
        strbuf_printf(&sb, ",\"connected\":%s,\"child\":%s,\"state\":\"%s\",\"os_pid\":",
                      ni->connected ? "true" : "false", ni->child ? "true" : "false",
                      cnode_state_name(ni->state));
        if (ni->os_pid)
            strbuf_printf(&sb, "%d", (int)ni->os_pid);
        else
            strbuf_puts(&sb, "null");
        strbuf_printf(&sb, ",\"restarts\":%u}", ni->restarts);
    }
    strbuf_puts(&sb, "]}");
    free(nodes);
    return http_send(req, MHD_HTTP_OK, "application/json", &sb);
}

/* Runs on the gateway's loop thread when the children of POST /nodes are up (or not). */
static void http_spawn_done(void *ctx, const char *const *nodes, size_t count, const char *error) {
    http_request *req = ctx;
    strbuf *sb = &req->spawned;
    req->spawn_failed = error != NULL;
    if (error) {
        strbuf_puts(sb, "{\"error\":{\"code\":\"spawn_failed\",\"message\":");
        strbuf_json_string(sb, error, strlen(error));
        strbuf_puts(sb, ",\"nodes\":[");
    } else {
        strbuf_puts(sb, "{\"nodes\":[");
    }
    for (size_t i = 0; i < count; i++) {
        if (i) strbuf_putc(sb, ',');
        strbuf_json_string(sb, nodes[i], strlen(nodes[i]));
    }
    strbuf_puts(sb, error ? "]}}" : "]}");
    struct MHD_Connection *conn = req->conn;
    atomic_store(&req->done, true);
    http_resume(req->api, conn);
}

/* Reads an unsigned integer field of a JSON object body such as {"count":2}. */
static int http_body_count(http_request *req, unsigned *count, char *why, size_t why_len) {
    ei_x_buff x;
    term_error err = {0};
    if (ei_x_new(&x) != 0) return -1;
    const char *body = req->body.data ? req->body.data : "";
    int rc = -1;
    if (req->body.len == 0) {
        *count = 1;
        rc = 0;
    } else if (term_from_json(body, req->body.len, &req->api->limits, NULL, &x, &err) != 0) {
        snprintf(why, why_len, "%s", err.message);
    } else {
        int i = 0, arity, type, size;
        long v;
        char key[16];
        if (ei_decode_map_header(x.buff, &i, &arity) < 0) {
            snprintf(why, why_len, "the body must be a JSON object such as {\"count\":2}");
        } else {
            *count = 1;
            rc = 0;
            for (int k = 0; k < arity && rc == 0; k++) {
                long klen;
                if (ei_get_type(x.buff, &i, &type, &size) < 0 || type != ERL_BINARY_EXT ||
                    size >= (int)sizeof key || ei_decode_binary(x.buff, &i, key, &klen) < 0) {
                    snprintf(why, why_len, "unexpected key in the body");
                    rc = -1;
                    break;
                }
                key[klen] = '\0';
                if (strcmp(key, "count") != 0 || ei_decode_long(x.buff, &i, &v) < 0 || v < 1 ||
                    v > 10000) {
                    snprintf(why, why_len, "$.%s: expected \"count\", an integer from 1 to 10000",
                             key);
                    rc = -1;
                    break;
                }
                *count = (unsigned)v;
            }
        }
    }
    ei_x_free(&x);
    return rc;
}

static enum MHD_Result http_spawn_nodes(http_request *req) {
    struct MHD_Connection *conn = req->conn;
    if (req->too_large)
        return http_error(req, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
                          "request body over %zu bytes", req->api->cfg->max_body_bytes);
    bool present;
    if (http_content_type(conn, &present) != HTTP_FORMAT_JSON)
        return http_error(req, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                          "Content-Type must be application/json");
    unsigned count;
    char why[300];
    if (http_body_count(req, &count, why, sizeof why) != 0)
        return http_error(req, MHD_HTTP_BAD_REQUEST, "bad_request", "%s", why);
    req->kind = REQ_SPAWN;
    snprintf(req->target, sizeof req->target, "children");
    MHD_suspend_connection(conn);
    req->submitted = true;
    service_error e;
    if (service_spawn_nodes(req->api->svc, http_principal(req), count, http_spawn_done, req, &e) ==
        SERVICE_OK)
        return MHD_YES;
    req->submitted = false;
    http_resume(req->api, conn);
    return http_fail(req, &e);
}

/* Copies an atom or UTF-8 binary term at x[*i] into out as a C string. */
static int http_decode_name(const char *buf, int *i, char *out, size_t out_len) {
    int type, size;
    if (ei_get_type(buf, i, &type, &size) < 0 || size < 1 || (size_t)size >= out_len) return -1;
    if (type == ERL_BINARY_EXT) {
        long len;
        if (ei_decode_binary(buf, i, out, &len) < 0) return -1;
        out[len] = '\0';
        return memchr(out, '\0', (size_t)len) ? -1 : 0;
    }
    return ei_decode_atom_as(buf, i, out, (int)out_len, ERLANG_UTF8, NULL, NULL) < 0 ? -1 : 0;
}

/* Reads {M, F, Args} or #{module, function, args} from the encoded body into req and the
 * args' bytes. Returns 0 or -1 with `why`. */
static int http_parse_mfa(const char *buf, char *module, char *function, size_t name_len,
                          int *args_start, int *args_end, char *why, size_t why_len) {
    int i = 0, arity, type, size;
    *args_start = -1;
    module[0] = function[0] = '\0';
    if (ei_get_type(buf, &i, &type, &size) < 0) goto bad;
    if (type == ERL_SMALL_TUPLE_EXT || type == ERL_LARGE_TUPLE_EXT) {
        if (ei_decode_tuple_header(buf, &i, &arity) < 0 || arity != 3) goto bad;
        if (http_decode_name(buf, &i, module, name_len) < 0 ||
            http_decode_name(buf, &i, function, name_len) < 0)
            goto bad;
        *args_start = i;
    } else if (type == ERL_MAP_EXT) {
        if (ei_decode_map_header(buf, &i, &arity) < 0) goto bad;
        for (int k = 0; k < arity; k++) {
            char key[16];
            if (http_decode_name(buf, &i, key, sizeof key) < 0) {
                snprintf(why, why_len, "the body's keys must be module, function and args");
                return -1;
            }
            if (strcmp(key, "module") == 0) {
                if (http_decode_name(buf, &i, module, name_len) < 0) {
                    snprintf(why, why_len, "$.module: expected a string of 1 to 255 bytes");
                    return -1;
                }
            } else if (strcmp(key, "function") == 0) {
                if (http_decode_name(buf, &i, function, name_len) < 0) {
                    snprintf(why, why_len, "$.function: expected a string of 1 to 255 bytes");
                    return -1;
                }
            } else if (strcmp(key, "args") == 0) {
                *args_start = i;
                if (ei_skip_term(buf, &i) < 0) goto bad;
            } else {
                snprintf(why, why_len, "$.%s: unknown key (use module, function, args)", key);
                return -1;
            }
        }
    } else {
        goto bad;
    }
    if (!module[0] || !function[0]) {
        snprintf(why, why_len, "module and function are required");
        return -1;
    }
    if (*args_start < 0) {
        snprintf(why, why_len, "args is required (a list, [] for none)");
        return -1;
    }
    i = *args_start;
    if (ei_get_type(buf, &i, &type, &size) < 0 ||
        (type != ERL_LIST_EXT && type != ERL_NIL_EXT && type != ERL_STRING_EXT)) {
        snprintf(why, why_len, "args must be a list");
        return -1;
    }
    if (ei_skip_term(buf, &i) < 0) goto bad;
    *args_end = i;
    return 0;
bad:
    snprintf(why, why_len,
             "expected {\"module\":M,\"function\":F,\"args\":[...]} (or {M, F, Args} as a term)");
    return -1;
}

/* Submits the rpc or load that req->rreq describes, with its encoded args (or beam). */
static enum MHD_Result http_rpc_submit(http_request *req, const char *args, size_t args_len) {
    http_api *api = req->api;
    call *c = &req->call;
    c->on_done = http_call_done;
    c->ctx = req;
    MHD_suspend_connection(req->conn);
    req->submitted = true;
    service_error e;
    service_status st =
        req->kind == REQ_LOAD
            ? service_load(api->svc, http_principal(req), &req->rreq, c, args, args_len, &e)
            : service_rpc(api->svc, http_principal(req), &req->rreq, c, args, args_len, &e);
    req->timeout_ms = req->rreq.timeout_used;
    return st == SERVICE_OK ? MHD_YES : http_refused(req, &e);
}

static enum MHD_Result http_rpc_begin(http_request *req, const char *node) {
    http_api *api = req->api;
    struct MHD_Connection *conn = req->conn;
    req->kind = REQ_RPC;
    snprintf(req->target, sizeof req->target, "%s", node);
    if (!http_negotiate(req, false)) return MHD_YES;
    if (req->too_large)
        return http_error(req, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
                          "request body over %zu bytes", api->cfg->max_body_bytes);
    ei_x_buff x;
    service_call_pid(api->svc, &req->call);
    term_error err = {0};
    if (http_decode_body(req, &req->call.pid, &x, &err) != 0) {
        ei_x_free(&x);
        return http_fail_term(req, &err);
    }
    char module[256], function[256], why[200];
    int a0, a1;
    if (http_parse_mfa(x.buff, module, function, sizeof module, &a0, &a1, why, sizeof why) != 0) {
        ei_x_free(&x);
        return http_error(req, MHD_HTTP_BAD_REQUEST, "bad_request", "%s", why);
    }
    snprintf(req->module, sizeof req->module, "%s", module);
    snprintf(req->function, sizeof req->function, "%s", function);
    req->rreq = (service_rpc_req){.node = req->target,
                                  .module = req->module,
                                  .function = req->function,
                                  .timeout_ms = http_timeout_query(conn),
                                  .deadline_left_ms = -1};
    enum MHD_Result r = http_rpc_submit(req, x.buff + a0, (size_t)(a1 - a0));
    ei_x_free(&x);
    return r;
}

static enum MHD_Result http_load_begin(http_request *req, const char *node, const char *module) {
    http_api *api = req->api;
    struct MHD_Connection *conn = req->conn;
    req->kind = REQ_LOAD;
    req->out = HTTP_FORMAT_JSON;
    snprintf(req->target, sizeof req->target, "%s", node);
    snprintf(req->module, sizeof req->module, "%s", module);
    req->rreq = (service_rpc_req){.node = req->target,
                                  .module = req->module,
                                  .timeout_ms = http_timeout_query(conn),
                                  .deadline_left_ms = -1};
    service_error e;
    if (service_load_check(api->svc, http_principal(req), &req->rreq, &e) != SERVICE_OK)
        return http_fail(req, &e);
    if (req->too_large)
        return http_error(req, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
                          "request body over %zu bytes", api->cfg->max_body_bytes);
    service_call_pid(api->svc, &req->call);
    return http_rpc_submit(req, req->body.data, req->body.len);
}

/* rpc and load replies: {badrpc, Reason} is 502 with Reason; load wants {module, M}. */
static enum MHD_Result http_rpc_response(http_request *req) {
    call *c = &req->call;
    service *svc = req->api->svc;
    service_error e;
    int at;
    service_status st = service_rpc_result(svc, c, req->target, &at, &e);
    strbuf sb = {0};
    term_error err = {0};
    if (st == SERVICE_BADRPC) {
        strbuf_puts(&sb, "{\"error\":{\"code\":\"badrpc\",\"message\":");
        strbuf_json_string(&sb, e.message, strlen(e.message));
        strbuf_puts(&sb, ",\"reason\":");
        if (term_to_json(c->reply, c->reply_len, &at, service_limits(svc), &sb, &err) != 0)
            strbuf_puts(&sb, "null");
        strbuf_puts(&sb, "}}");
        return http_send(req, MHD_HTTP_BAD_GATEWAY, "application/json", &sb);
    }
    if (st != SERVICE_OK) return http_fail(req, &e);
    if (req->kind == REQ_LOAD) {
        if (service_load_result(svc, c, req->target, req->module, &e) != SERVICE_OK)
            return http_fail(req, &e);
        strbuf_puts(&sb, "{\"status\":\"loaded\",\"module\":");
        strbuf_json_string(&sb, req->module, strlen(req->module));
        strbuf_puts(&sb, ",\"node\":");
        strbuf_json_string(&sb, req->target, strlen(req->target));
        strbuf_putc(&sb, '}');
        return http_send(req, MHD_HTTP_OK, "application/json", &sb);
    }
    if (http_render_term(req->out, c->reply, c->reply_len, &at, service_limits(svc), &sb, &err) !=
        0) {
        strbuf_free(&sb);
        return http_error(req, MHD_HTTP_BAD_GATEWAY, "bad_reply", "%s", err.message);
    }
    return http_send(req, MHD_HTTP_OK, http_format_mime(req->out), &sb);
}

/* DELETE /nodes/{node}: 202 once the child is asked to stop. */
static enum MHD_Result http_stop_node(http_request *req, const char *node) {
    service_error e;
    if (service_stop_node(req->api->svc, http_principal(req), node, &e) != SERVICE_OK)
        return http_fail(req, &e);
    strbuf sb = {0};
    strbuf_puts(&sb, "{\"status\":\"stopping\",\"node\":");
    strbuf_json_string(&sb, node, strlen(node));
    strbuf_putc(&sb, '}');
    return http_send(req, MHD_HTTP_ACCEPTED, "application/json", &sb);
}

/* ------------------------------------------------------------------------------------------ */
/* Streams: GET /events (Watch) and POST /cnodes/{name}/stream (CallStream) */

#define HTTP_KEEPALIVE_MS       15000
#define HTTP_STREAM_MAX_PENDING (8u << 20) /* unread bytes a stream may hold for its client */
#define HTTP_TOO_SLOW_JSON                                                                         \
    "{\"error\":{\"code\":\"too_slow\",\"message\":\"the client left over 8 MiB unread: "          \
    "the stream was cut off\"}}"

/* Caps a stream's unread bytes, with its last words in its own framing. */
static void http_stream_cap(http_stream *stream, bool sse) {
    http_stream_set_cap(stream, HTTP_STREAM_MAX_PENDING,
                        sse ? "event: error\ndata: " HTTP_TOO_SLOW_JSON "\n\n"
                            : HTTP_TOO_SLOW_JSON "\n");
}

/* Writes to a capped stream (`what`: "events", "call"); the write the cap turned into the
 * stream's end is counted (nodex_stream_cuts_total) and logged, once per stream since the cap
 * cuts a stream once. Returns http_stream_write's result. */
static int http_stream_put(http_api *api, http_stream *stream, const char *what, const char *data,
                           size_t len) {
    int rc = http_stream_write(stream, data, len);
    if (rc == HTTP_STREAM_CUT) {
        uint64_t cuts =
            metrics_stream_cut(service_metrics(api->svc), METRICS_HTTP, METRICS_CUT_UNREAD_BYTES);
        log_warn("http: %s stream cut off: its client left over %u MiB unread (%llu so far)", what,
                 HTTP_STREAM_MAX_PENDING >> 20, (unsigned long long)cuts);
    }
    return rc;
}

static int64_t http_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void http_event_json(strbuf *sb, const gateway_event *ev) {
    strbuf_printf(
        sb, "{\"seq\":%llu,\"time_ms\":%lld,\"kind\":\"%s\",\"name\":", (unsigned long long)ev->seq,
        (long long)ev->time_ms, ev->erlang_node ? "erlang_node" : "cnode");
    strbuf_json_string(sb, ev->name, strlen(ev->name));
    strbuf_puts(sb, ",\"node\":");
    strbuf_json_string(sb, ev->node, strlen(ev->node));
    strbuf_printf(sb, ",\"state\":\"%s\",\"reason\":", cnode_state_name(ev->state));
    strbuf_json_string(sb, ev->reason, strlen(ev->reason));
    if (ev->os_pid)
        strbuf_printf(sb, ",\"os_pid\":%d}", (int)ev->os_pid);
    else
        strbuf_puts(sb, ",\"os_pid\":null}");
}

static void http_watch_send(http_watch *w, const gateway_event *ev) {
    strbuf sb = {0};
    if (w->ndjson) {
        http_event_json(&sb, ev);
        strbuf_putc(&sb, '\n');
    } else {
        strbuf_printf(&sb, "event: %s\nid: %llu\ndata: ", cnode_state_name(ev->state),
                      (unsigned long long)ev->seq);
        http_event_json(&sb, ev);
        strbuf_puts(&sb, "\n\n");
    }
    if (sb.len) http_stream_put(w->api, w->stream, "events", sb.data, sb.len);
    atomic_store(&w->last_write_ms, http_now_ms());
    strbuf_free(&sb);
}

/* The gateway's loop thread: one event, for one watcher. */
static void http_watch_on_event(const gateway_event *ev, void *ctx) {
    http_watch_send(ctx, ev);
}

static bool http_query_true(struct MHD_Connection *conn, const char *key) {
    return http_route_query_true(MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, key));
}

static enum MHD_Result http_watch_begin(http_request *req) {
    http_api *api = req->api;
    struct MHD_Connection *conn = req->conn;
    const char *acc = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Accept");
    bool ndjson = acc && strstr(acc, "application/x-ndjson") && !strstr(acc, "text/event-stream");
    if (acc && !ndjson && !strstr(acc, "text/event-stream") && !strstr(acc, "*/*"))
        return http_error(req, MHD_HTTP_NOT_ACCEPTABLE, "not_acceptable",
                          "Accept must allow text/event-stream or application/x-ndjson");
    service_error e; /* authorized by http_dispatch (watch has no target) */
    http_watch *w = calloc(1, sizeof *w);
    if (!w || !(w->stream = http_stream_new(conn, http_resumed, api))) {
        free(w);
        return http_error(req, 500, "out_of_memory", "out of memory");
    }
    w->api = api;
    w->ndjson = ndjson;
    http_stream_cap(w->stream, !ndjson);
    atomic_init(&w->last_write_ms, http_now_ms());
    struct MHD_Response *r = http_stream_response(w->stream);
    if (!r) {
        http_stream_unref(w->stream);
        free(w);
        return http_error(req, 500, "out_of_memory", "out of memory");
    }
    /* Subscribed first, then the snapshot: a change in between is reported, never lost. */
    if (service_watch(api->svc, http_principal(req), http_query_true(conn, "include_current"),
                      http_watch_on_event, w, &w->subscription, &e) != SERVICE_OK) {
        MHD_destroy_response(r);
        http_stream_unref(w->stream);
        free(w);
        return http_fail(req, &e);
    }
    pthread_mutex_lock(&api->watch_mu);
    w->next = api->watches;
    api->watches = w;
    /* http_api_stop already ended the streams it saw (it sets `stopping` before taking
     * watch_mu): this one must not stay suspended into MHD_stop_daemon either. */
    bool stopping = atomic_load(&api->stopping);
    uint64_t subscription = stopping ? w->subscription : 0;
    if (stopping) w->subscription = 0;
    pthread_mutex_unlock(&api->watch_mu);
    if (stopping) {
        service_unwatch(api->svc, subscription);
        http_stream_end(w->stream);
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            ndjson ? "application/x-ndjson" : "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    return http_queue(req, MHD_HTTP_OK, r, 0);
}

static void http_watch_free(http_api *api, http_watch *w) {
    service_unwatch(api->svc, w->subscription);
    http_stream_unref(w->stream);
    free(w);
}

/* Keep-alives and cleanup of watch streams; never called with MHD's locks held. */
static void *http_janitor_main(void *arg) {
    http_api *api = arg;
    while (!atomic_load(&api->stopping)) {
        usleep(200000);
        int64_t now = http_now_ms();
        if (http_limits_sweep(api->guard, now)) {
            http_limits_stats st = http_limits_stats_get(api->guard);
            log_info("http: cut connections past http.header_timeout_ms or body_timeout_ms (%llu "
                     "header, %llu body timeouts so far)",
                     (unsigned long long)st.header_timeouts, (unsigned long long)st.body_timeouts);
        }
        pthread_mutex_lock(&api->watch_mu);
        for (http_watch **pp = &api->watches; *pp;) {
            http_watch *w = *pp;
            if (http_stream_dead(w->stream)) {
                *pp = w->next;
                http_watch_free(api, w);
                continue;
            }
            if (now - atomic_load(&w->last_write_ms) >= HTTP_KEEPALIVE_MS) {
                const char *ka = w->ndjson ? "{\"keepalive\":true}\n" : ": keepalive\n\n";
                http_stream_put(api, w->stream, "events", ka, strlen(ka));
                atomic_store(&w->last_write_ms, now);
            }
            pp = &w->next;
        }
        pthread_mutex_unlock(&api->watch_mu);
    }
    return NULL;
}

/* One POST /cnodes/{name}/stream in flight: owned by the gateway call until on_done. */
typedef struct http_call_stream {
    http_stream *stream;
    http_api *api;
    call call;
    char target[256];
    unsigned timeout_ms;
} http_call_stream;

static void http_call_stream_line(http_call_stream *cs, const char *msg, size_t len, size_t offset,
                                  bool final) {
    strbuf sb = {0};
    term_error err = {0};
    int idx = (int)offset;
    strbuf_puts(&sb, "{\"message\":");
    if (term_to_json(msg, len, &idx, &cs->api->limits, &sb, &err) != 0) {
        strbuf_reset(&sb);
        strbuf_puts(&sb, "{\"error\":{\"code\":\"bad_reply\",\"message\":");
        strbuf_json_string(&sb, err.message, strlen(err.message));
        strbuf_puts(&sb, "}}\n");
    } else {
        strbuf_printf(&sb, ",\"final\":%s}\n", final ? "true" : "false");
    }
    if (http_stream_put(cs->api, cs->stream, "call", sb.data, sb.len) == HTTP_STREAM_CUT && !final)
        service_cancel(cs->api->svc, &cs->call); /* nobody reads the rest: end the call */
    strbuf_free(&sb);
}

/* Loop thread: a message before the reply. */
static void http_call_stream_message(call *c, const char *msg, size_t len, void *ctx) {
    (void)c;
    http_call_stream_line(ctx, msg, len, 0, false);
}

/* Loop thread: the reply, or why there is none; ends the body and frees the call. */
static void http_call_stream_done(call *c, void *ctx) {
    http_call_stream *cs = ctx;
    service_error e;
    if (service_call_outcome(c, "C-node", cs->target, cs->timeout_ms, &e) == SERVICE_OK) {
        http_call_stream_line(cs, c->reply, c->reply_len, c->reply_offset, true);
    } else {
        strbuf sb = {0};
        strbuf_printf(&sb,
                      "{\"error\":{\"code\":\"%s\",\"message\":", service_status_code(e.status));
        strbuf_json_string(&sb, e.message, strlen(e.message));
        strbuf_puts(&sb, "}}\n");
        http_stream_put(cs->api, cs->stream, "call", sb.data, sb.len);
        strbuf_free(&sb);
    }
    http_stream_end(cs->stream);
    http_stream_unref(cs->stream);
    call_clear(c);
    free(cs);
}

static enum MHD_Result http_call_stream_submit(http_request *req) {
    http_api *api = req->api;
    struct MHD_Connection *conn = req->conn;
    const char *acc = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Accept");
    if (acc && !strstr(acc, "application/x-ndjson") && !strstr(acc, "application/json") &&
        !strstr(acc, "*/*"))
        return http_error(req, MHD_HTTP_NOT_ACCEPTABLE, "not_acceptable",
                          "Accept must allow application/x-ndjson");
    if (req->too_large)
        return http_error(req, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
                          "request body over %zu bytes", api->cfg->max_body_bytes);
    http_call_stream *cs = calloc(1, sizeof *cs);
    if (!cs || !(cs->stream = http_stream_new(conn, http_resumed, api))) {
        free(cs);
        return http_error(req, 500, "out_of_memory", "out of memory");
    }
    http_stream *stream = cs->stream;
    http_stream_cap(stream, false);
    cs->api = api;
    cs->timeout_ms = req->timeout_ms;
    snprintf(cs->target, sizeof cs->target, "%s", req->target);
    ei_x_buff x;
    term_error err = {0};
    service_call_pid(api->svc, &cs->call);
    int rc = http_decode_body(req, &cs->call.pid, &x, &err);
    service_error e = {0};
    service_status st = SERVICE_OK;
    if (rc == 0) {
        cs->call.on_done = http_call_stream_done;
        cs->call.on_message = http_call_stream_message;
        cs->call.ctx = cs;
        st = service_call(api->svc, http_principal(req), &req->creq, &cs->call, x.buff,
                          (size_t)x.index, &e);
    }
    ei_x_free(&x);
    if (rc != 0 || st != SERVICE_OK) {
        http_stream_unref(cs->stream); /* the response's reference: no response was made */
        http_stream_unref(cs->stream);
        free(cs);
        return rc != 0 ? http_fail_term(req, &err) : http_fail(req, &e);
    }
    /* From here the call owns cs (on_done may already have freed it: use `stream`, kept alive
     * by the response's reference); the response reads what it writes. */
    struct MHD_Response *r = http_stream_response(stream);
    if (!r) return MHD_NO; /* the call still ends and frees cs */
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/x-ndjson");
    return http_queue(req, MHD_HTTP_OK, r, 0);
}

static void http_peer_identity(struct MHD_Connection *conn, tls_peer *out);

/* ------------------------------------------------------------------------------------------ */
/* The door: Host and Origin (browsers), then who the request is from */

static bool http_origin_allowed(const http_api *api, const char *origin) {
    for (size_t i = 0; i < api->cfg->allowed_origin_count; i++)
        if (strcmp(origin, api->cfg->allowed_origins[i]) == 0) return true;
    return false;
}

/* The probes (the health operation) stay open, as service_op_is_probe says for both transports:
 * an orchestrator has no token. So does the status page: static, it holds nothing of this
 * nodexd and fetches the rest with the token its user enters. */
static bool http_is_open(const char *url) {
    return ((strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0) &&
            service_op_is_probe(SERVICE_OP_HEALTH)) ||
           strcmp(url, "/") == 0;
}

/* Checks a request's headers: a loopback listener's Host, the Origin, then authentication
 * (req->principal). Returns false with a refusal queued in *ret. */
static bool http_admit(http_request *req, const char *url, enum MHD_Result *ret) {
    http_api *api = req->api;
    struct MHD_Connection *conn = req->conn;
    const char *host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Host");
    if (host && api->loopback &&
        !http_route_host_allowed(host, api->cfg->allowed_hosts, api->cfg->allowed_host_count)) {
        *ret = http_error(req, MHD_HTTP_FORBIDDEN, "forbidden_host",
                          "Host %.200s is not this loopback listener (add it to "
                          "http.allowed_hosts if it is)",
                          host);
        return false;
    }
    const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    if (origin && !http_origin_allowed(api, origin)) {
        /* answered without CORS headers: the page that sent it cannot read the answer */
        struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        if (r) MHD_add_response_header(r, "X-Request-Id", req->ids.request_id);
        *ret = r ? MHD_queue_response(conn, MHD_HTTP_FORBIDDEN, r) : MHD_NO;
        if (r) MHD_destroy_response(r);
        log_info("http: refused a request from origin %.200s (not in http.allowed_origins)",
                 origin);
        return false;
    }
    if (http_is_open(url)) return true;
    const char *authz = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    auth_credentials cr = {.authorization = authz, .authorization_len = authz ? strlen(authz) : 0};
    tls_peer peer;
    const char *sans[16];
    http_peer_identity(conn, &peer); /* a verified client certificate (mTLS), if any */
    if (peer.present) {
        cr.cert_subject = peer.subject;
        cr.cert_sans = sans;
        cr.cert_san_count = auth_split_sans(peer.sans, sans, 16);
    }
    service_error e;
    if (service_authenticate(api->svc, &cr, &req->principal, &e) != SERVICE_OK) {
        *ret = http_fail(req, &e);
        return false;
    }
    return true;
}

/* OPTIONS from an allowed origin: the CORS preflight. */
static enum MHD_Result http_preflight(http_request *req) {
    struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_METHODS,
                            "GET, POST, PUT, DELETE");
    MHD_add_response_header(r, "Access-Control-Allow-Headers",
                            "Authorization, Content-Type, Accept, X-Request-Id, traceparent, "
                            "tracestate");
    MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    return http_queue(req, MHD_HTTP_NO_CONTENT, r, 0);
}

/* GET / and GET /openapi.json: an embedded file, as is; the API's description for any
 * principal (service_authorize: api.describe). */
static enum MHD_Result http_send_asset(http_request *req, http_route_kind kind) {
    bool page = kind == HTTP_ROUTE_STATUS_PAGE;
    service_error e;
    if (!page && service_authorize(req->api->svc, http_principal(req), SERVICE_OP_DESCRIBE, NULL,
                                   &e) != SERVICE_OK)
        return http_fail(req, &e);
    http_asset a = page ? http_assets_status_page() : http_assets_openapi();
    struct MHD_Response *r =
        MHD_create_response_from_buffer(a.len, (void *)a.data, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, a.content_type);
    for (const http_asset_header *h = http_assets_page_headers(); page && h->name; h++)
        MHD_add_response_header(r, h->name, h->value);
    return http_queue(req, MHD_HTTP_OK, r, a.len);
}

/* ------------------------------------------------------------------------------------------ */
/* Routing */

/* The operation a route runs (false: none, the status page and unmatched paths). */
static bool http_op_of_route(http_route_kind kind, service_op *op) {
    switch (kind) {
    case HTTP_ROUTE_HEALTHZ:
    case HTTP_ROUTE_READYZ: *op = SERVICE_OP_HEALTH; return true;
    case HTTP_ROUTE_METRICS: *op = SERVICE_OP_METRICS; return true;
    case HTTP_ROUTE_CNODES: *op = SERVICE_OP_LIST_CNODES; return true;
    case HTTP_ROUTE_CNODE: *op = SERVICE_OP_GET_CNODE; return true;
    case HTTP_ROUTE_CNODE_CALL: *op = SERVICE_OP_CALL; return true;
    case HTTP_ROUTE_CNODE_CAST: *op = SERVICE_OP_CAST; return true;
    case HTTP_ROUTE_CNODE_STREAM: *op = SERVICE_OP_STREAM; return true;
    case HTTP_ROUTE_CNODE_RESTART: *op = SERVICE_OP_RESTART; return true;
    case HTTP_ROUTE_EVENTS: *op = SERVICE_OP_WATCH; return true;
    case HTTP_ROUTE_NODES: *op = SERVICE_OP_LIST_NODES; return true;
    case HTTP_ROUTE_NODES_SPAWN: *op = SERVICE_OP_SPAWN; return true;
    case HTTP_ROUTE_NODE_STOP: *op = SERVICE_OP_STOP; return true;
    case HTTP_ROUTE_NODE_RPC: *op = SERVICE_OP_RPC; return true;
    case HTTP_ROUTE_NODE_LOAD: *op = SERVICE_OP_LOAD; return true;
    case HTTP_ROUTE_OPENAPI: *op = SERVICE_OP_DESCRIBE; return true;
    case HTTP_ROUTE_STATUS_PAGE:
    case HTTP_ROUTE_NOT_FOUND: break;
    }
    return false;
}

static enum MHD_Result http_dispatch(http_request *req, const char *url, const char *method) {
    http_api *api = req->api;
    struct MHD_Connection *conn = req->conn;
    if (strcmp(method, "OPTIONS") == 0 &&
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin"))
        return http_preflight(req); /* the Origin passed http_admit */
    const http_route r = req->route;
    if (r.allow) return http_method_not_allowed(req, r.allow);
    /* Before any argument (body, query, Accept) is looked at: who may not run the operation at
     * all gets 403 whatever they sent; the operation authorizes its target itself. */
    service_op op;
    service_error e;
    if (http_op_of_route(r.kind, &op) &&
        service_authorize_op(api->svc, http_principal(req), op, &e) != SERVICE_OK)
        return http_fail(req, &e);
    enum MHD_Result ret;
    strbuf sb = {0};
    switch (r.kind) {
    case HTTP_ROUTE_HEALTHZ:
        strbuf_puts(&sb, "{\"status\":\"ok\"}");
        return http_send(req, MHD_HTTP_OK, "application/json", &sb);
    case HTTP_ROUTE_READYZ: {
        bool ready = service_health(api->svc, NULL, NULL);
        strbuf_printf(&sb, "{\"status\":\"%s\"}", ready ? "ready" : "not_ready");
        return http_send(req, ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
                         "application/json", &sb);
    }
    case HTTP_ROUTE_METRICS: {
        if (service_metrics_render(api->svc, http_principal(req), &sb, &e) != SERVICE_OK) {
            strbuf_free(&sb);
            return http_fail(req, &e);
        }
        return http_send(req, MHD_HTTP_OK, METRICS_CONTENT_TYPE, &sb);
    }
    case HTTP_ROUTE_CNODES: return http_list_cnodes(req);
    case HTTP_ROUTE_CNODE: return http_get_cnode(req, r.name);
    case HTTP_ROUTE_CNODE_RESTART: return http_restart_cnode(req, r.name);
    case HTTP_ROUTE_CNODE_STREAM:
        ret = http_call_begin(req, r.name, REQ_CALL, SERVICE_OP_STREAM);
        return req->have_response ? ret : http_call_stream_submit(req);
    case HTTP_ROUTE_CNODE_CALL:
        ret = http_call_begin(req, r.name, REQ_CALL, SERVICE_OP_CALL);
        return req->have_response ? ret : http_call_submit(req);
    case HTTP_ROUTE_CNODE_CAST:
        ret = http_call_begin(req, r.name, REQ_CAST, SERVICE_OP_CAST);
        return req->have_response ? ret : http_call_submit(req);
    case HTTP_ROUTE_EVENTS: return http_watch_begin(req);
    case HTTP_ROUTE_NODES: return http_list_nodes(req);
    case HTTP_ROUTE_NODES_SPAWN: return http_spawn_nodes(req);
    case HTTP_ROUTE_NODE_STOP: return http_stop_node(req, r.name);
    case HTTP_ROUTE_NODE_RPC: return http_rpc_begin(req, r.name);
    case HTTP_ROUTE_NODE_LOAD: return http_load_begin(req, r.name, r.module);
    case HTTP_ROUTE_STATUS_PAGE:
    case HTTP_ROUTE_OPENAPI: return http_send_asset(req, r.kind);
    case HTTP_ROUTE_NOT_FOUND: break;
    }
    return http_error(req, MHD_HTTP_NOT_FOUND, "not_found", "no route for %s %.200s", method, url);
}

/* ------------------------------------------------------------------------------------------ */
/* TLS */

/* MHD's certificate callback has no context pointer: the one HTTPS server of the process. */
static _Atomic(tls_creds *) http_tls_active;

/* Every handshake: the current certificate and key; a client certificate verified if sent. */
static int http_tls_verify(gnutls_session_t session) {
    return tls_creds_verify_peer(atomic_load(&http_tls_active), session) == 0 ? 0 : -1;
}

static int http_tls_retrieve(gnutls_session_t session, const gnutls_datum_t *req_ca_dn, int nreqs,
                             const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                             gnutls_pcert_st **pcert, unsigned int *pcert_length,
                             gnutls_privkey_t *key) {
    (void)req_ca_dn;
    (void)nreqs;
    (void)pk_algos;
    (void)pk_algos_length;
    tls_creds *t = atomic_load(&http_tls_active);
    if (!t) return -1;
    gnutls_session_set_verify_function(session, http_tls_verify);
    return tls_creds_retrieve(t, session, pcert, pcert_length, key);
}

/* The verified client certificate's identity on an HTTPS connection (none: out->present is
 * false). Handshakes with a certificate that does not verify fail, so any certificate here
 * chains to the client CA. */
static void http_peer_identity(struct MHD_Connection *conn, tls_peer *out) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    memset(out, 0, sizeof *out);
    if (ci && ci->tls_session) tls_session_peer((gnutls_session_t)ci->tls_session, out);
}

/* Debug line per request: who is calling (never any secret). */
static void http_log_peer(struct MHD_Connection *conn, const char *method, const char *url) {
    tls_peer peer;
    http_peer_identity(conn, &peer);
    if (peer.present)
        log_debug("http: %s %.200s: client certificate subject=\"%s\" sans=\"%s\"", method, url,
                  peer.subject, peer.sans);
    else
        log_debug("http: %s %.200s: no client certificate", method, url);
}

void http_api_drain(http_api *h) {
    if (!h || atomic_exchange(&h->draining, true)) return;
    MHD_socket fd = MHD_quiesce_daemon(h->daemon); /* no more accepts; connections go on */
    if (fd != MHD_INVALID_SOCKET) close(fd);
    log_info("http: %s no longer accepts connections", h->address);
}

int http_api_reload_tls(http_api *h, char *err, size_t err_len) {
    if (!h->tls) return 0;
    if (tls_creds_reload(h->tls, err, err_len) != 0) return -1;
    tls_creds_log(h->tls, "http.tls: new handshakes use");
    return 0;
}

/* Buffers a chunk of the body: over max_body_bytes it is discarded (413 at the end), and when
 * the body budget is full too (503 at the end). */
static void http_take_body(http_request *req, const char *data, size_t len) {
    http_api *api = req->api;
    if (req->body.len + len > api->cfg->max_body_bytes) {
        req->too_large = true;
    } else if (!http_limits_reserve(api->guard, len)) {
        req->over_budget = true;
        uint64_t n = http_limits_stats_get(api->guard).budget_refusals;
        if ((n & (n - 1)) == 0) /* the 1st, 2nd, 4th, ... */
            log_warn("http: http.body_budget_bytes (%zu) is full: a request gets 503 (%llu so far)",
                     api->cfg->http_body_budget_bytes, (unsigned long long)n);
    } else {
        req->reserved += len;
        if (strbuf_append(&req->body, data, len) == 0) return;
        req->too_large = true;
    }
    http_limits_release(api->guard, req->reserved);
    req->reserved = 0;
    strbuf_free(&req->body);
}

static void http_request_ids(http_request *req);

/* A request's state from its headers; only the fields before `call` are zeroed (see the
 * struct), the others are written here or before they are read. */
static http_request *http_request_new(http_api *api, struct MHD_Connection *conn,
                                      const char *method, const char *url) {
    http_request *req = NULL;
    pthread_mutex_lock(&api->spare_mu);
    if (api->spare_count) {
        req = api->spare[--api->spare_count];
        HTTP_SPARE_UNPOISON(req);
    }
    pthread_mutex_unlock(&api->spare_mu);
    if (!req && !(req = malloc(sizeof *req))) return NULL;
    memset(req, 0, offsetof(http_request, call));
    req->api = api;
    req->conn = conn;
    atomic_init(&req->done, false);
    call_init(&req->call);
    req->refused.status = SERVICE_OK;
    req->target[0] = req->module[0] = req->function[0] = '\0';
    req->started_us = dist_now_us();
    strbuf_copy_str(req->method, sizeof req->method, method);
    http_route_match(method, url, &req->route);
    http_request_ids(req);
    return req;
}

static enum MHD_Result http_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls) {
    (void)version;
    http_api *api = cls;
    http_request *req = *con_cls;
    if (!req) {
        /* First call: headers only. Responses wait for the next call (a response queued now
         * would close the connection), except a body we already know is too large. */
        req = http_request_new(api, conn, method, url);
        if (!req) return MHD_NO;
        *con_cls = req;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        req->guarded = ci ? ci->socket_context : NULL;
        http_limits_headers_in(api->guard, req->guarded, http_now_ms());
        if (api->tls && log_enabled(LOG_DEBUG)) http_log_peer(conn, method, url);
        enum MHD_Result refused;
        if (!http_admit(req, url, &refused)) {
            req->have_response = true;
            return refused;
        }
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > api->cfg->max_body_bytes) {
            req->have_response = true;
            return http_error(req, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
                              "request body of %s bytes is over the limit of %zu", cl,
                              api->cfg->max_body_bytes);
        }
        return MHD_YES;
    }
    if (req->have_response) {
        *upload_data_size = 0; /* discard the rest of a body already answered */
        return MHD_YES;
    }
    if (*upload_data_size) {
        req->bytes_in += *upload_data_size;
        if (!req->too_large && !req->over_budget)
            http_take_body(req, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->submitted) {
        if (!atomic_load(&req->done)) return MHD_YES; /* not our wake-up yet */
        req->have_response = true;
        return http_call_response(req);
    }
    /* The whole request is in. */
    http_limits_body_in(req->guarded);
    if (req->over_budget) {
        req->have_response = true;
        return http_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "busy",
                          "request bodies held at once are over http.body_budget_bytes (%zu)",
                          api->cfg->http_body_budget_bytes);
    }
    enum MHD_Result r = http_dispatch(req, url, method);
    if (!req->submitted) req->have_response = true;
    return r;
}

/* The request's correlation from its headers: X-Request-Id, traceparent, tracestate. */
static void http_request_ids(http_request *req) {
    const char *v[3];
    size_t n[3] = {0, 0, 0};
    static const char *const keys[3] = {"X-Request-Id", "traceparent", "tracestate"};
    for (int i = 0; i < 3; i++)
        if (MHD_lookup_connection_value_n(req->conn, MHD_HEADER_KIND, keys[i], strlen(keys[i]),
                                          &v[i], &n[i]) != MHD_YES)
            v[i] = NULL;
    access_ids_from(&req->ids, v[0], n[0], v[1], n[1], v[2], n[2]);
}

/* Counts the request (and logs it with log.access): its route, status, size and duration. */
static void http_account(http_request *req, enum MHD_RequestTerminationCode toe) {
    http_api *api = req->api;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_HTTP_STATUS);
    unsigned status = ci ? ci->http_status : 0;
    if (!status ||
        (status == MHD_HTTP_OK && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK &&
         req->route.kind != HTTP_ROUTE_EVENTS && req->route.kind != HTTP_ROUTE_CNODE_STREAM))
        status = 499; /* the client left before the answer was out (nginx's code) */
    metrics_requests_count(api->requests, req->route.kind, status);
    if (!api->cfg->log_access) return;
    char peer[INET6_ADDRSTRLEN + 8] = "";
    const union MHD_ConnectionInfo *ai =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ai && ai->client_addr) {
        const struct sockaddr *sa = ai->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, peer, sizeof peer);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, peer, sizeof peer);
    }
    access_entry e = {
        .transport = "http",
        .method = req->method,
        .route = http_route_name(req->route.kind),
        .target = req->route.name,
        .status = status,
        .code = req->error_code,
        .duration_us = dist_now_us() - req->started_us,
        .bytes_in = req->bytes_in,
        .bytes_out = req->bytes_out,
        .peer = peer,
        .principal = req->principal ? req->principal->name : NULL,
        .ids = &req->ids,
    };
    access_log(&e);
}

static void http_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                           enum MHD_RequestTerminationCode toe) {
    (void)conn;
    http_request *req = *con_cls;
    if (!req) return;
    http_api *api = cls;
    http_account(req, toe);
    http_limits_release(api->guard, req->reserved);
    http_limits_request_done(api->guard, req->guarded, http_now_ms());
    strbuf_free(&req->body);
    strbuf_free(&req->spawned);
    call_clear(&req->call);
    *con_cls = NULL;
    pthread_mutex_lock(&api->spare_mu);
    if (api->spare_count < HTTP_SPARE_REQUESTS) {
        HTTP_SPARE_POISON(req);
        api->spare[api->spare_count++] = req;
        req = NULL;
    }
    pthread_mutex_unlock(&api->spare_mu);
    free(req);
}

/* A connection opens or closes: its deadlines are tracked from its first byte to its close. */
static void http_connection_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                                   enum MHD_ConnectionNotificationCode code) {
    http_api *api = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        *socket_context = ci ? http_limits_open(api->guard, ci->connect_fd, http_now_ms()) : NULL;
    } else { /* MHD_CONNECTION_NOTIFY_CLOSED comes before MHD closes the fd */
        http_limits_close(api->guard, *socket_context);
        *socket_context = NULL;
    }
}

/* ------------------------------------------------------------------------------------------ */

/* "host:port" or "[v6]:port" into a socket address; host printed back into `host`. */
static int http_parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *len,
                             char *host, size_t host_len, char *err, size_t err_len) {
    const char *colon = strrchr(listen, ':');
    size_t hlen = colon ? (size_t)(colon - listen) : 0;
    const char *h = listen;
    if (hlen >= 2 && listen[0] == '[' && listen[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    char *end;
    unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;
    if (!colon || !hlen || hlen >= host_len || !colon[1] || *end || port > 65535) {
        snprintf(err, err_len, "http.listen %s: expected HOST:PORT", listen);
        return -1;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *sa4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sa6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &sa4->sin_addr) == 1) {
        sa4->sin_family = AF_INET;
        sa4->sin_port = htons((uint16_t)port);
        *len = sizeof *sa4;
    } else if (inet_pton(AF_INET6, host, &sa6->sin6_addr) == 1) {
        sa6->sin6_family = AF_INET6;
        sa6->sin6_port = htons((uint16_t)port);
        *len = sizeof *sa6;
    } else {
        snprintf(err, err_len, "http.listen %s: the host must be an IPv4 or IPv6 address", listen);
        return -1;
    }
    return 0;
}

/* libmicrohttpd's own messages (mostly clients that went away) are debug-level noise. */
static void http_mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    log_debug("http: %s", msg);
}

/* Loop mode: MHD's epoll fd is readable (gateway loop thread). */
static void http_on_readable(void *ctx) {
    http_api *h = ctx;
    atomic_store(&h->run_due, true);
}

/* Loop mode: once per loop iteration, serve what is due; returns how long the loop may sleep. */
static int http_iteration(void *ctx) {
    http_api *h = ctx;
    if (atomic_exchange(&h->run_due, false)) MHD_run(h->daemon);
    /* Connections resumed inside that run (refused calls) need another one: MHD_get_timeout
     * does not count them and its epoll fd does not turn readable for them. */
    if (atomic_load(&h->run_due)) return 0;
    MHD_UNSIGNED_LONG_LONG ms;
    if (MHD_get_timeout(h->daemon, &ms) != MHD_YES) return -1;
    if (ms == 0) atomic_store(&h->run_due, true);
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* Frees a server that did not start (or has stopped). */
static void http_api_discard(http_api *h) {
    http_limits_free(h->guard);
    if (h->tls) {
        atomic_store(&http_tls_active, NULL);
        tls_creds_free(h->tls);
    }
    pthread_mutex_destroy(&h->watch_mu);
    while (h->spare_count) {
        http_request *req = h->spare[--h->spare_count];
        HTTP_SPARE_UNPOISON(req);
        free(req);
    }
    pthread_mutex_destroy(&h->spare_mu);
    free(h);
}

/* Reads the certificate files; the one HTTPS server of the process. */
static int http_api_tls_start(http_api *h, char *err, size_t err_len) {
    tls_creds *t = tls_creds_load(&h->cfg->http_tls, err, err_len);
    if (!t) return -1;
    tls_creds *none = NULL;
    if (!atomic_compare_exchange_strong(&http_tls_active, &none, t)) {
        snprintf(err, err_len, "http.tls: another HTTPS server runs in this process");
        tls_creds_free(t);
        return -1;
    }
    h->tls = t;
    tls_creds_log(t, "http.tls: certificate");
    return 0;
}

http_api *http_api_start(const config *cfg, gateway *gw, service *svc, char *err, size_t err_len) {
    http_api *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    *h = (http_api){.cfg = cfg,
                    .gw = gw,
                    .svc = svc,
                    .limits = *service_limits(svc),
                    .loopback = config_listen_is_loopback(cfg->http_listen)};
    pthread_mutex_init(&h->watch_mu, NULL);
    pthread_mutex_init(&h->spare_mu, NULL);
    atomic_init(&h->stopping, false);
    h->guard = http_limits_new(cfg->http_header_timeout_ms, cfg->http_body_timeout_ms,
                               cfg->http_body_budget_bytes);
    h->requests = metrics_add_requests(service_metrics(svc), "nodex_http_requests_total",
                                       "HTTP requests answered, by route and status.", "route",
                                       "status", http_route_names, HTTP_ROUTE_COUNT, 599);
    if (!h->guard || !h->requests) {
        snprintf(err, err_len, "out of memory");
        http_api_discard(h);
        return NULL;
    }
    if (cfg->http_tls.enabled && http_api_tls_start(h, err, err_len) != 0) {
        http_api_discard(h);
        return NULL;
    }
    struct sockaddr_storage ss;
    socklen_t sslen;
    char host[INET6_ADDRSTRLEN + 2];
    if (http_parse_listen(cfg->http_listen, &ss, &sslen, host, sizeof host, err, err_len) != 0) {
        http_api_discard(h);
        return NULL;
    }
    bool v6 = ss.ss_family == AF_INET6;
    unsigned port =
        ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    h->on_loop = cfg->http_threads == 0;
    unsigned flags = (h->on_loop ? 0 : MHD_USE_INTERNAL_POLLING_THREAD) | MHD_USE_EPOLL |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0) |
                     (h->tls ? MHD_USE_TLS : 0);
    /* The pool option only for a pool (MHD warns about a zero size). */
    struct MHD_OptionItem pool[] = {
        {h->on_loop ? MHD_OPTION_END : MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)cfg->http_threads,
         NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    /* HTTPS: the certificate of each handshake comes from the callback (reloadable). */
    struct MHD_OptionItem tls[] = {
        {h->tls ? MHD_OPTION_HTTPS_CERT_CALLBACK : MHD_OPTION_END, 0, (void *)http_tls_retrieve},
        {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)TLS_PRIORITIES},
        {MHD_OPTION_END, 0, NULL},
    };
    h->daemon = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, http_handler, h, MHD_OPTION_EXTERNAL_LOGGER,
        http_mhd_log, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_ARRAY, pool,
        MHD_OPTION_ARRAY, tls, MHD_OPTION_NOTIFY_COMPLETED, http_completed, h,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->http_connection_timeout_s,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)cfg->http_max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)cfg->http_max_connections_per_ip, MHD_OPTION_NOTIFY_CONNECTION,
        http_connection_notify, h,
        /* MHD clears each connection's pool for every keep-alive request: 16 KiB (headers up
         * to ~8 KiB) instead of the default 32 KiB halves that cost per request. */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384, MHD_OPTION_END);
    if (!h->daemon) {
        snprintf(err, err_len, "cannot listen for HTTP on %s: %s", cfg->http_listen,
                 strerror(errno));
        http_api_discard(h);
        return NULL;
    }
    if (h->on_loop) {
        const union MHD_DaemonInfo *ep = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_EPOLL_FD);
        if (!ep || gateway_watch_fd(gw, ep->epoll_fd, http_on_readable, h) != 0) {
            snprintf(err, err_len, "cannot run HTTP on the event loop");
            MHD_stop_daemon(h->daemon);
            http_api_discard(h);
            return NULL;
        }
        gateway_set_iteration_hook(gw, http_iteration, h);
        atomic_store(&h->run_due, true);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(h->address, sizeof h->address, v6 ? "[%s]:%u" : "%s:%u", host,
             info ? (unsigned)info->port : port);
    if (pthread_create(&h->janitor, NULL, http_janitor_main, h) == 0)
        h->janitor_started = true;
    else
        log_warn("no janitor thread: watch streams of gone clients linger until shutdown");
    return h;
}

void http_api_stop(http_api *h) {
    if (!h) return;
    atomic_store(&h->stopping, true);
    if (h->janitor_started) pthread_join(h->janitor, NULL);
    /* No connection may stay suspended into MHD_stop_daemon: end every watch stream. */
    pthread_mutex_lock(&h->watch_mu);
    for (http_watch *w = h->watches; w; w = w->next) {
        service_unwatch(h->svc, w->subscription);
        w->subscription = 0;
        http_stream_end(w->stream);
    }
    pthread_mutex_unlock(&h->watch_mu);
    if (h->on_loop) {
        /* Nobody drives MHD any more: let resumed connections send their last answers. */
        int epfd = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_EPOLL_FD)->epoll_fd;
        for (int i = 0; i < 50; i++) {
            atomic_store(&h->run_due, false);
            MHD_run(h->daemon);
            MHD_UNSIGNED_LONG_LONG ms;
            if (atomic_load(&h->run_due) || (MHD_get_timeout(h->daemon, &ms) == MHD_YES && ms == 0))
                continue; /* more to serve at once */
            struct pollfd pfd = {.fd = epfd, .events = POLLIN};
            if (poll(&pfd, 1, 10) == 0) break;
        }
    }
    MHD_stop_daemon(h->daemon);
    while (h->watches) {
        http_watch *w = h->watches;
        h->watches = w->next;
        http_watch_free(h, w);
    }
    http_api_discard(h);
}

const char *http_api_address(const http_api *h) {
    return h->address;
}
