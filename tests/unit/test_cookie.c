/* test_cookie: cookie precedence, file permission checks, ~/ expansion and default creation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cookie.h"

static char dir[64];
static char path[PATH_MAX];

/* A fresh temp dir per test, used as $HOME; the cookie file is <dir>/.erlang.cookie. */
static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/nodex-cookie-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    snprintf(path, sizeof path, "%s/.erlang.cookie", dir);
    setenv("HOME", dir, 1);
    unsetenv("NODEX_T_COOKIE");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    unlink(path);
    char other[PATH_MAX];
    snprintf(other, sizeof other, "%s/fifo", dir);
    unlink(other);
    snprintf(other, sizeof other, "%s/sub", dir);
    rmdir(other);
    return rmdir(dir);
}

static void write_file(const char *p, const char *content, mode_t mode) {
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    assert_int_equal(close(fd), 0);
    assert_int_equal(chmod(p, mode), 0);
}

static void test_literal_wins_over_env_and_file(void **state) {
    (void)state;
    write_file(path, "FROMFILE", 0400);
    setenv("NODEX_T_COOKIE", "FROMENV", 1);
    char out[64], err[256];
    assert_int_equal(
        cookie_resolve("LITERAL", "NODEX_T_COOKIE", path, 0, out, sizeof out, err, sizeof err), 0);
    assert_string_equal(out, "LITERAL");
}

static void test_env_wins_over_file_and_empty_env_is_skipped(void **state) {
    (void)state;
    write_file(path, "FROMFILE", 0400);
    setenv("NODEX_T_COOKIE", "FROMENV", 1);
    char out[64], err[256];
    assert_int_equal(
        cookie_resolve(NULL, "NODEX_T_COOKIE", path, 0, out, sizeof out, err, sizeof err), 0);
    assert_string_equal(out, "FROMENV");
    setenv("NODEX_T_COOKIE", "", 1);
    assert_int_equal(
        cookie_resolve(NULL, "NODEX_T_COOKIE", path, 0, out, sizeof out, err, sizeof err), 0);
    assert_string_equal(out, "FROMFILE");
    assert_int_equal(cookie_resolve(NULL, NULL, path, 0, out, sizeof out, err, sizeof err), 0);
    assert_string_equal(out, "FROMFILE");
}

static void test_file_trailing_whitespace_is_stripped(void **state) {
    (void)state;
    write_file(path, "SECRETCOOKIE \r\n\n\t", 0400);
    char out[64], err[256];
    assert_int_equal(cookie_resolve(NULL, NULL, path, 0, out, sizeof out, err, sizeof err), 0);
    assert_string_equal(out, "SECRETCOOKIE");
}

static void test_file_readable_by_others_is_rejected_without_leaking_it(void **state) {
    (void)state;
    write_file(path, "TOPSECRET", 0644);
    char out[64], err[512];
    assert_int_equal(cookie_resolve(NULL, NULL, path, 1, out, sizeof out, err, sizeof err), -1);
    char want[PATH_MAX + 100];
    snprintf(want, sizeof want, "cookie file %s is readable by others (mode 0644); chmod 400 it",
             path);
    assert_string_equal(err, want);
    assert_null(strstr(err, "TOPSECRET"));
    assert_string_equal(out, "");
    write_file(path, "TOPSECRET", 0440); /* group-readable is rejected too */
    assert_int_equal(cookie_resolve(NULL, NULL, path, 0, out, sizeof out, err, sizeof err), -1);
    assert_non_null(strstr(err, "(mode 0440)"));
    write_file(path, "TOPSECRET", 0600); /* owner read-write is fine, as for erl */
    assert_int_equal(cookie_resolve(NULL, NULL, path, 0, out, sizeof out, err, sizeof err), 0);
}

static void test_non_regular_file_is_rejected(void **state) {
    (void)state;
    char fifo[PATH_MAX];
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    char out[64], err[512];
    /* Would hang on a blocking open of a FIFO with no writer. */
    assert_int_equal(cookie_resolve(NULL, NULL, fifo, 0, out, sizeof out, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a regular file"));
    char sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(cookie_resolve(NULL, NULL, sub, 0, out, sizeof out, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a regular file"));
}

static void test_tilde_expands_from_home(void **state) {
    (void)state;
    write_file(path, "HOMECOOKIE\n", 0400);
    char out[64], err[256];
    assert_int_equal(
        cookie_resolve(NULL, NULL, "~/.erlang.cookie", 0, out, sizeof out, err, sizeof err), 0);
    assert_string_equal(out, "HOMECOOKIE");
    unsetenv("HOME");
    assert_int_equal(
        cookie_resolve(NULL, NULL, "~/.erlang.cookie", 0, out, sizeof out, err, sizeof err), -1);
    assert_non_null(strstr(err, "$HOME"));
    setenv("HOME", dir, 1);
}

static void test_missing_file_without_create_is_an_error(void **state) {
    (void)state;
    char out[64], err[512];
    assert_int_equal(cookie_resolve(NULL, NULL, path, 0, out, sizeof out, err, sizeof err), -1);
    assert_non_null(strstr(err, "does not exist"));
    assert_int_equal(access(path, F_OK), -1);
}

static void test_missing_file_is_created_with_20_uppercase_letters_mode_0400(void **state) {
    (void)state;
    char out[64], err[256];
    assert_int_equal(
        cookie_resolve(NULL, NULL, "~/.erlang.cookie", 1, out, sizeof out, err, sizeof err), 0);
    assert_int_equal(strlen(out), 20);
    for (int i = 0; i < 20; i++) assert_true(out[i] >= 'A' && out[i] <= 'Z');
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0400);
    assert_int_equal(st.st_size, 20);
    /* The second call reads the same cookie back instead of creating another. */
    char again[64];
    assert_int_equal(cookie_resolve(NULL, NULL, path, 1, again, sizeof again, err, sizeof err), 0);
    assert_string_equal(again, out);
}

static void test_created_cookies_differ(void **state) {
    (void)state;
    char a[64], b[64], err[256];
    assert_int_equal(cookie_resolve(NULL, NULL, path, 1, a, sizeof a, err, sizeof err), 0);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(cookie_resolve(NULL, NULL, path, 1, b, sizeof b, err, sizeof err), 0);
    assert_string_not_equal(a, b);
}

static void test_create_in_missing_directory_is_an_error(void **state) {
    (void)state;
    char p[PATH_MAX], out[64], err[512];
    snprintf(p, sizeof p, "%s/no/such/dir/cookie", dir);
    assert_int_equal(cookie_resolve(NULL, NULL, p, 1, out, sizeof out, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot create cookie file"));
}

static void test_empty_cookie_is_an_error_from_every_source(void **state) {
    (void)state;
    char out[64], err[256];
    assert_int_equal(cookie_resolve("", NULL, NULL, 0, out, sizeof out, err, sizeof err), -1);
    assert_non_null(strstr(err, "empty"));
    assert_int_equal(cookie_resolve(" \n", NULL, NULL, 0, out, sizeof out, err, sizeof err), -1);
    setenv("NODEX_T_COOKIE", "\n", 1);
    assert_int_equal(
        cookie_resolve(NULL, "NODEX_T_COOKIE", NULL, 0, out, sizeof out, err, sizeof err), -1);
    assert_non_null(strstr(err, "$NODEX_T_COOKIE is empty"));
    write_file(path, "\n\n", 0400);
    assert_int_equal(cookie_resolve(NULL, NULL, path, 1, out, sizeof out, err, sizeof err), -1);
    assert_non_null(strstr(err, "is empty"));
}

static void test_control_characters_are_rejected(void **state) {
    (void)state;
    write_file(path, "TWO\nLINES\n", 0400);
    char out[64], err[512];
    assert_int_equal(cookie_resolve(NULL, NULL, path, 0, out, sizeof out, err, sizeof err), -1);
    assert_non_null(strstr(err, "control characters"));
    assert_null(strstr(err, "TWO"));
}

static void test_cookie_longer_than_out_is_an_error(void **state) {
    (void)state;
    char out[8], err[256];
    assert_int_equal(cookie_resolve("ABCDEFGH", NULL, NULL, 0, out, sizeof out, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "too long"));
    assert_null(strstr(err, "ABCDEFGH"));
    assert_int_equal(cookie_resolve("ABCDEFG", NULL, NULL, 0, out, sizeof out, err, sizeof err), 0);
    assert_string_equal(out, "ABCDEFG");
}

static void test_no_source_at_all_is_an_error(void **state) {
    (void)state;
    char out[64], err[256];
    assert_int_equal(
        cookie_resolve(NULL, "NODEX_T_COOKIE", NULL, 1, out, sizeof out, err, sizeof err), -1);
    assert_non_null(strstr(err, "no cookie"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_literal_wins_over_env_and_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_wins_over_file_and_empty_env_is_skipped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_file_trailing_whitespace_is_stripped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_readable_by_others_is_rejected_without_leaking_it,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_non_regular_file_is_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tilde_expands_from_home, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file_without_create_is_an_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_missing_file_is_created_with_20_uppercase_letters_mode_0400, setup, teardown),
        cmocka_unit_test_setup_teardown(test_created_cookies_differ, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_in_missing_directory_is_an_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_empty_cookie_is_an_error_from_every_source, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_control_characters_are_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cookie_longer_than_out_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_source_at_all_is_an_error, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
