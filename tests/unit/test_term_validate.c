/* test_term_validate: term_validate accepts one complete term and stops exactly past it, rejects
 * every truncation of it, and stops at the depth limit on very deep input without crashing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "term.h"

/* A term with most kinds of ETF in it (no version byte):
 * {ping, <<"hi">>, [1, 300, 70000, -5], "str", 1.5, #{a => [], <<"k">> => {}},
 *  123456789012345678901234567890, 'ünï', Pid, Ref, [a | b]} */
static void encode_rich_term(ei_x_buff *x) {
    ei_x_new(x);
    assert_int_equal(ei_x_encode_tuple_header(x, 11), 0);
    ei_x_encode_atom(x, "ping");
    ei_x_encode_binary(x, "hi", 2);
    ei_x_encode_list_header(x, 4);
    ei_x_encode_long(x, 1);
    ei_x_encode_long(x, 300);
    ei_x_encode_long(x, 70000);
    ei_x_encode_long(x, -5);
    ei_x_encode_empty_list(x);
    ei_x_encode_string(x, "str");
    ei_x_encode_double(x, 1.5);
    ei_x_encode_map_header(x, 2);
    ei_x_encode_atom(x, "a");
    ei_x_encode_empty_list(x);
    ei_x_encode_binary(x, "k", 1);
    ei_x_encode_tuple_header(x, 0);
    /* a bignum: SMALL_BIG_EXT, 13 bytes little-endian, positive */
    static const char big[] = {(char)ERL_SMALL_BIG_EXT,
                               13,
                               0,
                               (char)0xd2,
                               0x0a,
                               0x3f,
                               0x4e,
                               (char)0xee,
                               (char)0xe0,
                               0x73,
                               (char)0xc3,
                               (char)0xf6,
                               0x0f,
                               (char)0xe9,
                               (char)0x8e,
                               0x01};
    ei_x_append_buf(x, big, sizeof big);
    ei_x_encode_atom_as(x, "\xc3\xbcn\xc3\xaf", ERLANG_UTF8, ERLANG_UTF8);
    erlang_pid pid = {.num = 42, .serial = 1, .creation = 7};
    strcpy(pid.node, "nodexd@127.0.0.1");
    ei_x_encode_pid(x, &pid);
    erlang_ref ref = {.len = 3, .n = {1, 2, 3}, .creation = 7};
    strcpy(ref.node, "nodexd@127.0.0.1");
    ei_x_encode_ref(x, &ref);
    ei_x_encode_list_header(x, 1); /* improper: [a | b] */
    ei_x_encode_atom(x, "a");
    ei_x_encode_atom(x, "b");
}

/* An exact-size heap copy, so that ASan sees any read past the end. */
static char *exact_copy(const char *src, size_t len) {
    char *p = malloc(len ? len : 1);
    assert_non_null(p);
    memcpy(p, src, len);
    return p;
}

static void test_valid_term_advances_index_exactly_past_it_leaving_trailing_bytes(void **state) {
    (void)state;
    ei_x_buff x;
    encode_rich_term(&x);
    int term_len = x.index;
    /* Sanity: ei agrees on where the term ends. */
    int skip = 0;
    assert_int_equal(ei_skip_term(x.buff, &skip), 0);
    assert_int_equal(skip, term_len);

    ei_x_append_buf(&x, "JUNKJUNK", 8); /* trailing bytes: not part of the term */
    char *buf = exact_copy(x.buff, (size_t)x.index);
    term_error err = {0};
    int index = 0;
    assert_int_equal(term_validate(buf, (size_t)x.index, &index, &term_limits_default, &err), 0);
    assert_int_equal(index, term_len);

    /* The same term at an offset inside a larger buffer: the index moves by the term's length. */
    ei_x_buff y;
    ei_x_new(&y);
    ei_x_append_buf(&y, "PREFIX", 6);
    ei_x_append_buf(&y, x.buff, term_len);
    ei_x_append_buf(&y, "\x6a\x6a", 2); /* two more valid terms ([] []) after it */
    char *buf2 = exact_copy(y.buff, (size_t)y.index);
    index = 6;
    assert_int_equal(term_validate(buf2, (size_t)y.index, &index, NULL, &err), 0);
    assert_int_equal(index, 6 + term_len);
    /* ...and the next call validates the next term only. */
    assert_int_equal(term_validate(buf2, (size_t)y.index, &index, NULL, &err), 0);
    assert_int_equal(index, 6 + term_len + 1);

    free(buf);
    free(buf2);
    ei_x_free(&x);
    ei_x_free(&y);
}

static void test_every_truncation_is_rejected_and_index_is_untouched(void **state) {
    (void)state;
    ei_x_buff x;
    encode_rich_term(&x);
    size_t term_len = (size_t)x.index;
    for (size_t len = 0; len < term_len; len++) {
        char *buf = exact_copy(x.buff, len);
        term_error err = {0};
        int index = 0;
        int rc = term_validate(buf, len, &index, &term_limits_default, &err);
        if (rc != -1) fail_msg("truncation to %zu of %zu bytes was accepted", len, term_len);
        assert_int_equal(index, 0);
        assert_int_equal(err.status, TERM_ERR_SYNTAX);
        assert_true(err.message[0] != '\0');
        free(buf);
    }
    ei_x_free(&x);
}

static void test_index_outside_the_buffer_is_rejected(void **state) {
    (void)state;
    const char nil[] = {ERL_NIL_EXT};
    term_error err = {0};
    int index = 2;
    assert_int_equal(term_validate(nil, 1, &index, NULL, &err), -1);
    assert_int_equal(index, 2);
    index = -1;
    assert_int_equal(term_validate(nil, 1, &index, NULL, &err), -1);
    index = 1; /* at the end: nothing to validate */
    assert_int_equal(term_validate(nil, 1, &index, NULL, &err), -1);
    assert_int_equal(err.status, TERM_ERR_SYNTAX);
}

/* [[[ ... [] ... ]]] nested `depth` lists deep: each level LIST_EXT of length 1, then NIL tail. */
static char *nested_lists(size_t depth, size_t *len) {
    *len = depth * 6 + 1;
    char *b = malloc(*len);
    assert_non_null(b);
    size_t i = 0;
    for (size_t d = 0; d < depth; d++) {
        b[i++] = (char)ERL_LIST_EXT;
        b[i++] = 0, b[i++] = 0, b[i++] = 0, b[i++] = 1;
    }
    b[i++] = (char)ERL_NIL_EXT;                                    /* the innermost element */
    for (size_t d = 0; d < depth; d++) b[i++] = (char)ERL_NIL_EXT; /* each level's tail */
    assert_int_equal(i, *len);
    return b;
}

static void test_100000_deep_list_stops_at_the_depth_limit(void **state) {
    (void)state;
    size_t len;
    char *b = nested_lists(100000, &len);
    term_error err = {0};
    int index = 0;
    assert_int_equal(term_validate(b, len, &index, &term_limits_default, &err), -1);
    assert_int_equal(err.status, TERM_ERR_DEPTH);
    assert_non_null(strstr(err.message, "512"));
    assert_int_equal(index, 0);

    /* A limit far over the walker's hard cap is clamped, not trusted: still no stack overflow. */
    term_limits huge = {.max_depth = 1000000, .max_bytes = 0};
    memset(&err, 0, sizeof err);
    assert_int_equal(term_validate(b, len, &index, &huge, &err), -1);
    assert_int_equal(err.status, TERM_ERR_DEPTH);
    free(b);
}

static void test_depth_limit_is_exact(void **state) {
    (void)state;
    term_limits lim = {.max_depth = 8, .max_bytes = 0};
    size_t len;
    char *ok = nested_lists(8, &len);
    term_error err = {0};
    int index = 0;
    assert_int_equal(term_validate(ok, len, &index, &lim, &err), 0);
    assert_int_equal(index, (int)len);
    free(ok);
    char *deep = nested_lists(9, &len);
    index = 0;
    assert_int_equal(term_validate(deep, len, &index, &lim, &err), -1);
    assert_int_equal(err.status, TERM_ERR_DEPTH);
    free(deep);
}

static void test_100000_deep_tuples_and_list_tails_stop_without_crashing(void **state) {
    (void)state;
    const size_t depth = 100000;
    /* {{{ ... [] ... }}}: SMALL_TUPLE_EXT arity 1, nested. */
    char *t = malloc(depth * 2 + 1);
    assert_non_null(t);
    for (size_t d = 0; d < depth; d++) {
        t[2 * d] = (char)ERL_SMALL_TUPLE_EXT;
        t[2 * d + 1] = 1;
    }
    t[depth * 2] = (char)ERL_NIL_EXT;
    term_error err = {0};
    int index = 0;
    assert_int_equal(term_validate(t, depth * 2 + 1, &index, NULL, &err), -1);
    assert_int_equal(err.status, TERM_ERR_DEPTH);
    free(t);

    /* [1 | [1 | [1 | ... []]]] chained through the tails: the walker recurses on the tail. */
    size_t len = depth * 7 + 1;
    char *l = malloc(len);
    assert_non_null(l);
    for (size_t d = 0; d < depth; d++) {
        char *p = l + 7 * d;
        p[0] = (char)ERL_LIST_EXT;
        p[1] = 0, p[2] = 0, p[3] = 0, p[4] = 1;
        p[5] = (char)ERL_SMALL_INTEGER_EXT, p[6] = 1;
    }
    l[len - 1] = (char)ERL_NIL_EXT;
    index = 0;
    memset(&err, 0, sizeof err);
    assert_int_equal(term_validate(l, len, &index, NULL, &err), -1);
    assert_int_equal(err.status, TERM_ERR_DEPTH);
    free(l);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_term_advances_index_exactly_past_it_leaving_trailing_bytes),
        cmocka_unit_test(test_every_truncation_is_rejected_and_index_is_untouched),
        cmocka_unit_test(test_index_outside_the_buffer_is_rejected),
        cmocka_unit_test(test_100000_deep_list_stops_at_the_depth_limit),
        cmocka_unit_test(test_depth_limit_is_exact),
        cmocka_unit_test(test_100000_deep_tuples_and_list_tails_stop_without_crashing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
