/* test_term_etf: ETF validation and pass-through, and real term_to_binary samples in all formats.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "term.h"

/* Samples made by data/gen_samples.erl (erl, OTP 25): pids, refs, ports, funs, bignums, maps,
 * floats, bit strings, UTF-8 atoms, big tuples and lists, as one term_to_binary list. */
static char *load_samples(size_t *len) {
    char path[1024];
    snprintf(path, sizeof path, "%s", __FILE__);
    char *slash = strrchr(path, '/');
    snprintf(slash ? slash + 1 : path, sizeof path - (size_t)(slash ? slash + 1 - path : 0),
             "data/term_samples.etf");
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = malloc(1 << 20);
    *len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

static void test_term_to_binary_output_passes_through(void **state) {
    (void)state;
    const unsigned char etf[] = {131, 104, 2, 100, 0, 4, 'p', 'i', 'n',
                                 'g', 109, 0, 0,   0, 2, 'h', 'i'};
    ei_x_buff x;
    ei_x_new(&x);
    term_error err;
    assert_int_equal(term_from_etf((const char *)etf, sizeof etf, NULL, &x, &err), 0);
    assert_int_equal(x.index, sizeof etf - 1);
    assert_memory_equal(x.buff, etf + 1, sizeof etf - 1);
    ei_x_free(&x);
}

static void expect_from_etf_error(const unsigned char *etf, size_t n, term_status st,
                                  const char *needle) {
    ei_x_buff x;
    ei_x_new(&x);
    term_error err;
    assert_int_equal(term_from_etf((const char *)etf, n, NULL, &x, &err), -1);
    if (err.status != st) fail_msg("status %s: %s", term_status_name(err.status), err.message);
    if (needle && !strstr(err.message, needle)) fail_msg("'%s' lacks '%s'", err.message, needle);
    ei_x_free(&x);
}

static void test_request_etf_errors_are_explained(void **state) {
    (void)state;
    const unsigned char no_version[] = {106};
    expect_from_etf_error(no_version, 1, TERM_ERR_SYNTAX, "131");
    const unsigned char trailing[] = {131, 106, 106};
    expect_from_etf_error(trailing, 3, TERM_ERR_SYNTAX, "after the term");
    const unsigned char compressed[] = {131, 80, 0, 0, 0, 1, 120, 156};
    expect_from_etf_error(compressed, sizeof compressed, TERM_ERR_UNSUPPORTED, "compressed");
    const unsigned char bad_tag[] = {131, 200};
    expect_from_etf_error(bad_tag, 2, TERM_ERR_SYNTAX, "unknown tag 200");
    const unsigned char nan[] = {131, 70, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0};
    expect_from_etf_error(nan, sizeof nan, TERM_ERR_SYNTAX, "finite");
    const unsigned char bad_utf8_atom[] = {131, 119, 1, 0xff};
    expect_from_etf_error(bad_utf8_atom, 4, TERM_ERR_SYNTAX, "UTF-8");
    const unsigned char huge_list[] = {131, 108, 0xff, 0xff, 0xff, 0xff, 106};
    expect_from_etf_error(huge_list, sizeof huge_list, TERM_ERR_SYNTAX, "truncated");
    const unsigned char big[] = {131, 109, 0, 0, 0, 20};
    const term_limits small = {512, 4};
    ei_x_buff x;
    ei_x_new(&x);
    term_error err;
    assert_int_equal(term_from_etf((const char *)big, sizeof big, &small, &x, &err), -1);
    assert_int_equal(err.status, TERM_ERR_SIZE);
    ei_x_free(&x);
}

static void test_every_truncation_of_real_samples_is_rejected_safely(void **state) {
    (void)state;
    size_t len;
    char *buf = load_samples(&len);
    strbuf out = {0};
    term_error err;
    for (size_t cut = 1; cut < len; cut++) {
        int idx = 1;
        assert_int_equal(term_to_json(buf, cut, &idx, NULL, &out, &err), -1);
        idx = 1;
        assert_int_equal(term_to_text(buf, cut, &idx, NULL, &out, &err), -1);
        idx = 1;
        assert_int_equal(term_to_etf(buf, cut, &idx, NULL, &out, &err), -1);
        assert_int_equal(out.len, 0);
    }
    strbuf_free(&out);
    free(buf);
}

static void test_depth_100000_is_an_error_for_every_decoder(void **state) {
    (void)state;
    size_t depth = 100000, n = 1 + depth * 5 + 1;
    char *b = malloc(n);
    assert_non_null(b);
    b[0] = (char)131;
    for (size_t k = 0; k < depth; k++)
        memcpy(b + 1 + 5 * k, (const char[5]){0x6c, 0, 0, 0, 1}, 5); /* [[[...]]] */
    b[n - 1] = 106;
    ei_x_buff x;
    ei_x_new(&x);
    strbuf out = {0};
    term_error err;
    assert_int_equal(term_from_etf(b, n, NULL, &x, &err), -1);
    assert_int_equal(err.status, TERM_ERR_DEPTH);
    int idx = 1;
    assert_int_equal(term_to_etf(b, n, &idx, NULL, &out, &err), -1);
    assert_int_equal(err.status, TERM_ERR_DEPTH);
    idx = 1;
    assert_int_equal(term_to_text(b, n, &idx, NULL, &out, &err), -1);
    assert_int_equal(err.status, TERM_ERR_DEPTH);
    ei_x_free(&x);
    strbuf_free(&out);
    free(b);
}

static void test_reply_to_etf_copies_exactly_and_ignores_trailing_bytes(void **state) {
    (void)state;
    const char buf[] = {106, 'j', 'u', 'n', 'k'};
    strbuf out = {0};
    term_error err;
    int idx = 0;
    assert_int_equal(term_to_etf(buf, sizeof buf, &idx, NULL, &out, &err), 0);
    assert_int_equal(idx, 1);
    assert_int_equal(out.len, 2);
    assert_memory_equal(out.data, "\x83\x6a", 2);
    strbuf_free(&out);
}

typedef int (*render_fn)(const char *, size_t, int *, const term_limits *, strbuf *, term_error *);
typedef int (*parse_fn)(const char *, size_t, const term_limits *, const erlang_pid *, ei_x_buff *,
                        term_error *);

/* render -> parse -> render gives the same text; ETF renders byte-exact. */
static void check_sample(const char *buf, size_t len, int *idx, render_fn render, parse_fn parse,
                         strbuf *first) {
    term_error err;
    int start = *idx;
    strbuf_reset(first);
    if (render(buf, len, idx, NULL, first, &err) != 0)
        fail_msg("sample at %d: %s", start, err.message);
    ei_x_buff x;
    ei_x_new(&x);
    if (parse(first->data, first->len, NULL, NULL, &x, &err) != 0)
        fail_msg("%s: %s", first->data, err.message);
    strbuf again = {0};
    int j = 0;
    assert_int_equal(render(x.buff, (size_t)x.index, &j, NULL, &again, &err), 0);
    if (strcmp(again.data, first->data) != 0) fail_msg("%s != %s", first->data, again.data);
    strbuf_free(&again);
    ei_x_free(&x);
}

static void test_real_erlang_samples_render_and_round_trip(void **state) {
    (void)state;
    size_t len;
    char *buf = load_samples(&len);
    int idx = 1, arity;
    assert_int_equal(ei_decode_list_header(buf, &idx, &arity), 0);
    strbuf json = {0}, text = {0}, etf = {0}, all_json = {0}, all_text = {0};
    for (int k = 0; k < arity; k++) {
        int start = idx, j = idx, t = idx;
        check_sample(buf, len, &j, term_to_json, term_from_json, &json);
        check_sample(buf, len, &t, term_to_text, term_from_text, &text);
        strbuf_printf(&all_json, "%s\n", json.data);
        strbuf_printf(&all_text, "%s\n", text.data);
        strbuf_reset(&etf);
        term_error err;
        assert_int_equal(term_to_etf(buf, len, &idx, NULL, &etf, &err), 0);
        assert_int_equal(idx, j);
        assert_int_equal(idx, t);
        assert_int_equal(etf.len, (size_t)(idx - start) + 1);
        assert_memory_equal(etf.data + 1, buf + start, (size_t)(idx - start));
    }
    /* Spot checks of the mapping on real bytes. */
    const char *want_json[] = {"{\"$tuple\":[{\"$atom\":\"ping\"},\"hello world\"]}",
                               "{\"$pid\":\"",
                               "{\"$ref\":\"",
                               "{\"$port\":\"",
                               "{\"$fun\":\"",
                               "18446744073709551616",
                               "-1267650600228229401496703205376",
                               "-0.0",
                               "1.0e+300",
                               "0.1",
                               "{\"$bits\":{\"bytes\":\"AQIY\",\"bits\":21}}",
                               "{\"$binary\":\"/wA=\"}",
                               "\"é\"",
                               "[97,98,99]",
                               "{\"$improper\":[{\"$atom\":\"a\"},{\"$atom\":\"b\"}]}",
                               "{\"$atom\":\"日本\"}",
                               "{\"$map\":[[{\"$atom\":\"a\"},1],[\"b\",[1,2,3]]]}"};
    if (!all_json.data || !all_text.data) {
        fail_msg("nothing rendered");
        return;
    }
    for (size_t k = 0; k < sizeof want_json / sizeof *want_json; k++)
        if (!strstr(all_json.data, want_json[k]))
            fail_msg("no %s in\n%s", want_json[k], all_json.data);
    const char *want_text[] = {"{ping,<<\"hello world\">>}",
                               "#Pid<",
                               "#Ref<",
                               "#Port<",
                               "#Fun<",
                               "<<1,2,3:5>>",
                               "<<\"é\"/utf8>>",
                               "\"abc\"",
                               "[a|b]",
                               "'hello world'",
                               "#{a => 1,<<\"b\">> => [1,2,3]}",
                               "{[{[{}]}]}"};
    for (size_t k = 0; k < sizeof want_text / sizeof *want_text; k++)
        if (!strstr(all_text.data, want_text[k]))
            fail_msg("no %s in\n%s", want_text[k], all_text.data);
    strbuf_free(&json);
    strbuf_free(&text);
    strbuf_free(&etf);
    strbuf_free(&all_json);
    strbuf_free(&all_text);
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_term_to_binary_output_passes_through),
        cmocka_unit_test(test_request_etf_errors_are_explained),
        cmocka_unit_test(test_every_truncation_of_real_samples_is_rejected_safely),
        cmocka_unit_test(test_depth_100000_is_an_error_for_every_decoder),
        cmocka_unit_test(test_reply_to_etf_copies_exactly_and_ignores_trailing_bytes),
        cmocka_unit_test(test_real_erlang_samples_render_and_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
