/* test_template: placeholder expansion, brace escapes, and the unknown/unterminated errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "template.h"

static const template_var vars[] = {
    {"sname", "example"},
    {"cookie_file", "/tmp/c"},
    {"port", "9100"},
    {"empty", ""},
};
#define NVARS (sizeof vars / sizeof vars[0])

static void expect_expansion(const char *tmpl, const char *want) {
    const char *bad = "unset";
    char *got = template_expand(tmpl, vars, NVARS, &bad);
    assert_non_null(got);
    assert_string_equal(got, want);
    assert_string_equal(bad, "unset"); /* untouched on success */
    free(got);
}

static void expect_error(const char *tmpl, size_t bad_offset) {
    const char *bad = NULL;
    assert_null(template_expand(tmpl, vars, NVARS, &bad));
    assert_non_null(bad);
    assert_int_equal(bad - tmpl, bad_offset);
    bad = NULL;
    static const char *const names[] = {"sname", "cookie_file", "port", "empty"};
    assert_int_equal(template_check(tmpl, names, 4, &bad), -1);
    assert_int_equal(bad - tmpl, bad_offset);
}

static void test_expand_replaces_every_placeholder(void **state) {
    (void)state;
    expect_expansion("{sname}", "example");
    expect_expansion("-sname {sname} -port {port}", "-sname example -port 9100");
    expect_expansion("{sname}{port}{sname}", "example9100example");
    expect_expansion("a{empty}b", "ab");
}

static void test_expand_plain_and_empty_templates(void **state) {
    (void)state;
    expect_expansion("", "");
    expect_expansion("no placeholders here", "no placeholders here");
    expect_expansion("{empty}", "");
}

static void test_expand_double_braces_are_literal(void **state) {
    (void)state;
    expect_expansion("{{", "{");
    expect_expansion("}}", "}");
    expect_expansion("{{\"ready\": true}}", "{\"ready\": true}");
    expect_expansion("{{sname}}", "{sname}");
    expect_expansion("{{{sname}}}", "{example}");
    expect_expansion("READY {port}}}", "READY 9100}");
}

static void test_expand_values_are_not_reexpanded(void **state) {
    (void)state;
    const template_var v[] = {{"a", "{b}"}, {"b", "no"}};
    char *got = template_expand("{a}", v, 2, NULL);
    assert_non_null(got);
    assert_string_equal(got, "{b}");
    free(got);
}

static void test_unknown_placeholder_points_at_its_brace(void **state) {
    (void)state;
    expect_error("{nope}", 0);
    expect_error("-sname {sname} -x {nodename}", 18);
    expect_error("{SNAME}", 0);      /* names are case-sensitive */
    expect_error("{snam}", 0);       /* a prefix of a known name is not that name */
    expect_error("{sname_long}", 0); /* nor is a longer name */
    expect_error("ok {} then", 3);   /* empty name */
}

static void test_unterminated_placeholder_is_an_error(void **state) {
    (void)state;
    expect_error("{sname", 0);
    expect_error("abc {port", 4);
    expect_error("x {", 2);
    expect_error("{sname{port}", 0); /* a '{' inside a name */
}

static void test_lone_closing_brace_is_an_error(void **state) {
    (void)state;
    expect_error("a}b", 1);
    expect_error("{sname}}", 7);
}

static void test_bad_name_may_be_null(void **state) {
    (void)state;
    assert_null(template_expand("{nope}", vars, NVARS, NULL));
    assert_int_equal(template_check("{nope", NULL, 0, NULL), -1);
}

static void test_check_accepts_only_listed_names(void **state) {
    (void)state;
    static const char *const names[] = {"sname", "port"};
    const char *bad = NULL;
    assert_int_equal(template_check("{sname}:{port} {{x}}", names, 2, &bad), 0);
    assert_null(bad);
    assert_int_equal(template_check("{sname}:{cookie_file}", names, 2, &bad), -1);
    assert_string_equal(bad, "{cookie_file}");
    assert_int_equal(template_check("", names, 0, &bad), 0);
}

static void test_expand_long_output(void **state) {
    (void)state;
    char big[5000];
    memset(big, 'v', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const template_var v[] = {{"x", big}};
    char *got = template_expand("[{x}][{x}]", v, 1, NULL);
    assert_non_null(got);
    assert_int_equal(strlen(got), 2 * (sizeof big - 1) + 4);
    assert_int_equal(got[0], '[');
    assert_int_equal(got[sizeof big], ']');
    free(got);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expand_replaces_every_placeholder),
        cmocka_unit_test(test_expand_plain_and_empty_templates),
        cmocka_unit_test(test_expand_double_braces_are_literal),
        cmocka_unit_test(test_expand_values_are_not_reexpanded),
        cmocka_unit_test(test_unknown_placeholder_points_at_its_brace),
        cmocka_unit_test(test_unterminated_placeholder_is_an_error),
        cmocka_unit_test(test_lone_closing_brace_is_an_error),
        cmocka_unit_test(test_bad_name_may_be_null),
        cmocka_unit_test(test_check_accepts_only_listed_names),
        cmocka_unit_test(test_expand_long_output),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
