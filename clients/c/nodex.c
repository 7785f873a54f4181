/* nodex: command-line client of the nodexd gRPC API, speaking Erlang text syntax (gRPC C core). */

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "strbuf.h"
#include "term.h"
#include "term_pb.h"

enum { EXIT_OK = 0, EXIT_GRPC = 1, EXIT_USAGE = 2 };

static const char usage_text[] =
    "usage: nodex [--target HOST:PORT] [--timeout MS] [TLS OPTIONS] [--token-file FILE]\n"
    "             COMMAND [ARGS]\n"
    "Calls nodexd's gRPC API (default target $NODEX_TARGET, else localhost:50051). Terms are\n"
    "Erlang text: '{ping, <<\"hi\">>}'; self() stands for the call's own reply pid.\n"
    "TLS (grpc.tls): --tls, or --ca-file FILE (PEM CAs for nodexd's certificate; default the\n"
    "system's), --cert FILE --key FILE (a client certificate for mTLS).\n"
    "Bearer token (authorization metadata): the first line of --token-file FILE, else\n"
    "$NODEX_TOKEN; never on the command line.\n"
    "commands:\n"
    "  call NAME TERM          call C-node NAME, print its reply\n"
    "  stream NAME TERM        call, printing every message to the call (the reply last)\n"
    "  cast NAME TERM          send TERM to C-node NAME without waiting\n"
    "  list                    C-nodes: name state node os_pid restarts in_flight calls_total\n"
    "  get NAME                one C-node's state, one 'key: value' per line\n"
    "  watch [--current]       lifecycle events, one per line, until interrupted\n"
    "  rpc NODE M F '[Args]'   rpc:call on an Erlang node, print the result\n"
    "  nodes                   Erlang nodes: node connected child state os_pid restarts\n"
    "  spawn [COUNT]           start child Erlang nodes, print their names\n"
    "  stop NODE               stop a child Erlang node\n"
    "  restart NAME            restart C-node NAME now (out of failed too)\n"
    "  load NODE MODULE FILE   load a .beam file on NODE\n"
    "exit status: 0 success, 1 gRPC error (status and message on stderr), 2 usage error\n";

static const char *status_names[] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

static const char *state_names[] = {"unspecified", "starting", "up",     "down",
                                    "restarting",  "failed",   "stopped"};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

static const char *state_name(int s) {
    return s >= 0 && s < (int)(sizeof state_names / sizeof *state_names) ? state_names[s] : "?";
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("nodex: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(nodex --help for usage)\n", stderr);
    return EXIT_USAGE;
}

/* --- terms: Erlang text <-> ei <-> protobuf ------------------------------------------------- */

/* term_from_text needs a real pid for self(): a sentinel that becomes a SelfPid afterwards. */
static erlang_pid self_sentinel;
static char self_etf[128];
static int self_etf_len;

static void init_self_sentinel(void) {
    snprintf(self_sentinel.node, sizeof self_sentinel.node, "nodex-cli-self@self.invalid");
    self_sentinel.num = 0x7ffe;
    self_sentinel.serial = 0x1fff;
    self_sentinel.creation = 0x7fffffff;
    int idx = 0;
    ei_encode_version(self_etf, &idx);
    ei_encode_pid(self_etf, &idx, &self_sentinel);
    self_etf_len = idx;
}

/* Replaces every Opaque pid equal to the sentinel by a SelfPid, in place (nodes live in the
 * arena; the SelfPid message is static). */
static void mark_self(Nodex__V1__Term *t) {
    static Nodex__V1__SelfPid self_msg = NODEX__V1__SELF_PID__INIT;
    if (!t) return;
    switch (t->kind_case) {
    case NODEX__V1__TERM__KIND_PID:
        if (t->pid && t->pid->etf.len == (size_t)self_etf_len &&
            memcmp(t->pid->etf.data, self_etf, (size_t)self_etf_len) == 0) {
            t->kind_case = NODEX__V1__TERM__KIND_SELF_PID;
            t->self_pid = &self_msg;
        }
        break;
    case NODEX__V1__TERM__KIND_LIST:
        for (size_t i = 0; i < t->list->n_elements; i++) mark_self(t->list->elements[i]);
        mark_self(t->list->tail);
        break;
    case NODEX__V1__TERM__KIND_TUPLE:
        for (size_t i = 0; i < t->tuple->n_elements; i++) mark_self(t->tuple->elements[i]);
        break;
    case NODEX__V1__TERM__KIND_MAP:
        for (size_t i = 0; i < t->map->n_entries; i++) {
            mark_self(t->map->entries[i]->key);
            mark_self(t->map->entries[i]->value);
        }
        break;
    default: break;
    }
}

/* Parses Erlang text into a Term tree in `arena`; `x` holds the ei bytes the tree points into
 * and must outlive it. Returns 0, or prints the error and returns -1. */
static int term_of_text(const char *text, ei_x_buff *x, term_pb_arena *arena,
                        Nodex__V1__Term **out) {
    term_error err = {0};
    ei_x_new(x);
    if (term_from_text(text, strlen(text), &term_limits_default, &self_sentinel, x, &err) != 0) {
        fprintf(stderr, "nodex: bad term: %s (%s)\n", err.message, term_status_name(err.status));
        return -1;
    }
    int idx = 0;
    if (term_pb_from_ei(x->buff, (size_t)x->index, &idx, &term_limits_default, arena, out, &err) !=
        0) {
        fprintf(stderr, "nodex: bad term: %s\n", err.message);
        return -1;
    }
    mark_self(*out);
    return 0;
}

/* Prints a reply payload as Erlang text followed by `end`. Returns 0 or -1. */
static int print_payload(FILE *f, const Nodex__V1__Payload *p, const char *end) {
    term_error err = {0};
    ei_x_buff x;
    ei_x_new(&x);
    strbuf sb = {0};
    int rc = -1, idx = 0;
    if (!p) {
        fprintf(stderr, "nodex: empty reply\n");
    } else if (term_pb_payload_to_ei(p, &term_limits_default, NULL, &x, &err) != 0 ||
               term_to_text(x.buff, (size_t)x.index, &idx, &term_limits_default, &sb, &err) != 0) {
        fprintf(stderr, "nodex: undecodable reply: %s\n", err.message);
    } else {
        fprintf(f, "%s%s", sb.data ? sb.data : "", end);
        fflush(f);
        rc = 0;
    }
    strbuf_free(&sb);
    ei_x_free(&x);
    return rc;
}

/* --- gRPC ---------------------------------------------------------------------------------- */

typedef struct client {
    grpc_channel *channel;
    grpc_completion_queue *cq;
    gpr_timespec deadline;
    grpc_metadata auth; /* "authorization: Bearer T" */
    size_t auth_count;  /* 0 without a token */
} client;

typedef struct rpc_call {
    grpc_call *call;
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code status;
    grpc_slice details;
} rpc_call;

/* Runs one batch and waits for it, waking up to notice an interrupt. Returns true when the
 * batch succeeded. */
static bool run_batch(client *c, rpc_call *rc, const grpc_op *ops, size_t n) {
    static int tag_storage;
    void *tag = &tag_storage;
    if (grpc_call_start_batch(rc->call, ops, n, tag, NULL) != GRPC_CALL_OK) {
        fprintf(stderr, "nodex: grpc_call_start_batch failed\n");
        exit(EXIT_GRPC);
    }
    for (bool cancelled = false;;) {
        gpr_timespec wake =
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(200, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_pluck(c->cq, tag, wake, NULL);
        if (ev.type == GRPC_OP_COMPLETE) return ev.success != 0;
        if (interrupted && !cancelled) {
            grpc_call_cancel(rc->call, NULL);
            cancelled = true;
        }
    }
}

static grpc_byte_buffer *pack(const ProtobufCMessage *msg) {
    size_t len = protobuf_c_message_get_packed_size(msg);
    grpc_slice s = grpc_slice_malloc(len);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

static ProtobufCMessage *unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb) {
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb)) return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    ProtobufCMessage *m =
        protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    return m;
}

/* Starts a call of `method` and sends its one request. */
static void call_start(client *c, rpc_call *rc, const char *method, const ProtobufCMessage *req) {
    memset(rc, 0, sizeof *rc);
    grpc_metadata_array_init(&rc->initial_md);
    grpc_metadata_array_init(&rc->trailing_md);
    grpc_slice m = grpc_slice_from_static_string(method);
    rc->call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq, m, NULL,
                                        c->deadline, NULL);
    grpc_byte_buffer *bb = pack(req);
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = c->auth_count;
    ops[0].data.send_initial_metadata.metadata = c->auth_count ? &c->auth : NULL;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &rc->initial_md;
    run_batch(c, rc, ops, 4); /* a failure shows in the status */
    grpc_byte_buffer_destroy(bb);
}

/* Receives the next message (NULL at the end of the stream or on failure). */
static ProtobufCMessage *call_recv(client *c, rpc_call *rc, const ProtobufCMessageDescriptor *d) {
    grpc_byte_buffer *bb = NULL;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &bb;
    if (!run_batch(c, rc, &op, 1) || !bb) return NULL;
    ProtobufCMessage *m = unpack(d, bb);
    grpc_byte_buffer_destroy(bb);
    if (!m) fprintf(stderr, "nodex: undecodable message from the server\n");
    return m;
}

/* Waits for the call's status and frees it. Prints a failure on stderr; returns the exit code. */
static int call_finish(client *c, rpc_call *rc) {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &rc->trailing_md;
    op.data.recv_status_on_client.status = &rc->status;
    op.data.recv_status_on_client.status_details = &rc->details;
    run_batch(c, rc, &op, 1);
    int code = EXIT_OK;
    if (rc->status != GRPC_STATUS_OK && !(interrupted && rc->status == GRPC_STATUS_CANCELLED)) {
        int s = (int)rc->status;
        const char *name =
            s >= 0 && s < (int)(sizeof status_names / sizeof *status_names) ? status_names[s] : "?";
        fprintf(stderr, "%s: %.*s\n", name, (int)GRPC_SLICE_LENGTH(rc->details),
                (const char *)GRPC_SLICE_START_PTR(rc->details));
        code = EXIT_GRPC;
    }
    grpc_slice_unref(rc->details);
    grpc_metadata_array_destroy(&rc->initial_md);
    grpc_metadata_array_destroy(&rc->trailing_md);
    grpc_call_unref(rc->call);
    return code;
}

/* A unary call: *reply is set on success (free with protobuf_c_message_free_unpacked). */
static int unary(client *c, const char *method, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **reply) {
    rpc_call rc;
    call_start(c, &rc, method, req);
    *reply = call_recv(c, &rc, reply_desc);
    int code = call_finish(c, &rc);
    if (code == EXIT_OK && !*reply) {
        fprintf(stderr, "INTERNAL: no reply message\n");
        code = EXIT_GRPC;
    }
    if (code != EXIT_OK && *reply) {
        protobuf_c_message_free_unpacked(*reply, NULL);
        *reply = NULL;
    }
    return code;
}

#define M(name) "/nodex.v1.Gateway/" name

/* --- commands ------------------------------------------------------------------------------ */

static int cmd_call(client *c, const char *cnode, const char *text, bool stream) {
    ei_x_buff x;
    term_pb_arena arena = {0};
    Nodex__V1__Term *t = NULL;
    if (term_of_text(text, &x, &arena, &t) != 0) {
        ei_x_free(&x);
        term_pb_arena_free(&arena);
        return EXIT_USAGE;
    }
    Nodex__V1__Payload payload = NODEX__V1__PAYLOAD__INIT;
    payload.value_case = NODEX__V1__PAYLOAD__VALUE_TERM;
    payload.term = t;
    Nodex__V1__CallRequest req = NODEX__V1__CALL_REQUEST__INIT;
    req.cnode = (char *)cnode;
    req.request = &payload;
    int code;
    if (!stream) {
        ProtobufCMessage *m = NULL;
        code = unary(c, M("Call"), &req.base, &nodex__v1__call_reply__descriptor, &m);
        if (code == EXIT_OK) {
            if (print_payload(stdout, ((Nodex__V1__CallReply *)m)->reply, "\n") != 0)
                code = EXIT_GRPC;
            protobuf_c_message_free_unpacked(m, NULL);
        }
    } else {
        rpc_call rc;
        call_start(c, &rc, M("CallStream"), &req.base);
        bool bad = false;
        ProtobufCMessage *m;
        while (!bad && (m = call_recv(c, &rc, &nodex__v1__call_stream_message__descriptor))) {
            Nodex__V1__CallStreamMessage *sm = (Nodex__V1__CallStreamMessage *)m;
            bad = print_payload(stdout, sm->message, "\n") != 0;
            protobuf_c_message_free_unpacked(m, NULL);
        }
        if (bad) grpc_call_cancel(rc.call, NULL);
        code = call_finish(c, &rc);
        if (bad) code = EXIT_GRPC;
    }
    ei_x_free(&x);
    term_pb_arena_free(&arena);
    return code;
}

static int cmd_cast(client *c, const char *cnode, const char *text) {
    ei_x_buff x;
    term_pb_arena arena = {0};
    Nodex__V1__Term *t = NULL;
    int code = EXIT_USAGE;
    if (term_of_text(text, &x, &arena, &t) == 0) {
        Nodex__V1__Payload payload = NODEX__V1__PAYLOAD__INIT;
        payload.value_case = NODEX__V1__PAYLOAD__VALUE_TERM;
        payload.term = t;
        Nodex__V1__CastRequest req = NODEX__V1__CAST_REQUEST__INIT;
        req.cnode = (char *)cnode;
        req.message = &payload;
        ProtobufCMessage *m = NULL;
        code = unary(c, M("Cast"), &req.base, &nodex__v1__cast_reply__descriptor, &m);
        if (m) protobuf_c_message_free_unpacked(m, NULL);
    }
    ei_x_free(&x);
    term_pb_arena_free(&arena);
    return code;
}

static int cmd_list(client *c) {
    Nodex__V1__ListCnodesRequest req = NODEX__V1__LIST_CNODES_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    int code = unary(c, M("ListCnodes"), &req.base, &nodex__v1__list_cnodes_reply__descriptor, &m);
    if (code != EXIT_OK) return code;
    Nodex__V1__ListCnodesReply *r = (Nodex__V1__ListCnodesReply *)m;
    for (size_t i = 0; i < r->n_cnodes; i++) {
        const Nodex__V1__CnodeInfo *ci = r->cnodes[i];
        printf("%s %s %s %d %u %llu %llu\n", ci->name, state_name(ci->state),
               ci->node[0] ? ci->node : "-", ci->os_pid, ci->restarts,
               (unsigned long long)ci->in_flight, (unsigned long long)ci->calls_total);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return EXIT_OK;
}

static int cmd_get(client *c, const char *name) {
    Nodex__V1__GetCnodeRequest req = NODEX__V1__GET_CNODE_REQUEST__INIT;
    req.name = (char *)name;
    ProtobufCMessage *m = NULL;
    int code = unary(c, M("GetCnode"), &req.base, &nodex__v1__cnode_info__descriptor, &m);
    if (code != EXIT_OK) return code;
    const Nodex__V1__CnodeInfo *ci = (Nodex__V1__CnodeInfo *)m;
    printf("name: %s\nstate: %s\nnode: %s\nos_pid: %d\nrestarts: %u\nlast_exit: %s\n"
           "last_error: %s\nin_flight: %llu\nuptime_ms: %lld\ncalls_total: %llu\n"
           "dropped_messages: %llu\ndirection: %s\nprotocol: %s\n",
           ci->name, state_name(ci->state), ci->node, ci->os_pid, ci->restarts, ci->last_exit,
           ci->last_error, (unsigned long long)ci->in_flight, (long long)ci->uptime_ms,
           (unsigned long long)ci->calls_total, (unsigned long long)ci->dropped_messages,
           ci->direction, ci->protocol);
    protobuf_c_message_free_unpacked(m, NULL);
    return EXIT_OK;
}

/* Prints `s` double-quoted with \" \\ and control characters escaped. */
static void print_quoted(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\x%02x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static int cmd_watch(client *c, bool current) {
    Nodex__V1__WatchRequest req = NODEX__V1__WATCH_REQUEST__INIT;
    req.include_current = current;
    rpc_call rc;
    call_start(c, &rc, M("Watch"), &req.base);
    ProtobufCMessage *m;
    while ((m = call_recv(c, &rc, &nodex__v1__event__descriptor))) {
        const Nodex__V1__Event *e = (Nodex__V1__Event *)m;
        printf("seq=%llu time_ms=%lld kind=%s name=%s node=%s state=%s os_pid=%d reason=",
               (unsigned long long)e->seq, (long long)e->time_ms,
               e->kind == NODEX__V1__EVENT__KIND__ERLANG_NODE ? "erlang_node" : "cnode", e->name,
               e->node[0] ? e->node : "-", state_name(e->state), e->os_pid);
        print_quoted(e->reason);
        putchar('\n');
        fflush(stdout);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return call_finish(c, &rc);
}

static int cmd_rpc(client *c, const char *node, const char *mod, const char *fun,
                   const char *args) {
    ei_x_buff x;
    term_pb_arena arena = {0};
    Nodex__V1__Term *t = NULL;
    if (term_of_text(args, &x, &arena, &t) != 0) {
        ei_x_free(&x);
        term_pb_arena_free(&arena);
        return EXIT_USAGE;
    }
    int code = EXIT_USAGE;
    if (t->kind_case != NODEX__V1__TERM__KIND_LIST || t->list->tail) {
        fprintf(stderr, "nodex: rpc arguments must be a proper list, e.g. '[1, 2]'\n");
    } else {
        Nodex__V1__Payload payload = NODEX__V1__PAYLOAD__INIT;
        payload.value_case = NODEX__V1__PAYLOAD__VALUE_TERM;
        payload.term = t;
        Nodex__V1__RpcRequest req = NODEX__V1__RPC_REQUEST__INIT;
        req.node = (char *)node;
        req.module = (char *)mod;
        req.function = (char *)fun;
        req.args = &payload;
        ProtobufCMessage *m = NULL;
        code = unary(c, M("Rpc"), &req.base, &nodex__v1__rpc_reply__descriptor, &m);
        if (code == EXIT_OK) {
            const Nodex__V1__RpcReply *r = (Nodex__V1__RpcReply *)m;
            if (r->outcome_case == NODEX__V1__RPC_REPLY__OUTCOME_BADRPC) {
                fputs("badrpc: ", stderr);
                print_payload(stderr, r->badrpc, "\n");
                code = EXIT_GRPC;
            } else if (print_payload(stdout, r->result, "\n") != 0) {
                code = EXIT_GRPC;
            }
            protobuf_c_message_free_unpacked(m, NULL);
        }
    }
    ei_x_free(&x);
    term_pb_arena_free(&arena);
    return code;
}

static int cmd_nodes(client *c) {
    Nodex__V1__ListNodesRequest req = NODEX__V1__LIST_NODES_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    int code = unary(c, M("ListNodes"), &req.base, &nodex__v1__list_nodes_reply__descriptor, &m);
    if (code != EXIT_OK) return code;
    const Nodex__V1__ListNodesReply *r = (Nodex__V1__ListNodesReply *)m;
    for (size_t i = 0; i < r->n_nodes; i++) {
        const Nodex__V1__NodeInfo *n = r->nodes[i];
        printf("%s %s %s %s %d %u\n", n->node, n->connected ? "connected" : "disconnected",
               n->child ? "child" : "-", n->child ? state_name(n->state) : "-", n->os_pid,
               n->restarts);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return EXIT_OK;
}

static int cmd_spawn(client *c, unsigned count) {
    Nodex__V1__SpawnNodesRequest req = NODEX__V1__SPAWN_NODES_REQUEST__INIT;
    req.count = count;
    ProtobufCMessage *m = NULL;
    int code = unary(c, M("SpawnNodes"), &req.base, &nodex__v1__spawn_nodes_reply__descriptor, &m);
    if (code != EXIT_OK) return code;
    const Nodex__V1__SpawnNodesReply *r = (Nodex__V1__SpawnNodesReply *)m;
    for (size_t i = 0; i < r->n_nodes; i++) printf("%s\n", r->nodes[i]);
    protobuf_c_message_free_unpacked(m, NULL);
    return EXIT_OK;
}

static int cmd_stop(client *c, const char *node) {
    Nodex__V1__StopNodeRequest req = NODEX__V1__STOP_NODE_REQUEST__INIT;
    req.node = (char *)node;
    ProtobufCMessage *m = NULL;
    int code = unary(c, M("StopNode"), &req.base, &nodex__v1__stop_node_reply__descriptor, &m);
    if (m) protobuf_c_message_free_unpacked(m, NULL);
    return code;
}

static int cmd_restart(client *c, const char *name) {
    Nodex__V1__RestartCnodeRequest req = NODEX__V1__RESTART_CNODE_REQUEST__INIT;
    req.name = (char *)name;
    ProtobufCMessage *m = NULL;
    int code =
        unary(c, M("RestartCnode"), &req.base, &nodex__v1__restart_cnode_reply__descriptor, &m);
    if (m) protobuf_c_message_free_unpacked(m, NULL);
    if (code == 0) printf("%s: restart requested\n", name);
    return code;
}

static int cmd_load(client *c, const char *node, const char *module, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return usage_error("cannot open %s: %s", path, strerror(errno));
    strbuf sb = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (strbuf_append(&sb, chunk, n) != 0) {
            fclose(f);
            strbuf_free(&sb);
            return usage_error("out of memory reading %s", path);
        }
    }
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        strbuf_free(&sb);
        return usage_error("cannot read %s", path);
    }
    Nodex__V1__LoadModuleRequest req = NODEX__V1__LOAD_MODULE_REQUEST__INIT;
    req.node = (char *)node;
    req.module = (char *)module;
    req.beam.data = (uint8_t *)sb.data;
    req.beam.len = sb.len;
    ProtobufCMessage *m = NULL;
    int code = unary(c, M("LoadModule"), &req.base, &nodex__v1__load_module_reply__descriptor, &m);
    if (m) protobuf_c_message_free_unpacked(m, NULL);
    strbuf_free(&sb);
    return code;
}

/* --- main ---------------------------------------------------------------------------------- */

static bool parse_uint(const char *s, unsigned long max, unsigned long *out) {
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-') return false;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v > max) return false;
    *out = v;
    return true;
}

/* A whole file as a string, or NULL with the reason on stderr. */
static char *read_file(const char *what, const char *path) {
    FILE *f = fopen(path, "rb");
    strbuf sb = {0};
    char buf[4096];
    size_t n;
    if (!f) {
        fprintf(stderr, "nodex: %s %s: %s\n", what, path, strerror(errno));
        return NULL;
    }
    while ((n = fread(buf, 1, sizeof buf, f)) > 0 && sb.len < (1u << 20))
        if (strbuf_append(&sb, buf, n) != 0) break;
    bool bad = ferror(f) || sb.len == 0 || strbuf_append(&sb, "", 1) != 0;
    fclose(f);
    if (bad) {
        fprintf(stderr, "nodex: %s %s: cannot read it (or it is empty)\n", what, path);
        strbuf_free(&sb);
        return NULL;
    }
    return sb.data;
}

/* "--name VALUE" or "--name=VALUE" at argv[*i]: true with *out set (and *i moved on). */
static bool option_value(int argc, char **argv, int *i, const char *name, const char **out) {
    size_t len = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, len) != 0) return false;
    if (a[len] == '=') {
        *out = a + len + 1;
        return true;
    }
    if (a[len] != '\0' || *i + 1 >= argc) return false;
    *out = argv[++*i];
    return true;
}

/* The bearer token: the first line of token_file, else $NODEX_TOKEN; NULL when none. The
 * result is malloc'd. *bad is set when a source is given but unusable. */
static char *bearer_token(const char *token_file, bool *bad) {
    char *t = NULL;
    *bad = false;
    if (token_file) {
        if (!(t = read_file("--token-file", token_file))) return *bad = true, NULL;
        t[strcspn(t, "\r\n")] = '\0';
    } else if (getenv("NODEX_TOKEN") && *getenv("NODEX_TOKEN")) {
        t = strdup(getenv("NODEX_TOKEN"));
    }
    if (t && (!*t || t[strcspn(t, " \t")])) {
        fprintf(stderr, "nodex: the bearer token must be one non-empty word\n");
        free(t);
        return *bad = true, NULL;
    }
    return t;
}

/* Channel credentials: TLS when asked for (or implied by a CA or a certificate), else none. */
static grpc_channel_credentials *channel_credentials(bool tls, const char *ca_file,
                                                     const char *cert_file, const char *key_file,
                                                     bool *bad) {
    *bad = false;
    if (!tls && !ca_file && !cert_file && !key_file) return grpc_insecure_credentials_create();
    char *ca = ca_file ? read_file("--ca-file", ca_file) : NULL;
    char *cert = cert_file ? read_file("--cert", cert_file) : NULL;
    char *key = key_file ? read_file("--key", key_file) : NULL;
    grpc_channel_credentials *creds = NULL;
    if ((!ca_file || ca) && (!cert_file || cert) && (!key_file || key)) {
        grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
        creds = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
    }
    if (key) memset(key, 0, strlen(key));
    free(ca);
    free(cert);
    free(key);
    *bad = creds == NULL;
    return creds;
}

int main(int argc, char **argv) {
    const char *target = getenv("NODEX_TARGET");
    if (!target || !*target) target = "localhost:50051";
    long timeout_ms = -1;
    const char *ca_file = NULL, *cert_file = NULL, *key_file = NULL, *token_file = NULL;
    bool tls = false;
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) {
            fputs(usage_text, stdout);
            return EXIT_OK;
        } else if (strcmp(a, "--tls") == 0) {
            tls = true;
        } else if (option_value(argc, argv, &i, "--ca-file", &ca_file) ||
                   option_value(argc, argv, &i, "--cert", &cert_file) ||
                   option_value(argc, argv, &i, "--key", &key_file) ||
                   option_value(argc, argv, &i, "--token-file", &token_file)) {
            continue;
        } else if (strcmp(a, "--token") == 0 || strncmp(a, "--token=", 8) == 0) {
            return usage_error("no --token: a token on the command line is visible to every "
                               "user (ps); use --token-file FILE or $NODEX_TOKEN");
        } else if (strcmp(a, "--target") == 0 && i + 1 < argc) {
            target = argv[++i];
        } else if (strncmp(a, "--target=", 9) == 0) {
            target = a + 9;
        } else if ((strcmp(a, "--timeout") == 0 && i + 1 < argc) ||
                   strncmp(a, "--timeout=", 10) == 0) {
            const char *v = a[9] == '=' ? a + 10 : argv[++i];
            unsigned long ms;
            if (!parse_uint(v, 24UL * 3600 * 1000, &ms) || ms == 0)
                return usage_error("--timeout wants milliseconds (1..86400000), not '%s'", v);
            timeout_ms = (long)ms;
        } else if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else {
            return usage_error("unknown option %s", a);
        }
    }
    if (i < argc && strcmp(argv[i], "-h") == 0) {
        fputs(usage_text, stdout);
        return EXIT_OK;
    }
    if (i >= argc) return usage_error("no command");
    if (!cert_file != !key_file) return usage_error("--cert and --key go together");
    const char *cmd = argv[i++];
    int nargs = argc - i;
    char **args = argv + i;

    /* Check the command line before connecting. */
    struct {
        const char *name;
        int min, max;
    } const table[] = {{"call", 2, 2},  {"stream", 2, 2}, {"cast", 2, 2}, {"list", 0, 0},
                       {"get", 1, 1},   {"watch", 0, 1},  {"rpc", 4, 4},  {"nodes", 0, 0},
                       {"spawn", 0, 1}, {"stop", 1, 1},   {"load", 3, 3}, {"restart", 1, 1}};
    size_t k = 0;
    for (; k < sizeof table / sizeof *table && strcmp(table[k].name, cmd) != 0; k++) {
    }
    if (k == sizeof table / sizeof *table) return usage_error("unknown command '%s'", cmd);
    if (nargs < table[k].min || nargs > table[k].max)
        return usage_error("%s takes %d%s argument%s", cmd, table[k].min,
                           table[k].max > table[k].min ? " or more" : "",
                           table[k].max == 1 ? "" : "s");
    bool current = false;
    unsigned long count = 1;
    if (strcmp(cmd, "watch") == 0 && nargs == 1) {
        if (strcmp(args[0], "--current") != 0) return usage_error("watch takes only --current");
        current = true;
    }
    if (strcmp(cmd, "spawn") == 0 && nargs == 1 && (!parse_uint(args[0], 1000, &count) || !count))
        return usage_error("spawn COUNT wants 1..1000, not '%s'", args[0]);

    /* ei needs initializing before term_from_text / ei_encode_pid. */
    if (ei_init() != 0) {
        fprintf(stderr, "nodex: ei_init failed\n");
        return EXIT_GRPC;
    }
    init_self_sentinel();

    /* SIGINT/SIGTERM end streams cleanly; handlers installed before gRPC starts its threads. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    bool bad;
    char *token = bearer_token(token_file, &bad);
    if (bad) return EXIT_USAGE;
    char *bearer = NULL;
    if (token && asprintf(&bearer, "Bearer %s", token) < 0) bearer = NULL;
    if (token) memset(token, 0, strlen(token));
    free(token);

    grpc_init();
    client c = {.auth_count = bearer ? 1 : 0};
    if (bearer) {
        c.auth.key = grpc_slice_from_static_string("authorization");
        c.auth.value = grpc_slice_from_copied_string(bearer);
        memset(bearer, 0, strlen(bearer));
        free(bearer);
    }
    grpc_channel_credentials *creds = channel_credentials(tls, ca_file, cert_file, key_file, &bad);
    if (bad) {
        fprintf(stderr, "nodex: cannot set up TLS with these files\n");
        grpc_shutdown_blocking();
        return EXIT_USAGE;
    }
    c.channel = grpc_channel_create(target, creds, NULL);
    grpc_channel_credentials_release(creds);
    c.cq = grpc_completion_queue_create_for_pluck(NULL);
    c.deadline = timeout_ms > 0 ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                               gpr_time_from_millis(timeout_ms, GPR_TIMESPAN))
                                : gpr_inf_future(GPR_CLOCK_MONOTONIC);

    int code;
    if (strcmp(cmd, "call") == 0)
        code = cmd_call(&c, args[0], args[1], false);
    else if (strcmp(cmd, "stream") == 0)
        code = cmd_call(&c, args[0], args[1], true);
    else if (strcmp(cmd, "cast") == 0)
        code = cmd_cast(&c, args[0], args[1]);
    else if (strcmp(cmd, "list") == 0)
        code = cmd_list(&c);
    else if (strcmp(cmd, "get") == 0)
        code = cmd_get(&c, args[0]);
    else if (strcmp(cmd, "watch") == 0)
        code = cmd_watch(&c, current);
    else if (strcmp(cmd, "rpc") == 0)
        code = cmd_rpc(&c, args[0], args[1], args[2], args[3]);
    else if (strcmp(cmd, "nodes") == 0)
        code = cmd_nodes(&c);
    else if (strcmp(cmd, "spawn") == 0)
        code = cmd_spawn(&c, (unsigned)count);
    else if (strcmp(cmd, "stop") == 0)
        code = cmd_stop(&c, args[0]);
    else if (strcmp(cmd, "restart") == 0)
        code = cmd_restart(&c, args[0]);
    else
        code = cmd_load(&c, args[0], args[1], args[2]);

    grpc_completion_queue_shutdown(c.cq);
    while (
        grpc_completion_queue_pluck(c.cq, NULL, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
        GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(c.cq);
    grpc_channel_destroy(c.channel);
    if (c.auth_count) grpc_slice_unref(c.auth.value);
    grpc_shutdown_blocking();
    return code;
}
