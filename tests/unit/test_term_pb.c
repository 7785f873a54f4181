/* test_term_pb: ei <-> protobuf Term/Payload is lossless, validated and depth-limited. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include <cmocka.h>

#include "strbuf.h"
#include "term.h"
#include "term_pb.h"

static erlang_pid self_pid = {.node = "nodexd@127.0.0.1", .num = 7, .serial = 1, .creation = 3};

/* Erlang text -> ei (canonical). */
static void text_to_ei(const char *text, ei_x_buff *x) {
    term_error err;
    assert_int_equal(ei_x_new(x), 0);
    if (term_from_text(text, strlen(text), NULL, &self_pid, x, &err) != 0)
        fail_msg("parse %s: %s", text, err.message);
}

/* ei -> Term -> wire -> Term -> ei must give the same bytes. */
static void roundtrip(const char *text) {
    ei_x_buff in, out;
    text_to_ei(text, &in);
    term_pb_arena arena = {0};
    Nodex__V1__Term *t = NULL;
    term_error err;
    int idx = 0;
    if (term_pb_from_ei(in.buff, (size_t)in.index, &idx, NULL, &arena, &t, &err) != 0)
        fail_msg("from_ei %s: %s", text, err.message);
    assert_int_equal(idx, in.index);
    size_t n = protobuf_c_message_get_packed_size(&t->base);
    uint8_t *wire = malloc(n + 1);
    protobuf_c_message_pack(&t->base, wire);
    term_pb_arena_free(&arena);
    assert_int_equal(term_pb_check_depth(&nodex__v1__term__descriptor, wire, n, 10000), 0);
    Nodex__V1__Term *back =
        (Nodex__V1__Term *)protobuf_c_message_unpack(&nodex__v1__term__descriptor, NULL, n, wire);
    assert_non_null(back);
    assert_int_equal(ei_x_new(&out), 0);
    if (term_pb_to_ei(back, NULL, &self_pid, &out, &err) != 0)
        fail_msg("to_ei %s: %s", text, err.message);
    if (out.index != in.index || memcmp(out.buff, in.buff, (size_t)in.index) != 0)
        fail_msg("%s: bytes differ after the round trip", text);
    protobuf_c_message_free_unpacked(&back->base, NULL);
    free(wire);
    ei_x_free(&in);
    ei_x_free(&out);
}

static void test_roundtrip_every_type(void **state) {
    (void)state;
    static const char *const terms[] = {
        "ok",
        "'hello world'",
        "'é'",
        "'日本'",
        "''",
        "true",
        "0",
        "255",
        "256",
        "-1",
        "2147483647",
        "-2147483648",
        "2147483648",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "-9223372036854775809",
        "123456789012345678901234567890123456789",
        "1.0",
        "-0.0",
        "0.1",
        "1.5e300",
        "<<>>",
        "<<\"hi\">>",
        "<<255,0,1>>",
        "<<1,2,3:5>>",
        "<<1:1>>",
        "[]",
        "\"abc\"",
        "[1,2,300]",
        "[a|b]",
        "[1,2|<<\"t\">>]",
        "[[]]",
        "{}",
        "{a,1,<<\"x\">>}",
        "#{}",
        "#{a => 1, <<\"k\">> => [1,{2}]}",
        "self()",
        "{self(), [self()]}",
        "{deep, [{nested, #{k => [1.5, \"s\", <<7:3>>]}}]}",
    };
    for (size_t i = 0; i < sizeof terms / sizeof terms[0]; i++) roundtrip(terms[i]);
    /* a tuple of arity 300 (LARGE_TUPLE_EXT) */
    strbuf sb = {0};
    strbuf_putc(&sb, '{');
    for (int i = 0; i < 300; i++) strbuf_printf(&sb, i ? ",%d" : "%d", i);
    strbuf_putc(&sb, '}');
    roundtrip(sb.data);
    strbuf_free(&sb);
}

static void test_int_and_big_forms(void **state) {
    (void)state;
    term_pb_arena arena = {0};
    Nodex__V1__Term *t;
    ei_x_buff x;
    term_error err;
    int idx = 0;
    text_to_ei("[-9223372036854775808, 9223372036854775808, 7]", &x);
    assert_int_equal(term_pb_from_ei(x.buff, (size_t)x.index, &idx, NULL, &arena, &t, &err), 0);
    assert_int_equal(t->kind_case, NODEX__V1__TERM__KIND_LIST);
    assert_int_equal(t->list->n_elements, 3);
    assert_int_equal(t->list->elements[0]->kind_case, NODEX__V1__TERM__KIND_INT);
    assert_true(t->list->elements[0]->int_ == INT64_MIN);
    assert_int_equal(t->list->elements[1]->kind_case, NODEX__V1__TERM__KIND_BIG_INT);
    assert_string_equal(t->list->elements[1]->big_int, "9223372036854775808");
    assert_null(t->list->tail);
    term_pb_arena_free(&arena);
    ei_x_free(&x);
}

static void test_latin1_atom_and_string(void **state) {
    (void)state;
    /* ATOM_EXT 'é' (latin1) and STRING_EXT "ab" */
    const char buf[] = {
        ERL_SMALL_TUPLE_EXT, 2, ERL_ATOM_EXT, 0, 1, (char)0xe9, ERL_STRING_EXT, 0, 2, 'a', 'b'};
    term_pb_arena arena = {0};
    Nodex__V1__Term *t;
    term_error err;
    int idx = 0;
    assert_int_equal(term_pb_from_ei(buf, sizeof buf, &idx, NULL, &arena, &t, &err), 0);
    assert_string_equal(t->tuple->elements[0]->atom, "é");
    Nodex__V1__List *l = t->tuple->elements[1]->list;
    assert_int_equal(l->n_elements, 2);
    assert_int_equal(l->elements[1]->int_, 'b');
    term_pb_arena_free(&arena);
}

static void test_payload_etf(void **state) {
    (void)state;
    ei_x_buff x, back;
    text_to_ei("{ping, <<\"x\">>}", &x);
    term_pb_arena arena = {0};
    Nodex__V1__Payload p = NODEX__V1__PAYLOAD__INIT;
    term_error err;
    int idx = 0;
    assert_int_equal(
        term_pb_payload_from_ei(x.buff, (size_t)x.index, &idx, NULL, true, &arena, &p, &err), 0);
    assert_int_equal(p.value_case, NODEX__V1__PAYLOAD__VALUE_ETF);
    assert_int_equal(p.etf.len, (size_t)x.index + 1);
    assert_int_equal(p.etf.data[0], 131);
    assert_memory_equal(p.etf.data + 1, x.buff, (size_t)x.index);
    ei_x_new(&back);
    assert_int_equal(term_pb_payload_to_ei(&p, NULL, NULL, &back, &err), 0);
    assert_int_equal(back.index, x.index);
    assert_memory_equal(back.buff, x.buff, (size_t)x.index);
    Nodex__V1__Payload empty = NODEX__V1__PAYLOAD__INIT;
    assert_int_equal(term_pb_payload_to_ei(&empty, NULL, NULL, &back, &err), -1);
    term_pb_arena_free(&arena);
    ei_x_free(&x);
    ei_x_free(&back);
}

/* Expects term_pb_to_ei(t) to fail with `status`. */
static void expect_error(const Nodex__V1__Term *t, const erlang_pid *self, term_status status) {
    ei_x_buff x;
    term_error err;
    ei_x_new(&x);
    assert_int_equal(term_pb_to_ei(t, NULL, self, &x, &err), -1);
    if (err.status != status)
        fail_msg("expected %s, got %s: %s", term_status_name(status), term_status_name(err.status),
                 err.message);
    ei_x_free(&x);
}

static void test_invalid_terms(void **state) {
    (void)state;
    Nodex__V1__Term t = NODEX__V1__TERM__INIT;
    expect_error(&t, NULL, TERM_ERR_SYNTAX); /* nothing set */
    t.kind_case = NODEX__V1__TERM__KIND_ATOM;
    char long_atom[300];
    memset(long_atom, 'a', 256);
    long_atom[256] = '\0';
    t.atom = long_atom;
    expect_error(&t, NULL, TERM_ERR_TAG);
    t.atom = "\xff\xfe";
    expect_error(&t, NULL, TERM_ERR_TAG);
    t.kind_case = NODEX__V1__TERM__KIND_BIG_INT;
    t.big_int = "12a";
    expect_error(&t, NULL, TERM_ERR_SYNTAX);
    t.big_int = "-";
    expect_error(&t, NULL, TERM_ERR_SYNTAX);
    t.kind_case = NODEX__V1__TERM__KIND_FLOAT;
    t.float_ = NAN;
    expect_error(&t, NULL, TERM_ERR_UNSUPPORTED);
    t.float_ = INFINITY;
    expect_error(&t, NULL, TERM_ERR_UNSUPPORTED);
    Nodex__V1__BitString bits = NODEX__V1__BIT_STRING__INIT;
    uint8_t data[2] = {1, 2};
    bits.data.data = data;
    bits.data.len = 2;
    bits.bits = 5; /* needs 1 byte */
    t.kind_case = NODEX__V1__TERM__KIND_BITS;
    t.bits = &bits;
    expect_error(&t, NULL, TERM_ERR_SYNTAX);
    t.kind_case = NODEX__V1__TERM__KIND_SELF_PID;
    expect_error(&t, NULL, TERM_ERR_SELF);
    /* a ref's bytes offered as a pid; a pid without version byte */
    ei_x_buff x;
    ei_x_new_with_version(&x);
    erlang_ref ref = {.node = "a@b", .len = 3, .n = {1, 2, 3}, .creation = 1};
    ei_x_encode_ref(&x, &ref);
    Nodex__V1__Opaque o = NODEX__V1__OPAQUE__INIT;
    o.etf.data = (uint8_t *)x.buff;
    o.etf.len = (size_t)x.index;
    t.kind_case = NODEX__V1__TERM__KIND_PID;
    t.pid = &o;
    expect_error(&t, NULL, TERM_ERR_TAG);
    t.kind_case = NODEX__V1__TERM__KIND_REF;
    t.ref = &o;
    ei_x_buff ok;
    term_error err;
    ei_x_new(&ok);
    assert_int_equal(term_pb_to_ei(&t, NULL, NULL, &ok, &err), 0);
    assert_memory_equal(ok.buff, x.buff + 1, (size_t)x.index - 1);
    ei_x_free(&ok);
    o.etf.data++;
    o.etf.len--;
    expect_error(&t, NULL, TERM_ERR_TAG);
    ei_x_free(&x);
    /* a map entry without value */
    Nodex__V1__Term key = NODEX__V1__TERM__INIT;
    key.kind_case = NODEX__V1__TERM__KIND_INT;
    Nodex__V1__MapEntry me = NODEX__V1__MAP_ENTRY__INIT;
    me.key = &key;
    Nodex__V1__MapEntry *entries[1] = {&me};
    Nodex__V1__Map map = NODEX__V1__MAP__INIT;
    map.n_entries = 1;
    map.entries = entries;
    t.kind_case = NODEX__V1__TERM__KIND_MAP;
    t.map = &map;
    expect_error(&t, NULL, TERM_ERR_SYNTAX);
}

static void test_atom_with_nul_is_unsupported(void **state) {
    (void)state;
    const char buf[] = {ERL_SMALL_ATOM_UTF8_EXT, 3, 'a', 0, 'b'};
    term_pb_arena arena = {0};
    Nodex__V1__Term *t;
    term_error err;
    int idx = 0;
    assert_int_equal(term_pb_from_ei(buf, sizeof buf, &idx, NULL, &arena, &t, &err), -1);
    assert_int_equal(err.status, TERM_ERR_UNSUPPORTED);
    term_pb_arena_free(&arena);
}

/* Term{tuple: Tuple{elements: [ ... Term{int: 1} ... ]}} nested `levels` deep, serialized. */
static void nested_wire(strbuf *out, unsigned levels) {
    strbuf a = {0}, b = {0};
    strbuf_append(&a, "\x10\x02", 2); /* Term{int: 1} */
    for (unsigned i = 0; i < levels; i++) {
        for (int field = 1; field >= 0; field--) {
            /* field 1 of Tuple (elements), then field 8 of Term (tuple) */
            strbuf_reset(&b);
            strbuf_putc(&b, field ? 0x0a : 0x42);
            size_t len = a.len;
            do {
                strbuf_putc(&b, (char)((len & 0x7f) | (len > 0x7f ? 0x80 : 0)));
                len >>= 7;
            } while (len);
            strbuf_append(&b, a.data, a.len);
            strbuf tmp = a;
            a = b;
            b = tmp;
        }
    }
    strbuf_free(&b);
    *out = a;
}

static void test_depth_limits(void **state) {
    (void)state;
    strbuf wire;
    nested_wire(&wire, 3000); /* 6001 messages deep */
    const uint8_t *p = (const uint8_t *)wire.data;
    assert_int_equal(term_pb_check_depth(&nodex__v1__term__descriptor, p, wire.len, 6001), 0);
    assert_int_equal(term_pb_check_depth(&nodex__v1__term__descriptor, p, wire.len, 6000), -1);
    assert_int_equal(term_pb_check_depth(&nodex__v1__term__descriptor, p, wire.len - 1, 7000), -1);
    Nodex__V1__Term *t = (Nodex__V1__Term *)protobuf_c_message_unpack(&nodex__v1__term__descriptor,
                                                                      NULL, wire.len, p);
    assert_non_null(t);
    ei_x_buff x;
    term_error err;
    ei_x_new(&x);
    term_limits lim = {512, 1 << 20};
    assert_int_equal(term_pb_to_ei(t, &lim, NULL, &x, &err), -1);
    assert_int_equal(err.status, TERM_ERR_DEPTH);
    ei_x_free(&x);
    protobuf_c_message_free_unpacked(&t->base, NULL);
    strbuf_free(&wire);
    /* a request that nests 512 containers fits the wire depth allowed for 512 */
    nested_wire(&wire, 512);
    assert_int_equal(term_pb_check_depth(&nodex__v1__term__descriptor, (const uint8_t *)wire.data,
                                         wire.len, term_pb_wire_depth(512, 0)),
                     0);
    strbuf_free(&wire);
    /* garbage */
    const uint8_t junk[] = {0x42, 0x10, 0x01};
    assert_int_equal(term_pb_check_depth(&nodex__v1__term__descriptor, junk, sizeof junk, 10), -1);
}

/* `t` encodes to exactly the ETF bytes of `text` (term_to_binary's encoding). */
static void expect_bytes_of(const Nodex__V1__Term *t, const char *text) {
    ei_x_buff x, want;
    term_error err;
    ei_x_new(&x);
    assert_int_equal(term_pb_to_ei(t, NULL, NULL, &x, &err), 0);
    text_to_ei(text, &want);
    assert_int_equal(x.index, want.index);
    assert_memory_equal(x.buff, want.buff, (size_t)x.index);
    ei_x_free(&x);
    ei_x_free(&want);
}

static void test_a_tail_that_is_a_list_joins_it(void **state) {
    (void)state;
    /* found by fuzz_grpc_request: [1 | []] came out as a cons cell, not term_to_binary's [1] */
    Nodex__V1__Term one = NODEX__V1__TERM__INIT, two = NODEX__V1__TERM__INIT;
    one.kind_case = two.kind_case = NODEX__V1__TERM__KIND_INT;
    one.int_ = 1;
    two.int_ = 2;
    Nodex__V1__Term x = NODEX__V1__TERM__INIT;
    x.kind_case = NODEX__V1__TERM__KIND_ATOM;
    x.atom = "x";
    Nodex__V1__Term *e1[] = {&one}, *e2[] = {&two};
    Nodex__V1__List inner = NODEX__V1__LIST__INIT, empty = NODEX__V1__LIST__INIT,
                    outer = NODEX__V1__LIST__INIT;
    Nodex__V1__Term t_inner = NODEX__V1__TERM__INIT, t_empty = NODEX__V1__TERM__INIT,
                    t = NODEX__V1__TERM__INIT;
    t_inner.kind_case = t_empty.kind_case = t.kind_case = NODEX__V1__TERM__KIND_LIST;
    t_inner.list = &inner;
    t_empty.list = &empty;
    t.list = &outer;
    outer.n_elements = 1;
    outer.elements = e1;
    outer.tail = &t_empty;
    expect_bytes_of(&t, "[1]"); /* [1 | []] */
    inner.n_elements = 1;
    inner.elements = e2;
    inner.tail = &t_empty;
    outer.tail = &t_inner;
    expect_bytes_of(&t, "[1, 2]"); /* [1 | [2 | []]] */
    inner.tail = &x;
    expect_bytes_of(&t, "[1, 2 | x]"); /* [1 | [2 | x]] */
    outer.n_elements = 0;
    expect_bytes_of(&t, "[2 | x]"); /* [ | [2 | x]] */
    inner.n_elements = 0;
    inner.tail = &t_empty;
    expect_bytes_of(&t, "[]"); /* [ | [ | []]] */
}

/* Appends field `field` (wire type 2) holding `len` bytes of `body`. */
static void put_ld(strbuf *out, unsigned field, const void *body, size_t len) {
    strbuf_putc(out, (char)(field << 3 | 2));
    size_t n = len;
    do {
        strbuf_putc(out, (char)((n & 0x7f) | (n > 0x7f ? 0x80 : 0)));
        n >>= 7;
    } while (n);
    strbuf_append(out, body, len);
}

/* CallRequest{cnode: "t", request: Payload{term: Term{list: List{elements: `n` x `element`}}}}
 * serialized. */
static void list_request(strbuf *out, size_t n, const char *element, size_t element_len) {
    strbuf list = {0}, term = {0}, payload = {0};
    for (size_t i = 0; i < n; i++) strbuf_append(&list, element, element_len);
    put_ld(&term, 7, list.data, list.len);
    put_ld(&payload, 1, term.data, term.len);
    *out = (strbuf){0};
    put_ld(out, 1, "t", 1);
    put_ld(out, 2, payload.data, payload.len);
    strbuf_free(&list);
    strbuf_free(&term);
    strbuf_free(&payload);
}

static void test_unpack_of_4m_empty_terms_stops_at_the_budget(void **state) {
    (void)state;
    strbuf wire;
    list_request(&wire, 4u << 20, "\x0a\x00", 2); /* 8 MiB of empty Terms */
    size_t budget = 64u << 20, peak = 0;
    term_pb_unpack_status why;
    ProtobufCMessage *m =
        term_pb_unpack(&nodex__v1__call_request__descriptor, (const uint8_t *)wire.data, wire.len,
                       64, budget, &why, &peak);
    assert_null(m);
    assert_int_equal(why, TERM_PB_UNPACK_OVER_BUDGET);
    assert_true(peak <= budget);
    strbuf_free(&wire);
}

static void test_unpack_within_budget_decodes_and_frees(void **state) {
    (void)state;
    strbuf wire;
    list_request(&wire, 1000, "\x0a\x02\x10\x02", 4); /* 1000 x Term{int: 1} */
    size_t peak = 0;
    term_pb_unpack_status why;
    ProtobufCMessage *m =
        term_pb_unpack(&nodex__v1__call_request__descriptor, (const uint8_t *)wire.data, wire.len,
                       64, 1u << 20, &why, &peak);
    assert_non_null(m);
    assert_int_equal(why, TERM_PB_UNPACK_OK);
    const Nodex__V1__CallRequest *r = (const Nodex__V1__CallRequest *)m;
    assert_string_equal(r->cnode, "t");
    assert_int_equal(r->request->term->list->n_elements, 1000);
    assert_int_equal(r->request->term->list->elements[999]->int_, 1);
    /* the same bytes with a budget just under what they took: refused, nothing leaks (ASan) */
    term_pb_unpacked_free(m);
    assert_null(term_pb_unpack(&nodex__v1__call_request__descriptor, (const uint8_t *)wire.data,
                               wire.len, 64, peak - 1, &why, NULL));
    assert_int_equal(why, TERM_PB_UNPACK_OVER_BUDGET);
    assert_non_null(m = term_pb_unpack(&nodex__v1__call_request__descriptor,
                                       (const uint8_t *)wire.data, wire.len, 64, peak, &why, NULL));
    term_pb_unpacked_free(m);
    term_pb_unpacked_free(NULL);
    strbuf_free(&wire);
}

static void test_unpack_refuses_malformed_and_too_deep(void **state) {
    (void)state;
    term_pb_unpack_status why;
    const uint8_t junk[] = {0x42, 0x10, 0x01};
    assert_null(
        term_pb_unpack(&nodex__v1__term__descriptor, junk, sizeof junk, 10, 1u << 20, &why, NULL));
    assert_int_equal(why, TERM_PB_UNPACK_MALFORMED);
    strbuf wire;
    nested_wire(&wire, 100); /* 201 messages deep */
    assert_null(term_pb_unpack(&nodex__v1__term__descriptor, (const uint8_t *)wire.data, wire.len,
                               200, 1u << 20, &why, NULL));
    assert_int_equal(why, TERM_PB_UNPACK_MALFORMED);
    strbuf_free(&wire);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_type),
        cmocka_unit_test(test_int_and_big_forms),
        cmocka_unit_test(test_latin1_atom_and_string),
        cmocka_unit_test(test_payload_etf),
        cmocka_unit_test(test_invalid_terms),
        cmocka_unit_test(test_atom_with_nul_is_unsupported),
        cmocka_unit_test(test_depth_limits),
        cmocka_unit_test(test_a_tail_that_is_a_list_joins_it),
        cmocka_unit_test(test_unpack_of_4m_empty_terms_stops_at_the_budget),
        cmocka_unit_test(test_unpack_within_budget_decodes_and_frees),
        cmocka_unit_test(test_unpack_refuses_malformed_and_too_deep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
