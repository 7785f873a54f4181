/* test_strbuf: growth, binary bytes, printf (short and long), JSON escaping, detach/reset/free. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strbuf.h"

static void test_zeroed_strbuf_is_valid_and_empty(void **state) {
    (void)state;
    strbuf sb = {0};
    assert_int_equal(sb.len, 0);
    assert_null(sb.data);
    assert_int_equal(strbuf_puts(&sb, ""), 0);
    assert_non_null(sb.data);
    assert_int_equal(sb.len, 0);
    assert_string_equal(sb.data, "");
    strbuf_free(&sb);
}

static void test_append_grows_and_keeps_content_nul_terminated(void **state) {
    (void)state;
    strbuf sb = {0};
    char expect[10000];
    for (size_t i = 0; i < sizeof expect; i++) {
        char ch = (char)('a' + i % 26);
        expect[i] = ch;
        assert_int_equal(strbuf_putc(&sb, ch), 0);
        assert_int_equal(sb.len, i + 1);
        assert_true(sb.cap > sb.len); /* room for the NUL */
        assert_int_equal(sb.data[sb.len], '\0');
    }
    assert_memory_equal(sb.data, expect, sizeof expect);
    /* one big append on top */
    char *big = malloc(1 << 20);
    assert_non_null(big);
    memset(big, 'Z', 1 << 20);
    assert_int_equal(strbuf_append(&sb, big, 1 << 20), 0);
    assert_int_equal(sb.len, sizeof expect + (1 << 20));
    assert_memory_equal(sb.data, expect, sizeof expect);
    assert_memory_equal(sb.data + sizeof expect, big, 1 << 20);
    assert_int_equal(sb.data[sb.len], '\0');
    free(big);
    strbuf_free(&sb);
}

static void test_reserve_gives_room_without_changing_length(void **state) {
    (void)state;
    strbuf sb = {0};
    assert_int_equal(strbuf_puts(&sb, "abc"), 0);
    assert_int_equal(strbuf_reserve(&sb, 5000), 0);
    assert_true(sb.cap >= 3 + 5000 + 1);
    assert_int_equal(sb.len, 3);
    assert_string_equal(sb.data, "abc");
    char *before = sb.data;
    /* appending what was reserved must not reallocate */
    char fill[5000];
    memset(fill, 'x', sizeof fill);
    assert_int_equal(strbuf_append(&sb, fill, sizeof fill), 0);
    assert_ptr_equal(sb.data, before);
    strbuf_free(&sb);
}

static void test_reserve_absurd_size_fails_and_leaves_buffer_unchanged(void **state) {
    (void)state;
    strbuf sb = {0};
    assert_int_equal(strbuf_puts(&sb, "keep"), 0);
    assert_int_equal(strbuf_reserve(&sb, SIZE_MAX - 2), -1);
    assert_int_equal(strbuf_append(&sb, "x", SIZE_MAX - 2), -1);
    assert_int_equal(sb.len, 4);
    assert_string_equal(sb.data, "keep");
    strbuf_free(&sb);
}

static void test_binary_bytes_with_nuls_are_kept(void **state) {
    (void)state;
    strbuf sb = {0};
    const char bin[] = {'a', '\0', 'b', '\0', '\0', (char)0xff, (char)0x80, 'c'};
    assert_int_equal(strbuf_append(&sb, bin, sizeof bin), 0);
    assert_int_equal(strbuf_append(&sb, bin, sizeof bin), 0);
    assert_int_equal(sb.len, 2 * sizeof bin);
    assert_memory_equal(sb.data, bin, sizeof bin);
    assert_memory_equal(sb.data + sizeof bin, bin, sizeof bin);
    assert_int_equal(sb.data[sb.len], '\0');
    assert_int_equal(strbuf_putc(&sb, '\0'), 0);
    assert_int_equal(sb.len, 2 * sizeof bin + 1);
    strbuf_free(&sb);
}

static void test_append_zero_bytes_is_a_noop(void **state) {
    (void)state;
    strbuf sb = {0};
    assert_int_equal(strbuf_puts(&sb, "x"), 0);
    assert_int_equal(strbuf_append(&sb, "ignored", 0), 0);
    assert_int_equal(sb.len, 1);
    assert_string_equal(sb.data, "x");
    strbuf_free(&sb);
}

static void test_printf_short_output_appends(void **state) {
    (void)state;
    strbuf sb = {0};
    assert_int_equal(strbuf_puts(&sb, "head:"), 0);
    assert_int_equal(strbuf_printf(&sb, "%d-%s-%05.1f", 42, "str", 3.14159), 0);
    assert_string_equal(sb.data, "head:42-str-003.1");
    assert_int_equal(sb.len, strlen("head:42-str-003.1"));
    assert_int_equal(strbuf_printf(&sb, "%s", ""), 0);
    assert_int_equal(sb.len, strlen("head:42-str-003.1"));
    strbuf_free(&sb);
}

/* Output lengths around the 256-byte stack buffer inside strbuf_printf. */
static void test_printf_long_output_over_256_bytes_is_complete(void **state) {
    (void)state;
    static const size_t lens[] = {254, 255, 256, 257, 1000, 100000};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        size_t n = lens[k];
        char *arg = malloc(n + 1);
        assert_non_null(arg);
        for (size_t i = 0; i < n; i++) arg[i] = (char)('A' + i % 23);
        arg[n] = '\0';
        strbuf sb = {0};
        assert_int_equal(strbuf_puts(&sb, "pre"), 0);
        assert_int_equal(strbuf_printf(&sb, "<%s|%zu>", arg, n), 0);
        char tail[32];
        int tl = snprintf(tail, sizeof tail, "|%zu>", n);
        assert_int_equal(sb.len, 3 + 1 + n + (size_t)tl);
        assert_memory_equal(sb.data, "pre<", 4);
        assert_memory_equal(sb.data + 4, arg, n);
        assert_string_equal(sb.data + 4 + n, tail);
        assert_int_equal(sb.data[sb.len], '\0');
        assert_int_equal(strlen(sb.data), sb.len);
        free(arg);
        strbuf_free(&sb);
    }
}

static char *json(const char *s, size_t len) {
    strbuf sb = {0};
    assert_int_equal(strbuf_json_string(&sb, s, len), 0);
    return strbuf_detach(&sb, NULL);
}

static void test_json_string_plain_text_is_quoted(void **state) {
    (void)state;
    char *out = json("hello world", 11);
    assert_string_equal(out, "\"hello world\"");
    free(out);
    out = json("", 0);
    assert_string_equal(out, "\"\"");
    free(out);
}

static void test_json_string_escapes_quote_and_backslash(void **state) {
    (void)state;
    char *out = json("a\"b\\c\"", 6);
    assert_string_equal(out, "\"a\\\"b\\\\c\\\"\"");
    free(out);
    out = json("\\", 1);
    assert_string_equal(out, "\"\\\\\"");
    free(out);
}

static void test_json_string_escapes_named_control_chars(void **state) {
    (void)state;
    char *out = json("\n\r\t\b\f", 5);
    assert_string_equal(out, "\"\\n\\r\\t\\b\\f\"");
    free(out);
}

static void test_json_string_escapes_other_control_chars_as_u00xx(void **state) {
    (void)state;
    for (int c = 0; c < 0x20; c++) {
        if (c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f') continue;
        char in[3] = {'x', (char)c, 'y'};
        char expect[16];
        snprintf(expect, sizeof expect, "\"x\\u%04xy\"", c);
        strbuf sb = {0};
        assert_int_equal(strbuf_json_string(&sb, in, 3), 0);
        assert_int_equal(sb.len, strlen(expect));
        assert_string_equal(sb.data, expect);
        strbuf_free(&sb);
    }
    /* NUL in the middle is escaped, not a terminator */
    strbuf sb = {0};
    assert_int_equal(strbuf_json_string(&sb, "a\0b\x1f", 4), 0);
    assert_string_equal(sb.data, "\"a\\u0000b\\u001f\"");
    strbuf_free(&sb);
}

static void test_json_string_passes_utf8_and_high_bytes_through(void **state) {
    (void)state;
    const char *utf8 = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \x7f";
    char *out = json(utf8, strlen(utf8));
    char expect[64];
    snprintf(expect, sizeof expect, "\"%s\"", utf8);
    assert_string_equal(out, expect);
    free(out);
}

static void test_json_string_mixed_runs_and_escapes_long_input(void **state) {
    (void)state;
    /* Many alternating verbatim runs and escapes, long enough to force growth. */
    strbuf in = {0}, expect = {0};
    assert_int_equal(strbuf_putc(&expect, '"'), 0);
    for (int i = 0; i < 3000; i++) {
        assert_int_equal(strbuf_puts(&in, "abc\"d\\"), 0);
        assert_int_equal(strbuf_putc(&in, (char)(i % 32)), 0);
        assert_int_equal(strbuf_puts(&expect, "abc\\\"d\\\\"), 0);
        int c = i % 32;
        switch (c) {
        case '\n': assert_int_equal(strbuf_puts(&expect, "\\n"), 0); break;
        case '\r': assert_int_equal(strbuf_puts(&expect, "\\r"), 0); break;
        case '\t': assert_int_equal(strbuf_puts(&expect, "\\t"), 0); break;
        case '\b': assert_int_equal(strbuf_puts(&expect, "\\b"), 0); break;
        case '\f': assert_int_equal(strbuf_puts(&expect, "\\f"), 0); break;
        default: assert_int_equal(strbuf_printf(&expect, "\\u%04x", c), 0);
        }
    }
    assert_int_equal(strbuf_puts(&in, "tail"), 0);
    assert_int_equal(strbuf_puts(&expect, "tail\""), 0);
    strbuf out = {0};
    assert_int_equal(strbuf_puts(&out, "{"), 0);
    assert_int_equal(strbuf_json_string(&out, in.data, in.len), 0);
    assert_int_equal(out.len, expect.len + 1);
    assert_memory_equal(out.data + 1, expect.data, expect.len);
    strbuf_free(&in);
    strbuf_free(&expect);
    strbuf_free(&out);
}

/* The word-at-a-time scan stops exactly at the first special byte, wherever it sits. */
static void test_json_plain_prefix_stops_at_each_special_byte_at_every_offset(void **state) {
    (void)state;
    const unsigned char specials[] = {'"', '\\', 0x00, 0x01, 0x0a, 0x1f};
    char buf[40];
    for (size_t len = 0; len <= sizeof buf; len++) {
        memset(buf, 'a', sizeof buf);
        assert_int_equal(strbuf_json_plain_prefix(buf, len, true), len);
        for (size_t at = 0; at < len; at++) {
            for (size_t k = 0; k < sizeof specials; k++) {
                memset(buf, 'a', sizeof buf);
                buf[at] = (char)specials[k];
                assert_int_equal(strbuf_json_plain_prefix(buf, len, false), at);
                assert_int_equal(strbuf_json_plain_prefix(buf, len, true), at);
            }
            /* 0x20 and 0x7f are plain; bytes >= 0x80 only stop the ASCII-only scan */
            memset(buf, 'a', sizeof buf);
            buf[at] = 0x20;
            if (at + 1 < len) buf[at + 1] = 0x7f;
            assert_int_equal(strbuf_json_plain_prefix(buf, len, true), len);
            buf[at] = (char)0x80;
            assert_int_equal(strbuf_json_plain_prefix(buf, len, false), len);
            assert_int_equal(strbuf_json_plain_prefix(buf, len, true), at);
            buf[at] = (char)0xff;
            assert_int_equal(strbuf_json_plain_prefix(buf, len, true), at);
        }
    }
}

/* Several specials in one word, and bytes next to them that make the word-at-a-time test flag
 * bytes above a real one (0x01 after 0x00 borrows): the first special byte is always found. */
static void test_json_plain_prefix_finds_the_first_of_several_specials_in_a_word(void **state) {
    (void)state;
    unsigned seed = 7;
    unsigned char buf[64];
    for (int round = 0; round < 20000; round++) {
        size_t len = (size_t)(rand_r(&seed) % (int)sizeof buf);
        for (size_t i = 0; i < len; i++) {
            int r = rand_r(&seed) % 16;
            buf[i] = r < 2   ? (unsigned char)(rand_r(&seed) % 0x22)
                     : r < 3 ? (unsigned char)"\"\\\x01\x21\x5d"[rand_r(&seed) % 5]
                     : r < 4 ? (unsigned char)(0x80 + rand_r(&seed) % 0x80)
                             : (unsigned char)('a' + r);
        }
        for (int ascii = 0; ascii < 2; ascii++) {
            size_t want = 0;
            while (want < len && buf[want] >= 0x20 && buf[want] != '"' && buf[want] != '\\' &&
                   !(ascii && buf[want] >= 0x80))
                want++;
            assert_int_equal(strbuf_json_plain_prefix((const char *)buf, len, ascii), want);
        }
    }
}

static void test_copy_str_cuts_to_the_buffer_and_terminates(void **state) {
    (void)state;
    char out[8];
    memset(out, 'x', sizeof out);
    assert_int_equal(strbuf_copy_str(out, sizeof out, "abc"), 3);
    assert_string_equal(out, "abc");
    assert_int_equal(strbuf_copy_str(out, sizeof out, "1234567"), 7); /* exactly fits */
    assert_string_equal(out, "1234567");
    assert_int_equal(strbuf_copy_str(out, sizeof out, "123456789"), 7); /* cut */
    assert_string_equal(out, "1234567");
    assert_int_equal(strbuf_copy_str(out, sizeof out, ""), 0);
    assert_string_equal(out, "");
    char one[1] = {'x'};
    assert_int_equal(strbuf_copy_str(one, sizeof one, "abc"), 0);
    assert_int_equal(one[0], '\0');
}

/* The escaping a byte at a time, as RFC 8259 says: the reference for the fast one. */
static void json_string_reference(strbuf *sb, const unsigned char *s, size_t len) {
    strbuf_putc(sb, '"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\')
            strbuf_printf(sb, "\\%c", c);
        else if (c == '\n')
            strbuf_puts(sb, "\\n");
        else if (c == '\r')
            strbuf_puts(sb, "\\r");
        else if (c == '\t')
            strbuf_puts(sb, "\\t");
        else if (c == '\b')
            strbuf_puts(sb, "\\b");
        else if (c == '\f')
            strbuf_puts(sb, "\\f");
        else if (c < 0x20)
            strbuf_printf(sb, "\\u%04x", c);
        else
            strbuf_putc(sb, (char)c);
    }
    strbuf_putc(sb, '"');
}

static void test_json_string_matches_a_byte_at_a_time_reference_on_random_bytes(void **state) {
    (void)state;
    unsigned seed = 12345;
    unsigned char buf[300];
    for (int round = 0; round < 2000; round++) {
        size_t len = (size_t)(rand_r(&seed) % (int)sizeof buf);
        /* mostly plain text with a few specials, so runs of every length occur */
        for (size_t i = 0; i < len; i++) {
            int r = rand_r(&seed) % 100;
            buf[i] = r < 3   ? (unsigned char)(rand_r(&seed) % 0x20)
                     : r < 5 ? (unsigned char)"\"\\"[r - 3]
                     : r < 8 ? (unsigned char)(0x80 + rand_r(&seed) % 0x80)
                             : (unsigned char)('a' + r % 26);
        }
        strbuf fast = {0}, ref = {0};
        assert_int_equal(strbuf_json_string(&fast, (const char *)buf, len), 0);
        json_string_reference(&ref, buf, len);
        assert_int_equal(fast.len, ref.len);
        assert_memory_equal(fast.data, ref.data, ref.len);
        strbuf_free(&fast);
        strbuf_free(&ref);
    }
}

static void test_reset_empties_and_keeps_memory(void **state) {
    (void)state;
    strbuf sb = {0};
    assert_int_equal(strbuf_puts(&sb, "some text that is here"), 0);
    char *mem = sb.data;
    size_t cap = sb.cap;
    strbuf_reset(&sb);
    assert_int_equal(sb.len, 0);
    assert_ptr_equal(sb.data, mem);
    assert_int_equal(sb.cap, cap);
    assert_string_equal(sb.data, "");
    assert_int_equal(strbuf_puts(&sb, "new"), 0);
    assert_string_equal(sb.data, "new");
    strbuf_free(&sb);
}

static void test_reset_and_free_of_empty_buffer_are_safe(void **state) {
    (void)state;
    strbuf sb = {0};
    strbuf_reset(&sb);
    assert_null(sb.data);
    assert_int_equal(sb.len, 0);
    strbuf_free(&sb);
    strbuf_free(&sb); /* twice: still empty and valid */
    assert_null(sb.data);
    assert_int_equal(sb.len, 0);
    assert_int_equal(sb.cap, 0);
    assert_int_equal(strbuf_puts(&sb, "reuse"), 0); /* reusable after free */
    assert_string_equal(sb.data, "reuse");
    strbuf_free(&sb);
}

static void test_detach_hands_over_data_and_empties(void **state) {
    (void)state;
    strbuf sb = {0};
    assert_int_equal(strbuf_append(&sb, "ab\0cd", 5), 0);
    size_t len = 99;
    char *d = strbuf_detach(&sb, &len);
    assert_non_null(d);
    assert_int_equal(len, 5);
    assert_memory_equal(d, "ab\0cd", 6); /* including the terminating NUL */
    assert_null(sb.data);
    assert_int_equal(sb.len, 0);
    assert_int_equal(sb.cap, 0);
    free(d);
    assert_int_equal(strbuf_puts(&sb, "again"), 0);
    assert_string_equal(sb.data, "again");
    strbuf_free(&sb);
}

static void test_detach_of_empty_buffer_returns_freeable_empty_string(void **state) {
    (void)state;
    strbuf sb = {0};
    size_t len = 99;
    char *d = strbuf_detach(&sb, &len);
    assert_non_null(d);
    assert_int_equal(len, 0);
    assert_string_equal(d, "");
    free(d);
    d = strbuf_detach(&sb, NULL); /* len pointer optional */
    assert_non_null(d);
    free(d);
    assert_null(sb.data);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zeroed_strbuf_is_valid_and_empty),
        cmocka_unit_test(test_append_grows_and_keeps_content_nul_terminated),
        cmocka_unit_test(test_reserve_gives_room_without_changing_length),
        cmocka_unit_test(test_reserve_absurd_size_fails_and_leaves_buffer_unchanged),
        cmocka_unit_test(test_binary_bytes_with_nuls_are_kept),
        cmocka_unit_test(test_append_zero_bytes_is_a_noop),
        cmocka_unit_test(test_printf_short_output_appends),
        cmocka_unit_test(test_printf_long_output_over_256_bytes_is_complete),
        cmocka_unit_test(test_json_string_plain_text_is_quoted),
        cmocka_unit_test(test_json_plain_prefix_stops_at_each_special_byte_at_every_offset),
        cmocka_unit_test(test_json_plain_prefix_finds_the_first_of_several_specials_in_a_word),
        cmocka_unit_test(test_copy_str_cuts_to_the_buffer_and_terminates),
        cmocka_unit_test(test_json_string_matches_a_byte_at_a_time_reference_on_random_bytes),
        cmocka_unit_test(test_json_string_escapes_quote_and_backslash),
        cmocka_unit_test(test_json_string_escapes_named_control_chars),
        cmocka_unit_test(test_json_string_escapes_other_control_chars_as_u00xx),
        cmocka_unit_test(test_json_string_passes_utf8_and_high_bytes_through),
        cmocka_unit_test(test_json_string_mixed_runs_and_escapes_long_input),
        cmocka_unit_test(test_reset_empties_and_keeps_memory),
        cmocka_unit_test(test_reset_and_free_of_empty_buffer_are_safe),
        cmocka_unit_test(test_detach_hands_over_data_and_empties),
        cmocka_unit_test(test_detach_of_empty_buffer_returns_freeable_empty_string),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
