/* test_tls: loading and checking TLS files, reload keeping the old set on failure, PEM copies
 * and SAN lists; certificates are made at test time with the openssl CLI in a temp directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tls.h"

static char dir[] = "/tmp/nodex-test-tls-XXXXXX";

static void path_of(char *out, size_t len, const char *name) {
    snprintf(out, len, "%s/%s", dir, name);
}

/* Runs an openssl pipeline in the temp directory. */
static int sh(const char *script) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd '%s' && { %s; } >/dev/null 2>&1", dir, script);
    return system(cmd);
}

/* A CA and a leaf NAME.crt/NAME.key signed by it with `serial`. */
static int issue(const char *name, unsigned serial) {
    char script[1024];
    snprintf(script, sizeof script,
             "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out %s.key && "
             "openssl req -new -key %s.key -subj /CN=%s -out %s.csr && "
             "openssl x509 -req -in %s.csr -CA ca.crt -CAkey ca.key -set_serial %u -days 1 "
             "-out %s.crt",
             name, name, name, name, name, serial, name);
    return sh(script);
}

static int setup(void **state) {
    (void)state;
    if (!mkdtemp(dir)) return -1;
    if (sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
           "-out ca.crt -subj /CN=ca -days 1") != 0)
        return -1;
    if (issue("a", 0x1001) != 0 || issue("b", 0x2002) != 0) return -1;
    return sh("cp a.crt live.crt && cp a.key live.key && echo garbage > junk.pem");
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

typedef struct files {
    char cert[256], key[256], ca[256];
    config_tls cfg;
} files;

static void files_init(files *f, const char *cert, const char *key, const char *ca) {
    memset(f, 0, sizeof *f);
    path_of(f->cert, sizeof f->cert, cert);
    path_of(f->key, sizeof f->key, key);
    if (ca) path_of(f->ca, sizeof f->ca, ca);
    f->cfg = (config_tls){.enabled = true,
                          .cert_file = f->cert,
                          .key_file = f->key,
                          .client_ca_file = ca ? f->ca : NULL,
                          .origin = "c.yaml:3: http.tls"};
}

static void expect_load_error(const char *cert, const char *key, const char *ca, const char *part) {
    files f;
    files_init(&f, cert, key, ca);
    char err[512] = "";
    tls_creds *t = tls_creds_load(&f.cfg, err, sizeof err);
    if (t) {
        tls_creds_free(t);
        fail_msg("%s + %s loaded", cert, key);
    }
    if (!strstr(err, part)) fail_msg("error \"%s\" lacks \"%s\"", err, part);
}

static void test_load_checks_the_pair_and_describes_the_leaf(void **state) {
    (void)state;
    files f;
    files_init(&f, "a.crt", "a.key", "ca.crt");
    char err[512], what[256];
    tls_creds *t = tls_creds_load(&f.cfg, err, sizeof err);
    assert_non_null(t);
    assert_int_equal(tls_creds_generation(t), 1);
    tls_creds_describe(t, what, sizeof what);
    assert_non_null(strstr(what, "serial=1001 sha256="));
    assert_int_equal(strlen(what), strlen("serial=1001 sha256=") + 32 * 3 - 1);
    tls_pem pem;
    assert_int_equal(tls_creds_pem(t, &pem), 0);
    assert_non_null(strstr(pem.cert, "BEGIN CERTIFICATE"));
    assert_non_null(strstr(pem.key, "PRIVATE KEY"));
    assert_non_null(strstr(pem.ca, "BEGIN CERTIFICATE"));
    assert_int_equal(pem.generation, 1);
    tls_pem_clear(&pem);
    assert_null(pem.key);
    tls_creds_free(t);
}

static void test_load_errors_name_the_key_and_the_file(void **state) {
    (void)state;
    char want[512];
    snprintf(want, sizeof want, "c.yaml:3: http.tls.key_file %s/missing.key: cannot open", dir);
    expect_load_error("a.crt", "missing.key", NULL, want);
    expect_load_error("a.crt", "b.key", NULL, "http.tls.key_file");
    expect_load_error("a.crt", "b.key", NULL, "does not match the certificate");
    expect_load_error("junk.pem", "a.key", NULL, "http.tls.cert_file");
    expect_load_error("junk.pem", "a.key", NULL, "no PEM certificate chain");
    expect_load_error("a.crt", "junk.pem", NULL, "not an unencrypted PEM private key");
    expect_load_error("a.crt", "a.key", "junk.pem", "http.tls.client_ca_file");
    expect_load_error("a.crt", "a.key", "junk.pem", "no PEM CA certificate");
}

static void test_reload_failure_keeps_the_old_set_and_success_moves_on(void **state) {
    (void)state;
    files f;
    files_init(&f, "live.crt", "live.key", NULL);
    char err[512], what[256];
    tls_creds *t = tls_creds_load(&f.cfg, err, sizeof err);
    assert_non_null(t);
    assert_int_equal(sh("cp b.crt live.crt"), 0); /* the key is still a's */
    assert_int_equal(tls_creds_reload(t, err, sizeof err), -1);
    assert_non_null(strstr(err, "does not match the certificate"));
    assert_int_equal(tls_creds_generation(t), 1);
    tls_creds_describe(t, what, sizeof what);
    assert_non_null(strstr(what, "serial=1001 "));
    assert_int_equal(sh("cp b.key live.key"), 0);
    assert_int_equal(tls_creds_reload(t, err, sizeof err), 0);
    assert_int_equal(tls_creds_generation(t), 2);
    tls_creds_describe(t, what, sizeof what);
    assert_non_null(strstr(what, "serial=2002 "));
    tls_creds_free(t);
    assert_int_equal(sh("cp a.crt live.crt && cp a.key live.key"), 0);
}

static void test_sans_are_joined_with_kinds_and_cut_when_full(void **state) {
    (void)state;
    tls_peer p;
    memset(&p, 0, sizeof p);
    tls_peer_add_san(&p, "DNS", "a.example", 9);
    tls_peer_add_san(&p, "URI", "spiffe://x/y", 12);
    assert_string_equal(p.sans, "DNS:a.example,URI:spiffe://x/y");
    char big[2000];
    memset(big, 'x', sizeof big);
    tls_peer_add_san(&p, "DNS", big, sizeof big); /* does not fit: left out whole */
    assert_string_equal(p.sans, "DNS:a.example,URI:spiffe://x/y");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_checks_the_pair_and_describes_the_leaf),
        cmocka_unit_test(test_load_errors_name_the_key_and_the_file),
        cmocka_unit_test(test_reload_failure_keeps_the_old_set_and_success_moves_on),
        cmocka_unit_test(test_sans_are_joined_with_kinds_and_cut_when_full),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
