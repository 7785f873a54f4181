/* grpc_api: the gRPC front end (gRPC C core): service nodex.v1.Gateway, async calls and streams. */
#include "grpc_api.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "access.h"
#include "auth.h"
#include "grpc_health.h"
#include "grpc_reflection.h"
#include "log.h"
#include "metrics.h"
#include "service.h"
#include "term_common.h"
#include "term_pb.h"
#include "tls.h"

/* The methods of nodex.v1.Gateway, from one list: id, name, request message, handler, the
 * operation it runs (authorized before its message is decoded). Every method takes one request
 * message (unary or server-streaming). */
#define GRPC_METHODS(X)                                                                            \
    X(M_CALL, "Call", nodex__v1__call_request, m_call, SERVICE_OP_CALL)                            \
    X(M_CALL_STREAM, "CallStream", nodex__v1__call_request, m_call_stream, SERVICE_OP_STREAM)      \
    X(M_CAST, "Cast", nodex__v1__cast_request, m_cast, SERVICE_OP_CAST)                            \
    X(M_LIST_CNODES, "ListCnodes", nodex__v1__list_cnodes_request, m_list_cnodes,                  \
      SERVICE_OP_LIST_CNODES)                                                                      \
    X(M_GET_CNODE, "GetCnode", nodex__v1__get_cnode_request, m_get_cnode, SERVICE_OP_GET_CNODE)    \
    X(M_WATCH, "Watch", nodex__v1__watch_request, m_watch, SERVICE_OP_WATCH)                       \
    X(M_RPC, "Rpc", nodex__v1__rpc_request, m_rpc, SERVICE_OP_RPC)                                 \
    X(M_LIST_NODES, "ListNodes", nodex__v1__list_nodes_request, m_list_nodes,                      \
      SERVICE_OP_LIST_NODES)                                                                       \
    X(M_SPAWN_NODES, "SpawnNodes", nodex__v1__spawn_nodes_request, m_spawn_nodes,                  \
      SERVICE_OP_SPAWN)                                                                            \
    X(M_STOP_NODE, "StopNode", nodex__v1__stop_node_request, m_stop_node, SERVICE_OP_STOP)         \
    X(M_RESTART_CNODE, "RestartCnode", nodex__v1__restart_cnode_request, m_restart_cnode,          \
      SERVICE_OP_RESTART)                                                                          \
    X(M_LOAD_MODULE, "LoadModule", nodex__v1__load_module_request, m_load_module, SERVICE_OP_LOAD) \
    X(M_HEALTH, "Health", nodex__v1__health_request, m_health, SERVICE_OP_HEALTH)

/* The standard services nodexd serves beside it (grpc.health.v1.Health, server reflection v1
 * and v1alpha, whose messages are the same on the wire): id, full path, request message,
 * handler, whether the client streams requests (the handler then reads them itself), the
 * operation. */
#define GRPC_STD_METHODS(X)                                                                        \
    X(M_HEALTH_CHECK, "/grpc.health.v1.Health/Check", grpc__health__v1__health_check_request,      \
      m_health_check, false, SERVICE_OP_HEALTH)                                                    \
    X(M_HEALTH_WATCH, "/grpc.health.v1.Health/Watch", grpc__health__v1__health_check_request,      \
      m_health_watch, false, SERVICE_OP_HEALTH)                                                    \
    X(M_REFLECTION, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",                   \
      grpc__reflection__v1__server_reflection_request, m_reflection, true, SERVICE_OP_REFLECTION)  \
    X(M_REFLECTION_V1ALPHA, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",      \
      grpc__reflection__v1__server_reflection_request, m_reflection, true, SERVICE_OP_REFLECTION)

enum {
#define X(id, name, msg, fn, ...) id,
    GRPC_METHODS(X) GRPC_STD_METHODS(X)
#undef X
        M_COUNT,
    M_UNREGISTERED = -1
};

#define GRPC_SERVICE_PREFIX      "/nodex.v1.Gateway/"
#define GRPC_REQUESTS_PER_METHOD 4    /* request slots posted per method (and for unknown ones) */
#define GRPC_MSG_OVERHEAD        256u /* bytes a queued message costs beyond its payload */
#define GRPC_STOP_GRACE_MS       1000 /* how long grpc_api_stop lets answers go out */
#define GRPC_THREAD_STACK        (8u << 20)
#define GRPC_REQUEST_ID_KEY      "x-request-id" /* echoed in the initial metadata */

/* ThreadSanitizer does not see the synchronization inside gRPC core (Debian's libgrpc is not
 * instrumented): a tag handed to gRPC on one thread comes back from grpc_completion_queue_next
 * on another, and everything written before the hand-off looked unordered with what the cq
 * thread reads after it. The hand-off is told to it as a release on the tag, the return as an
 * acquire (nothing in other builds). */
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define GTAG_HANDOFF(t)  __tsan_release(t)
#define GTAG_RETURNED(t) __tsan_acquire(t)
#else
#define GTAG_HANDOFF(t)  ((void)(t))
#define GTAG_RETURNED(t) ((void)(t))
#endif

#define container_of(p, type, member) ((type *)(void *)((char *)(p)-offsetof(type, member)))

/* A completion-queue tag: what to do when its operation completes (on a cq thread). */
typedef struct gtag {
    void (*fn)(struct gtag *tag, bool ok);
} gtag;

/* One outgoing message. */
typedef struct gmsg {
    struct gmsg *next;
    grpc_byte_buffer *bb;
    size_t bytes; /* what it holds: payload and GRPC_MSG_OVERHEAD */
} gmsg;

typedef struct gqueue {
    gmsg *head, *tail;
    size_t count;
    size_t bytes; /* sum of the messages' bytes */
} gqueue;

typedef struct gcall gcall;

struct grpc_api {
    const config *cfg;
    gateway *gw;
    service *svc; /* every operation goes through it */
    term_limits limits;
    unsigned wire_depth; /* message nesting a request may have (term_pb_check_depth) */
    grpc_server *server;
    grpc_completion_queue *cq;
    void *methods[M_COUNT];
    grpc_reflection *reflection; /* the build's descriptors */
    pthread_t *threads;
    unsigned thread_count;
    char address[160];
    atomic_bool stopping;
    atomic_bool drained; /* grpc_api_drain asked gRPC to shut down (no new calls) */
    gtag shutdown_tag;
    /* guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* live_count dropped, or the server shutdown completed */
    gcall *live;       /* every call being served */
    size_t live_count;
    bool shutdown_done;
    /* grpc.tls: the fetcher hands gRPC a new certificate config when the generation moved */
    tls_creds *tls;
    atomic_uint_least64_t tls_served;       /* generation gRPC has */
    metrics_requests *requests;             /* nodex_grpc_requests_total */
    const char *method_labels[M_COUNT + 1]; /* its method label values (method_label) */
};

/* One gRPC call being served. Reference-counted: one reference per outstanding tag, one while
 * a gateway callback (on_done, events, spawn) may still run, one for the handler running. */
struct gcall {
    grpc_api *api;
    int method;
    bool listed; /* on api->live */
    /* filled by gRPC when req_tag completes */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details; /* unregistered methods only */
    grpc_byte_buffer *payload;
    gtag req_tag, close_tag, send_tag, recv_tag; /* recv_tag: streamed requests */
    atomic_uint refs;
    gcall *live_prev, *live_next; /* api->live, under api->mu */
    /* guarded by mu */
    pthread_mutex_t mu;
    int cancelled;  /* written by gRPC, valid once close_tag completed */
    bool closed;    /* close_tag completed */
    bool dead;      /* cancelled, or a send failed: nothing more goes out */
    bool send_busy; /* a send batch is outstanding (one at a time per call) */
    bool md_sent, md_wanted, finishing, status_sent, has_details;
    bool holding; /* Watch: events go to `held` */
    grpc_status_code status;
    grpc_slice status_details;
    grpc_byte_buffer *sending;
    size_t sending_bytes; /* of `sending`: handed to grpc_call_start_batch, not yet completed */
    gqueue out;
    gqueue held; /* Watch: events that arrived while the current states were being read */
    grpc_metadata reply_md[1];
    size_t reply_md_count;
    uint64_t sub_id;                    /* Watch subscription */
    grpc_health_watch *health;          /* grpc.health.v1 Watch */
    const service_principal *principal; /* who sent it; NULL for Health */
    bool as_etf;
    unsigned timeout_ms;
    /* for the access log and metrics */
    int64_t started_us; /* monotonic, when the call arrived */
    uint64_t bytes_in;  /* request message bytes */
    uint64_t bytes_out; /* reply message bytes queued */
    /* --- not zeroed by gcall_new (3.2 of its 4.1 KiB): each is written before it is read --- */
    call gc;          /* the gateway call (Call, CallStream, Rpc, LoadModule): call_init */
    char target[256]; /* C-node or node name, for messages (empty until set) */
    char module[256]; /* LoadModule, for messages (empty until set) */
    access_ids ids; /* x-request-id (echoed or made, sent back) and the trace context: on_request */
};

typedef void (*method_fn)(gcall *g, const ProtobufCMessage *req);
#define X(id, name, msg, fn, ...) static void fn(gcall *g, const ProtobufCMessage *req);
GRPC_METHODS(X)
GRPC_STD_METHODS(X)
#undef X

static const struct {
    const char *path;
    const ProtobufCMessageDescriptor *request;
    method_fn handler;
    bool streaming; /* requests come as a stream: no request message at the start */
    service_op op;
} grpc_methods[M_COUNT] = {
#define X(id, name, msg, fn, op)                                                                   \
    [id] = {GRPC_SERVICE_PREFIX name, &msg##__descriptor, fn, false, op},
    GRPC_METHODS(X)
#undef X
#define X(id, path, msg, fn, streaming, op) [id] = {path, &msg##__descriptor, fn, streaming, op},
        GRPC_STD_METHODS(X)
#undef X
};

_Static_assert(CNODE_STARTING + 1 == NODEX__V1__STATE__STARTING &&
                   CNODE_STOPPED + 1 == NODEX__V1__STATE__STOPPED,
               "cnode_state and nodex.v1.State must keep the same order");

static Nodex__V1__State state_pb(cnode_state s) {
    return (Nodex__V1__State)(s + 1);
}

static const char *method_name(const gcall *g) {
    if (g->method < 0) return "?";
    const char *path = grpc_methods[g->method].path;
    size_t n = strlen(GRPC_SERVICE_PREFIX);
    return strncmp(path, GRPC_SERVICE_PREFIX, n) == 0 ? path + n : path;
}

/* Probes (health) are answered without authentication, as service_op_is_probe says. */
static bool method_is_probe(int method) {
    return (method == M_HEALTH || method == M_HEALTH_CHECK || method == M_HEALTH_WATCH) &&
           service_op_is_probe(SERVICE_OP_HEALTH);
}

/* Metrics' method label of a method (its full path), or "unimplemented" for any other. */
static const char *method_label(int method) {
    return method >= 0 && method < M_COUNT ? grpc_methods[method].path : "unimplemented";
}

/* The canonical name of a status code ("UNAVAILABLE"). */
static const char *grpc_status_name(grpc_status_code code) {
    static const char *const names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    return (unsigned)code < sizeof names / sizeof names[0] ? names[code] : "UNKNOWN";
}

/* ------------------------------------------------------------------------------------------ */
/* Call lifetime */

static void on_request(gtag *t, bool ok);
static void on_close(gtag *t, bool ok);
static void on_sent(gtag *t, bool ok);
static void on_recv(gtag *t, bool ok);
static ProtobufCMessage *gcall_decode(gcall *g, grpc_byte_buffer *bb);

/* A request slot's call; only the fields before `gc` are zeroed (see the struct). */
static gcall *gcall_new(grpc_api *api, int method) {
    gcall *g = malloc(sizeof *g);
    if (!g) return NULL;
    memset(g, 0, offsetof(gcall, gc));
    call_init(&g->gc);
    g->target[0] = g->module[0] = '\0';
    g->api = api;
    g->method = method;
    atomic_init(&g->refs, 1);
    pthread_mutex_init(&g->mu, NULL);
    grpc_metadata_array_init(&g->md);
    grpc_call_details_init(&g->details);
    g->req_tag.fn = on_request;
    g->close_tag.fn = on_close;
    g->send_tag.fn = on_sent;
    g->recv_tag.fn = on_recv;
    return g;
}

static void gqueue_push(gqueue *q, gmsg *m) {
    m->next = NULL;
    if (q->tail)
        q->tail->next = m;
    else
        q->head = m;
    q->tail = m;
    q->count++;
    q->bytes += m->bytes;
}

static gmsg *gqueue_pop(gqueue *q) {
    gmsg *m = q->head;
    if (!m) return NULL;
    q->head = m->next;
    if (!q->head) q->tail = NULL;
    q->count--;
    q->bytes -= m->bytes;
    return m;
}

static void gqueue_clear(gqueue *q) {
    gmsg *m;
    while ((m = gqueue_pop(q))) {
        grpc_byte_buffer_destroy(m->bb);
        free(m);
    }
}

/* Counts the finished call (and logs it with log.access): method, status, sizes, duration. */
static void gcall_account(gcall *g) {
    grpc_api *api = g->api;
    grpc_status_code code = g->status_sent ? g->status : GRPC_STATUS_CANCELLED;
    size_t label = g->method >= 0 ? (size_t)g->method : M_COUNT;
    metrics_requests_count(api->requests, label, (unsigned)code);
    if (!api->cfg->log_access) return;
    char *peer = grpc_call_get_peer(g->call);
    char method[256];
    if (g->method >= 0) {
        snprintf(method, sizeof method, "%s", grpc_methods[g->method].path);
    } else {
        char *m = grpc_slice_to_c_string(g->details.method);
        snprintf(method, sizeof method, "%s", m);
        gpr_free(m);
    }
    access_entry e = {
        .transport = "grpc",
        .method = method,
        .route = method_label(g->method),
        .target = g->target,
        .status = (unsigned)code,
        .code = code == GRPC_STATUS_OK ? NULL : grpc_status_name(code),
        .duration_us = dist_now_us() - g->started_us,
        .bytes_in = g->bytes_in,
        .bytes_out = g->bytes_out,
        .peer = peer,
        .principal = g->principal ? g->principal->name : NULL,
        .ids = &g->ids,
    };
    access_log(&e);
    gpr_free(peer);
}

static void gcall_free(gcall *g) {
    grpc_api *api = g->api;
    if (g->call) gcall_account(g);
    if (g->listed) {
        pthread_mutex_lock(&api->mu);
        if (g->live_prev)
            g->live_prev->live_next = g->live_next;
        else
            api->live = g->live_next;
        if (g->live_next) g->live_next->live_prev = g->live_prev;
        api->live_count--;
        pthread_cond_broadcast(&api->cv);
        pthread_mutex_unlock(&api->mu);
    }
    gqueue_clear(&g->out);
    gqueue_clear(&g->held);
    if (g->sending) grpc_byte_buffer_destroy(g->sending);
    if (g->has_details) grpc_slice_unref(g->status_details);
    if (g->payload) grpc_byte_buffer_destroy(g->payload);
    grpc_metadata_array_destroy(&g->md);
    grpc_call_details_destroy(&g->details);
    if (g->call) grpc_call_unref(g->call);
    call_clear(&g->gc);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

static void gcall_ref(gcall *g) {
    atomic_fetch_add(&g->refs, 1);
}

/* Takes a reference unless the call is already being freed. */
static bool gcall_ref_live(gcall *g) {
    unsigned n = atomic_load(&g->refs);
    while (n)
        if (atomic_compare_exchange_weak(&g->refs, &n, n + 1)) return true;
    return false;
}

static void gcall_unref(gcall *g) {
    if (atomic_fetch_sub(&g->refs, 1) == 1) gcall_free(g);
}

/* The first request metadata entry named `key` (lower-case), or NULL. */
static const grpc_metadata *gcall_metadata_entry(const gcall *g, const char *key) {
    size_t kl = strlen(key);
    for (size_t i = 0; i < g->md.count; i++) {
        const grpc_metadata *m = &g->md.metadata[i];
        if (GRPC_SLICE_LENGTH(m->key) == kl && memcmp(GRPC_SLICE_START_PTR(m->key), key, kl) == 0)
            return m;
    }
    return NULL;
}

/* The first value of request metadata `key` (lower-case) with its length, or NULL: for logging
 * and later authentication. Valid while the call lives. */
static const char *gcall_metadata(const gcall *g, const char *key, size_t *len) {
    const grpc_metadata *m = gcall_metadata_entry(g, key);
    if (!m) return NULL;
    *len = GRPC_SLICE_LENGTH(m->value);
    return (const char *)GRPC_SLICE_START_PTR(m->value);
}

/* ------------------------------------------------------------------------------------------ */
/* Sending: one batch at a time per call, all under g->mu */

static void gcall_pump_locked(gcall *g) {
    if (g->send_busy || g->status_sent || g->dead) return;
    bool finish_now = g->finishing && g->out.count <= 1;
    if (!g->out.head && !g->finishing && !(g->md_wanted && !g->md_sent)) return;
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!g->md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[n].data.send_initial_metadata.count = g->reply_md_count;
        ops[n].data.send_initial_metadata.metadata = g->reply_md_count ? g->reply_md : NULL;
        n++;
        g->md_sent = true;
    }
    gmsg *m = gqueue_pop(&g->out);
    if (m) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = m->bb;
        g->sending = m->bb;
        g->sending_bytes = m->bytes;
        free(m);
        n++;
    }
    if (finish_now) {
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = g->status;
        ops[n].data.send_status_from_server.status_details =
            g->has_details ? &g->status_details : NULL;
        n++;
        g->status_sent = true;
    }
    g->send_busy = true;
    gcall_ref(g);
    GTAG_HANDOFF(&g->send_tag);
    grpc_call_error e = grpc_call_start_batch(g->call, ops, n, &g->send_tag, NULL);
    if (e != GRPC_CALL_OK) {
        log_warn("grpc %s: start_batch failed (%d)", method_name(g), (int)e);
        g->send_busy = false;
        g->dead = true;
        if (g->sending) grpc_byte_buffer_destroy(g->sending);
        g->sending = NULL;
        g->sending_bytes = 0;
        gqueue_clear(&g->out);
        atomic_fetch_sub(&g->refs, 1); /* never the last one: our caller holds one */
    }
}

/* Ends the call with `code` once the queued messages are out. Later answers are ignored. */
static void gcall_finish_locked(gcall *g, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void gcall_finish_locked(gcall *g, grpc_status_code code, const char *fmt, ...) {
    if (g->finishing || g->dead) return;
    g->finishing = true;
    g->status = code;
    if (fmt) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        g->status_details = grpc_slice_from_copied_string(msg);
        g->has_details = true;
        log_debug("grpc %s: status %d: %s", method_name(g), (int)code, msg);
    }
    gcall_pump_locked(g);
}

/* Bytes the call holds for its client: queued, and the message gRPC has not finished sending. */
static size_t gcall_pending_locked(const gcall *g) {
    return g->out.bytes + g->held.bytes + g->sending_bytes;
}

/* The client stopped reading: cancel the call with RESOURCE_EXHAUSTED now. A status queued
 * behind the unsent messages would wait for the client to read them; a cancel sends trailers
 * and RST_STREAM, which flow control does not hold back. Nothing more goes out; on_close
 * cancels the gateway call behind it. Counted once per call (nodex_stream_cuts_total). */
static void gcall_cut_locked(gcall *g, size_t pending, size_t cap) {
    g->dead = true;
    gqueue_clear(&g->out);
    gqueue_clear(&g->held);
    unsigned long long cuts =
        metrics_stream_cut(service_metrics(g->api->svc), METRICS_GRPC, METRICS_CUT_UNREAD_BYTES);
    char msg[160];
    snprintf(msg, sizeof msg,
             "the client left over %zu bytes unread (grpc.max_stream_pending_bytes): the stream "
             "was cut off",
             cap);
    log_warn("grpc %s: stream cut off: its client left %zu bytes unread, over %zu (%llu so far)",
             method_name(g), pending, cap, cuts);
    grpc_call_cancel_with_status(g->call, GRPC_STATUS_RESOURCE_EXHAUSTED, msg, NULL);
}

/* Packs `msg` and queues it on `q` (g->out or g->held) without sending; a message over
 * grpc.max_message_bytes ends the call with RESOURCE_EXHAUSTED, and one that would take what
 * the call holds for its client past grpc.max_stream_pending_bytes cuts it off (a single larger
 * message still goes when nothing else waits). Returns 0 when queued. */
static int gcall_queue_locked(gcall *g, const ProtobufCMessage *msg, gqueue *q) {
    if (g->finishing || g->dead) return -1;
    size_t max = g->api->cfg->grpc_max_message_bytes;
    size_t n = protobuf_c_message_get_packed_size(msg);
    g->bytes_out += n;
    if (n > max) {
        gcall_finish_locked(g, GRPC_STATUS_RESOURCE_EXHAUSTED,
                            "reply of %zu bytes is over grpc.max_message_bytes (%zu)", n, max);
        return -1;
    }
    size_t pending = gcall_pending_locked(g), cap = g->api->cfg->grpc_max_stream_pending_bytes;
    if (pending && pending + n + GRPC_MSG_OVERHEAD > cap) {
        gcall_cut_locked(g, pending + n + GRPC_MSG_OVERHEAD, cap);
        return -1;
    }
    uint8_t *buf = malloc(n ? n : 1);
    gmsg *m = malloc(sizeof *m);
    if (!buf || !m) {
        free(buf);
        free(m);
        gcall_finish_locked(g, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    protobuf_c_message_pack(msg, buf);
    grpc_slice s = grpc_slice_new(buf, n, free); /* the slice owns buf from here */
    m->bb = grpc_raw_byte_buffer_create(&s, 1);
    m->bytes = n + GRPC_MSG_OVERHEAD;
    grpc_slice_unref(s);
    gqueue_push(q, m);
    return 0;
}

/* Queues `msg` on `q` and sends what g->out holds. */
static void gcall_send_locked(gcall *g, const ProtobufCMessage *msg, gqueue *q) {
    if (gcall_queue_locked(g, msg, q) == 0 && q == &g->out) gcall_pump_locked(g);
}

/* A unary answer: metadata, `msg` and OK in one batch when nothing else is being sent. */
static void gcall_reply_locked(gcall *g, const ProtobufCMessage *msg) {
    if (gcall_queue_locked(g, msg, &g->out) == 0) gcall_finish_locked(g, GRPC_STATUS_OK, NULL);
}

static void gcall_reply(gcall *g, const ProtobufCMessage *msg) {
    pthread_mutex_lock(&g->mu);
    gcall_reply_locked(g, msg);
    pthread_mutex_unlock(&g->mu);
}

static void gcall_fail(gcall *g, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void gcall_fail(gcall *g, grpc_status_code code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&g->mu);
    gcall_finish_locked(g, code, "%s", msg);
    pthread_mutex_unlock(&g->mu);
}

static void on_sent(gtag *t, bool ok) {
    gcall *g = container_of(t, gcall, send_tag);
    pthread_mutex_lock(&g->mu);
    g->send_busy = false;
    if (g->sending) grpc_byte_buffer_destroy(g->sending);
    g->sending = NULL;
    g->sending_bytes = 0;
    if (!ok) {
        g->dead = true;
        gqueue_clear(&g->out);
        gqueue_clear(&g->held);
    } else {
        gcall_pump_locked(g);
    }
    pthread_mutex_unlock(&g->mu);
    gcall_unref(g);
}

/* RECV_CLOSE_ON_SERVER completed: the call is over (cancelled by the client, its deadline, or
 * our status went out). A Watch subscription ends here, on a cq thread, never the loop's. */
static void on_close(gtag *t, bool ok) {
    gcall *g = container_of(t, gcall, close_tag);
    pthread_mutex_lock(&g->mu);
    g->closed = true;
    bool cancelled = g->cancelled || !ok;
    if (cancelled) {
        g->dead = true;
        gqueue_clear(&g->out);
        gqueue_clear(&g->held);
    }
    uint64_t sub = g->sub_id;
    g->sub_id = 0;
    grpc_health_watch *health = g->health;
    g->health = NULL;
    pthread_mutex_unlock(&g->mu);
    if (cancelled) {
        log_debug("grpc %s: cancelled (client cancel or deadline)", method_name(g));
        /* Free the gateway call now rather than at its timeout; its late reply is counted. */
        service_cancel(g->api->svc, &g->gc);
    }
    if (sub) {
        service_unwatch(g->api->svc, sub);
        gcall_unref(g);
    }
    if (health) {
        grpc_health_watch_free(health);
        gcall_unref(g);
    }
    gcall_unref(g);
}

/* ------------------------------------------------------------------------------------------ */
/* Status mapping, deadlines */

/* Fails the call with an operation's refusal. */
static void gcall_fail_with(gcall *g, const service_error *e) {
    gcall_fail(g, (grpc_status_code)service_status_grpc(e->status), "%s", e->message);
}

/* Fails the call with a request term that cannot be read (its `what`: "args", ...). */
static void gcall_fail_term(gcall *g, const char *what, const term_error *err) {
    service_status st = service_status_of_term(err->status);
    gcall_fail(g, (grpc_status_code)service_status_grpc(st), "%s: %s", what, err->message);
}

/* Finishes the call with an operation's error (g->mu held). */
static void gcall_finish_with_locked(gcall *g, const service_error *e) {
    gcall_finish_locked(g, (grpc_status_code)service_status_grpc(e->status), "%s", e->message);
}

/* The principal the call proved (gcall_authenticate ran on its metadata). */
static const service_principal *gcall_principal(const gcall *g) {
    return g->principal;
}

/* Milliseconds left until the client's deadline, or -1 when it set none. */
static long long gcall_deadline_left(const gcall *g) {
    if (g->deadline.tv_sec == INT64_MAX ||
        gpr_time_cmp(g->deadline, gpr_inf_future(g->deadline.clock_type)) == 0)
        return -1;
    gpr_timespec d = gpr_convert_clock_type(g->deadline, GPR_CLOCK_MONOTONIC);
    int64_t ms = gpr_time_to_millis(gpr_time_sub(d, gpr_now(GPR_CLOCK_MONOTONIC)));
    return ms < 0 ? 0 : ms;
}

/* ------------------------------------------------------------------------------------------ */
/* Replies of gateway calls (loop thread) */

static void answer_payload(gcall *g, const char *what) {
    call *c = &g->gc;
    term_pb_arena arena = {0};
    term_error err = {0};
    Nodex__V1__Payload p = NODEX__V1__PAYLOAD__INIT;
    int idx = (int)c->reply_offset;
    if (term_pb_payload_from_ei(c->reply, c->reply_len, &idx, &g->api->limits, g->as_etf, &arena,
                                &p, &err) != 0) {
        gcall_finish_locked(g, GRPC_STATUS_INTERNAL,
                            "%s %s sent a reply that cannot be converted: %s", what, g->target,
                            err.message);
    } else if (g->method == M_CALL) {
        Nodex__V1__CallReply r = NODEX__V1__CALL_REPLY__INIT;
        r.reply = &p;
        gcall_reply_locked(g, &r.base);
    } else {
        Nodex__V1__CallStreamMessage r = NODEX__V1__CALL_STREAM_MESSAGE__INIT;
        r.message = &p;
        r.final = true;
        gcall_reply_locked(g, &r.base);
    }
    term_pb_arena_free(&arena);
}

static void answer_rpc(gcall *g) {
    call *c = &g->gc;
    service *svc = g->api->svc;
    service_error e;
    if (g->method == M_LOAD_MODULE) {
        if (service_load_result(svc, c, g->target, g->module, &e) != SERVICE_OK)
            return gcall_finish_with_locked(g, &e);
        Nodex__V1__LoadModuleReply r = NODEX__V1__LOAD_MODULE_REPLY__INIT;
        return gcall_reply_locked(g, &r.base);
    }
    int at;
    service_status st = service_rpc_result(svc, c, g->target, &at, &e);
    if (st != SERVICE_OK && st != SERVICE_BADRPC) return gcall_finish_with_locked(g, &e);
    term_pb_arena arena = {0};
    term_error err = {0};
    Nodex__V1__Payload p = NODEX__V1__PAYLOAD__INIT;
    if (term_pb_payload_from_ei(c->reply, c->reply_len, &at, &g->api->limits, g->as_etf, &arena, &p,
                                &err) != 0) {
        gcall_finish_locked(g, GRPC_STATUS_INTERNAL,
                            "node %s sent a reply that cannot be converted: %s", g->target,
                            err.message);
    } else {
        Nodex__V1__RpcReply r = NODEX__V1__RPC_REPLY__INIT;
        bool badrpc = st == SERVICE_BADRPC;
        r.outcome_case =
            badrpc ? NODEX__V1__RPC_REPLY__OUTCOME_BADRPC : NODEX__V1__RPC_REPLY__OUTCOME_RESULT;
        if (badrpc)
            r.badrpc = &p;
        else
            r.result = &p;
        gcall_reply_locked(g, &r.base);
    }
    term_pb_arena_free(&arena);
}

/* The gateway call ended (loop thread, or the thread stopping the gateway). */
static void on_call_done(call *c, void *ctx) {
    gcall *g = ctx;
    bool rpc = g->method == M_RPC || g->method == M_LOAD_MODULE;
    const char *what = rpc ? "node" : "C-node";
    service_error e;
    pthread_mutex_lock(&g->mu);
    if (g->dead || g->finishing) {
        /* cancelled: the reply (if any) is dropped */
    } else if (service_call_outcome(c, what, g->target, g->timeout_ms, &e) != SERVICE_OK) {
        gcall_finish_with_locked(g, &e);
    } else if (rpc) {
        answer_rpc(g);
    } else {
        answer_payload(g, what);
    }
    pthread_mutex_unlock(&g->mu);
    gcall_unref(g);
}

/* CallStream: a message before the reply (loop thread, under the gateway's lock). */
static void on_call_message(call *c, const char *msg, size_t len, void *ctx) {
    (void)c;
    gcall *g = ctx;
    pthread_mutex_lock(&g->mu);
    if (!g->dead && !g->finishing) {
        term_pb_arena arena = {0};
        term_error err = {0};
        Nodex__V1__Payload p = NODEX__V1__PAYLOAD__INIT;
        int idx = 0;
        if (term_pb_payload_from_ei(msg, len, &idx, &g->api->limits, g->as_etf, &arena, &p, &err) !=
            0) {
            gcall_finish_locked(g, GRPC_STATUS_INTERNAL,
                                "C-node %s sent a message that cannot be converted: %s", g->target,
                                err.message);
        } else {
            Nodex__V1__CallStreamMessage m = NODEX__V1__CALL_STREAM_MESSAGE__INIT;
            m.message = &p;
            gcall_send_locked(g, &m.base, &g->out);
        }
        term_pb_arena_free(&arena);
    }
    pthread_mutex_unlock(&g->mu);
}

/* ------------------------------------------------------------------------------------------ */
/* Methods (cq threads; the request message is valid during the call only) */

static void call_common(gcall *g, const Nodex__V1__CallRequest *r, bool stream) {
    grpc_api *api = g->api;
    service_call_req q = {.op = stream ? SERVICE_OP_STREAM : SERVICE_OP_CALL,
                          .cnode = r->cnode,
                          .timeout_ms = r->timeout_ms,
                          .deadline_left_ms = gcall_deadline_left(g),
                          .no_wait = r->fail_fast};
    service_error e;
    if (service_call_check(api->svc, gcall_principal(g), &q, &e) != SERVICE_OK)
        return gcall_fail_with(g, &e);
    strbuf_copy_str(g->target, sizeof g->target, q.name);
    g->timeout_ms = q.timeout_used;
    g->as_etf = r->reply_as_etf;
    call *c = &g->gc;
    service_call_pid(api->svc, c);
    ei_x_buff x;
    if (ei_x_new(&x) != 0) return gcall_fail(g, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    term_error err = {0};
    if (term_pb_payload_to_ei(r->request, &api->limits, &c->pid, &x, &err) != 0) {
        ei_x_free(&x);
        return gcall_fail_term(g, "request", &err);
    }
    c->on_done = on_call_done;
    c->on_message = stream ? on_call_message : NULL;
    c->ctx = g;
    gcall_ref(g); /* for on_done */
    service_status st =
        service_call(api->svc, gcall_principal(g), &q, c, x.buff, (size_t)x.index, &e);
    ei_x_free(&x);
    if (st != SERVICE_OK) {
        atomic_fetch_sub(&g->refs, 1); /* on_done never runs; the handler still holds one */
        gcall_fail_with(g, &e);
    }
}

static void m_call(gcall *g, const ProtobufCMessage *req) {
    call_common(g, (const Nodex__V1__CallRequest *)req, false);
}

static void m_call_stream(gcall *g, const ProtobufCMessage *req) {
    call_common(g, (const Nodex__V1__CallRequest *)req, true);
}

static void m_cast(gcall *g, const ProtobufCMessage *req) {
    const Nodex__V1__CastRequest *r = (const Nodex__V1__CastRequest *)req;
    grpc_api *api = g->api;
    service_call_req q = {.op = SERVICE_OP_CAST, .cnode = r->cnode, .deadline_left_ms = -1};
    service_error e;
    if (service_call_check(api->svc, gcall_principal(g), &q, &e) != SERVICE_OK)
        return gcall_fail_with(g, &e);
    ei_x_buff x;
    if (ei_x_new(&x) != 0) return gcall_fail(g, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    term_error err = {0};
    if (term_pb_payload_to_ei(r->message, &api->limits, NULL, &x, &err) != 0) {
        ei_x_free(&x);
        return gcall_fail_term(g, "message", &err);
    }
    service_status st =
        service_call(api->svc, gcall_principal(g), &q, NULL, x.buff, (size_t)x.index, &e);
    ei_x_free(&x);
    if (st != SERVICE_OK) return gcall_fail_with(g, &e);
    Nodex__V1__CastReply reply = NODEX__V1__CAST_REPLY__INIT;
    gcall_reply(g, &reply.base);
}

/* A CnodeInfo with the storage of its ignored_controls map. */
typedef struct cnode_pb {
    Nodex__V1__CnodeInfo msg;
    Nodex__V1__CnodeInfo__IgnoredControlsEntry entries[DIST_CTL_KINDS];
    Nodex__V1__CnodeInfo__IgnoredControlsEntry *ptrs[DIST_CTL_KINDS];
} cnode_pb;

static void cnode_info_pb(cnode_pb *store, gateway_cnode_info *i) {
    Nodex__V1__CnodeInfo *o = &store->msg;
    Nodex__V1__CnodeInfo__IgnoredControlsEntry *entries = store->entries, **ptrs = store->ptrs;
    nodex__v1__cnode_info__init(o);
    o->name = (char *)i->name;
    o->state = state_pb(i->state);
    o->node = i->node;
    o->os_pid = (int32_t)i->os_pid;
    o->restarts = i->restarts;
    o->last_exit = i->last_exit;
    o->last_error = i->last_error;
    o->in_flight = i->in_flight;
    o->waiting = i->waiting;
    o->n_ignored_controls = 0;
    for (int k = 0; k < DIST_CTL_KINDS; k++) {
        if (!i->ignored_controls[k]) continue;
        Nodex__V1__CnodeInfo__IgnoredControlsEntry *e = &entries[o->n_ignored_controls];
        nodex__v1__cnode_info__ignored_controls_entry__init(e);
        e->key = (char *)dist_ignored_control_name((dist_ignored_control)k);
        e->value = i->ignored_controls[k];
        ptrs[o->n_ignored_controls++] = e;
    }
    o->ignored_controls = o->n_ignored_controls ? ptrs : NULL;
    o->uptime_ms = i->uptime_ms;
    o->calls_total = i->calls_total;
    o->dropped_messages = i->dropped_messages;
    o->direction = (char *)cnode_direction_name(i->direction);
    o->protocol = (char *)cnode_protocol_name(i->protocol);
}

static void m_list_cnodes(gcall *g, const ProtobufCMessage *req) {
    (void)req;
    gateway_cnode_info *infos;
    size_t n;
    service_error e;
    if (service_list_cnodes(g->api->svc, gcall_principal(g), &infos, &n, &e) != SERVICE_OK)
        return gcall_fail_with(g, &e);
    cnode_pb *pbs = calloc(n ? n : 1, sizeof *pbs);
    Nodex__V1__CnodeInfo **ptrs = calloc(
        n ? n : 1, sizeof *ptrs); /* NOLINT(bugprone-sizeof-expression): an array of pointers */
    if (!pbs || !ptrs) {
        gcall_fail(g, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    } else {
        for (size_t i = 0; i < n; i++) {
            cnode_info_pb(&pbs[i], &infos[i]);
            ptrs[i] = &pbs[i].msg;
        }
        Nodex__V1__ListCnodesReply r = NODEX__V1__LIST_CNODES_REPLY__INIT;
        r.n_cnodes = n;
        r.cnodes = ptrs;
        gcall_reply(g, &r.base);
    }
    free(infos);
    free(pbs);
    free(ptrs);
}

static void m_get_cnode(gcall *g, const ProtobufCMessage *req) {
    const Nodex__V1__GetCnodeRequest *r = (const Nodex__V1__GetCnodeRequest *)req;
    gateway_cnode_info info;
    service_error e;
    if (service_get_cnode(g->api->svc, gcall_principal(g), r->name, &info, NULL, NULL, &e) !=
        SERVICE_OK)
        return gcall_fail_with(g, &e);
    cnode_pb o;
    cnode_info_pb(&o, &info);
    gcall_reply(g, &o.msg.base);
}

/* --- Health: /healthz and /readyz in one reply --- */

static void m_health(gcall *g, const ProtobufCMessage *req) {
    (void)req;
    const char **names = NULL;
    size_t n = 0;
    Nodex__V1__HealthReply o = NODEX__V1__HEALTH_REPLY__INIT;
    o.alive = true;
    o.ready = service_health(g->api->svc, &names, &n);
    if (!names) return gcall_fail(g, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    o.n_not_ready = n;
    o.not_ready = (char **)names;
    gcall_reply(g, &o.base);
    free(names);
}

/* --- grpc.health.v1.Health (grpc_health.h names the services) --- */

static void m_health_check(gcall *g, const ProtobufCMessage *req) {
    const Grpc__Health__V1__HealthCheckRequest *r =
        (const Grpc__Health__V1__HealthCheckRequest *)req;
    Grpc__Health__V1__HealthCheckResponse o = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    service_error e;
    if (grpc_health_check(g->api->svc, gcall_principal(g), r->service, &o.status, &e) != SERVICE_OK)
        return gcall_fail_with(g, &e);
    gcall_reply(g, &o.base);
}

/* A Watch's status (the handler's thread, then the loop thread): one message. */
static void on_health_status(grpc_health_status status, void *ctx) {
    gcall *g = ctx;
    Grpc__Health__V1__HealthCheckResponse o = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    o.status = status;
    pthread_mutex_lock(&g->mu);
    gcall_send_locked(g, &o.base, &g->out);
    pthread_mutex_unlock(&g->mu);
}

static void m_health_watch(gcall *g, const ProtobufCMessage *req) {
    const Grpc__Health__V1__HealthCheckRequest *r =
        (const Grpc__Health__V1__HealthCheckRequest *)req;
    pthread_mutex_lock(&g->mu);
    bool over = g->closed || g->dead;
    g->md_wanted = true; /* the client sees the stream open at once */
    gcall_pump_locked(g);
    pthread_mutex_unlock(&g->mu);
    if (over) return;
    gcall_ref(g); /* for the watch's reports */
    service_error e;
    grpc_health_watch *w =
        grpc_health_watch_new(g->api->svc, gcall_principal(g), r->service, on_health_status, g, &e);
    if (!w) {
        atomic_fetch_sub(&g->refs, 1);
        return gcall_fail_with(g, &e);
    }
    pthread_mutex_lock(&g->mu);
    bool closed = g->closed;
    if (!closed) g->health = w; /* on_close ends it */
    pthread_mutex_unlock(&g->mu);
    if (closed) {
        grpc_health_watch_free(w);
        gcall_unref(g);
    }
}

/* --- Server reflection (grpc_reflection.h answers; v1 and v1alpha alike) --- */

/* Asks for the next streamed request (g->mu held). */
static void gcall_recv_locked(gcall *g) {
    if (g->dead || g->finishing) return;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &g->payload;
    gcall_ref(g);
    if (grpc_call_start_batch(g->call, &op, 1, &g->recv_tag, NULL) != GRPC_CALL_OK) {
        atomic_fetch_sub(&g->refs, 1); /* never the last one: our caller holds one */
        gcall_finish_locked(g, GRPC_STATUS_INTERNAL, "cannot read the request stream");
    }
}

/* A streamed request arrived (cq thread): one answer each; the client's half-close ends the
 * call with OK once the answers are out. */
static void on_recv(gtag *t, bool ok) {
    gcall *g = container_of(t, gcall, recv_tag);
    grpc_byte_buffer *bb = g->payload;
    g->payload = NULL;
    ProtobufCMessage *req = NULL;
    if (ok && bb && (req = gcall_decode(g, bb))) {
        grpc_reflection_answer a;
        if (grpc_reflection_answer_to(g->api->reflection,
                                      (const Grpc__Reflection__V1__ServerReflectionRequest *)req,
                                      &a) != 0) {
            gcall_fail(g, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        } else {
            pthread_mutex_lock(&g->mu);
            gcall_send_locked(g, &a.response.base, &g->out);
            gcall_recv_locked(g);
            pthread_mutex_unlock(&g->mu);
            grpc_reflection_answer_clear(&a);
        }
        term_pb_unpacked_free(req);
    } else if (ok && !bb) {
        pthread_mutex_lock(&g->mu);
        gcall_finish_locked(g, GRPC_STATUS_OK, NULL);
        pthread_mutex_unlock(&g->mu);
    } /* !ok: the call is over; on_close has it */
    if (bb) grpc_byte_buffer_destroy(bb);
    gcall_unref(g);
}

static void m_reflection(gcall *g, const ProtobufCMessage *req) {
    (void)req; /* none: requests are streamed */
    service_error e;
    if (service_authorize(g->api->svc, gcall_principal(g), SERVICE_OP_REFLECTION, NULL, &e) !=
        SERVICE_OK)
        return gcall_fail_with(g, &e);
    pthread_mutex_lock(&g->mu);
    g->md_wanted = true;
    gcall_pump_locked(g);
    gcall_recv_locked(g);
    pthread_mutex_unlock(&g->mu);
}

/* --- Watch --- */

static void event_pb(Nodex__V1__Event *e, const gateway_event *ev) {
    nodex__v1__event__init(e);
    e->seq = ev->seq;
    e->time_ms = ev->time_ms;
    e->kind = ev->erlang_node ? NODEX__V1__EVENT__KIND__ERLANG_NODE : NODEX__V1__EVENT__KIND__CNODE;
    e->name = (char *)ev->name;
    e->node = (char *)ev->node;
    e->state = state_pb(ev->state);
    e->reason = (char *)ev->reason;
    e->os_pid = (int32_t)ev->os_pid;
}

/* A lifecycle event (loop thread, must not block): queued for the stream. */
static void on_event(const gateway_event *ev, void *ctx) {
    gcall *g = ctx;
    Nodex__V1__Event e;
    event_pb(&e, ev);
    pthread_mutex_lock(&g->mu);
    /* seq 0: a current state (service_watch, on the handler's thread), ahead of held changes */
    gcall_send_locked(g, &e.base, g->holding && ev->seq ? &g->held : &g->out);
    pthread_mutex_unlock(&g->mu);
}

static void m_watch(gcall *g, const ProtobufCMessage *req) {
    const Nodex__V1__WatchRequest *r = (const Nodex__V1__WatchRequest *)req;
    service *svc = g->api->svc;
    service_error e;
    if (service_authorize(svc, gcall_principal(g), SERVICE_OP_WATCH, NULL, &e) != SERVICE_OK)
        return gcall_fail_with(g, &e);
    pthread_mutex_lock(&g->mu);
    bool over = g->closed || g->dead;
    g->holding = true;   /* events queue up behind the current states */
    g->md_wanted = true; /* the client sees the stream open at once */
    gcall_pump_locked(g);
    pthread_mutex_unlock(&g->mu);
    if (over) return;
    gcall_ref(g); /* for the subscription */
    uint64_t id;
    if (service_watch(svc, gcall_principal(g), r->include_current, on_event, g, &id, &e) !=
        SERVICE_OK) {
        atomic_fetch_sub(&g->refs, 1);
        return gcall_fail_with(g, &e);
    }
    pthread_mutex_lock(&g->mu);
    gmsg *m;
    while ((m = gqueue_pop(&g->held))) {
        if (g->dead || g->finishing) {
            grpc_byte_buffer_destroy(m->bb);
            free(m);
        } else {
            gqueue_push(&g->out, m);
        }
    }
    g->holding = false;
    gcall_pump_locked(g);
    bool closed = g->closed;
    if (!closed) g->sub_id = id; /* on_close unsubscribes */
    pthread_mutex_unlock(&g->mu);
    if (closed) {
        service_unwatch(svc, id);
        gcall_unref(g);
    }
}

/* --- Erlang nodes --- */

/* Submits an rpc or a load (args: the encoded list, or the beam); fails the call when refused. */
static void rpc_submit(gcall *g, service_rpc_req *q, const char *args, size_t args_len) {
    grpc_api *api = g->api;
    call *c = &g->gc;
    c->on_done = on_call_done;
    c->ctx = g;
    gcall_ref(g);
    service_error e;
    service_status st = g->method == M_LOAD_MODULE
                            ? service_load(api->svc, gcall_principal(g), q, c, args, args_len, &e)
                            : service_rpc(api->svc, gcall_principal(g), q, c, args, args_len, &e);
    g->timeout_ms = q->timeout_used;
    if (st != SERVICE_OK) {
        atomic_fetch_sub(&g->refs, 1);
        gcall_fail_with(g, &e);
    }
}

static void m_rpc(gcall *g, const ProtobufCMessage *req) {
    const Nodex__V1__RpcRequest *r = (const Nodex__V1__RpcRequest *)req;
    grpc_api *api = g->api;
    service_rpc_req q = {.node = r->node,
                         .module = r->module,
                         .function = r->function,
                         .timeout_ms = r->timeout_ms,
                         .deadline_left_ms = gcall_deadline_left(g)};
    service_error e;
    if (service_rpc_check(api->svc, gcall_principal(g), &q, &e) != SERVICE_OK)
        return gcall_fail_with(g, &e);
    snprintf(g->target, sizeof g->target, "%s", r->node);
    g->as_etf = r->reply_as_etf;
    service_call_pid(api->svc, &g->gc);
    ei_x_buff x;
    if (ei_x_new(&x) != 0) return gcall_fail(g, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    term_error err = {0};
    if (!r->args) {
        ei_x_encode_empty_list(&x);
    } else if (term_pb_payload_to_ei(r->args, &api->limits, &g->gc.pid, &x, &err) != 0) {
        ei_x_free(&x);
        return gcall_fail_term(g, "args", &err);
    }
    rpc_submit(g, &q, x.buff, (size_t)x.index);
    ei_x_free(&x);
}

static void m_load_module(gcall *g, const ProtobufCMessage *req) {
    const Nodex__V1__LoadModuleRequest *r = (const Nodex__V1__LoadModuleRequest *)req;
    snprintf(g->target, sizeof g->target, "%s", r->node);
    snprintf(g->module, sizeof g->module, "%s", r->module);
    service_rpc_req q = {
        .node = r->node, .module = r->module, .deadline_left_ms = gcall_deadline_left(g)};
    service_call_pid(g->api->svc, &g->gc);
    rpc_submit(g, &q, (const char *)r->beam.data, r->beam.len);
}

static void m_list_nodes(gcall *g, const ProtobufCMessage *req) {
    (void)req;
    gateway_node_info *nodes = NULL;
    size_t count;
    service_error e;
    if (service_list_nodes(g->api->svc, gcall_principal(g), &nodes, &count, &e) != SERVICE_OK)
        return gcall_fail_with(g, &e);
    Nodex__V1__NodeInfo *pbs = calloc(count ? count : 1, sizeof *pbs);
    Nodex__V1__NodeInfo **ptrs =
        calloc(count ? count : 1,
               sizeof *ptrs); /* NOLINT(bugprone-sizeof-expression): an array of pointers */
    if (!pbs || !ptrs) {
        gcall_fail(g, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    } else {
        for (size_t i = 0; i < count; i++) {
            nodex__v1__node_info__init(&pbs[i]);
            pbs[i].node = nodes[i].node;
            pbs[i].connected = nodes[i].connected;
            pbs[i].child = nodes[i].child;
            pbs[i].state = state_pb(nodes[i].state);
            pbs[i].os_pid = (int32_t)nodes[i].os_pid;
            pbs[i].restarts = nodes[i].restarts;
            ptrs[i] = &pbs[i];
        }
        Nodex__V1__ListNodesReply r = NODEX__V1__LIST_NODES_REPLY__INIT;
        r.n_nodes = count;
        r.nodes = ptrs;
        gcall_reply(g, &r.base);
    }
    free(pbs);
    free(ptrs);
    free(nodes);
}

/* SpawnNodes finished (loop thread). */
static void on_spawned(void *ctx, const char *const *nodes, size_t count, const char *error) {
    gcall *g = ctx;
    pthread_mutex_lock(&g->mu);
    if (error) {
        gcall_finish_locked(g, GRPC_STATUS_UNAVAILABLE, "%s (%zu of %u nodes came up)", error,
                            count, g->timeout_ms);
    } else {
        Nodex__V1__SpawnNodesReply r = NODEX__V1__SPAWN_NODES_REPLY__INIT;
        r.n_nodes = count;
        r.nodes = (char **)nodes;
        gcall_reply_locked(g, &r.base);
    }
    pthread_mutex_unlock(&g->mu);
    gcall_unref(g);
}

static void m_spawn_nodes(gcall *g, const ProtobufCMessage *req) {
    const Nodex__V1__SpawnNodesRequest *r = (const Nodex__V1__SpawnNodesRequest *)req;
    g->timeout_ms = r->count; /* kept for the error message */
    gcall_ref(g);
    service_error e;
    if (service_spawn_nodes(g->api->svc, gcall_principal(g), r->count, on_spawned, g, &e) !=
        SERVICE_OK) {
        atomic_fetch_sub(&g->refs, 1);
        gcall_fail_with(g, &e);
    }
}

static void m_restart_cnode(gcall *g, const ProtobufCMessage *req) {
    const Nodex__V1__RestartCnodeRequest *r = (const Nodex__V1__RestartCnodeRequest *)req;
    service_error e;
    if (service_restart_cnode(g->api->svc, gcall_principal(g), r->name, &e) != SERVICE_OK)
        return gcall_fail_with(g, &e);
    Nodex__V1__RestartCnodeReply reply = NODEX__V1__RESTART_CNODE_REPLY__INIT;
    gcall_reply(g, &reply.base);
}

static void m_stop_node(gcall *g, const ProtobufCMessage *req) {
    const Nodex__V1__StopNodeRequest *r = (const Nodex__V1__StopNodeRequest *)req;
    service_error e;
    if (service_stop_node(g->api->svc, gcall_principal(g), r->node, &e) != SERVICE_OK)
        return gcall_fail_with(g, &e);
    Nodex__V1__StopNodeReply reply = NODEX__V1__STOP_NODE_REPLY__INIT;
    gcall_reply(g, &reply.base);
}

/* ------------------------------------------------------------------------------------------ */
/* Requests */

static int gcall_post(grpc_api *api, int method) {
    gcall *g = gcall_new(api, method);
    if (!g) return -1;
    GTAG_HANDOFF(&g->req_tag);
    grpc_call_error e = method == M_UNREGISTERED
                            ? grpc_server_request_call(api->server, &g->call, &g->details, &g->md,
                                                       api->cq, api->cq, &g->req_tag)
                            : grpc_server_request_registered_call(
                                  api->server, api->methods[method], &g->call, &g->deadline, &g->md,
                                  grpc_methods[method].streaming ? NULL : &g->payload, api->cq,
                                  api->cq, &g->req_tag);
    if (e != GRPC_CALL_OK) {
        gcall_unref(g);
        return -1;
    }
    return 0;
}

/* The verified client certificate's identity on a gRPC-over-TLS call (none: out->present is
 * false). gRPC verifies the certificate against grpc.tls.client_ca_file in the handshake. */
static void grpc_peer_identity(grpc_call *call, tls_peer *out) {
    memset(out, 0, sizeof *out);
    grpc_auth_context *ctx = grpc_call_auth_context(call);
    if (!ctx) return;
    if (grpc_auth_context_peer_is_authenticated(ctx)) {
        grpc_auth_property_iterator it =
            grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_SUBJECT_PROPERTY_NAME);
        const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
        if (p) {
            out->present = true;
            snprintf(out->subject, sizeof out->subject, "%.*s", (int)p->value_length, p->value);
        }
        static const char *const kinds[][2] = {{GRPC_PEER_DNS_PROPERTY_NAME, "DNS"},
                                               {GRPC_PEER_URI_PROPERTY_NAME, "URI"}};
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            it = grpc_auth_context_find_properties_by_name(ctx, kinds[k][0]);
            while ((p = grpc_auth_property_iterator_next(&it)))
                tls_peer_add_san(out, kinds[k][1], p->value, p->value_length);
        }
    }
    grpc_auth_context_release(ctx);
}

static void gcall_log(const gcall *g) {
    char *peer = grpc_call_get_peer(g->call);
    log_debug("grpc %s from %s, %zu metadata", method_name(g), peer ? peer : "?", g->md.count);
    gpr_free(peer);
    if (g->api->tls) {
        tls_peer id;
        grpc_peer_identity(g->call, &id);
        if (id.present)
            log_debug("grpc %s: client certificate subject=\"%s\" sans=\"%s\"", method_name(g),
                      id.subject, id.sans);
        else
            log_debug("grpc %s: no client certificate", method_name(g));
    }
    for (size_t i = 0; i < g->md.count; i++) {
        const grpc_metadata *m = &g->md.metadata[i];
        size_t kl = GRPC_SLICE_LENGTH(m->key), vl = GRPC_SLICE_LENGTH(m->value);
        const char *k = (const char *)GRPC_SLICE_START_PTR(m->key);
        if (kl > 4 && memcmp(k + kl - 4, "-bin", 4) == 0)
            log_debug("  %.*s: (%zu bytes)", (int)kl, k, vl);
        else if (kl == 13 && memcmp(k, "authorization", 13) == 0)
            log_debug("  authorization: (redacted, %zu bytes)", vl); /* never log a secret */
        else
            log_debug("  %.*s: %.*s", (int)kl, k, (int)(vl > 200 ? 200 : vl),
                      (const char *)GRPC_SLICE_START_PTR(m->value));
    }
}

/* Finds who sent the call from its `authorization` metadata; false (failed) when nobody. */
static bool gcall_authenticate(gcall *g) {
    size_t len = 0;
    const char *authz = gcall_metadata(g, "authorization", &len);
    auth_credentials cr = {.authorization = authz, .authorization_len = authz ? len : 0};
    tls_peer peer = {0};
    const char *sans[16];
    if (g->api->tls) grpc_peer_identity(g->call, &peer); /* a verified client certificate */
    if (peer.present) {
        cr.cert_subject = peer.subject;
        cr.cert_sans = sans;
        cr.cert_san_count = auth_split_sans(peer.sans, sans, 16);
    }
    service_error e;
    if (service_authenticate(g->api->svc, &cr, &g->principal, &e) == SERVICE_OK) return true;
    gcall_fail_with(g, &e);
    return false;
}

/* Decodes a request message of the call's method (`bb`); NULL when it failed the call. */
static ProtobufCMessage *gcall_decode(gcall *g, grpc_byte_buffer *bb) {
    grpc_api *api = g->api;
    if (!bb) {
        gcall_fail(g, GRPC_STATUS_INVALID_ARGUMENT, "no request message");
        return NULL;
    }
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb)) {
        gcall_fail(g, GRPC_STATUS_INTERNAL, "cannot read the request message");
        return NULL;
    }
    grpc_slice s = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    const uint8_t *data = GRPC_SLICE_START_PTR(s);
    size_t len = GRPC_SLICE_LENGTH(s);
    const ProtobufCMessageDescriptor *desc = grpc_methods[g->method].request;
    term_pb_unpack_status why;
    ProtobufCMessage *req =
        term_pb_unpack(desc, data, len, api->wire_depth, api->cfg->term_max_bytes, &why, NULL);
    grpc_slice_unref(s);
    if (why == TERM_PB_UNPACK_OVER_BUDGET)
        gcall_fail(g, GRPC_STATUS_RESOURCE_EXHAUSTED,
                   "decoding the %s message would take more than terms.max_bytes (%zu bytes) of "
                   "memory",
                   desc->name, api->cfg->term_max_bytes);
    else if (!req)
        gcall_fail(g, GRPC_STATUS_INVALID_ARGUMENT,
                   "request is not a valid %s message or is nested deeper than terms.max_depth "
                   "allows",
                   desc->name);
    return req;
}

/* Authenticates the call, authorizes its operation, decodes the request message and runs the
 * method's handler (which reads streamed requests itself). */
static void gcall_dispatch(gcall *g) {
    if (!method_is_probe(g->method) && !gcall_authenticate(g)) return;
    /* Before the message is decoded: who may not run the method's operation at all gets
     * PERMISSION_DENIED whatever it sent; the operation authorizes its target itself. */
    service_error e;
    if (service_authorize_op(g->api->svc, gcall_principal(g), grpc_methods[g->method].op, &e) !=
        SERVICE_OK)
        return gcall_fail_with(g, &e);
    ProtobufCMessage *req = NULL;
    if (!grpc_methods[g->method].streaming && !(req = gcall_decode(g, g->payload))) return;
    grpc_methods[g->method].handler(g, req);
    if (req) term_pb_unpacked_free(req);
}

/* Starts RECV_CLOSE_ON_SERVER, the only signal of cancellation, once the request is on its way
 * (out of the call's latency): a client that cancelled before is reported at once. Under g->mu,
 * since the loop may already be starting the reply batch. */
static void gcall_watch_close(gcall *g) {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &g->cancelled;
    gcall_ref(g);
    pthread_mutex_lock(&g->mu);
    GTAG_HANDOFF(&g->close_tag);
    if (grpc_call_start_batch(g->call, &op, 1, &g->close_tag, NULL) != GRPC_CALL_OK) {
        atomic_fetch_sub(&g->refs, 1);
        g->dead = true;
    }
    pthread_mutex_unlock(&g->mu);
}

/* A call arrived (cq thread). */
static void on_request(gtag *t, bool ok) {
    gcall *g = container_of(t, gcall, req_tag);
    grpc_api *api = g->api;
    if (!ok) { /* the server is shutting down */
        gcall_unref(g);
        return;
    }
    pthread_mutex_lock(&api->mu);
    g->live_next = api->live;
    if (api->live) api->live->live_prev = g;
    api->live = g;
    g->listed = true;
    bool over = ++api->live_count > api->cfg->grpc_max_in_flight;
    pthread_mutex_unlock(&api->mu);
    if (g->method == M_UNREGISTERED) g->deadline = g->details.deadline;
    g->started_us = dist_now_us();
    if (g->payload) g->bytes_in = grpc_byte_buffer_length(g->payload);
    size_t id_len = 0, tp_len = 0, ts_len = 0;
    const char *id = gcall_metadata(g, GRPC_REQUEST_ID_KEY, &id_len);
    const char *tp = gcall_metadata(g, "traceparent", &tp_len);
    const char *ts = gcall_metadata(g, "tracestate", &ts_len);
    access_ids_from(&g->ids, id, id_len, tp, tp_len, ts, ts_len);
    /* sent back in the initial metadata: the client's id when acceptable, else one made here
     * (the slices point into g, which outlives every batch) */
    g->reply_md[0].key = grpc_slice_from_static_string(GRPC_REQUEST_ID_KEY);
    g->reply_md[0].value = grpc_slice_from_static_string(g->ids.request_id);
    g->reply_md_count = 1;
    log_debug("grpc %s: %s %s", method_name(g), GRPC_REQUEST_ID_KEY, g->ids.request_id);
    if (g->method == M_UNREGISTERED) {
        char *m = grpc_slice_to_c_string(g->details.method);
        log_debug("grpc: unknown method %s", m);
        gcall_fail(g, GRPC_STATUS_UNIMPLEMENTED, "method %.200s is not implemented", m);
        gpr_free(m);
    } else {
        if (log_enabled(LOG_DEBUG)) gcall_log(g);
        if (over)
            gcall_fail(g, GRPC_STATUS_RESOURCE_EXHAUSTED,
                       "over grpc.max_in_flight (%u calls in progress)",
                       api->cfg->grpc_max_in_flight);
        else if (atomic_load(&api->stopping))
            gcall_fail(g, GRPC_STATUS_UNAVAILABLE, "nodexd is shutting down");
        else
            gcall_dispatch(g);
    }
    gcall_watch_close(g);
    /* The slot is posted again once the request is on its way (the other slots and gRPC's own
     * queue take calls meanwhile): its allocation and gRPC's bookkeeping are not in the
     * call's latency. */
    if (!atomic_load(&api->stopping) && gcall_post(api, g->method) != 0)
        log_error("grpc: cannot post a request slot for %s", method_name(g));
    gcall_unref(g);
}

/* ------------------------------------------------------------------------------------------ */
/* Server */

static void *cq_thread(void *arg) {
    grpc_api *api = arg;
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(api->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        gtag *t = ev.tag;
        GTAG_RETURNED(t);
        t->fn(t, ev.success != 0);
    }
    return NULL;
}

static void on_shutdown(gtag *t, bool ok) {
    (void)ok;
    grpc_api *api = container_of(t, grpc_api, shutdown_tag);
    pthread_mutex_lock(&api->mu);
    api->shutdown_done = true;
    pthread_cond_broadcast(&api->cv);
    pthread_mutex_unlock(&api->mu);
}

static void deadline_in(struct timespec *ts, long ms) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Drains and destroys the completion queue (no threads running). */
static void cq_drain_destroy(grpc_completion_queue *cq) {
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
}

/* ------------------------------------------------------------------------------------------ */
/* TLS */

/* gRPC asks before every handshake: a new config only when a reload changed the files. */
static grpc_ssl_certificate_config_reload_status
grpc_tls_fetch(void *user_data, grpc_ssl_server_certificate_config **config) {
    grpc_api *api = user_data;
    if (tls_creds_generation(api->tls) == atomic_load(&api->tls_served))
        return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
    tls_pem pem;
    if (tls_creds_pem(api->tls, &pem) != 0) return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_FAIL;
    grpc_ssl_pem_key_cert_pair pair = {.private_key = pem.key, .cert_chain = pem.cert};
    /* gRPC asserts that a fetched config has roots: without a client CA no client certificate
     * is asked for (GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE), so the chain stands in. */
    *config = grpc_ssl_server_certificate_config_create(pem.ca ? pem.ca : pem.cert, &pair,
                                                        1); /* copies */
    atomic_store(&api->tls_served, pem.generation);
    tls_pem_clear(&pem);
    return *config ? GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW
                   : GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_FAIL;
}

/* Server credentials for grpc.tls: files checked here (GnuTLS), served through the fetcher. */
static grpc_server_credentials *grpc_tls_credentials(grpc_api *api, char *err, size_t err_len) {
    const config_tls *c = &api->cfg->grpc_tls;
    if (!(api->tls = tls_creds_load(c, err, err_len))) return NULL;
    atomic_init(&api->tls_served, 0);
    grpc_ssl_client_certificate_request_type req =
        !c->client_ca_file       ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
        : c->require_client_cert ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                 : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
    /* The minimum protocol of gRPC's SSL credentials is TLS 1.2. */
    grpc_ssl_server_credentials_options *opts =
        grpc_ssl_server_credentials_create_options_using_config_fetcher(req, grpc_tls_fetch, api);
    grpc_server_credentials *creds =
        opts ? grpc_ssl_server_credentials_create_with_options(opts) : NULL; /* takes opts */
    if (!creds) {
        snprintf(err, err_len, "%s: gRPC refused the TLS credentials", c->origin);
        return NULL;
    }
    tls_creds_log(api->tls, "grpc.tls: certificate");
    return creds;
}

int grpc_api_reload_tls(grpc_api *api, char *err, size_t err_len) {
    if (!api->tls) return 0;
    if (tls_creds_reload(api->tls, err, err_len) != 0) return -1;
    tls_creds_log(api->tls, "grpc.tls: new handshakes use");
    return 0;
}

grpc_api *grpc_api_start(const config *cfg, gateway *gw, service *svc, char *err, size_t err_len) {
    grpc_api *api = calloc(1, sizeof *api);
    if (!api) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    api->cfg = cfg;
    api->gw = gw;
    api->svc = svc;
    api->limits = *service_limits(api->svc);
    for (int m = 0; m <= M_COUNT; m++) api->method_labels[m] = method_label(m);
    api->requests = metrics_add_requests(service_metrics(api->svc), "nodex_grpc_requests_total",
                                         "gRPC calls finished, by method and status code.",
                                         "method", "code", api->method_labels, M_COUNT + 1, 16);
    api->wire_depth = term_pb_wire_depth(cfg->term_max_depth, 2);
    api->shutdown_tag.fn = on_shutdown;
    if (!(api->reflection =
              grpc_reflection_new(nodex_descriptor_set, nodex_descriptor_set_len, err, err_len))) {
        free(api);
        return NULL;
    }
    atomic_init(&api->stopping, false);
    pthread_mutex_init(&api->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&api->cv, &ca);
    pthread_condattr_destroy(&ca);

    grpc_init();
    int max_msg =
        cfg->grpc_max_message_bytes > INT32_MAX ? INT32_MAX : (int)cfg->grpc_max_message_bytes;
    grpc_arg args[4] = {
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_MAX_CONCURRENT_STREAMS,
         .value.integer = (int)cfg->grpc_max_concurrent_streams},
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = max_msg},
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
         .value.integer = max_msg},
        /* a second nodexd on the same port must fail, not share it */
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0},
    };
    grpc_channel_args chargs = {sizeof args / sizeof args[0], args};
    api->server = grpc_server_create(&chargs, NULL);
    api->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(api->server, api->cq, NULL);
    for (int m = 0; m < M_COUNT; m++)
        api->methods[m] = grpc_server_register_method(
            api->server, grpc_methods[m].path, NULL,
            grpc_methods[m].streaming ? GRPC_SRM_PAYLOAD_NONE
                                      : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
            0);
    grpc_server_credentials *creds = NULL;
    if (cfg->grpc_tls.enabled) {
        creds = grpc_tls_credentials(api, err, err_len);
    } else {
        creds = grpc_insecure_server_credentials_create();
    }
    int port = creds ? grpc_server_add_http2_port(api->server, cfg->grpc_listen, creds) : 0;
    if (creds) grpc_server_credentials_release(creds);
    if (port == 0) {
        if (creds)
            snprintf(err, err_len, "cannot listen for gRPC on %s (address in use or invalid)",
                     cfg->grpc_listen);
        tls_creds_free(api->tls);
        grpc_reflection_free(api->reflection);
        grpc_server_destroy(api->server);
        cq_drain_destroy(api->cq);
        grpc_shutdown_blocking();
        pthread_cond_destroy(&api->cv);
        pthread_mutex_destroy(&api->mu);
        free(api);
        return NULL;
    }
    const char *colon = strrchr(cfg->grpc_listen, ':');
    int host_len = colon ? (int)(colon - cfg->grpc_listen) : (int)strlen(cfg->grpc_listen);
    snprintf(api->address, sizeof api->address, "%.*s:%d", host_len, cfg->grpc_listen, port);
    grpc_server_start(api->server);

    unsigned threads = cfg->grpc_threads ? cfg->grpc_threads : 1;
    api->threads = calloc(threads, sizeof *api->threads);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, GRPC_THREAD_STACK);
    for (unsigned i = 0; api->threads && i < threads; i++) {
        if (pthread_create(&api->threads[i], &attr, cq_thread, api) != 0) break;
        api->thread_count++;
    }
    pthread_attr_destroy(&attr);
    bool posted = api->thread_count > 0;
    for (int m = M_UNREGISTERED; posted && m < M_COUNT; m++)
        for (int k = 0; posted && k < GRPC_REQUESTS_PER_METHOD; k++)
            posted = gcall_post(api, m) == 0;
    if (!posted) {
        snprintf(err, err_len, "cannot start the gRPC server threads");
        grpc_api_stop(api);
        return NULL;
    }
    return api;
}

const char *grpc_api_address(const grpc_api *api) {
    return api->address;
}

void grpc_api_drain(grpc_api *api) {
    if (!api || atomic_exchange(&api->drained, true)) return;
    /* gRPC stops listening, sends GOAWAY and refuses new calls; calls in progress go on */
    GTAG_HANDOFF(&api->shutdown_tag);
    grpc_server_shutdown_and_notify(api->server, api->cq, &api->shutdown_tag);
}

void grpc_api_stop(grpc_api *api) {
    if (!api) return;
    atomic_store(&api->stopping, true);
    if (!atomic_exchange(&api->drained, true)) {
        GTAG_HANDOFF(&api->shutdown_tag);
        grpc_server_shutdown_and_notify(api->server, api->cq, &api->shutdown_tag);
    }
    /* Answer what is still open (Watch streams; calls a gateway callback still owes). */
    pthread_mutex_lock(&api->mu);
    size_t n = 0;
    gcall **open =
        calloc(api->live_count ? api->live_count : 1,
               sizeof *open); /* NOLINT(bugprone-sizeof-expression): an array of pointers */
    for (gcall *g = api->live; g && open; g = g->live_next)
        if (gcall_ref_live(g)) open[n++] = g;
    pthread_mutex_unlock(&api->mu);
    for (size_t i = 0; i < n; i++) {
        gcall_fail(open[i], GRPC_STATUS_UNAVAILABLE, "nodexd is shutting down");
        gcall_unref(open[i]);
    }
    free(open);
    /* Grace: let those answers go out. */
    struct timespec until;
    deadline_in(&until, GRPC_STOP_GRACE_MS);
    pthread_mutex_lock(&api->mu);
    while (api->live_count > 0 && pthread_cond_timedwait(&api->cv, &api->mu, &until) == 0) {
    }
    pthread_mutex_unlock(&api->mu);
    grpc_server_cancel_all_calls(api->server);
    if (api->thread_count == 0) {
        /* never started serving: take the shutdown tag here */
        while (!api->shutdown_done) {
            grpc_event ev =
                grpc_completion_queue_next(api->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type != GRPC_OP_COMPLETE) continue;
            GTAG_RETURNED(ev.tag);
            ((gtag *)ev.tag)->fn(ev.tag, ev.success != 0);
        }
    }
    pthread_mutex_lock(&api->mu);
    while (!api->shutdown_done) pthread_cond_wait(&api->cv, &api->mu);
    pthread_mutex_unlock(&api->mu);
    grpc_server_destroy(api->server);
    grpc_completion_queue_shutdown(api->cq);
    for (unsigned i = 0; i < api->thread_count; i++) pthread_join(api->threads[i], NULL);
    free(api->threads);
    if (api->thread_count == 0) {
        while (grpc_completion_queue_next(api->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
    }
    if (api->live_count)
        log_warn("grpc: %zu calls still held by the gateway at shutdown", api->live_count);
    grpc_completion_queue_destroy(api->cq);
    grpc_shutdown_blocking();
    tls_creds_free(api->tls);
    grpc_reflection_free(api->reflection);
    pthread_cond_destroy(&api->cv);
    pthread_mutex_destroy(&api->mu);
    free(api);
}
