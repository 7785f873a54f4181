/* test_term_text: Erlang text syntax parsing and printing, limits and error offsets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "term.h"

static const erlang_pid self_pid = {.node = "gw@host", .num = 42, .serial = 0, .creation = 9};

/* Parses text, prints it back; the printed form must parse to the same bytes. */
static void expect_print(const char *text, const char *want) {
    ei_x_buff x, y;
    ei_x_new(&x);
    ei_x_new(&y);
    term_error err;
    if (term_from_text(text, strlen(text), NULL, &self_pid, &x, &err) != 0)
        fail_msg("%s: %s", text, err.message);
    strbuf out = {0};
    int idx = 0;
    assert_int_equal(term_to_text(x.buff, (size_t)x.index, &idx, NULL, &out, &err), 0);
    if (strcmp(out.data, want) != 0) fail_msg("%s -> %s, want %s", text, out.data, want);
    if (term_from_text(out.data, out.len, NULL, &self_pid, &y, &err) != 0)
        fail_msg("reparse %s: %s", out.data, err.message);
    assert_int_equal(x.index, y.index);
    assert_memory_equal(x.buff, y.buff, (size_t)x.index);
    strbuf_free(&out);
    ei_x_free(&x);
    ei_x_free(&y);
}

static void expect_error(const char *text, term_status st, const char *needle) {
    ei_x_buff x;
    ei_x_new(&x);
    term_error err;
    if (term_from_text(text, strlen(text), NULL, NULL, &x, &err) == 0) fail_msg("%s parsed", text);
    if (err.status != st) fail_msg("%s: %s (%s)", text, term_status_name(err.status), err.message);
    if (needle && !strstr(err.message, needle))
        fail_msg("%s: message '%s' lacks '%s'", text, err.message, needle);
    ei_x_free(&x);
}

/* Parses text and compares the encoding with known term_to_binary bytes (no version byte). */
static void expect_bytes(const char *text, const unsigned char *want, size_t n) {
    ei_x_buff x;
    ei_x_new(&x);
    term_error err;
    if (term_from_text(text, strlen(text), NULL, NULL, &x, &err) != 0)
        fail_msg("%s: %s", text, err.message);
    assert_int_equal(x.index, n);
    assert_memory_equal(x.buff, want, n);
    ei_x_free(&x);
}

static void test_seed_example_and_final_dot(void **state) {
    (void)state;
    expect_print("{ping, <<\"hello world\">>}.", "{ping,<<\"hello world\">>}");
    expect_print("% a comment\n{a, % inline\n b}\n.\n", "{a,b}");
}

static void test_atoms_plain_quoted_and_reserved(void **state) {
    (void)state;
    expect_print("ok", "ok");
    expect_print("'hello world'", "'hello world'");
    expect_print("'and'", "'and'");
    expect_print("'Caps'", "'Caps'");
    expect_print("'a\\'b'", "'a\\'b'");
    expect_print("'\\x{65e5}'", "'日'");
    expect_print("nodex@host_1", "nodex@host_1");
}

static void test_integers_bases_chars_and_bignums(void **state) {
    (void)state;
    expect_print("16#ff", "255");
    expect_print("-16#FF", "-255");
    expect_print("2#101", "5");
    expect_print("36#zz", "1295");
    expect_print("$a", "97");
    expect_print("$\\n", "10");
    expect_print("2147483648", "2147483648");
    expect_print("-123456789012345678901234567890", "-123456789012345678901234567890");
    expect_print("16#10000000000000000", "18446744073709551616");
    const unsigned char big[] = {110, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    expect_bytes("18446744073709551616", big, sizeof big);
    const unsigned char i32[] = {98, 0x80, 0, 0, 0};
    expect_bytes("-2147483648", i32, sizeof i32);
}

static void test_floats_print_as_floats_exactly(void **state) {
    (void)state;
    expect_print("1.0", "1.0");
    expect_print("1.5e10", "15000000000.0");
    expect_print("0.1", "0.1");
    expect_print("-0.0", "-0.0");
    expect_print("1.0e300", "1.0e+300");
    expect_print("2.5e-7", "2.5e-07");
}

static void test_strings_are_charlists(void **state) {
    (void)state;
    expect_print("\"abc\"", "\"abc\"");
    expect_print("[97,98,99]", "\"abc\"");
    expect_print("\"\"", "[]");
    expect_print("\"tab\\there \\\"q\\\" \\\\\"", "\"tab\\there \\\"q\\\" \\\\\"");
    expect_print("\"\\x{20ac}\\x41\"", "\"€A\"");
    expect_print("[1,2,3]", "[1,2,3]");
    const unsigned char str[] = {107, 0, 2, 'h', 'i'};
    expect_bytes("\"hi\"", str, sizeof str);
    expect_bytes("[104,105]", str, sizeof str);
}

static void test_binaries_text_bytes_mixed_utf8_and_bits(void **state) {
    (void)state;
    expect_print("<<>>", "<<>>");
    expect_print("<<1,2,3>>", "<<1,2,3>>");
    expect_print("<<\"a\", 1>>", "<<97,1>>");
    expect_print("<<\"ab\", \"c\">>", "<<\"abc\">>");
    expect_print("<<\"é\"/utf8>>", "<<\"é\"/utf8>>");
    expect_print("<<\"é\">>", "<<233>>");
    expect_print("<<1,2,3:5>>", "<<1,2,3:5>>");
    expect_print("<<7:3>>", "<<7:3>>");
    expect_print("<<256:16>>", "<<1,0>>");
    const unsigned char bits[] = {77, 0, 0, 0, 3, 5, 1, 2, 24}; /* term_to_binary(<<1,2,3:5>>) */
    expect_bytes("<<1,2,3:5>>", bits, sizeof bits);
}

static void test_lists_improper_tuples_maps(void **state) {
    (void)state;
    expect_print("[a, b]", "[a,b]");
    expect_print("[a|b]", "[a|b]");
    expect_print("[a,b|c]", "[a,b|c]");
    expect_print("[a|[]]", "[a]");
    expect_print("{}", "{}");
    expect_print("#{}", "#{}");
    expect_print("#{k => v, <<\"b\">> => [1]}", "#{k => v,<<\"b\">> => [1]}");
}

static void test_self_is_the_call_pid(void **state) {
    (void)state;
    ei_x_buff x, y;
    ei_x_new(&x);
    ei_x_new(&y);
    term_error err;
    assert_int_equal(term_from_text("self()", 6, NULL, &self_pid, &x, &err), 0);
    ei_x_encode_pid(&y, &self_pid);
    assert_int_equal(x.index, y.index);
    assert_memory_equal(x.buff, y.buff, (size_t)y.index);
    ei_x_free(&x);
    ei_x_free(&y);
    expect_error("self()", TERM_ERR_SELF, "self()");
}

static void test_opaque_terms_print_and_parse_back(void **state) {
    (void)state;
    ei_x_buff x;
    ei_x_new(&x);
    ei_x_encode_list_header(&x, 2);
    ei_x_encode_pid(&x, &self_pid);
    erlang_port port = {.node = "n@h", .id = 7, .creation = 2};
    ei_x_encode_port(&x, &port);
    ei_x_encode_empty_list(&x);
    strbuf out = {0};
    term_error err;
    int idx = 0;
    assert_int_equal(term_to_text(x.buff, (size_t)x.index, &idx, NULL, &out, &err), 0);
    assert_non_null(strstr(out.data, "#Pid<"));
    assert_non_null(strstr(out.data, "#Port<"));
    ei_x_buff y;
    ei_x_new(&y);
    assert_int_equal(term_from_text(out.data, out.len, NULL, NULL, &y, &err), 0);
    assert_int_equal(x.index, y.index);
    assert_memory_equal(x.buff, y.buff, (size_t)x.index);
    strbuf_free(&out);
    ei_x_free(&x);
    ei_x_free(&y);
    expect_error("#Pid<dwJvaw==>", TERM_ERR_TAG, "pid");
}

static void test_errors_give_the_offset(void **state) {
    (void)state;
    expect_error("{a,,b}", TERM_ERR_SYNTAX, "offset 3");
    expect_error("Var", TERM_ERR_SYNTAX, "variables");
    expect_error("\"open", TERM_ERR_SYNTAX, "unterminated");
    expect_error("'it''s'", TERM_ERR_SYNTAX, "trailing");
    expect_error("[a|]", TERM_ERR_SYNTAX, "offset 3");
    expect_error("<<1:0>>", TERM_ERR_UNSUPPORTED, "size");
    expect_error("<<1/float>>", TERM_ERR_UNSUPPORTED, "utf8");
    expect_error("37#1", TERM_ERR_SYNTAX, "base");
    expect_error("{a}.x", TERM_ERR_SYNTAX, "offset 4");
    char big[400] = "'";
    memset(big + 1, 'a', 300);
    memcpy(big + 301, "'", 2);
    expect_error(big, TERM_ERR_SYNTAX, "255");
}

static void test_depth_100000_is_an_error_not_a_stack_overflow(void **state) {
    (void)state;
    const char *opens[] = {"[", "{", "#{a=>", "[a|"};
    for (size_t f = 0; f < 4; f++) {
        size_t depth = 100000, lo = strlen(opens[f]);
        char *s = malloc(depth * lo + 1);
        for (size_t k = 0; k < depth; k++) memcpy(s + k * lo, opens[f], lo);
        s[depth * lo] = '\0';
        ei_x_buff x;
        ei_x_new(&x);
        term_error err;
        assert_int_equal(term_from_text(s, strlen(s), NULL, NULL, &x, &err), -1);
        assert_int_equal(err.status, TERM_ERR_DEPTH);
        ei_x_free(&x);
        free(s);
    }
}

static void test_input_over_max_bytes_is_too_large(void **state) {
    (void)state;
    const term_limits small = {512, 4};
    ei_x_buff x;
    ei_x_new(&x);
    term_error err;
    assert_int_equal(term_from_text("[1,2,3]", 7, &small, NULL, &x, &err), -1);
    assert_int_equal(err.status, TERM_ERR_SIZE);
    ei_x_free(&x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_example_and_final_dot),
        cmocka_unit_test(test_atoms_plain_quoted_and_reserved),
        cmocka_unit_test(test_integers_bases_chars_and_bignums),
        cmocka_unit_test(test_floats_print_as_floats_exactly),
        cmocka_unit_test(test_strings_are_charlists),
        cmocka_unit_test(test_binaries_text_bytes_mixed_utf8_and_bits),
        cmocka_unit_test(test_lists_improper_tuples_maps),
        cmocka_unit_test(test_self_is_the_call_pid),
        cmocka_unit_test(test_opaque_terms_print_and_parse_back),
        cmocka_unit_test(test_errors_give_the_offset),
        cmocka_unit_test(test_depth_100000_is_an_error_not_a_stack_overflow),
        cmocka_unit_test(test_input_over_max_bytes_is_too_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
