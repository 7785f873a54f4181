/* test_http_stream: a real libmicrohttpd daemon (epoll, suspend/resume) serving a stream the test
 * feeds; the client is a raw TCP socket that decodes the chunked body itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "http_stream.h"
#include "strbuf.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define HAVE_LSAN 1
#endif

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* CPU time (user + system, all threads) of this process, in ms. */
static int64_t cpu_ms(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

/* ---- the server: one stream per request, handed to the test ------------------------------ */

static struct MHD_Daemon *daemon_;
static int port_;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static http_stream *served;  /* the test's reference to the stream of the latest request */
static const char *prewrite; /* written in the handler before the response is made */
static int con_marker;

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **con_cls) {
    (void)cls, (void)url, (void)method, (void)version, (void)upload_data, (void)upload_data_size;
    if (!*con_cls) { /* headers only: answer on the next call */
        *con_cls = &con_marker;
        return MHD_YES;
    }
    http_stream *s = http_stream_new(conn, NULL, NULL);
    if (!s) return MHD_NO;
    if (prewrite) http_stream_write(s, prewrite, strlen(prewrite));
    struct MHD_Response *r = http_stream_response(s);
    if (!r) {
        http_stream_unref(s);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain");
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    pthread_mutex_lock(&mu);
    served = s;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    return ret;
}

/* Waits for the handler to hand over the stream; the test owns that reference. */
static http_stream *take_stream(void) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 5;
    pthread_mutex_lock(&mu);
    while (!served && pthread_cond_timedwait(&cv, &mu, &deadline) == 0) {
    }
    http_stream *s = served;
    served = NULL;
    pthread_mutex_unlock(&mu);
    assert_non_null(s);
    return s;
}

static int setup(void **state) {
    (void)state;
    prewrite = NULL;
    served = NULL;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    daemon_ = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL,
        handler, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_END);
    if (!daemon_) return -1;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
    port_ = info ? info->port : 0;
    return port_ > 0 ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    MHD_stop_daemon(daemon_);
    daemon_ = NULL;
    return 0;
}

/* ---- the client: raw HTTP/1.1 with a chunked-body decoder -------------------------------- */

typedef struct client {
    int fd;
    char buf[1 << 16];
    size_t len; /* bytes in buf */
    size_t off; /* consumed */
} client;

static client *client_open(void) {
    client *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c->fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port_),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return c;
}

static void client_close(client *c) {
    if (!c) return;
    if (c->fd >= 0) close(c->fd);
    free(c);
}

static void client_send(client *c, const char *s) {
    size_t n = strlen(s);
    assert_int_equal(send(c->fd, s, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Reads more bytes within timeout_ms. Returns the count, 0 at EOF, -1 on timeout. */
static ssize_t client_fill(client *c, int timeout_ms) {
    if (c->off == c->len) c->off = c->len = 0;
    if (c->off > 0 && c->len == sizeof c->buf) {
        memmove(c->buf, c->buf + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    assert_true(c->len < sizeof c->buf);
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) <= 0) return -1;
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (n < 0) return errno == ECONNRESET ? 0 : -1;
    c->len += (size_t)n;
    return n;
}

/* One CRLF-terminated line (CRLF removed) into out. Returns 0, or -1 on timeout/EOF. */
static int client_line(client *c, char *out, size_t cap, int64_t deadline) {
    for (;;) {
        char *nl = memmem(c->buf + c->off, c->len - c->off, "\r\n", 2);
        if (nl) {
            size_t n = (size_t)(nl - (c->buf + c->off));
            assert_true(n < cap);
            memcpy(out, c->buf + c->off, n);
            out[n] = '\0';
            c->off += n + 2;
            return 0;
        }
        int left = (int)(deadline - now_ms());
        if (left <= 0 || client_fill(c, left) <= 0) return -1;
    }
}

/* Exactly n bytes appended to out. Returns 0 or -1. */
static int client_bytes(client *c, size_t n, strbuf *out, int64_t deadline) {
    while (n) {
        size_t avail = c->len - c->off;
        if (avail) {
            size_t k = avail < n ? avail : n;
            if (out) strbuf_append(out, c->buf + c->off, k);
            c->off += k;
            n -= k;
            continue;
        }
        int left = (int)(deadline - now_ms());
        if (left <= 0 || client_fill(c, left) <= 0) return -1;
    }
    return 0;
}

/* Sends GET and reads the response head; asserts 200 with a chunked body. */
static void client_get(client *c) {
    client_send(c, "GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n");
    int64_t deadline = now_ms() + 5000;
    char line[1024];
    assert_int_equal(client_line(c, line, sizeof line, deadline), 0);
    assert_non_null(strstr(line, "HTTP/1.1 200"));
    bool chunked = false;
    for (;;) {
        assert_int_equal(client_line(c, line, sizeof line, deadline), 0);
        if (!line[0]) break;
        if (strcasestr(line, "transfer-encoding:") && strcasestr(line, "chunked")) chunked = true;
    }
    assert_true(chunked);
}

/* Reads one chunk into body. Returns its size, 0 for the terminating chunk (trailer read too),
 * or -1 on timeout / EOF. */
static long client_chunk(client *c, strbuf *body, int timeout_ms) {
    int64_t deadline = now_ms() + timeout_ms;
    char line[256];
    if (client_line(c, line, sizeof line, deadline) != 0) return -1;
    char *end;
    long size = strtol(line, &end, 16);
    assert_true(end != line && size >= 0);
    if (size == 0) {
        do {
            if (client_line(c, line, sizeof line, deadline) != 0) return -1;
        } while (line[0]); /* trailer lines, then the empty line */
        return 0;
    }
    if (client_bytes(c, (size_t)size, body, deadline) != 0) return -1;
    if (client_line(c, line, sizeof line, deadline) != 0) return -1;
    assert_string_equal(line, ""); /* the CRLF after the chunk data */
    return size;
}

/* Reads chunks until body holds at least `want` bytes. */
static void client_read_until(client *c, strbuf *body, size_t want, int timeout_ms) {
    int64_t deadline = now_ms() + timeout_ms;
    while (body->len < want) {
        int left = (int)(deadline - now_ms());
        if (left <= 0) fail_msg("only %zu of %zu body bytes arrived", body->len, want);
        long n = client_chunk(c, body, left);
        if (n <= 0) fail_msg("body ended (%ld) after %zu of %zu bytes", n, body->len, want);
    }
}

/* Polls http_stream_dead for up to timeout_ms. */
static bool wait_dead(http_stream *s, int timeout_ms) {
    int64_t deadline = now_ms() + timeout_ms;
    while (!http_stream_dead(s)) {
        if (now_ms() > deadline) return false;
        sleep_ms(5);
    }
    return true;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_bytes_written_before_and_after_the_response_starts_arrive_in_order(void **st) {
    (void)st;
    prewrite = "0-in-handler;";
    client *c = client_open();
    client_get(c);
    http_stream *s = take_stream();
    strbuf want = {0}, body = {0};
    strbuf_puts(&want, prewrite);
    /* Written before the client reads anything more. */
    for (int i = 1; i <= 50; i++) {
        char piece[32];
        snprintf(piece, sizeof piece, "%d-early;", i);
        assert_int_equal(http_stream_write(s, piece, strlen(piece)), 0);
        strbuf_puts(&want, piece);
    }
    client_read_until(c, &body, want.len, 5000);
    /* Then interleaved with the client's reads: each piece as it comes. */
    for (int i = 51; i <= 100; i++) {
        char piece[32];
        snprintf(piece, sizeof piece, "%d-late;", i);
        assert_int_equal(http_stream_write(s, piece, strlen(piece)), 0);
        strbuf_puts(&want, piece);
        client_read_until(c, &body, want.len, 5000);
    }
    /* A piece bigger than MHD's 16 KiB block size goes through whole too. */
    char big[50000];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (char)('a' + i % 26);
    assert_int_equal(http_stream_write(s, big, sizeof big), 0);
    strbuf_append(&want, big, sizeof big);
    http_stream_end(s);
    for (long n; (n = client_chunk(c, &body, 5000)) != 0;) assert_true(n > 0);
    assert_int_equal(body.len, want.len);
    assert_memory_equal(body.data, want.data, want.len);
    http_stream_unref(s);
    strbuf_free(&want);
    strbuf_free(&body);
    client_close(c);
}

typedef struct delayed_write {
    http_stream *s;
    int delay_ms;
    const char *text;
    int rc;
} delayed_write;

static void *delayed_writer(void *arg) {
    delayed_write *d = arg;
    sleep_ms(d->delay_ms);
    d->rc = http_stream_write(d->s, d->text, strlen(d->text));
    return NULL;
}

static void test_idle_connection_sleeps_and_wakes_on_a_write_from_another_thread(void **st) {
    (void)st;
    client *c = client_open();
    client_get(c);
    http_stream *s = take_stream();
    strbuf body = {0};
    assert_int_equal(http_stream_write(s, "first", 5), 0);
    client_read_until(c, &body, 5, 5000);
    sleep_ms(20); /* let MHD find the stream empty and suspend */

    /* Idle: no busy polling. A spinning reader would burn ~300 ms of CPU here. */
    int64_t cpu0 = cpu_ms(), wall0 = now_ms();
    sleep_ms(300);
    int64_t cpu_used = cpu_ms() - cpu0, wall = now_ms() - wall0;
    if (cpu_used > 30)
        fail_msg("%lld ms of CPU while idle for %lld ms", (long long)cpu_used, (long long)wall);
    assert_false(http_stream_dead(s));

    /* A write from another thread wakes the sleeping connection. */
    delayed_write d = {.s = s, .delay_ms = 100, .text = "wake-up"};
    pthread_t t;
    int64_t t0 = now_ms();
    assert_int_equal(pthread_create(&t, NULL, delayed_writer, &d), 0);
    client_read_until(c, &body, 5 + 7, 3000);
    int64_t took = now_ms() - t0;
    pthread_join(t, NULL);
    assert_int_equal(d.rc, 0);
    assert_memory_equal(body.data, "firstwake-up", 12);
    assert_true(took >= 90);
    if (took > 1000) fail_msg("woke after %lld ms", (long long)took);

    http_stream_end(s);
    assert_int_equal(client_chunk(c, &body, 3000), 0);
    http_stream_unref(s);
    strbuf_free(&body);
    client_close(c);
}

static void test_end_sends_the_terminating_chunk_and_releases_the_response(void **st) {
    (void)st;
    client *c = client_open();
    client_get(c);
    http_stream *s = take_stream();
    strbuf body = {0};
    assert_int_equal(http_stream_write(s, "last words", 10), 0);
    client_read_until(c, &body, 10, 5000);
    sleep_ms(20); /* suspended on an empty stream: end must wake it */
    http_stream_end(s);
    http_stream_end(s);                                 /* idempotent */
    assert_int_equal(client_chunk(c, &body, 30000), 0); /* "0\r\n\r\n", woken by end */
    assert_int_equal(body.len, 10);
    /* Body complete: MHD releases the response, the stream reports dead. */
    assert_true(wait_dead(s, 3000));
    /* The connection stays usable (keep-alive): a second request gets a new stream. */
    client_get(c);
    http_stream *s2 = take_stream();
    assert_true(s2 != s);
    http_stream_end(s2);
    assert_int_equal(client_chunk(c, &body, 3000), 0);
    http_stream_unref(s2);
    http_stream_unref(s);
    strbuf_free(&body);
    client_close(c);
}

static void test_end_right_after_the_handler_gives_an_empty_chunked_body(void **st) {
    (void)st;
    client *c = client_open();
    client_get(c);
    http_stream *s = take_stream();
    http_stream_end(s);
    strbuf body = {0};
    assert_int_equal(client_chunk(c, &body, 3000), 0);
    assert_int_equal(body.len, 0);
    assert_true(wait_dead(s, 3000));
    http_stream_unref(s);
    client_close(c);
}

static void test_client_disconnect_makes_the_stream_dead_after_the_next_write(void **st) {
    (void)st;
    client *c = client_open();
    client_get(c);
    http_stream *s = take_stream();
    strbuf body = {0};
    assert_int_equal(http_stream_write(s, "hello", 5), 0);
    client_read_until(c, &body, 5, 5000);
    sleep_ms(20); /* suspended: MHD does not watch the socket now */
    /* Reset the connection (SO_LINGER 0 sends RST). */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    client_close(c);
    sleep_ms(50);
    assert_false(http_stream_dead(s)); /* nobody noticed yet: the connection sleeps */
    /* The next write wakes the connection; sending fails; MHD releases the response. */
    int rc = http_stream_write(s, "anyone?", 7);
    assert_true(rc == 0 || rc == -1);
    assert_true(wait_dead(s, 3000));
    assert_int_equal(http_stream_write(s, "gone", 4), -1);
    http_stream_unref(s);
    strbuf_free(&body);
}

static void test_client_that_closed_politely_is_noticed_after_writes(void **st) {
    (void)st;
    client *c = client_open();
    client_get(c);
    http_stream *s = take_stream();
    strbuf body = {0};
    assert_int_equal(http_stream_write(s, "hello", 5), 0);
    client_read_until(c, &body, 5, 5000);
    sleep_ms(20);
    client_close(c); /* FIN, not RST: the first send may still succeed */
    int64_t deadline = now_ms() + 3000;
    int writes = 0;
    while (!http_stream_dead(s) && now_ms() < deadline) {
        if (http_stream_write(s, "ping\n", 5) == 0) writes++;
        sleep_ms(20);
    }
    assert_true(http_stream_dead(s));
    assert_true(writes >= 1 && writes <= 5);
    assert_int_equal(http_stream_write(s, "x", 1), -1);
    http_stream_unref(s);
    strbuf_free(&body);
}

static void test_refs_are_released_without_leaks_in_any_order(void **st) {
    (void)st;
    /* 1. The test drops its reference first; MHD's goes when the body is done. */
    client *c = client_open();
    client_get(c);
    http_stream *s = take_stream();
    http_stream_ref(s); /* extra references balance out */
    http_stream_ref(s);
    http_stream_unref(s);
    http_stream_unref(s);
    assert_int_equal(http_stream_write(s, "abc", 3), 0);
    http_stream_end(s);
    http_stream_unref(s); /* MHD still holds the response's reference */
    s = NULL;
    strbuf body = {0};
    assert_int_equal(client_chunk(c, &body, 3000), 3);
    assert_int_equal(client_chunk(c, &body, 3000), 0);
    assert_memory_equal(body.data, "abc", 3);

    /* 2. MHD releases first (body done), the test's reference is the last one. */
    client_get(c);
    s = take_stream();
    http_stream_end(s);
    assert_int_equal(client_chunk(c, &body, 3000), 0);
    assert_true(wait_dead(s, 3000));
    http_stream_unref(s); /* frees it: ASan reports any later touch */

    /* 3. The daemon stops with the stream ended but the client never reading. */
    client *c2 = client_open();
    client_get(c2);
    s = take_stream();
    char blob[4096];
    memset(blob, 'z', sizeof blob);
    for (int i = 0; i < 64; i++) assert_int_equal(http_stream_write(s, blob, sizeof blob), 0);
    http_stream_end(s);
    http_stream_unref(s);
    s = NULL;
    strbuf_free(&body);
    client_close(c);
    client_close(c2);
    /* teardown's MHD_stop_daemon drops MHD's references; leaks show at the check below or at
     * exit under LeakSanitizer. */
    MHD_stop_daemon(daemon_);
    daemon_ = NULL;
#ifdef HAVE_LSAN
    assert_int_equal(__lsan_do_recoverable_leak_check(), 0);
#endif
    assert_int_equal(setup(NULL), 0); /* teardown stops a daemon */
}

/* Four writer threads; every record's bytes must arrive contiguous. */
#define WRITERS 4
#define RECORDS 300

static void *record_writer(void *arg) {
    delayed_write *d = arg;
    int t = d->delay_ms; /* reused as the thread number */
    char rec[3000];
    for (int i = 0; i < RECORDS; i++) {
        size_t len = (size_t)((i * 37 + t * 101) % 2500) + 1;
        int h = snprintf(rec, sizeof rec, "<%d:%d:%zu>", t, i, len);
        memset(rec + h, 'A' + t, len);
        if (http_stream_write(d->s, rec, (size_t)h + len) != 0) {
            d->rc = -1;
            return NULL;
        }
        if (i % 16 == 0) sched_yield();
    }
    d->rc = 0;
    return NULL;
}

typedef struct finisher {
    http_stream *s;
    pthread_t *writers;
    delayed_write *d;
} finisher;

/* Joins the writers, then ends the body. */
static void *finish_after_writers(void *arg) {
    finisher *f = arg;
    for (int i = 0; i < WRITERS; i++) pthread_join(f->writers[i], NULL);
    http_stream_end(f->s);
    return NULL;
}

static void test_writes_from_four_threads_interleave_whole(void **st) {
    (void)st;
    client *c = client_open();
    client_get(c);
    http_stream *s = take_stream();
    delayed_write d[WRITERS];
    pthread_t t[WRITERS], fin;
    for (int i = 0; i < WRITERS; i++) {
        d[i] = (delayed_write){.s = s, .delay_ms = i, .rc = 1};
        assert_int_equal(pthread_create(&t[i], NULL, record_writer, &d[i]), 0);
    }
    finisher f = {.s = s, .writers = t, .d = d};
    assert_int_equal(pthread_create(&fin, NULL, finish_after_writers, &f), 0);
    /* Read while they write, until the terminating chunk. */
    strbuf body = {0};
    long n;
    while ((n = client_chunk(c, &body, 10000)) > 0) {
    }
    pthread_join(fin, NULL);
    if (n < 0) fail_msg("body stalled at %zu bytes", body.len);
    for (int i = 0; i < WRITERS; i++) assert_int_equal(d[i].rc, 0);
    /* Parse: <t:i:len> then exactly len bytes of 'A'+t; per thread, i counts up by one. */
    int next[WRITERS] = {0};
    size_t p = 0, records = 0;
    while (p < body.len) {
        int th, i, used = 0;
        size_t len;
        assert_int_equal(body.data[p], '<');
        if (sscanf(body.data + p, "<%d:%d:%zu>%n", &th, &i, &len, &used) != 3 || used == 0)
            fail_msg("no record header at offset %zu", p);
        assert_true(th >= 0 && th < WRITERS);
        assert_int_equal(i, next[th]);
        next[th]++;
        p += (size_t)used;
        assert_true(p + len <= body.len);
        for (size_t k = 0; k < len; k++)
            if (body.data[p + k] != 'A' + th)
                fail_msg("record %d:%d torn at byte %zu of %zu", th, i, k, len);
        p += len;
        records++;
    }
    assert_int_equal(records, WRITERS * RECORDS);
    for (int i = 0; i < WRITERS; i++) assert_int_equal(next[i], RECORDS);
    http_stream_unref(s);
    strbuf_free(&body);
    client_close(c);
}

static void test_a_reader_that_falls_behind_by_the_cap_gets_last_words_and_the_end(void **st) {
    (void)st;
    client *c = client_open();
    client_get(c);
    http_stream *s = take_stream();
    static const char last[] = "{\"error\":{\"code\":\"too_slow\"}}\n";
    http_stream_set_cap(s, 256 * 1024, last);
    static char frame[64 * 1024];
    memset(frame, 'f', sizeof frame);
    /* The client reads nothing: socket buffers fill, then the stream's pending bytes grow. */
    size_t written = 0;
    int rc;
    while ((rc = http_stream_write(s, frame, sizeof frame)) == 0) {
        written += sizeof frame;
        if (written > (512u << 20)) fail_msg("no cut after %zu bytes", written);
    }
    /* the write that cut says so, once: the writer counts the cut on it */
    assert_int_equal(rc, HTTP_STREAM_CUT);
    assert_true(http_stream_cut_off(s));
    assert_int_equal(http_stream_write(s, "x", 1), -1); /* ended: nothing more goes in */
    /* The client catches up: everything written, then the last words, then the end. */
    strbuf body = {0};
    for (long n; (n = client_chunk(c, &body, 30000)) != 0;)
        if (n < 0) fail_msg("body cut short at %zu bytes", body.len);
    assert_int_equal(body.len, written + strlen(last));
    assert_memory_equal(body.data + written, last, strlen(last));
    assert_true(wait_dead(s, 3000));
    http_stream_unref(s);
    strbuf_free(&body);
    client_close(c);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_bytes_written_before_and_after_the_response_starts_arrive_in_order, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_idle_connection_sleeps_and_wakes_on_a_write_from_another_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_end_sends_the_terminating_chunk_and_releases_the_response, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_end_right_after_the_handler_gives_an_empty_chunked_body, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_client_disconnect_makes_the_stream_dead_after_the_next_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_that_closed_politely_is_noticed_after_writes,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_refs_are_released_without_leaks_in_any_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_a_reader_that_falls_behind_by_the_cap_gets_last_words_and_the_end, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_writes_from_four_threads_interleave_whole, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
