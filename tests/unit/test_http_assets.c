/* test_http_assets: the embedded files are their sources byte for byte, with their media types. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http_assets.h"

/* The file at NODEX_SOURCE_DIR/rel, malloc'd (NUL-terminated), its size in *len. */
static char *read_source(const char *rel, size_t *len) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", NODEX_SOURCE_DIR, rel);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n > 0);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

static void assert_embeds(http_asset a, const char *rel) {
    size_t len;
    char *want = read_source(rel, &len);
    assert_int_equal(a.len, len);
    assert_memory_equal(a.data, want, len);
    assert_int_equal(a.data[a.len], '\0');
    assert_int_equal(strlen(a.data), a.len); /* text: no NUL inside */
    free(want);
}

static void test_the_openapi_document_is_docs_openapi_json_as_json(void **state) {
    (void)state;
    http_asset a = http_assets_openapi();
    assert_embeds(a, "docs/openapi.json");
    assert_string_equal(a.content_type, "application/json");
    assert_int_equal(a.data[0], '{');
    assert_non_null(strstr(a.data, "\"openapi\": \"3.1"));
}

static void test_the_status_page_is_src_status_page_html_with_no_outside_assets(void **state) {
    (void)state;
    http_asset a = http_assets_status_page();
    assert_embeds(a, "src/status_page.html");
    assert_string_equal(a.content_type, "text/html; charset=utf-8");
    assert_non_null(strstr(a.data, "<!doctype html>"));
    /* self-contained: nothing loaded from anywhere else */
    assert_null(strstr(a.data, "src=\"http"));
    assert_null(strstr(a.data, "href=\"http"));
    assert_null(strstr(a.data, "url("));
    assert_null(strstr(a.data, "@import"));
    assert_null(strstr(a.data, "new EventSource")); /* it could not send the token */
}

static void test_the_page_is_served_under_a_policy_allowing_only_its_own_origin(void **state) {
    (void)state;
    const char *csp = NULL;
    size_t n = 0;
    for (const http_asset_header *h = http_assets_page_headers(); h->name; h++, n++) {
        assert_non_null(h->value);
        if (strcmp(h->name, "Content-Security-Policy") == 0) csp = h->value;
    }
    assert_true(n >= 3);
    assert_non_null(csp);
    assert_non_null(strstr(csp, "default-src 'none'"));
    assert_non_null(strstr(csp, "connect-src 'self'"));
    assert_non_null(strstr(csp, "frame-ancestors 'none'"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_openapi_document_is_docs_openapi_json_as_json),
        cmocka_unit_test(test_the_status_page_is_src_status_page_html_with_no_outside_assets),
        cmocka_unit_test(test_the_page_is_served_under_a_policy_allowing_only_its_own_origin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
