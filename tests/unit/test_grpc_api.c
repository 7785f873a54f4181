/* test_grpc_api: the gRPC front end in process (gateway + test C-nodes + private epmd) spoken to
 * by a client on the gRPC C core API: Call/CallStream/Watch/ListCnodes/GetCnode, statuses,
 * deadlines, cancel, metadata echo, unknown methods, and shutdown with calls in flight. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "config.h"
#include "epmd.h"
#include "gateway.h"
#include "grpc_api.h"
#include "log.h"
#include "nodex_fixture.h"
#include "strbuf.h"
#include "term.h"
#include "term_pb.h"

#define WAIT_MS 5000 /* upper bound for any single client operation */

/* ---- gateway + gRPC fixture (tests/unit/support/nodex_fixture.h) ------------------------- */

static fixture_gateway fx;
static unsigned instance;
static struct {
    service *svc;
    grpc_api *api;
    grpc_channel *channel;
} front;

/* fixture_hook: the gRPC front end on the fixture's gateway, and a client channel to it. */
static int attach_grpc(fixture_gateway *f, void *ctx) {
    (void)ctx;
    char err[512];
    front.svc = service_new(f->cfg, f->gw, err, sizeof err);
    if (!front.svc) {
        print_error("service_new: %s\n", err);
        return -1;
    }
    front.api = grpc_api_start(f->cfg, f->gw, front.svc, err, sizeof err);
    if (!front.api) {
        print_error("grpc_api_start: %s\n", err);
        return -1;
    }
    const char *addr = grpc_api_address(front.api);
    if (strncmp(addr, "127.0.0.1:", 10) != 0 || atoi(addr + 10) <= 0) {
        print_error("grpc_api_address: %s\n", addr);
        return -1;
    }
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    front.channel = grpc_channel_create(addr, creds, NULL);
    grpc_channel_credentials_release(creds);
    return 0;
}

/* fixture_hook: main.c's order: grpc_api_stop after gateway_run, before gateway_free. */
static int detach_grpc(fixture_gateway *f, void *ctx) {
    (void)f;
    (void)ctx;
    grpc_api_stop(front.api);
    front.api = NULL;
    service_free(front.svc);
    front.svc = NULL;
    if (front.channel) grpc_channel_destroy(front.channel);
    front.channel = NULL;
    return 0;
}

static int setup(void **state) {
    (void)state;
    char yaml[8192];
    snprintf(yaml, sizeof yaml,
             "node:\n"
             "  name: \"gwg%d_%u@127.0.0.1\"\n"
             "  start_epmd: false\n"
             "http:\n"
             "  listen: \"127.0.0.1:0\"\n"
             "grpc:\n"
             "  listen: \"127.0.0.1:0\"\n"
             "  threads: 2\n"
             "log:\n"
             "  level: error\n"
             "cnodes:\n"
             "  - name: t\n"
             "    executable: %s\n"
             "    max_restarts: 0\n"
             "    max_call_timeout_ms: 10000\n"
             "    shutdown_timeout_ms: 1000\n"
             "  - name: tagged\n"
             "    executable: %s\n"
             "    reply_filter: {tag: reply}\n"
             "    shutdown_timeout_ms: 1000\n",
             (int)getpid() % 100000, ++instance, fixture_test_cnode_path(),
             fixture_test_cnode_path());
    if (fixture_gateway_start(&fx, yaml, "test_grpc_api", "grpctestcookie", attach_grpc, NULL) != 0)
        return -1;
    fixture_wait_state(&fx, "t", CNODE_UP, 5000);
    fixture_wait_state(&fx, "tagged", CNODE_UP, 5000);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return fixture_gateway_stop(&fx, detach_grpc, NULL);
}

/* ---- Terms -------------------------------------------------------------------------------- */

/* A Payload built from Erlang text; owns everything it points to. */
typedef struct tpayload {
    Nodex__V1__Payload p;
    ei_x_buff x; /* the Term tree's binaries point into it */
    term_pb_arena arena;
} tpayload;

static void tpayload_text(tpayload *t, const char *text) {
    memset(t, 0, sizeof *t);
    nodex__v1__payload__init(&t->p);
    ei_x_new(&t->x);
    term_error err;
    if (term_from_text(text, strlen(text), NULL, NULL, &t->x, &err) != 0)
        fail_msg("term_from_text(%s): %s", text, err.message);
    int idx = 0;
    if (term_pb_payload_from_ei(t->x.buff, (size_t)t->x.index, &idx, NULL, false, &t->arena, &t->p,
                                &err) != 0)
        fail_msg("term_pb_payload_from_ei(%s): %s", text, err.message);
}

static void tpayload_free(tpayload *t) {
    term_pb_arena_free(&t->arena);
    ei_x_free(&t->x);
}

/* A received Payload (term or etf) as Erlang text; the caller frees it. */
static char *payload_text(const Nodex__V1__Payload *p) {
    assert_non_null(p);
    ei_x_buff x;
    ei_x_new(&x);
    term_error err;
    if (term_pb_payload_to_ei(p, NULL, NULL, &x, &err) != 0)
        fail_msg("reply payload does not convert: %s", err.message);
    strbuf sb = {0};
    int idx = 0;
    if (term_to_text(x.buff, (size_t)x.index, &idx, NULL, &sb, &err) != 0)
        fail_msg("reply does not decode: %s", err.message);
    ei_x_free(&x);
    return strbuf_detach(&sb, NULL);
}

/* ---- gRPC client -------------------------------------------------------------------------- */

/* One client call on its own completion queue (pluck). */
typedef struct ccall {
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_byte_buffer *sent;
    grpc_byte_buffer *recv_bb;
    grpc_metadata_array initial_md, trailing_md;
    bool got_initial_md;
    bool status_started;
    grpc_status_code status;
    grpc_slice details;
    char detail[512];
    int64_t t0;
    int tags; /* distinct tag addresses */
} ccall;

static gpr_timespec in_ms(int ms) {
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

static void cc_pluck(ccall *c, void *tag, const char *what) {
    grpc_event ev = grpc_completion_queue_pluck(c->cq, tag, in_ms(WAIT_MS), NULL);
    if (ev.type != GRPC_OP_COMPLETE) fail_msg("%s: no completion within %d ms", what, WAIT_MS);
}

/* Starts `method` with `req` (NULL: no message is sent), metadata, and a deadline (0: none). */
static void cc_start(ccall *c, const char *method, const ProtobufCMessage *req, int deadline_ms,
                     const grpc_metadata *md, size_t nmd) {
    memset(c, 0, sizeof *c);
    grpc_metadata_array_init(&c->initial_md);
    grpc_metadata_array_init(&c->trailing_md);
    c->cq = grpc_completion_queue_create_for_pluck(NULL);
    c->t0 = fixture_now_ms();
    gpr_timespec deadline =
        deadline_ms > 0 ? in_ms(deadline_ms) : gpr_inf_future(GPR_CLOCK_REALTIME);
    grpc_slice m = grpc_slice_from_static_string(method);
    c->call = grpc_channel_create_call(front.channel, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq, m, NULL,
                                       deadline, NULL);
    assert_non_null(c->call);
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = nmd;
    ops[n].data.send_initial_metadata.metadata = (grpc_metadata *)md;
    n++;
    if (req) {
        size_t len = protobuf_c_message_get_packed_size(req);
        uint8_t *buf = malloc(len ? len : 1);
        assert_non_null(buf);
        protobuf_c_message_pack(req, buf);
        grpc_slice s = grpc_slice_from_copied_buffer((const char *)buf, len);
        free(buf);
        c->sent = grpc_raw_byte_buffer_create(&s, 1);
        grpc_slice_unref(s);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->sent;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    n++;
    assert_int_equal(grpc_call_start_batch(c->call, ops, n, (void *)1, NULL), GRPC_CALL_OK);
    cc_pluck(c, (void *)1, "send batch");
    grpc_byte_buffer_destroy(c->sent);
    c->sent = NULL;
}

/* Starts RECV_STATUS_ON_CLIENT without waiting (tag 3). */
static void cc_start_status(ccall *c) {
    if (c->status_started) return;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &c->trailing_md;
    op.data.recv_status_on_client.status = &c->status;
    op.data.recv_status_on_client.status_details = &c->details;
    assert_int_equal(grpc_call_start_batch(c->call, &op, 1, (void *)3, NULL), GRPC_CALL_OK);
    c->status_started = true;
}

/* Starts RECV_MESSAGE (with RECV_INITIAL_METADATA the first time) without waiting (tag 2). The
 * client must read: gRPC core delivers the status only once the initial metadata and the
 * messages before it have been received. */
static void cc_read_begin(ccall *c) {
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!c->got_initial_md) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n].data.recv_initial_metadata.recv_initial_metadata = &c->initial_md;
        n++;
        c->got_initial_md = true;
    }
    c->recv_bb = NULL;
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n].data.recv_message.recv_message = &c->recv_bb;
    n++;
    assert_int_equal(grpc_call_start_batch(c->call, ops, n, (void *)2, NULL), GRPC_CALL_OK);
}

/* The message cc_read_begin asked for (malloc'd bytes, *len set), or NULL at the end. */
static uint8_t *cc_read_end(ccall *c, size_t *len) {
    cc_pluck(c, (void *)2, "receive");
    grpc_byte_buffer *bb = c->recv_bb;
    c->recv_bb = NULL;
    if (!bb) return NULL;
    grpc_byte_buffer_reader r;
    assert_true(grpc_byte_buffer_reader_init(&r, bb));
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    grpc_byte_buffer_destroy(bb);
    *len = GRPC_SLICE_LENGTH(s);
    uint8_t *out = malloc(*len ? *len : 1);
    assert_non_null(out);
    memcpy(out, GRPC_SLICE_START_PTR(s), *len);
    grpc_slice_unref(s);
    return out;
}

/* The next message (malloc'd bytes, *len set), or NULL at the end of the stream. */
static uint8_t *cc_read(ccall *c, size_t *len) {
    cc_read_begin(c);
    return cc_read_end(c, len);
}

/* Waits for the status; returns it (c->detail holds the message). */
static grpc_status_code cc_finish(ccall *c) {
    cc_start_status(c);
    cc_pluck(c, (void *)3, "status");
    char *d = grpc_slice_to_c_string(c->details);
    snprintf(c->detail, sizeof c->detail, "%s", d);
    gpr_free(d);
    return c->status;
}

static void cc_free(ccall *c) {
    if (c->call) grpc_call_unref(c->call);
    grpc_completion_queue_shutdown(c->cq);
    while (
        grpc_completion_queue_pluck(c->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
        GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(c->cq);
    if (c->status_started) grpc_slice_unref(c->details);
    grpc_metadata_array_destroy(&c->initial_md);
    grpc_metadata_array_destroy(&c->trailing_md);
}

/* The value of metadata `key` in `a` as a NUL-terminated copy in out, or false. */
static bool md_find(const grpc_metadata_array *a, const char *key, char *out, size_t cap) {
    size_t kl = strlen(key);
    for (size_t i = 0; i < a->count; i++) {
        const grpc_metadata *m = &a->metadata[i];
        if (GRPC_SLICE_LENGTH(m->key) == kl && memcmp(GRPC_SLICE_START_PTR(m->key), key, kl) == 0) {
            size_t vl = GRPC_SLICE_LENGTH(m->value);
            snprintf(out, cap, "%.*s", (int)vl, (const char *)GRPC_SLICE_START_PTR(m->value));
            return true;
        }
    }
    return false;
}

/* A unary call: the status; *reply (the caller frees it) is the reply message or NULL. */
static grpc_status_code unary(ccall *c, const char *method, const ProtobufCMessage *req,
                              int deadline_ms, const grpc_metadata *md, size_t nmd,
                              const ProtobufCMessageDescriptor *reply_desc,
                              ProtobufCMessage **reply) {
    cc_start(c, method, req, deadline_ms, md, nmd);
    size_t len = 0;
    uint8_t *bytes = cc_read(c, &len);
    *reply = NULL;
    if (bytes) {
        *reply = protobuf_c_message_unpack(reply_desc, NULL, len, bytes);
        assert_non_null(*reply);
        size_t more_len;
        uint8_t *more = cc_read(c, &more_len);
        if (more) fail_msg("%s: a second message on a unary call", method);
    }
    free(bytes);
    return cc_finish(c);
}

static grpc_status_code do_call(ccall *c, const char *cnode, const char *text, int deadline_ms,
                                Nodex__V1__CallReply **reply) {
    tpayload tp;
    tpayload_text(&tp, text);
    Nodex__V1__CallRequest req = NODEX__V1__CALL_REQUEST__INIT;
    req.cnode = (char *)cnode;
    req.request = &tp.p;
    grpc_status_code st = unary(c, "/nodex.v1.Gateway/Call", &req.base, deadline_ms, NULL, 0,
                                &nodex__v1__call_reply__descriptor, (ProtobufCMessage **)reply);
    tpayload_free(&tp);
    return st;
}

/* Call `text` on `cnode` and expect OK with `want` as the reply text. */
static void expect_call(const char *cnode, const char *text, const char *want) {
    ccall c;
    Nodex__V1__CallReply *r;
    grpc_status_code st = do_call(&c, cnode, text, 5000, &r);
    if (st != GRPC_STATUS_OK) fail_msg("Call %s: status %d (%s)", text, (int)st, c.detail);
    assert_non_null(r);
    assert_int_equal(r->reply->value_case, NODEX__V1__PAYLOAD__VALUE_TERM);
    char *got = payload_text(r->reply);
    assert_string_equal(got, want);
    free(got);
    nodex__v1__call_reply__free_unpacked(r, NULL);
    cc_free(&c);
}

static gateway_cnode_info cnode_info(const char *name) {
    gateway_cnode_info info;
    assert_int_equal(gateway_cnode_info_by_name(fx.gw, name, &info), 0);
    return info;
}

static void wait_in_flight_zero(const char *name, int timeout_ms) {
    for (int64_t deadline = fixture_now_ms() + timeout_ms;;) {
        gateway_cnode_info info = cnode_info(name);
        if (info.in_flight == 0) return;
        if (fixture_now_ms() > deadline)
            fail_msg("C-node %s still has %zu calls in flight", name, info.in_flight);
        fixture_sleep_ms(5);
    }
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_call_ping_replies_pong(void **state) {
    (void)state;
    expect_call("t", "{ping, {1, <<\"hello\">>, [a, 2.5], #{k => v}}}",
                "{pong,{1,<<\"hello\">>,[a,2.5],#{k => v}}}");
    gateway_cnode_info info = cnode_info("t");
    assert_int_equal(info.calls_total, 1);
    assert_int_equal(info.in_flight, 0);
}

static void test_call_with_etf_request_and_reply_as_etf(void **state) {
    (void)state;
    /* term_to_binary({ping, <<"etf">>}) */
    ei_x_buff x;
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "ping");
    ei_x_encode_binary(&x, "etf", 3);
    Nodex__V1__Payload p = NODEX__V1__PAYLOAD__INIT;
    p.value_case = NODEX__V1__PAYLOAD__VALUE_ETF;
    p.etf.data = (uint8_t *)x.buff;
    p.etf.len = (size_t)x.index;
    Nodex__V1__CallRequest req = NODEX__V1__CALL_REQUEST__INIT;
    req.cnode = "t";
    req.request = &p;
    req.reply_as_etf = true;
    ccall c;
    Nodex__V1__CallReply *r;
    grpc_status_code st = unary(&c, "/nodex.v1.Gateway/Call", &req.base, 5000, NULL, 0,
                                &nodex__v1__call_reply__descriptor, (ProtobufCMessage **)&r);
    ei_x_free(&x);
    if (st != GRPC_STATUS_OK) fail_msg("status %d (%s)", (int)st, c.detail);
    assert_non_null(r);
    assert_int_equal(r->reply->value_case, NODEX__V1__PAYLOAD__VALUE_ETF);
    assert_true(r->reply->etf.len > 1);
    assert_int_equal(r->reply->etf.data[0], 131);
    /* Decoded with ei itself: {pong, <<"etf">>}. */
    const char *b = (const char *)r->reply->etf.data;
    int idx = 0, ver, arity;
    char atom[MAXATOMLEN];
    assert_int_equal(ei_decode_version(b, &idx, &ver), 0);
    assert_int_equal(ei_decode_tuple_header(b, &idx, &arity), 0);
    assert_int_equal(arity, 2);
    assert_int_equal(ei_decode_atom(b, &idx, atom), 0);
    assert_string_equal(atom, "pong");
    char bin[16];
    long bl;
    assert_int_equal(ei_decode_binary(b, &idx, bin, &bl), 0);
    assert_int_equal(bl, 3);
    assert_memory_equal(bin, "etf", 3);
    assert_int_equal((size_t)idx, r->reply->etf.len); /* exactly one term */
    nodex__v1__call_reply__free_unpacked(r, NULL);
    cc_free(&c);
}

static void test_unknown_cnode_is_not_found_with_a_message(void **state) {
    (void)state;
    ccall c;
    Nodex__V1__CallReply *r;
    assert_int_equal(do_call(&c, "nope", "{ping, x}", 5000, &r), GRPC_STATUS_NOT_FOUND);
    assert_null(r);
    assert_non_null(strstr(c.detail, "nope"));
    cc_free(&c);
    /* GetCnode too. */
    Nodex__V1__GetCnodeRequest g = NODEX__V1__GET_CNODE_REQUEST__INIT;
    g.name = "nope";
    Nodex__V1__CnodeInfo *info;
    assert_int_equal(unary(&c, "/nodex.v1.Gateway/GetCnode", &g.base, 5000, NULL, 0,
                           &nodex__v1__cnode_info__descriptor, (ProtobufCMessage **)&info),
                     GRPC_STATUS_NOT_FOUND);
    assert_null(info);
    assert_non_null(strstr(c.detail, "nope"));
    cc_free(&c);
}

static grpc_status_code call_with_payload(ccall *c, Nodex__V1__Payload *p, unsigned timeout_ms) {
    Nodex__V1__CallRequest req = NODEX__V1__CALL_REQUEST__INIT;
    req.cnode = "t";
    req.request = p;
    req.timeout_ms = timeout_ms;
    Nodex__V1__CallReply *r;
    grpc_status_code st = unary(c, "/nodex.v1.Gateway/Call", &req.base, 5000, NULL, 0,
                                &nodex__v1__call_reply__descriptor, (ProtobufCMessage **)&r);
    assert_null(r);
    return st;
}

static void test_bad_terms_are_invalid_argument(void **state) {
    (void)state;
    ccall c;
    /* {ping, <256 x a>}: an atom longer than 255 characters. */
    char long_atom[257];
    memset(long_atom, 'a', 256);
    long_atom[256] = '\0';
    Nodex__V1__Term tag = NODEX__V1__TERM__INIT, arg = NODEX__V1__TERM__INIT,
                    tup = NODEX__V1__TERM__INIT;
    tag.kind_case = NODEX__V1__TERM__KIND_ATOM;
    tag.atom = "ping";
    arg.kind_case = NODEX__V1__TERM__KIND_ATOM;
    arg.atom = long_atom;
    Nodex__V1__Term *elems[] = {&tag, &arg};
    Nodex__V1__Tuple tuple = NODEX__V1__TUPLE__INIT;
    tuple.n_elements = 2;
    tuple.elements = elems;
    tup.kind_case = NODEX__V1__TERM__KIND_TUPLE;
    tup.tuple = &tuple;
    Nodex__V1__Payload p = NODEX__V1__PAYLOAD__INIT;
    p.value_case = NODEX__V1__PAYLOAD__VALUE_TERM;
    p.term = &tup;
    assert_int_equal(call_with_payload(&c, &p, 0), GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(c.detail, "255"));
    cc_free(&c);

    /* 255 characters are fine (and 255 two-byte characters too). */
    long_atom[255] = '\0';
    Nodex__V1__CallRequest ok = NODEX__V1__CALL_REQUEST__INIT;
    ok.cnode = "t";
    ok.request = &p;
    Nodex__V1__CallReply *r;
    assert_int_equal(unary(&c, "/nodex.v1.Gateway/Call", &ok.base, 5000, NULL, 0,
                           &nodex__v1__call_reply__descriptor, (ProtobufCMessage **)&r),
                     GRPC_STATUS_OK);
    char *text = payload_text(r->reply);
    assert_non_null(strstr(text, "{pong,aaaa"));
    free(text);
    nodex__v1__call_reply__free_unpacked(r, NULL);
    cc_free(&c);

    /* A Payload with neither case set, and no Payload at all. */
    Nodex__V1__Payload empty = NODEX__V1__PAYLOAD__INIT;
    assert_int_equal(call_with_payload(&c, &empty, 0), GRPC_STATUS_INVALID_ARGUMENT);
    assert_true(c.detail[0] != '\0');
    cc_free(&c);
    assert_int_equal(call_with_payload(&c, NULL, 0), GRPC_STATUS_INVALID_ARGUMENT);
    assert_true(c.detail[0] != '\0');
    cc_free(&c);

    /* A Term with no kind set inside a tuple. */
    Nodex__V1__Term unset = NODEX__V1__TERM__INIT;
    elems[1] = &unset;
    assert_int_equal(call_with_payload(&c, &p, 0), GRPC_STATUS_INVALID_ARGUMENT);
    cc_free(&c);

    /* ETF that is not a term, and timeout_ms over max_call_timeout_ms. */
    Nodex__V1__Payload bad_etf = NODEX__V1__PAYLOAD__INIT;
    bad_etf.value_case = NODEX__V1__PAYLOAD__VALUE_ETF;
    bad_etf.etf.data = (uint8_t *)"\x83\x68\x05";
    bad_etf.etf.len = 3;
    assert_int_equal(call_with_payload(&c, &bad_etf, 0), GRPC_STATUS_INVALID_ARGUMENT);
    cc_free(&c);
    elems[1] = &arg;
    assert_int_equal(call_with_payload(&c, &p, 10001), GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(c.detail, "10000"));
    cc_free(&c);

    /* Bytes that are no CallRequest at all. */
    {
        ccall raw;
        memset(&raw, 0, sizeof raw);
        grpc_metadata_array_init(&raw.initial_md);
        grpc_metadata_array_init(&raw.trailing_md);
        raw.cq = grpc_completion_queue_create_for_pluck(NULL);
        raw.call = grpc_channel_create_call(front.channel, NULL, GRPC_PROPAGATE_DEFAULTS, raw.cq,
                                            grpc_slice_from_static_string("/nodex.v1.Gateway/Call"),
                                            NULL, in_ms(5000), NULL);
        grpc_slice s = grpc_slice_from_static_string("\x0a\xff\xff\xff\xff\x0f");
        grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
        grpc_op ops[3];
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = bb;
        ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        assert_int_equal(grpc_call_start_batch(raw.call, ops, 3, (void *)1, NULL), GRPC_CALL_OK);
        cc_pluck(&raw, (void *)1, "send");
        grpc_byte_buffer_destroy(bb);
        size_t len;
        assert_null(cc_read(&raw, &len));
        assert_int_equal(cc_finish(&raw), GRPC_STATUS_INVALID_ARGUMENT);
        cc_free(&raw);
    }

    /* The server is fine afterwards. */
    expect_call("t", "{ping, afterwards}", "{pong,afterwards}");
}

static void test_deadline_200ms_on_a_slow_call_is_deadline_exceeded(void **state) {
    (void)state;
    ccall c;
    Nodex__V1__CallReply *r;
    int64_t t0 = fixture_now_ms();
    grpc_status_code st = do_call(&c, "t", "{sleep, 1000, x}", 200, &r);
    int64_t took = fixture_now_ms() - t0;
    assert_int_equal(st, GRPC_STATUS_DEADLINE_EXCEEDED);
    assert_null(r);
    if (took < 180 || took > 400)
        fail_msg("DEADLINE_EXCEEDED after %lld ms, want ~200", (long long)took);
    cc_free(&c);
    /* The gateway call ended with it (no wait for the C-node's reply at ~1000 ms). */
    wait_in_flight_zero("t", 500);
    /* The late reply is dropped and the next call works (after the C-node wakes up). */
    expect_call("t", "{ping, next}", "{pong,next}");
    for (int64_t deadline = fixture_now_ms() + 2000; cnode_info("t").dropped_messages < 1;) {
        if (fixture_now_ms() > deadline) fail_msg("the late reply was not counted as dropped");
        fixture_sleep_ms(5);
    }
}

static void test_cancel_after_begin_keeps_the_server_healthy(void **state) {
    (void)state;
    tpayload tp;
    tpayload_text(&tp, "{sleep, 300, cancelled}");
    Nodex__V1__CallRequest req = NODEX__V1__CALL_REQUEST__INIT;
    req.cnode = "t";
    req.request = &tp.p;
    ccall c;
    cc_start(&c, "/nodex.v1.Gateway/Call", &req.base, 5000, NULL, 0);
    tpayload_free(&tp);
    cc_start_status(&c);
    /* Wait until the gateway call is in flight, then cancel. */
    for (int64_t deadline = fixture_now_ms() + 2000; cnode_info("t").in_flight == 0;) {
        if (fixture_now_ms() > deadline) fail_msg("the call never reached the gateway");
        fixture_sleep_ms(2);
    }
    int64_t t0 = fixture_now_ms();
    assert_int_equal(grpc_call_cancel(c.call, NULL), GRPC_CALL_OK);
    assert_int_equal(cc_finish(&c), GRPC_STATUS_CANCELLED);
    assert_true(fixture_now_ms() - t0 < 200);
    cc_free(&c);
    /* The server noticed: the gateway call is freed without waiting for the reply. */
    wait_in_flight_zero("t", 250);
    /* A following Call works, on the same channel. */
    expect_call("t", "{ping, after_cancel}", "{pong,after_cancel}");
    for (int64_t deadline = fixture_now_ms() + 2000; cnode_info("t").dropped_messages < 1;) {
        if (fixture_now_ms() > deadline)
            fail_msg("the cancelled call's reply was not counted as dropped");
        fixture_sleep_ms(5);
    }
    expect_call("t", "{ping, again}", "{pong,again}");
}

static void test_unimplemented_method(void **state) {
    (void)state;
    Nodex__V1__GetCnodeRequest g = NODEX__V1__GET_CNODE_REQUEST__INIT;
    g.name = "t";
    ccall c;
    Nodex__V1__CnodeInfo *r;
    assert_int_equal(unary(&c, "/nodex.v1.Gateway/Nope", &g.base, 5000, NULL, 0,
                           &nodex__v1__cnode_info__descriptor, (ProtobufCMessage **)&r),
                     GRPC_STATUS_UNIMPLEMENTED);
    assert_null(r);
    assert_non_null(strstr(c.detail, "Nope"));
    cc_free(&c);
    /* More unknown calls than posted request slots, then a known one. */
    for (int i = 0; i < 10; i++) {
        assert_int_equal(unary(&c, "/other.Service/Method", NULL, 5000, NULL, 0,
                               &nodex__v1__cnode_info__descriptor, (ProtobufCMessage **)&r),
                         GRPC_STATUS_UNIMPLEMENTED);
        cc_free(&c);
    }
    expect_call("t", "{ping, known}", "{pong,known}");
}

static void test_call_stream_noise_then_final_then_ok(void **state) {
    (void)state;
    tpayload tp;
    tpayload_text(&tp, "{noise, 2, <<\"s\">>}");
    Nodex__V1__CallRequest req = NODEX__V1__CALL_REQUEST__INIT;
    req.cnode = "tagged";
    req.request = &tp.p;
    ccall c;
    cc_start(&c, "/nodex.v1.Gateway/CallStream", &req.base, 5000, NULL, 0);
    tpayload_free(&tp);
    static const char *const want[] = {"{noise,1}", "{noise,2}", "{pong,<<\"s\">>}"};
    for (int i = 0; i < 3; i++) {
        size_t len;
        uint8_t *bytes = cc_read(&c, &len);
        if (!bytes) fail_msg("stream ended after %d messages", i);
        Nodex__V1__CallStreamMessage *m = nodex__v1__call_stream_message__unpack(NULL, len, bytes);
        free(bytes);
        assert_non_null(m);
        char *text = payload_text(m->message);
        assert_string_equal(text, want[i]);
        assert_int_equal(m->final, i == 2);
        free(text);
        nodex__v1__call_stream_message__free_unpacked(m, NULL);
    }
    size_t len;
    assert_null(cc_read(&c, &len));
    assert_int_equal(cc_finish(&c), GRPC_STATUS_OK);
    cc_free(&c);
    gateway_cnode_info info = cnode_info("tagged");
    assert_int_equal(info.in_flight, 0);
    assert_int_equal(info.dropped_messages, 0);
}

static void test_watch_include_current_sends_up_for_the_cnode(void **state) {
    (void)state;
    gateway_cnode_info t = cnode_info("t");
    Nodex__V1__WatchRequest req = NODEX__V1__WATCH_REQUEST__INIT;
    req.include_current = true;
    ccall c;
    cc_start(&c, "/nodex.v1.Gateway/Watch", &req.base, 0, NULL, 0);
    bool seen_t = false, seen_tagged = false;
    for (int i = 0; i < 16 && !(seen_t && seen_tagged); i++) {
        size_t len;
        uint8_t *bytes = cc_read(&c, &len);
        if (!bytes) fail_msg("Watch ended after %d events", i);
        Nodex__V1__Event *ev = nodex__v1__event__unpack(NULL, len, bytes);
        free(bytes);
        assert_non_null(ev);
        if (ev->kind == NODEX__V1__EVENT__KIND__CNODE) {
            assert_int_equal(ev->seq, 0); /* current states */
            assert_int_equal(ev->state, NODEX__V1__STATE__UP);
            assert_true(ev->time_ms > 1600000000000LL);
            if (strcmp(ev->name, "t") == 0) {
                seen_t = true;
                assert_int_equal(ev->os_pid, t.os_pid);
                assert_string_equal(ev->node, t.node);
            } else if (strcmp(ev->name, "tagged") == 0) {
                seen_tagged = true;
            }
        }
        nodex__v1__event__free_unpacked(ev, NULL);
    }
    assert_true(seen_t && seen_tagged);
    /* The client ends the stream; the server unsubscribes and keeps serving. */
    assert_int_equal(grpc_call_cancel(c.call, NULL), GRPC_CALL_OK);
    assert_int_equal(cc_finish(&c), GRPC_STATUS_CANCELLED);
    cc_free(&c);
    expect_call("t", "{ping, after_watch}", "{pong,after_watch}");
}

static void check_info(const Nodex__V1__CnodeInfo *pb, const char *name) {
    gateway_cnode_info gi = cnode_info(name);
    assert_string_equal(pb->name, name);
    assert_int_equal(pb->state, NODEX__V1__STATE__UP);
    assert_string_equal(pb->node, gi.node);
    assert_true(pb->os_pid > 0);
    assert_int_equal(pb->os_pid, gi.os_pid);
    assert_int_equal(pb->restarts, 0);
    assert_string_equal(pb->last_exit, "");
    assert_int_equal(pb->in_flight, 0);
    assert_true(pb->uptime_ms >= 0);
    assert_int_equal(pb->calls_total, gi.calls_total);
    assert_int_equal(pb->dropped_messages, 0);
    assert_string_equal(pb->direction, cnode_direction_name(gi.direction));
    assert_string_equal(pb->protocol, cnode_protocol_name(gi.protocol));
    assert_string_equal(pb->direction, "back");
    assert_string_equal(pb->protocol, "raw");
}

static void test_list_cnodes_and_get_cnode_fields(void **state) {
    (void)state;
    expect_call("t", "{ping, 1}", "{pong,1}");
    expect_call("t", "{ping, 2}", "{pong,2}");
    ccall c;
    Nodex__V1__ListCnodesRequest lreq = NODEX__V1__LIST_CNODES_REQUEST__INIT;
    Nodex__V1__ListCnodesReply *list;
    assert_int_equal(unary(&c, "/nodex.v1.Gateway/ListCnodes", &lreq.base, 5000, NULL, 0,
                           &nodex__v1__list_cnodes_reply__descriptor, (ProtobufCMessage **)&list),
                     GRPC_STATUS_OK);
    cc_free(&c);
    assert_int_equal(list->n_cnodes, 2);
    check_info(list->cnodes[0], "t");
    check_info(list->cnodes[1], "tagged");
    assert_int_equal(list->cnodes[0]->calls_total, 2);
    assert_int_equal(list->cnodes[1]->calls_total, 0);
    nodex__v1__list_cnodes_reply__free_unpacked(list, NULL);

    Nodex__V1__GetCnodeRequest g = NODEX__V1__GET_CNODE_REQUEST__INIT;
    g.name = "t";
    Nodex__V1__CnodeInfo *info;
    assert_int_equal(unary(&c, "/nodex.v1.Gateway/GetCnode", &g.base, 5000, NULL, 0,
                           &nodex__v1__cnode_info__descriptor, (ProtobufCMessage **)&info),
                     GRPC_STATUS_OK);
    cc_free(&c);
    check_info(info, "t");
    assert_int_equal(info->calls_total, 2);
    nodex__v1__cnode_info__free_unpacked(info, NULL);
}

static void test_x_request_id_is_echoed_or_made_in_initial_metadata(void **state) {
    (void)state;
    grpc_metadata md[2];
    memset(md, 0, sizeof md);
    md[0].key = grpc_slice_from_static_string("x-request-id");
    md[0].value = grpc_slice_from_static_string("req-42");
    md[1].key = grpc_slice_from_static_string("x-custom-bin");
    md[1].value = grpc_slice_from_static_buffer("\x00\x01\x02", 3);
    tpayload tp;
    tpayload_text(&tp, "{ping, md}");
    Nodex__V1__CallRequest req = NODEX__V1__CALL_REQUEST__INIT;
    req.cnode = "t";
    req.request = &tp.p;
    ccall c;
    Nodex__V1__CallReply *r;
    assert_int_equal(unary(&c, "/nodex.v1.Gateway/Call", &req.base, 5000, md, 2,
                           &nodex__v1__call_reply__descriptor, (ProtobufCMessage **)&r),
                     GRPC_STATUS_OK);
    tpayload_free(&tp);
    char v[64];
    if (!md_find(&c.initial_md, "x-request-id", v, sizeof v))
        fail_msg("x-request-id not in the initial metadata (%zu entries)", c.initial_md.count);
    assert_string_equal(v, "req-42");
    assert_false(md_find(&c.initial_md, "x-custom-bin", v, sizeof v));
    char *text = payload_text(r->reply);
    assert_string_equal(text, "{pong,md}");
    free(text);
    nodex__v1__call_reply__free_unpacked(r, NULL);
    cc_free(&c);

    /* Echoed on an error too (NOT_FOUND: no message, status only). */
    tpayload_text(&tp, "{ping, md}");
    req.cnode = "nope";
    req.request = &tp.p;
    assert_int_equal(unary(&c, "/nodex.v1.Gateway/Call", &req.base, 5000, md, 1,
                           &nodex__v1__call_reply__descriptor, (ProtobufCMessage **)&r),
                     GRPC_STATUS_NOT_FOUND);
    tpayload_free(&tp);
    assert_true(md_find(&c.initial_md, "x-request-id", v, sizeof v));
    assert_string_equal(v, "req-42");
    cc_free(&c);

    /* Without it, nodexd makes one (32 hex digits) and sends it back. */
    assert_int_equal(do_call(&c, "t", "{ping, nomd}", 5000, &r), GRPC_STATUS_OK);
    assert_true(md_find(&c.initial_md, "x-request-id", v, sizeof v));
    assert_int_equal(strlen(v), 32);
    assert_int_equal(strspn(v, "0123456789abcdef"), 32);
    nodex__v1__call_reply__free_unpacked(r, NULL);
    cc_free(&c);

    /* A streaming call gets it before its first message. */
    Nodex__V1__WatchRequest w = NODEX__V1__WATCH_REQUEST__INIT;
    w.include_current = true;
    md[0].value = grpc_slice_from_static_string("watch-7");
    cc_start(&c, "/nodex.v1.Gateway/Watch", &w.base, 0, md, 1);
    size_t len;
    uint8_t *bytes = cc_read(&c, &len);
    assert_non_null(bytes);
    free(bytes);
    assert_true(md_find(&c.initial_md, "x-request-id", v, sizeof v));
    assert_string_equal(v, "watch-7");
    grpc_call_cancel(c.call, NULL);
    assert_int_equal(cc_finish(&c), GRPC_STATUS_CANCELLED);
    cc_free(&c);
}

static void test_concurrent_calls_on_one_channel(void **state) {
    (void)state;
    enum { N = 24 };
    static ccall cs[N];
    for (int i = 0; i < N; i++) {
        char text[64];
        snprintf(text, sizeof text, "{ping, {%d, <<\"p%d\">>}}", i, i * 31);
        tpayload tp;
        tpayload_text(&tp, text);
        Nodex__V1__CallRequest req = NODEX__V1__CALL_REQUEST__INIT;
        req.cnode = i % 2 ? "t" : "tagged";
        if (i % 2 == 0) { /* on `tagged` only {reply, R} is a reply: ask for noise 0 */
            tpayload_free(&tp);
            snprintf(text, sizeof text, "{noise, 0, {%d, <<\"p%d\">>}}", i, i * 31);
            tpayload_text(&tp, text);
        }
        req.request = &tp.p;
        cc_start(&cs[i], "/nodex.v1.Gateway/Call", &req.base, 5000, NULL, 0);
        tpayload_free(&tp);
        cc_start_status(&cs[i]);
    }
    for (int i = N - 1; i >= 0; i--) {
        size_t len;
        uint8_t *bytes = cc_read(&cs[i], &len);
        if (!bytes) fail_msg("call %d: no reply (status %d)", i, (int)cc_finish(&cs[i]));
        Nodex__V1__CallReply *r = nodex__v1__call_reply__unpack(NULL, len, bytes);
        free(bytes);
        assert_non_null(r);
        char *text = payload_text(r->reply), want[64];
        snprintf(want, sizeof want, "{pong,{%d,<<\"p%d\">>}}", i, i * 31);
        assert_string_equal(text, want);
        free(text);
        nodex__v1__call_reply__free_unpacked(r, NULL);
        assert_int_equal(cc_finish(&cs[i]), GRPC_STATUS_OK);
        cc_free(&cs[i]);
    }
    assert_int_equal(cnode_info("t").calls_total, N / 2);
    assert_int_equal(cnode_info("tagged").calls_total, N / 2);
}

static void test_shutdown_with_calls_in_flight_is_unavailable(void **state) {
    (void)state;
    /* A Call the C-node answers only after 3 s, and a Watch stream. */
    tpayload tp;
    tpayload_text(&tp, "{sleep, 3000, late}");
    Nodex__V1__CallRequest req = NODEX__V1__CALL_REQUEST__INIT;
    req.cnode = "t";
    req.request = &tp.p;
    ccall call;
    cc_start(&call, "/nodex.v1.Gateway/Call", &req.base, 0, NULL, 0);
    tpayload_free(&tp);
    cc_read_begin(&call);
    cc_start_status(&call);
    Nodex__V1__WatchRequest w = NODEX__V1__WATCH_REQUEST__INIT;
    ccall watch;
    cc_start(&watch, "/nodex.v1.Gateway/Watch", &w.base, 0, NULL, 0);
    cc_read_begin(&watch);
    cc_start_status(&watch);
    for (int64_t deadline = fixture_now_ms() + 2000; cnode_info("t").in_flight == 0;) {
        if (fixture_now_ms() > deadline) fail_msg("the call never reached the gateway");
        fixture_sleep_ms(2);
    }
    fixture_sleep_ms(50); /* let the Watch subscribe */
    /* main.c's order: the loop returns (failing pending calls), then the gRPC server stops. */
    int64_t t0 = fixture_now_ms();
    fixture_gateway_stop_loop(&fx);
    grpc_api_stop(front.api);
    front.api = NULL;
    int64_t took = fixture_now_ms() - t0;
    if (took > 2500) fail_msg("shutdown took %lld ms", (long long)took);

    size_t len;
    assert_null(cc_read_end(&call, &len));
    assert_int_equal(cc_finish(&call), GRPC_STATUS_UNAVAILABLE);
    assert_non_null(strstr(call.detail, "shutting down"));
    assert_true(fixture_now_ms() - call.t0 < 2900); /* not the C-node's reply at 3 s */
    cc_free(&call);
    /* The Watch saw the C-nodes stop, then ended. */
    int events = 0;
    bool t_stopped = false;
    for (uint8_t *bytes; (bytes = cc_read_end(&watch, &len)); cc_read_begin(&watch)) {
        Nodex__V1__Event *ev = nodex__v1__event__unpack(NULL, len, bytes);
        free(bytes);
        assert_non_null(ev);
        assert_true(ev->seq > 0);
        if (strcmp(ev->name, "t") == 0 && ev->state == NODEX__V1__STATE__STOPPED) t_stopped = true;
        nodex__v1__event__free_unpacked(ev, NULL);
        if (++events > 32) fail_msg("Watch does not end");
    }
    assert_true(t_stopped);
    assert_int_equal(cc_finish(&watch), GRPC_STATUS_UNAVAILABLE);
    assert_true(watch.detail[0] != '\0');
    cc_free(&watch);

    /* Nothing listens any more. */
    ccall late;
    Nodex__V1__CallReply *r;
    assert_int_equal(do_call(&late, "t", "{ping, late}", 2000, &r), GRPC_STATUS_UNAVAILABLE);
    assert_null(r);
    cc_free(&late);
}

static int group_setup(void **state) {
    (void)state;
    fixture_find_test_cnode();
    grpc_init(); /* the client's reference: gRPC core stays up between the tests' servers */
    return fixture_epmd_start();
}

static int group_teardown(void **state) {
    (void)state;
    fixture_epmd_stop();
    unsetenv("ERL_EPMD_PORT");
    grpc_shutdown_blocking();
    return 0;
}

int main(void) {
    fixture_process_init(); /* before any thread */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_call_ping_replies_pong, setup, teardown),
        cmocka_unit_test_setup_teardown(test_call_with_etf_request_and_reply_as_etf, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unknown_cnode_is_not_found_with_a_message, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_terms_are_invalid_argument, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_200ms_on_a_slow_call_is_deadline_exceeded,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_after_begin_keeps_the_server_healthy, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unimplemented_method, setup, teardown),
        cmocka_unit_test_setup_teardown(test_call_stream_noise_then_final_then_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch_include_current_sends_up_for_the_cnode, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_list_cnodes_and_get_cnode_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_x_request_id_is_echoed_or_made_in_initial_metadata,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_calls_on_one_channel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_with_calls_in_flight_is_unavailable, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
