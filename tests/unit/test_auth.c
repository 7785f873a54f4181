/* test_auth: principals from tokens (files, environment) and client certificates, the refusals
 * of authentication, token hygiene (short tokens, unset variables) and allow lists as grants. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"

#define TOKEN_A "token-of-alice-0123456789abcdef"
#define TOKEN_B "token-of-bob-fedcba9876543210"

static char token_path[64];

static int setup(void **state) {
    (void)state;
    snprintf(token_path, sizeof token_path, "/tmp/nodex-auth-%d", (int)getpid());
    FILE *f = fopen(token_path, "w");
    if (!f) return -1;
    fputs(TOKEN_A "  \n", f); /* trailing blanks and the newline are not part of it */
    fclose(f);
    setenv("NODEX_TEST_TOKEN_B", TOKEN_B, 1);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    unlink(token_path);
    unsetenv("NODEX_TEST_TOKEN_B");
    return 0;
}

/* A config with `principals` (YAML lines at the auth.principals level) and loopback listeners. */
static config *load(const char *principals) {
    char yaml[2048];
    snprintf(yaml, sizeof yaml, "auth:\n  principals:\n%s\ncnodes: []\n", principals);
    config_error err;
    config *cfg = config_load_string(yaml, strlen(yaml), "test", &err);
    if (!cfg) fail_msg("config: %s", err.message);
    return cfg;
}

static config *standard(void) {
    char p[1024];
    snprintf(p, sizeof p,
             "    - name: alice\n"
             "      token_file: %s\n"
             "      allow: [\"call:t*\", watch, \"rpc:erlang:*\"]\n"
             "    - name: bob\n"
             "      token_env: NODEX_TEST_TOKEN_B\n"
             "      allow: [cast]\n"
             "    - name: monitor\n"
             "      client_cert: {subject: \"CN=monitor,O=Example\"}\n"
             "      allow: [watch]\n"
             "    - name: robot\n"
             "      client_cert: {san: \"robot.example\"}\n",
             token_path);
    return load(p);
}

static const service_principal *authenticate(const auth *a, const char *header, service_status want,
                                             const char *needle) {
    auth_credentials cr = {.authorization = header,
                           .authorization_len = header ? strlen(header) : 0};
    const service_principal *p = (const service_principal *)1;
    service_error e;
    service_status got = auth_authenticate(a, &cr, &p, &e);
    if (got != want) fail_msg("%s: got %s (%s)", header, service_status_code(got), e.message);
    if (needle && !strstr(e.message, needle)) fail_msg("'%s' lacks '%s'", e.message, needle);
    if (got != SERVICE_OK) assert_null(p);
    return p;
}

static void test_a_valid_token_names_its_principal(void **state) {
    (void)state;
    config *cfg = standard();
    char err[256];
    auth *a = auth_new(cfg, err, sizeof err);
    assert_non_null(a);
    assert_true(auth_required(a));
    assert_string_equal(authenticate(a, "Bearer " TOKEN_A, SERVICE_OK, NULL)->name, "alice");
    assert_string_equal(authenticate(a, "bearer  " TOKEN_B " ", SERVICE_OK, NULL)->name, "bob");
    auth_free(a);
    config_free(cfg);
}

static void test_missing_malformed_and_unknown_tokens_are_unauthenticated(void **state) {
    (void)state;
    config *cfg = standard();
    char err[256];
    auth *a = auth_new(cfg, err, sizeof err);
    assert_non_null(a);
    authenticate(a, NULL, SERVICE_UNAUTHENTICATED, "authentication required");
    authenticate(a, "Basic YWxpY2U6eA==", SERVICE_UNAUTHENTICATED, "'Bearer <token>'");
    authenticate(a, "Bearer ", SERVICE_UNAUTHENTICATED, "'Bearer <token>'");
    authenticate(a, "Bearer " TOKEN_A "x", SERVICE_UNAUTHENTICATED, "not valid");
    authenticate(a, "Bearer token-of-alice", SERVICE_UNAUTHENTICATED, "not valid");
    assert_int_equal(service_status_http(SERVICE_UNAUTHENTICATED), 401);
    auth_free(a);
    config_free(cfg);
}

static void test_a_token_variable_is_removed_from_the_environment(void **state) {
    (void)state;
    config *cfg = standard();
    char err[256];
    auth *a = auth_new(cfg, err, sizeof err);
    assert_non_null(a);
    assert_null(getenv("NODEX_TEST_TOKEN_B")); /* no child inherits it */
    auth_free(a);
    /* read once: a second auth_new finds it gone */
    assert_null(auth_new(cfg, err, sizeof err));
    assert_non_null(strstr(err, "NODEX_TEST_TOKEN_B is not set"));
    config_free(cfg);
}

/* SIGHUP: files are read again; a variable nodexd removed keeps the token it had. */
static void test_a_reload_reads_token_files_again_and_keeps_variable_tokens(void **state) {
    (void)state;
    config *cfg = standard();
    char err[256];
    auth *a = auth_new(cfg, err, sizeof err);
    assert_non_null(a);
    FILE *f = fopen(token_path, "w");
    assert_non_null(f);
    fputs("rotated-token-of-alice-42\n", f);
    fclose(f);
    auth *b = auth_renew(cfg, a, err, sizeof err);
    if (!b) fail_msg("auth_renew: %s", err);
    authenticate(b, "Bearer " TOKEN_A, SERVICE_UNAUTHENTICATED, "not valid");
    assert_string_equal(authenticate(b, "Bearer rotated-token-of-alice-42", SERVICE_OK, NULL)->name,
                        "alice");
    assert_string_equal(authenticate(b, "Bearer " TOKEN_B, SERVICE_OK, NULL)->name, "bob");
    /* the old set is unchanged: requests that hold its principals go on */
    assert_string_equal(authenticate(a, "Bearer " TOKEN_A, SERVICE_OK, NULL)->name, "alice");
    /* without the previous set there is nothing to keep the variable's token from */
    assert_null(auth_renew(cfg, NULL, err, sizeof err));
    auth_free(b);
    auth_free(a);
    config_free(cfg);
}

static void test_short_and_missing_tokens_stop_the_start(void **state) {
    (void)state;
    char path[80];
    snprintf(path, sizeof path, "/tmp/nodex-auth-short-%d", (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("short\n", f);
    fclose(f);
    char p[512];
    snprintf(p, sizeof p, "    - name: weak\n      token_file: %s\n", path);
    config *cfg = load(p);
    char err[256];
    assert_null(auth_new(cfg, err, sizeof err));
    assert_non_null(strstr(err, "shorter than 16"));
    config_free(cfg);
    unlink(path);
    cfg = load(p);
    assert_null(auth_new(cfg, err, sizeof err));
    assert_non_null(strstr(err, "cannot read"));
    config_free(cfg);
}

static void test_client_certificates_name_principals_by_subject_or_san(void **state) {
    (void)state;
    config *cfg = standard();
    char err[256];
    auth *a = auth_new(cfg, err, sizeof err);
    assert_non_null(a);
    const service_principal *p;
    service_error e;
    auth_credentials cr = {.cert_subject = "CN=monitor,O=Example"};
    assert_int_equal(auth_authenticate(a, &cr, &p, &e), SERVICE_OK);
    assert_string_equal(p->name, "monitor");
    const char *sans[] = {"other.example", "robot.example"};
    cr = (auth_credentials){.cert_subject = "CN=robot", .cert_sans = sans, .cert_san_count = 2};
    assert_int_equal(auth_authenticate(a, &cr, &p, &e), SERVICE_OK);
    assert_string_equal(p->name, "robot");
    cr = (auth_credentials){.cert_subject = "CN=stranger"};
    assert_int_equal(auth_authenticate(a, &cr, &p, &e), SERVICE_UNAUTHENTICATED);
    assert_non_null(strstr(e.message, "certificate names no principal"));
    /* a token, when sent, decides: a bad one is not saved by a good certificate */
    cr = (auth_credentials){.authorization = "Bearer nope-nope-nope-nope-nope",
                            .authorization_len = 30,
                            .cert_subject = "CN=monitor,O=Example"};
    assert_int_equal(auth_authenticate(a, &cr, &p, &e), SERVICE_UNAUTHENTICATED);
    auth_free(a);
    config_free(cfg);
}

static void test_allow_lists_become_grants(void **state) {
    (void)state;
    config *cfg = standard();
    char err[256];
    auth *a = auth_new(cfg, err, sizeof err);
    assert_non_null(a);
    const service_principal *p = authenticate(a, "Bearer " TOKEN_A, SERVICE_OK, NULL);
    assert_false(p->all);
    assert_int_equal(p->grant_count, 3);
    assert_int_equal(p->grants[0].op, SERVICE_OP_CALL);
    assert_string_equal(p->grants[0].pattern, "t*");
    assert_int_equal(p->grants[1].op, SERVICE_OP_WATCH);
    assert_null(p->grants[1].pattern);
    assert_int_equal(p->grants[2].op, SERVICE_OP_RPC);
    assert_string_equal(p->grants[2].pattern, "erlang:*");
    auth_free(a);
    config_free(cfg);
}

static void test_without_principals_everyone_is_anonymous(void **state) {
    (void)state;
    static const char yaml[] = "cnodes: []\n";
    config_error cerr;
    config *cfg = config_load_string(yaml, sizeof yaml - 1, "test", &cerr);
    assert_non_null(cfg);
    char err[256];
    auth *a = auth_new(cfg, err, sizeof err);
    assert_non_null(a);
    assert_false(auth_required(a));
    assert_ptr_equal(authenticate(a, NULL, SERVICE_OK, NULL), &service_anonymous);
    assert_ptr_equal(authenticate(a, "Bearer whatever", SERVICE_OK, NULL), &service_anonymous);
    auth_free(a);
    config_free(cfg);
}

static void test_sha256_hex_is_the_standard_digest(void **state) {
    (void)state;
    char hex[65];
    assert_int_equal(auth_sha256_hex("abc", 3, hex), 0);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_san_lists_split_into_values(void **state) {
    (void)state;
    char sans[] = "DNS:a.example,URI:spiffe://example/ops,DNS:b.example";
    const char *out[2];
    assert_int_equal(auth_split_sans(sans, out, 2), 2); /* at most max */
    assert_string_equal(out[0], "a.example");
    assert_string_equal(out[1], "spiffe://example/ops");
    char none[] = "";
    assert_int_equal(auth_split_sans(none, out, 2), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_valid_token_names_its_principal, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_missing_malformed_and_unknown_tokens_are_unauthenticated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_token_variable_is_removed_from_the_environment,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_reload_reads_token_files_again_and_keeps_variable_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_and_missing_tokens_stop_the_start, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_client_certificates_name_principals_by_subject_or_san,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_allow_lists_become_grants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_without_principals_everyone_is_anonymous, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sha256_hex_is_the_standard_digest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_san_lists_split_into_values, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
