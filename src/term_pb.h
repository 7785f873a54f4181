/* term_pb: lossless conversion between the gRPC API's protobuf Term/Payload messages and ei terms.
 */
#ifndef NODEX_TERM_PB_H
#define NODEX_TERM_PB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ei.h>

#include "nodex/v1/nodex.pb-c.h"
#include "term.h"

/* --- protobuf to ei ------------------------------------------------------------------------
 * Each function APPENDS exactly one encoded term (no version byte) to `out`, by the mapping of
 * docs/grpc.md, in the canonical encoding term_to_binary uses. `self` is the pid a SelfPid
 * stands for (NULL: none, SelfPid is then TERM_ERR_SELF). Nesting deeper than
 * limits->max_depth is TERM_ERR_DEPTH, output over limits->max_bytes TERM_ERR_SIZE. On error
 * returns -1 with `err` filled (message names the place, e.g. "term.tuple[1].atom"); `out` may
 * hold a partial term and the caller discards it. Thread-safe. */

/* A Term message to a term. */
int term_pb_to_ei(const Nodex__V1__Term *t, const term_limits *limits, const erlang_pid *self,
                  ei_x_buff *out, term_error *err);
/* A Payload: its Term, or its ETF bytes validated with term_from_etf. An empty Payload is an
 * error. */
int term_pb_payload_to_ei(const Nodex__V1__Payload *p, const term_limits *limits,
                          const erlang_pid *self, ei_x_buff *out, term_error *err);

/* --- ei to protobuf ------------------------------------------------------------------------ */

/* Owns every node of the trees built below; a zeroed arena is valid and empty. Not shared
 * between threads. */
typedef struct term_pb_arena {
    struct term_pb_chunk *chunks;
} term_pb_arena;

/* Frees everything the arena holds; it becomes empty and reusable. */
void term_pb_arena_free(term_pb_arena *a);

/* Decodes ONE term at buf[*index] (no version byte; validated first, depth-limited; trailing
 * bytes left alone) into a Term tree allocated in `arena`, and advances *index past it.
 * Binaries in the tree point INTO `buf`, so `buf` must outlive every use of the tree (packing
 * it). Returns 0 with *out set, or -1 with `err` filled. */
int term_pb_from_ei(const char *buf, size_t buf_len, int *index, const term_limits *limits,
                    term_pb_arena *arena, Nodex__V1__Term **out, term_error *err);
/* Fills `out` (already initialized with NODEX__V1__PAYLOAD__INIT) with the term at buf[*index]:
 * as ETF (version byte 131 + the term's exact bytes, copied into the arena) when `as_etf`, else
 * as a Term tree (see term_pb_from_ei). Returns 0, or -1 with `err` filled. */
int term_pb_payload_from_ei(const char *buf, size_t buf_len, int *index, const term_limits *limits,
                            bool as_etf, term_pb_arena *arena, Nodex__V1__Payload *out,
                            term_error *err);

/* --- wire checks --------------------------------------------------------------------------- */

/* protobuf-c's unpacker recurses once per nested message with no limit: this walks serialized
 * bytes of message type `desc` (recursing at most max_depth deep) and returns 0 when they nest at
 * most `max_depth` messages deep (the top message is depth 1), -1 when deeper or not well-formed
 * wire format. Call before protobuf_c_message_unpack on untrusted input. */
int term_pb_check_depth(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                        unsigned max_depth);
/* Why term_pb_unpack refused its input. */
typedef enum term_pb_unpack_status {
    TERM_PB_UNPACK_OK,
    TERM_PB_UNPACK_MALFORMED,   /* not wire format of the message, or nested deeper than allowed */
    TERM_PB_UNPACK_OVER_BUDGET, /* decoding would take more memory than the budget */
} term_pb_unpack_status;

/* Decodes untrusted serialized bytes of message type `desc`: term_pb_check_depth(max_depth)
 * first, then protobuf_c_message_unpack on an allocator that refuses once the memory it holds
 * at one time (protobuf-c's scan buffers included, each block counted with malloc's overhead)
 * would pass `max_bytes`, so no input can take more. Returns the message (free it with
 * term_pb_unpacked_free) with *status TERM_PB_UNPACK_OK, or NULL with *status saying why.
 * `peak` (may be NULL) receives the most memory held at once. Thread-safe. */
ProtobufCMessage *term_pb_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                                 size_t len, unsigned max_depth, size_t max_bytes,
                                 term_pb_unpack_status *status, size_t *peak);
/* Frees a message term_pb_unpack returned; NULL is a no-op. */
void term_pb_unpacked_free(ProtobufCMessage *msg);

/* The message depth that a request holding a Term with `term_depth` nested containers may reach
 * (a map level costs three messages: Term, Map, MapEntry), plus `outer` enclosing messages. */
unsigned term_pb_wire_depth(unsigned term_depth, unsigned outer);

#endif
