/* test_term_json: the JSON <-> term mapping, its tags, limits and error messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "term.h"

static const erlang_pid self_pid = {.node = "gw@host", .num = 42, .serial = 0, .creation = 9};

/* JSON -> term -> Erlang text, to state expectations readably. Returns the status. */
static term_status json_as_text(const char *json, char *text, size_t cap, term_error *err) {
    ei_x_buff x;
    ei_x_new(&x);
    term_status st = TERM_OK;
    if (term_from_json(json, strlen(json), NULL, &self_pid, &x, err) != 0) {
        st = err->status;
    } else {
        strbuf out = {0};
        int idx = 0;
        assert_int_equal(term_to_text(x.buff, (size_t)x.index, &idx, NULL, &out, err), 0);
        snprintf(text, cap, "%s", out.data);
        strbuf_free(&out);
    }
    ei_x_free(&x);
    return st;
}

static void expect_text(const char *json, const char *text) {
    char got[1024];
    term_error err;
    if (json_as_text(json, got, sizeof got, &err) != TERM_OK) fail_msg("%s: %s", json, err.message);
    if (strcmp(got, text) != 0) fail_msg("%s -> %s, want %s", json, got, text);
}

static void expect_error(const char *json, term_status st, const char *needle) {
    char got[1024];
    term_error err;
    term_status s = json_as_text(json, got, sizeof got, &err);
    if (s != st)
        fail_msg("%s: status %s, want %s", json, term_status_name(s), term_status_name(st));
    if (needle && !strstr(err.message, needle))
        fail_msg("%s: message '%s' lacks '%s'", json, err.message, needle);
}

/* Term (given as Erlang text) -> JSON. */
static void expect_json(const char *text, const char *json) {
    ei_x_buff x;
    ei_x_new(&x);
    term_error err;
    if (term_from_text(text, strlen(text), NULL, &self_pid, &x, &err) != 0)
        fail_msg("%s: %s", text, err.message);
    strbuf out = {0};
    int idx = 0;
    assert_int_equal(term_to_json(x.buff, (size_t)x.index, &idx, NULL, &out, &err), 0);
    if (strcmp(out.data, json) != 0) fail_msg("%s -> %s, want %s", text, out.data, json);
    /* and back: JSON in canonical form reads back to the same bytes */
    ei_x_buff y;
    ei_x_new(&y);
    assert_int_equal(term_from_json(out.data, out.len, NULL, &self_pid, &y, &err), 0);
    assert_int_equal(y.index, x.index);
    assert_memory_equal(y.buff, x.buff, (size_t)x.index);
    strbuf_free(&out);
    ei_x_free(&x);
    ei_x_free(&y);
}

static void test_seed_example_is_tuple_of_atom_and_binary(void **state) {
    (void)state;
    expect_text("{\"$tuple\":[{\"$atom\":\"ping\"},\"hello world\"]}",
                "{ping,<<\"hello world\">>}");
}

static void test_scalars_map_to_binary_integer_float_atoms(void **state) {
    (void)state;
    expect_text("\"h\\u00e9\"", "<<\"hé\"/utf8>>");
    expect_text("-42", "-42");
    expect_text("1.0", "1.0");
    expect_text("1e2", "100.0");
    expect_text("[true,false,null]", "[true,false,null]");
    expect_text("18446744073709551616", "18446744073709551616");
    expect_text("-123456789012345678901234567890", "-123456789012345678901234567890");
}

static void test_big_integer_encodes_as_small_big_ext(void **state) {
    (void)state;
    ei_x_buff x;
    ei_x_new(&x);
    term_error err;
    assert_int_equal(term_from_json("18446744073709551616", 20, NULL, NULL, &x, &err), 0);
    const unsigned char want[] = {110, 9, 0, 0, 0, 0,
                                  0,   0, 0, 0, 0, 1}; /* term_to_binary(1 bsl 64) */
    assert_int_equal(x.index, sizeof want);
    assert_memory_equal(x.buff, want, sizeof want);
    ei_x_free(&x);
}

static void test_array_is_proper_list_and_object_is_binary_keyed_map(void **state) {
    (void)state;
    expect_text("[1,2,3]", "[1,2,3]");
    expect_text("[]", "[]");
    expect_text("[1,[2]]", "[1,[2]]");
    expect_text("{\"a\":1,\"b\":{}}", "#{<<\"a\">> => 1,<<\"b\">> => #{}}");
}

static void test_tags_build_every_erlang_type(void **state) {
    (void)state;
    expect_text("{\"$atom\":\"hello world\"}", "'hello world'");
    expect_text("{\"$tuple\":[]}", "{}");
    expect_text("{\"$binary\":\"AAEC/w==\"}", "<<0,1,2,255>>");
    expect_text("{\"$charlist\":\"abc\"}", "\"abc\"");
    expect_text("{\"$charlist\":\"\\u20ac\"}", "\"€\"");
    expect_text("{\"$map\":[[1,2],[{\"$atom\":\"k\"},\"v\"]]}", "#{1 => 2,k => <<\"v\">>}");
    expect_text("{\"$improper\":[1,2,{\"$atom\":\"t\"}]}", "[1,2|t]");
    expect_text("{\"$improper\":[1,[]]}", "[1]");
    expect_text("{\"$bits\":{\"bytes\":\"AQIY\",\"bits\":21}}", "<<1,2,3:5>>");
    expect_text("{\"$bits\":{\"bits\":16,\"bytes\":\"AQI=\"}}", "<<1,2>>");
}

static void test_pid_self_is_the_call_pid_and_null_self_is_an_error(void **state) {
    (void)state;
    ei_x_buff x, y;
    ei_x_new(&x);
    ei_x_new(&y);
    term_error err;
    const char *j = "{\"$pid\":\"self\"}";
    assert_int_equal(term_from_json(j, strlen(j), NULL, &self_pid, &x, &err), 0);
    ei_x_encode_pid(&y, &self_pid);
    assert_int_equal(x.index, y.index);
    assert_memory_equal(x.buff, y.buff, (size_t)y.index);
    ei_x_free(&x);
    ei_x_new(&x);
    assert_int_equal(term_from_json(j, strlen(j), NULL, NULL, &x, &err), -1);
    assert_int_equal(err.status, TERM_ERR_SELF);
    assert_int_equal(term_status_http(err.status), 400);
    ei_x_free(&x);
    ei_x_free(&y);
}

static void test_opaque_values_round_trip_byte_exact(void **state) {
    (void)state;
    ei_x_buff x;
    ei_x_new(&x);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_pid(&x, &self_pid);
    erlang_ref ref = {.node = "n@h", .len = 3, .n = {1, 2, 3}, .creation = 4};
    ei_x_encode_ref(&x, &ref);
    strbuf out = {0};
    term_error err;
    int idx = 0;
    assert_int_equal(term_to_json(x.buff, (size_t)x.index, &idx, NULL, &out, &err), 0);
    assert_non_null(strstr(out.data, "{\"$pid\":\""));
    assert_non_null(strstr(out.data, "{\"$ref\":\""));
    ei_x_buff y;
    ei_x_new(&y);
    assert_int_equal(term_from_json(out.data, out.len, NULL, NULL, &y, &err), 0);
    assert_int_equal(x.index, y.index);
    assert_memory_equal(x.buff, y.buff, (size_t)x.index);
    strbuf_free(&out);
    ei_x_free(&x);
    ei_x_free(&y);
}

static void test_opaque_tag_with_wrong_kind_of_bytes_is_rejected(void **state) {
    (void)state;
    /* base64 of an atom is not a pid */
    expect_error("{\"$pid\":\"dwJvaw==\"}", TERM_ERR_TAG, "$pid");
    expect_error("{\"$ref\":\"!!\"}", TERM_ERR_TAG, "base64");
}

static void test_unknown_tag_is_an_error_naming_it(void **state) {
    (void)state;
    expect_error("{\"$frob\":1}", TERM_ERR_TAG, "$frob");
}

static void test_dollar_key_with_siblings_is_a_plain_map(void **state) {
    (void)state;
    expect_text("{\"$atom\":\"x\",\"b\":1}", "#{<<\"$atom\">> => <<\"x\">>,<<\"b\">> => 1}");
}

static void test_errors_name_the_json_path(void **state) {
    (void)state;
    expect_error("{\"a\":[1,2,{\"$atom\":1}]}", TERM_ERR_SYNTAX, "$.a[2].$atom");
    expect_error("[1,2,]", TERM_ERR_SYNTAX, "$[2]");
    char big[600] = "{\"$atom\":\"";
    memset(big + strlen(big), 'a', 300);
    memcpy(big + 10 + 300, "\"}", 3);
    expect_error(big, TERM_ERR_TAG, "255");
}

static void test_invalid_json_is_a_syntax_error(void **state) {
    (void)state;
    expect_error("", TERM_ERR_SYNTAX, "end of input");
    expect_error("[1 2]", TERM_ERR_SYNTAX, "expected");
    expect_error("\"\xff\"", TERM_ERR_SYNTAX, "UTF-8");
    expect_error("\"\\ud800\"", TERM_ERR_SYNTAX, "surrogate");
    expect_error("01", TERM_ERR_SYNTAX, "trailing");
    expect_error("1e999", TERM_ERR_UNSUPPORTED, "float");
    expect_error("{\"$map\":[[1]]}", TERM_ERR_SYNTAX, "','");
    expect_error("{\"$improper\":[1]}", TERM_ERR_TAG, "tail");
    expect_error("{\"$bits\":{\"bytes\":\"AQ==\",\"bits\":12}}", TERM_ERR_TAG, "bits");
}

static char *nested(const char *open, const char *mid, const char *close, size_t depth) {
    size_t lo = strlen(open), lc = strlen(close), lm = strlen(mid);
    char *s = malloc(depth * (lo + lc) + lm + 1);
    char *p = s;
    for (size_t k = 0; k < depth; k++) memcpy(p, open, lo), p += lo;
    memcpy(p, mid, lm), p += lm;
    for (size_t k = 0; k < depth; k++) memcpy(p, close, lc), p += lc;
    *p = '\0';
    return s;
}

static void test_depth_100000_is_an_error_not_a_stack_overflow(void **state) {
    (void)state;
    const char *forms[][2] = {{"[", "]"}, {"{\"a\":", "}"}, {"{\"$tuple\":[", "]}"}};
    for (size_t f = 0; f < 3; f++) {
        char *s = nested(forms[f][0], "1", forms[f][1], 100000);
        ei_x_buff x;
        ei_x_new(&x);
        term_error err;
        const term_limits huge = {UINT32_MAX, 0}; /* clamped, still safe */
        assert_int_equal(term_from_json(s, strlen(s), NULL, NULL, &x, &err), -1);
        assert_int_equal(err.status, TERM_ERR_DEPTH);
        assert_int_equal(term_from_json(s, strlen(s), &huge, NULL, &x, &err), -1);
        assert_int_equal(err.status, TERM_ERR_DEPTH);
        ei_x_free(&x);
        free(s);
    }
}

static void test_depth_limit_is_configurable(void **state) {
    (void)state;
    const term_limits two = {2, 1 << 20};
    ei_x_buff x;
    ei_x_new(&x);
    term_error err;
    assert_int_equal(term_from_json("[[1]]", 5, &two, NULL, &x, &err), 0);
    assert_int_equal(term_from_json("[[[1]]]", 7, &two, NULL, &x, &err), -1);
    assert_int_equal(err.status, TERM_ERR_DEPTH);
    ei_x_free(&x);
}

/* The "$tag" scan keeps 64 levels on the C stack and grows onto the heap past them: tags 200
 * levels deep, and a tag under 200 arrays, are still found. */
static void test_tags_deeper_than_the_scan_stack_on_the_c_stack_parse(void **state) {
    (void)state;
    char *json = nested("{\"$tuple\":[", "{\"$atom\":\"a\"}", "]}", 200);
    char *text = nested("{", "a", "}", 200);
    expect_text(json, text);
    free(json);
    free(text);
    json = nested("[", "{\"$atom\":\"b\"}", "]", 200);
    text = nested("[", "b", "]", 200);
    expect_text(json, text);
    free(json);
    free(text);
}

/* Tag objects close inner first, so their offsets come out of order: up to 16 are kept (and
 * sorted) on the stack, more on the heap. Both sides of the boundary parse the same. */
static void test_tags_around_the_sixteen_kept_on_the_stack_parse(void **state) {
    (void)state;
    const size_t counts[] = {1, 7, 8, 9, 20};
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        strbuf json = {0}, text = {0};
        strbuf_putc(&json, '[');
        strbuf_putc(&text, '[');
        for (size_t i = 0; i < counts[k]; i++) { /* two tags each: the tuple and its atom */
            if (i) {
                strbuf_putc(&json, ',');
                strbuf_putc(&text, ',');
            }
            strbuf_printf(&json, "{\"$tuple\":[{\"$atom\":\"a%zu\"},%zu]}", i, i);
            strbuf_printf(&text, "{a%zu,%zu}", i, i);
        }
        strbuf_putc(&json, ']');
        strbuf_putc(&text, ']');
        expect_text(json.data, text.data);
        strbuf_free(&json);
        strbuf_free(&text);
    }
}

static void test_input_over_max_bytes_is_413(void **state) {
    (void)state;
    const term_limits small = {512, 8};
    ei_x_buff x;
    ei_x_new(&x);
    term_error err;
    const char *j = "\"0123456789\"";
    assert_int_equal(term_from_json(j, strlen(j), &small, NULL, &x, &err), -1);
    assert_int_equal(err.status, TERM_ERR_SIZE);
    assert_int_equal(term_status_http(err.status), 413);
    assert_string_equal(term_status_name(err.status), "too_large");
    ei_x_free(&x);
}

static void test_reply_mapping_to_json(void **state) {
    (void)state;
    expect_json("[true,false,null,ok]", "[true,false,null,{\"$atom\":\"ok\"}]");
    expect_json("<<\"hi\">>", "\"hi\"");
    expect_json("<<255>>", "{\"$binary\":\"/w==\"}");
    expect_json("<<1,2,3:5>>", "{\"$bits\":{\"bytes\":\"AQIY\",\"bits\":21}}");
    expect_json("1.0", "1.0");
    expect_json("1.0e300", "1.0e+300");
    expect_json("0.1", "0.1");
    expect_json("-0.0", "-0.0");
    expect_json("123456789012345678901234567890", "123456789012345678901234567890");
    expect_json("{a,1}", "{\"$tuple\":[{\"$atom\":\"a\"},1]}");
    expect_json("\"abc\"", "[97,98,99]");
    expect_json("[1000,a|b]", "{\"$improper\":[1000,{\"$atom\":\"a\"},{\"$atom\":\"b\"}]}");
    expect_json("#{<<\"k\">> => 1}", "{\"k\":1}");
    expect_json("#{k => 1}", "{\"$map\":[[{\"$atom\":\"k\"},1]]}");
    expect_json("#{<<\"$x\">> => 1}", "{\"$map\":[[\"$x\",1]]}");
    expect_json("#{<<255>> => 1}", "{\"$map\":[[{\"$binary\":\"/w==\"},1]]}");
}

static void test_reply_decoding_ignores_trailing_bytes(void **state) {
    (void)state;
    ei_x_buff x;
    ei_x_new(&x);
    ei_x_encode_atom(&x, "ok");
    int end = x.index;
    ei_x_encode_atom(&x, "junk");
    strbuf out = {0};
    term_error err;
    int idx = 0;
    assert_int_equal(term_to_json(x.buff, (size_t)x.index, &idx, NULL, &out, &err), 0);
    assert_int_equal(idx, end);
    assert_string_equal(out.data, "{\"$atom\":\"ok\"}");
    strbuf_free(&out);
    ei_x_free(&x);
}

static void test_reply_deeper_than_limit_is_an_error(void **state) {
    (void)state;
    size_t depth = 100000;
    char *b = malloc(depth * 2 + 1);
    for (size_t k = 0; k < depth; k++) b[2 * k] = 104, b[2 * k + 1] = 1; /* {{{...}}} */
    b[2 * depth] = 106;
    strbuf out = {0};
    term_error err;
    int idx = 0;
    assert_int_equal(term_to_json(b, depth * 2 + 1, &idx, NULL, &out, &err), -1);
    assert_int_equal(err.status, TERM_ERR_DEPTH);
    assert_int_equal(idx, 0);
    assert_int_equal(out.len, 0);
    free(b);
    strbuf_free(&out);
}

/* Builds `levels` nested {"$a":<inner>,"b":1} objects (maps, not tags: two keys) around a
 * padding string, `size` bytes in all. */
static char *nested_dollar_objects(size_t levels, size_t size) {
    char *s = malloc(size + 1);
    assert_non_null(s);
    size_t open = strlen("{\"$a\":"), close = strlen(",\"b\":1}");
    size_t pad = size - levels * (open + close) - 2;
    size_t k = 0;
    for (size_t i = 0; i < levels; i++, k += open) memcpy(s + k, "{\"$a\":", open);
    s[k++] = '"';
    memset(s + k, 'x', pad);
    k += pad;
    s[k++] = '"';
    for (size_t i = 0; i < levels; i++, k += close) memcpy(s + k, ",\"b\":1}", close);
    s[k] = '\0';
    return s;
}

static double cpu_seconds_to_parse(const char *json, size_t len, const term_limits *lim) {
    ei_x_buff x;
    term_error err;
    ei_x_new(&x);
    clock_t t0 = clock();
    for (int round = 0; round < 3; round++) {
        x.index = 0;
        if (term_from_json(json, len, lim, NULL, &x, &err) != 0) fail_msg("%s", err.message);
    }
    double took = (double)(clock() - t0) / CLOCKS_PER_SEC;
    ei_x_free(&x);
    return took;
}

/* Objects whose first key starts with '$' but that have more keys are maps: deciding that must
 * not look ahead over the whole value at every level (it was O(depth x n): 2.5 s for 8 MB). The
 * same bytes nested 500 deep must cost about what they cost nested once (CPU, same process). */
static void test_dollar_keyed_objects_parse_in_linear_time(void **state) {
    (void)state;
    term_limits lim = {.max_depth = 1024, .max_bytes = 64u << 20};
    size_t size = 4u << 20;
    char *deep = nested_dollar_objects(500, size), *flat = nested_dollar_objects(1, size);
    /* the best of five, interleaved: one slow round (a sanitizer's allocator, a busy machine)
     * must not decide it; a quadratic parse is slow in every round */
    double t_flat = 1e9, t_deep = 1e9;
    for (int round = 0; round < 5; round++) {
        double f = cpu_seconds_to_parse(flat, strlen(flat), &lim);
        double d = cpu_seconds_to_parse(deep, strlen(deep), &lim);
        if (f < t_flat) t_flat = f;
        if (d < t_deep) t_deep = d;
    }
    free(deep);
    free(flat);
    if (t_deep > 10 * t_flat + 0.05)
        fail_msg("500 levels took %.3f s of CPU, 1 level %.3f s: not linear", t_deep, t_flat);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_example_is_tuple_of_atom_and_binary),
        cmocka_unit_test(test_scalars_map_to_binary_integer_float_atoms),
        cmocka_unit_test(test_big_integer_encodes_as_small_big_ext),
        cmocka_unit_test(test_array_is_proper_list_and_object_is_binary_keyed_map),
        cmocka_unit_test(test_tags_build_every_erlang_type),
        cmocka_unit_test(test_pid_self_is_the_call_pid_and_null_self_is_an_error),
        cmocka_unit_test(test_opaque_values_round_trip_byte_exact),
        cmocka_unit_test(test_opaque_tag_with_wrong_kind_of_bytes_is_rejected),
        cmocka_unit_test(test_unknown_tag_is_an_error_naming_it),
        cmocka_unit_test(test_dollar_key_with_siblings_is_a_plain_map),
        cmocka_unit_test(test_errors_name_the_json_path),
        cmocka_unit_test(test_invalid_json_is_a_syntax_error),
        cmocka_unit_test(test_depth_100000_is_an_error_not_a_stack_overflow),
        cmocka_unit_test(test_depth_limit_is_configurable),
        cmocka_unit_test(test_tags_around_the_sixteen_kept_on_the_stack_parse),
        cmocka_unit_test(test_input_over_max_bytes_is_413),
        cmocka_unit_test(test_reply_mapping_to_json),
        cmocka_unit_test(test_reply_decoding_ignores_trailing_bytes),
        cmocka_unit_test(test_reply_deeper_than_limit_is_an_error),
        cmocka_unit_test(test_dollar_keyed_objects_parse_in_linear_time),
        cmocka_unit_test(test_tags_deeper_than_the_scan_stack_on_the_c_stack_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
