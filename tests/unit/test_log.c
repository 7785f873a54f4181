/* test_log: level names (X-macro table), filtering, line format, one write per line, truncation.
 * stderr is redirected to one end of a SOCK_SEQPACKET socketpair: every write(2) arrives as one
 * record, so "one write per line" is checked exactly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

#define MAX_RECORDS 64

static int saved_stderr = -1;
static int cap_rd = -1;

static void capture_begin(void) {
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    assert_true(saved_stderr >= 0);
    assert_int_equal(dup2(sv[1], STDERR_FILENO), STDERR_FILENO);
    close(sv[1]);
    cap_rd = sv[0];
}

/* Restores stderr, then collects every record written meanwhile. Returns the record count. */
static int capture_end(char recs[][4096], size_t lens[], int max) {
    fflush(stderr);
    assert_int_equal(dup2(saved_stderr, STDERR_FILENO), STDERR_FILENO);
    close(saved_stderr);
    saved_stderr = -1;
    int n = 0;
    for (;;) {
        char tmp[4096];
        ssize_t r = recv(cap_rd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        assert_true(n < max);
        memcpy(recs[n], tmp, (size_t)r);
        lens[n] = (size_t)r;
        n++;
    }
    close(cap_rd);
    cap_rd = -1;
    return n;
}

/* Checks "<YYYY-MM-DDTHH:MM:SS.mmmZ> <level padded to 5> <message>\n" and returns the message
 * (without the newline) in msg. */
static void check_line(const char *rec, size_t len, const char *level, char *msg, size_t msgcap) {
    assert_true(len >= 2);
    assert_int_equal(rec[len - 1], '\n');
    assert_null(memchr(rec, '\n', len - 1)); /* exactly one line per write */
    char line[4096];
    memcpy(line, rec, len - 1);
    line[len - 1] = '\0';
    regex_t re;
    assert_int_equal(regcomp(&re,
                             "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
                             "([a-z]+) *( .*)?$",
                             REG_EXTENDED),
                     0);
    regmatch_t m[3];
    int rc = regexec(&re, line, 3, m, 0);
    regfree(&re);
    if (rc != 0) fail_msg("bad log line: '%s'", line);
    assert_int_equal((size_t)(m[1].rm_eo - m[1].rm_so), strlen(level));
    assert_memory_equal(line + m[1].rm_so, level, strlen(level));
    /* level padded to 5 columns, then one space: message starts at 24 + 1 + 5 + 1 */
    size_t off = 24 + 1 + 5 + 1;
    assert_true(len - 1 >= off);
    snprintf(msg, msgcap, "%s", line + off);
}

static void test_default_level_is_info(void **state) {
    (void)state;
    capture_begin();
    log_debug("dbg %d", 1);
    log_info("inf %d", 2);
    char recs[MAX_RECORDS][4096];
    size_t lens[MAX_RECORDS];
    int n = capture_end(recs, lens, MAX_RECORDS);
    assert_int_equal(n, 1);
    char msg[4096];
    check_line(recs[0], lens[0], "info", msg, sizeof msg);
    assert_string_equal(msg, "inf 2");
}

static void test_level_names_round_trip_through_parse(void **state) {
    (void)state;
    static const struct {
        log_level id;
        const char *name;
    } table[] = {
#define X(id, name) {id, name},
        LOG_LEVELS(X)
#undef X
    };
    assert_int_equal(sizeof table / sizeof table[0], 4);
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        log_level lv = (log_level)-1;
        assert_int_equal(log_level_parse(table[i].name, &lv), 0);
        assert_int_equal(lv, table[i].id);
        assert_string_equal(log_level_name(table[i].id), table[i].name);
    }
    assert_string_equal(log_level_name(LOG_WARN), "warn");
    assert_true(LOG_DEBUG < LOG_INFO && LOG_INFO < LOG_WARN && LOG_WARN < LOG_ERROR);
}

static void test_unknown_level_name_is_rejected(void **state) {
    (void)state;
    static const char *const bad[] = {"",      "warning", "inf",   "debug ",
                                      " info", "errorx",  "fatal", "?"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        log_level lv = LOG_INFO;
        assert_int_equal(log_level_parse(bad[i], &lv), -1);
    }
}

static void test_level_name_out_of_range_is_not_a_crash(void **state) {
    (void)state;
    assert_non_null(log_level_name((log_level)99));
    assert_non_null(log_level_name((log_level)-1));
}

static void test_filter_warn_drops_debug_and_info(void **state) {
    (void)state;
    log_set_level(LOG_WARN);
    capture_begin();
    log_debug("d");
    log_info("i");
    log_warn("w %s", "one");
    log_error("e %s", "two");
    char recs[MAX_RECORDS][4096];
    size_t lens[MAX_RECORDS];
    int n = capture_end(recs, lens, MAX_RECORDS);
    log_set_level(LOG_INFO);
    assert_int_equal(n, 2);
    char msg[4096];
    check_line(recs[0], lens[0], "warn", msg, sizeof msg);
    assert_string_equal(msg, "w one");
    check_line(recs[1], lens[1], "error", msg, sizeof msg);
    assert_string_equal(msg, "e two");
}

static void test_filter_debug_prints_every_level_in_order(void **state) {
    (void)state;
    log_set_level(LOG_DEBUG);
    capture_begin();
    log_msg(LOG_DEBUG, "m%d", 0);
    log_msg(LOG_INFO, "m%d", 1);
    log_msg(LOG_WARN, "m%d", 2);
    log_msg(LOG_ERROR, "m%d", 3);
    char recs[MAX_RECORDS][4096];
    size_t lens[MAX_RECORDS];
    int n = capture_end(recs, lens, MAX_RECORDS);
    log_set_level(LOG_INFO);
    assert_int_equal(n, 4);
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        char msg[4096], want[8];
        check_line(recs[i], lens[i], names[i], msg, sizeof msg);
        snprintf(want, sizeof want, "m%d", i);
        assert_string_equal(msg, want);
    }
}

static void test_filter_error_prints_only_errors(void **state) {
    (void)state;
    log_set_level(LOG_ERROR);
    capture_begin();
    log_warn("no");
    log_error("yes");
    char recs[MAX_RECORDS][4096];
    size_t lens[MAX_RECORDS];
    int n = capture_end(recs, lens, MAX_RECORDS);
    log_set_level(LOG_INFO);
    assert_int_equal(n, 1);
    char msg[4096];
    check_line(recs[0], lens[0], "error", msg, sizeof msg);
    assert_string_equal(msg, "yes");
}

static void test_empty_message_is_still_one_line(void **state) {
    (void)state;
    capture_begin();
    log_msg(LOG_ERROR, "%s", "");
    char recs[MAX_RECORDS][4096];
    size_t lens[MAX_RECORDS];
    int n = capture_end(recs, lens, MAX_RECORDS);
    assert_int_equal(n, 1);
    assert_int_equal(recs[0][lens[0] - 1], '\n');
    assert_null(memchr(recs[0], '\n', lens[0] - 1));
}

static void test_long_message_is_truncated_to_one_line_ending_in_newline(void **state) {
    (void)state;
    static const size_t sizes[] = {2000, 2015, 2016, 2017, 2100, 10000, 100000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t sz = sizes[k];
        char *big = malloc(sz + 1);
        assert_non_null(big);
        for (size_t i = 0; i < sz; i++) big[i] = (char)('a' + i % 26);
        big[sz] = '\0';
        capture_begin();
        log_error("%s", big);
        char recs[MAX_RECORDS][4096];
        size_t lens[MAX_RECORDS];
        int n = capture_end(recs, lens, MAX_RECORDS);
        assert_int_equal(n, 1);
        assert_true(lens[0] <= 2048);
        char msg[4096];
        check_line(recs[0], lens[0], "error", msg, sizeof msg);
        size_t ml = strlen(msg);
        assert_true(ml > 1900); /* most of the message is kept */
        assert_true(ml <= sz);
        assert_memory_equal(msg, big, ml); /* a prefix of the message, nothing else */
        if (sz < 2000) assert_int_equal(ml, sz);
        free(big);
    }
}

#define THREADS 4
#define LINES   200

static void *log_worker(void *arg) {
    int t = (int)(intptr_t)arg;
    char pad[300];
    memset(pad, 'a' + t, sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int i = 0; i < LINES; i++) log_warn("t%d i%d %s", t, i, pad);
    return NULL;
}

struct drain {
    int fd;
    int count[THREADS];
    int next[THREADS];
    int bad;
};

static void *drain_thread(void *arg) {
    struct drain *d = arg;
    char rec[4096];
    for (;;) {
        ssize_t r = recv(d->fd, rec, sizeof rec - 1, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        rec[r] = '\0';
        int t, i, pos = 0;
        const char *m = rec + 31;
        if (rec[r - 1] != '\n' || memchr(rec, '\n', (size_t)r - 1) ||
            sscanf(m, "t%d i%d %n", &t, &i, &pos) != 2 || t < 0 || t >= THREADS) {
            d->bad++;
            continue;
        }
        if (i != d->next[t]) d->bad++; /* per-thread order */
        d->next[t] = i + 1;
        for (int k = 0; k < 299; k++)
            if (m[pos + k] != 'a' + t) {
                d->bad++;
                break;
            }
        d->count[t]++;
    }
    return NULL;
}

static void test_concurrent_lines_never_interleave(void **state) {
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_int_equal(dup2(sv[1], STDERR_FILENO), STDERR_FILENO);
    close(sv[1]);
    struct drain d = {.fd = sv[0]};
    pthread_t reader, w[THREADS];
    assert_int_equal(pthread_create(&reader, NULL, drain_thread, &d), 0);
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&w[t], NULL, log_worker, (void *)(intptr_t)t), 0);
    for (int t = 0; t < THREADS; t++) pthread_join(w[t], NULL);
    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO); /* closes the last writer */
    close(saved);
    pthread_join(reader, NULL);
    close(sv[0]);
    assert_int_equal(d.bad, 0);
    for (int t = 0; t < THREADS; t++) assert_int_equal(d.count[t], LINES);
}

/* ---- JSON lines, structured fields, control characters, the rate limiter ---- */

/* Logs through `emit` in `format` and returns the one record it wrote, NUL-terminated. */
static size_t one_record(log_format format, void (*emit)(void), char *out, size_t cap) {
    log_set_format(format);
    capture_begin();
    emit();
    char recs[MAX_RECORDS][4096];
    size_t lens[MAX_RECORDS];
    int n = capture_end(recs, lens, MAX_RECORDS);
    log_set_format(LOG_FORMAT_TEXT);
    assert_int_equal(n, 1);
    assert_true(lens[0] < cap);
    memcpy(out, recs[0], lens[0]);
    out[lens[0]] = '\0';
    return lens[0];
}

/* Skips the JSON string at p (checking its escapes); returns what follows it. */
static const char *skip_json_string(const char *p) {
    assert_int_equal(*p++, '"');
    while (*p != '"') {
        assert_true(*p != '\0' && (unsigned char)*p >= 0x20);
        if (*p++ == '\\') assert_non_null(strchr("\"\\/bfnrtu", *p++));
    }
    return p + 1;
}

/* Checks that rec is one flat JSON object of string, number, null or true members + "\n". */
static void assert_flat_json_object(const char *rec) {
    const char *p = rec;
    assert_int_equal(*p++, '{');
    for (;;) {
        p = skip_json_string(p); /* key */
        assert_int_equal(*p++, ':');
        if (*p == '"') {
            p = skip_json_string(p);
        } else if (strncmp(p, "null", 4) == 0 || strncmp(p, "true", 4) == 0) {
            p += 4;
        } else {
            assert_true(*p == '-' || (*p >= '0' && *p <= '9'));
            while (*p == '-' || (*p >= '0' && *p <= '9')) p++;
        }
        if (*p == '}') break;
        assert_int_equal(*p++, ',');
    }
    assert_string_equal(p, "}\n");
}

static void emit_hello(void) {
    log_info("hello %d", 5);
}

static void test_json_line_has_time_level_and_msg(void **state) {
    (void)state;
    char rec[4096];
    one_record(LOG_FORMAT_JSON, emit_hello, rec, sizeof rec);
    regex_t re;
    assert_int_equal(regcomp(&re,
                             "^\\{\"time\":\"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                             "\\.[0-9]{3}Z\",\"level\":\"info\",\"msg\":\"hello 5\"\\}\n$",
                             REG_EXTENDED),
                     0);
    int rc = regexec(&re, rec, 0, NULL, 0);
    regfree(&re);
    if (rc != 0) fail_msg("bad JSON line: '%s'", rec);
    assert_flat_json_object(rec);
}

static void emit_hostile(void) {
    log_warn("%s", "a\"b\\c\n\x01 \xc3\xa9 \xff\xfe \xed\xa0\x80 end");
}

/* Logs through `emit` as JSON and checks the line from "msg" on, and that it is valid. */
static void assert_json_from_msg(void (*emit)(void), const char *want) {
    char rec[4096];
    one_record(LOG_FORMAT_JSON, emit, rec, sizeof rec);
    const char *msg = strstr(rec, "\"msg\":");
    assert_non_null(msg);
    assert_string_equal(msg, want);
    assert_flat_json_object(rec);
}

static void test_json_escapes_quotes_controls_and_bytes_that_are_not_utf8(void **state) {
    (void)state;
    assert_json_from_msg(emit_hostile,
                         "\"msg\":\"a\\\"b\\\\c\\u000a\\u0001 \xc3\xa9 \\ufffd\\ufffd "
                         "\\ufffd\\ufffd\\ufffd end\"}\n");
}

static void test_text_control_characters_are_escaped_so_one_call_is_one_line(void **state) {
    (void)state;
    char rec[4096];
    size_t len = one_record(LOG_FORMAT_TEXT, emit_hostile, rec, sizeof rec);
    assert_null(memchr(rec, '\n', len - 1));
    assert_non_null(strstr(rec, "a\"b\\c\\x0a\\x01 \xc3\xa9"));
}

static void emit_long_multibyte(void) {
    /* "é" and '"' (escaped to 2 bytes) around every boundary the cut can fall on */
    char big[9001];
    for (size_t i = 0; i + 3 < sizeof big; i += 3) memcpy(big + i, "\xc3\xa9\"", 3);
    big[sizeof big - 1] = '\0';
    log_error("%s", big);
}

static void test_json_long_message_is_cut_marked_truncated_and_still_valid(void **state) {
    (void)state;
    char rec[4096];
    size_t len = one_record(LOG_FORMAT_JSON, emit_long_multibyte, rec, sizeof rec);
    assert_true(len <= LOG_LINE_MAX);
    assert_true(len > LOG_LINE_MAX - 40); /* most of the line is used */
    assert_flat_json_object(rec);
    assert_non_null(strstr(rec, ",\"truncated\":true}\n"));
}

static void emit_access(void) {
    const log_field f[] = {LOG_STR("method", "GET"), LOG_STR("path", "/a b=\"c\""),
                           LOG_NUM("status", 200), LOG_STR("principal", NULL),
                           LOG_NUM("duration_us", -3)};
    log_event(LOG_INFO, "access", f, sizeof f / sizeof f[0]);
}

static void test_event_fields_in_text(void **state) {
    (void)state;
    char rec[4096], msg[4096];
    size_t len = one_record(LOG_FORMAT_TEXT, emit_access, rec, sizeof rec);
    check_line(rec, len, "info", msg, sizeof msg);
    assert_string_equal(msg, "access method=GET path=\"/a b=\\\"c\\\"\" status=200 principal=- "
                             "duration_us=-3");
}

static void test_event_fields_in_json(void **state) {
    (void)state;
    assert_json_from_msg(emit_access,
                         "\"msg\":\"access\",\"method\":\"GET\",\"path\":\"/a b=\\\"c\\\"\","
                         "\"status\":200,\"principal\":null,\"duration_us\":-3}\n");
}

static void test_format_names_round_trip_and_unknown_is_rejected(void **state) {
    (void)state;
    log_format f = LOG_FORMAT_TEXT;
    assert_int_equal(log_format_parse("json", &f), 0);
    assert_int_equal(f, LOG_FORMAT_JSON);
    assert_string_equal(log_format_name(f), "json");
    assert_int_equal(log_format_parse("text", &f), 0);
    assert_int_equal(f, LOG_FORMAT_TEXT);
    assert_int_equal(log_format_parse("JSON", &f), -1);
    assert_int_equal(log_format_parse("", &f), -1);
    assert_string_equal(log_format_name((log_format)9), "?");
}

static void test_limiter_allows_per_window_then_counts_and_reports_once(void **state) {
    (void)state;
    log_limiter l;
    log_limiter_init(&l, 3, 1000);
    uint64_t suppressed = 99;
    for (int i = 0; i < 3; i++) {
        assert_true(log_limiter_allow(&l, 5000 + i, &suppressed));
        assert_int_equal(suppressed, 0);
    }
    for (int i = 0; i < 5; i++) assert_false(log_limiter_allow(&l, 5100 + i, &suppressed));
    assert_int_equal(suppressed, 0);
    /* The next window: allowed again, and the 5 refused lines reported once. */
    assert_true(log_limiter_allow(&l, 6000, &suppressed));
    assert_int_equal(suppressed, 5);
    assert_true(log_limiter_allow(&l, 6001, &suppressed));
    assert_int_equal(suppressed, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_level_is_info), /* first: before any log_set_level */
        cmocka_unit_test(test_level_names_round_trip_through_parse),
        cmocka_unit_test(test_unknown_level_name_is_rejected),
        cmocka_unit_test(test_level_name_out_of_range_is_not_a_crash),
        cmocka_unit_test(test_filter_warn_drops_debug_and_info),
        cmocka_unit_test(test_filter_debug_prints_every_level_in_order),
        cmocka_unit_test(test_filter_error_prints_only_errors),
        cmocka_unit_test(test_empty_message_is_still_one_line),
        cmocka_unit_test(test_long_message_is_truncated_to_one_line_ending_in_newline),
        cmocka_unit_test(test_concurrent_lines_never_interleave),
        cmocka_unit_test(test_json_line_has_time_level_and_msg),
        cmocka_unit_test(test_json_escapes_quotes_controls_and_bytes_that_are_not_utf8),
        cmocka_unit_test(test_text_control_characters_are_escaped_so_one_call_is_one_line),
        cmocka_unit_test(test_json_long_message_is_cut_marked_truncated_and_still_valid),
        cmocka_unit_test(test_event_fields_in_text),
        cmocka_unit_test(test_event_fields_in_json),
        cmocka_unit_test(test_format_names_round_trip_and_unknown_is_rejected),
        cmocka_unit_test(test_limiter_allows_per_window_then_counts_and_reports_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
