/* fuzz_grpc_request: gRPC request decoding on hostile bytes (the budgeted unpack, then the
 * request's Payload to ei); whatever it accepts must round-trip through Payload exactly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "term_pb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The requests that carry a term, as gcall_dispatch decodes them (first input byte picks). */
static const ProtobufCMessageDescriptor *const requests[] = {
    &nodex__v1__call_request__descriptor,
    &nodex__v1__cast_request__descriptor,
    &nodex__v1__rpc_request__descriptor,
};

static const Nodex__V1__Payload *payload_of(const ProtobufCMessage *m) {
    if (m->descriptor == &nodex__v1__call_request__descriptor)
        return ((const Nodex__V1__CallRequest *)m)->request;
    if (m->descriptor == &nodex__v1__cast_request__descriptor)
        return ((const Nodex__V1__CastRequest *)m)->message;
    return ((const Nodex__V1__RpcRequest *)m)->args;
}

/* ei term -> Payload -> wire -> Payload -> ei term: the same bytes as `x`. */
static void check_round_trip(const ei_x_buff *x, bool as_etf, const term_limits *lim,
                             const erlang_pid *self) {
    term_pb_arena arena = {0};
    Nodex__V1__Payload p = NODEX__V1__PAYLOAD__INIT;
    term_error err;
    int idx = 0;
    if (term_pb_payload_from_ei(x->buff, (size_t)x->index, &idx, lim, as_etf, &arena, &p, &err) !=
        0) {
        if (err.status != TERM_ERR_UNSUPPORTED && err.status != TERM_ERR_SIZE) abort();
        term_pb_arena_free(&arena);
        return;
    }
    size_t n = protobuf_c_message_get_packed_size(&p.base);
    uint8_t *wire = malloc(n ? n : 1);
    if (!wire) abort();
    protobuf_c_message_pack(&p.base, wire);
    term_pb_arena_free(&arena);
    term_pb_unpack_status why;
    ProtobufCMessage *back =
        term_pb_unpack(&nodex__v1__payload__descriptor, wire, n, 1000, 64u << 20, &why, NULL);
    free(wire);
    if (!back) abort();
    ei_x_buff y;
    ei_x_new(&y);
    if (term_pb_payload_to_ei((const Nodex__V1__Payload *)back, lim, self, &y, &err) != 0) abort();
    if (y.index != x->index || memcmp(x->buff, y.buff, (size_t)x->index) != 0) abort();
    ei_x_free(&y);
    term_pb_unpacked_free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const ProtobufCMessageDescriptor *desc = requests[data[0] % 3];
    const term_limits lim = {64, 1 << 20};
    erlang_pid self = {.node = "gw@host", .num = 1, .serial = 0, .creation = 1};
    term_pb_unpack_status why;
    size_t peak = 0, budget = 1u << 20;
    ProtobufCMessage *m = term_pb_unpack(desc, data + 1, size - 1,
                                         term_pb_wire_depth(lim.max_depth, 2), budget, &why, &peak);
    if (peak > budget) abort();
    if (!m) {
        if (why == TERM_PB_UNPACK_OK) abort();
        return 0;
    }
    if (why != TERM_PB_UNPACK_OK) abort();
    const Nodex__V1__Payload *p = payload_of(m);
    if (p) {
        ei_x_buff x;
        ei_x_new(&x);
        term_error err;
        if (term_pb_payload_to_ei(p, &lim, &self, &x, &err) == 0)
            check_round_trip(&x, p->value_case == NODEX__V1__PAYLOAD__VALUE_ETF, &lim, &self);
        ei_x_free(&x);
    }
    term_pb_unpacked_free(m);
    return 0;
}
