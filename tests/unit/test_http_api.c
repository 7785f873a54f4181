/* test_http_api: the HTTP front end in process (gateway + test C-node + private epmd) spoken to
 * over a raw HTTP/1.1 socket: routes, methods, content negotiation, limits, keep-alive, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "epmd.h"
#include "gateway.h"
#include "http_api.h"
#include "log.h"
#include "strbuf.h"
#include "term.h"

#define MAX_BODY 1024

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static bool pid_gone(pid_t pid) {
    if (kill(pid, 0) != 0) return errno == ESRCH;
    char p[64], st[512];
    snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(p, "r");
    if (!f) return true;
    size_t n = fread(st, 1, sizeof st - 1, f);
    fclose(f);
    st[n] = '\0';
    const char *rp = strrchr(st, ')');
    return rp && (rp[2] == 'Z' || rp[2] == 'X');
}

/* ---- private epmd ------------------------------------------------------------------------- */

static pid_t epmd_pid;

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static int start_epmd(void) {
    int port = free_port();
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    setenv("ERL_EPMD_PORT", p, 1); /* for ei here and in the C-nodes (they inherit it) */
    epmd_pid = fork();
    if (epmd_pid < 0) return -1;
    if (epmd_pid == 0) {
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) dup2(null, 1), dup2(null, 2);
        execlp("epmd", "epmd", "-port", p, (char *)NULL);
        _exit(127);
    }
    for (int64_t deadline = now_ms() + 5000; !epmd_is_running(200);) {
        if (now_ms() > deadline) return -1;
        sleep_ms(20);
    }
    return 0;
}

static void stop_epmd(void) {
    if (epmd_pid > 0) {
        kill(epmd_pid, SIGKILL);
        waitpid(epmd_pid, NULL, 0);
        epmd_pid = 0;
    }
}

/* ---- gateway + HTTP fixture --------------------------------------------------------------- */

typedef struct fixture {
    config *cfg;
    gateway *gw;
    http_api *http;
    int http_port;
    pthread_t loop;
    bool running;
    atomic_bool started;
    pid_t pids[8];
    size_t npids;
} fixture;

static fixture fx;
static char test_cnode_path[1024];
static unsigned instance;

static void find_test_cnode(void) {
    char self[PATH_MAX - 16];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(n > 0 && n < 900);
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    assert_non_null(slash);
    *slash = '\0';
    snprintf(test_cnode_path, sizeof test_cnode_path, "%.900s/test_cnode", self);
    assert_int_equal(access(test_cnode_path, X_OK), 0);
}

static void on_started(void *ctx) {
    atomic_store(&((fixture *)ctx)->started, true);
}

static void *loop_main(void *arg) {
    fixture *f = arg;
    gateway_run(f->gw, on_started, f);
    return NULL;
}

static void remember_pid(pid_t pid) {
    for (size_t i = 0; i < fx.npids; i++)
        if (fx.pids[i] == pid) return;
    if (pid > 0 && fx.npids < sizeof fx.pids / sizeof fx.pids[0]) fx.pids[fx.npids++] = pid;
}

static gateway_cnode_info wait_state(const char *name, cnode_state state, int timeout_ms) {
    gateway_cnode_info info;
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        assert_int_equal(gateway_cnode_info_by_name(fx.gw, name, &info), 0);
        remember_pid(info.os_pid);
        if (info.state == state) return info;
        if (now_ms() > deadline)
            fail_msg("C-node %s is %s, not %s (last_error: %s)", name, cnode_state_name(info.state),
                     cnode_state_name(state), info.last_error);
        sleep_ms(5);
    }
}

static int setup(void **state) {
    (void)state;
    memset(&fx, 0, sizeof fx);
    char yaml[8192];
    snprintf(yaml, sizeof yaml,
             "node:\n"
             "  name: \"gwh%d_%u@127.0.0.1\"\n"
             "  start_epmd: false\n"
             "http:\n"
             "  listen: \"127.0.0.1:0\"\n"
             "  threads: 2\n"
             "  max_body_bytes: %d\n"
             "grpc:\n"
             "  listen: null\n"
             "erlang_nodes:\n"
             "  erl: /nonexistent/erl\n" /* POST /nodes can never start anything here */
             "log:\n"
             "  level: error\n"
             "cnodes:\n"
             "  - name: t\n"
             "    executable: %s\n"
             "    max_restarts: 0\n"
             "    max_call_timeout_ms: 10000\n"
             "    shutdown_timeout_ms: 1000\n",
             (int)getpid() % 100000, ++instance, MAX_BODY, test_cnode_path);
    config_error cerr;
    fx.cfg = config_load_string(yaml, strlen(yaml), "test_http_api", &cerr);
    if (!fx.cfg) {
        print_error("config: %s\n", cerr.message);
        return -1;
    }
    log_set_level(fx.cfg->log_level);
    char err[512];
    fx.gw = gateway_new(fx.cfg, "httptestcookie", err, sizeof err);
    if (!fx.gw) {
        print_error("gateway_new: %s\n", err);
        return -1;
    }
    fx.http = http_api_start(fx.cfg, fx.gw, err, sizeof err);
    if (!fx.http) {
        print_error("http_api_start: %s\n", err);
        return -1;
    }
    const char *colon = strrchr(http_api_address(fx.http), ':');
    fx.http_port = colon ? atoi(colon + 1) : 0;
    if (fx.http_port <= 0) return -1;
    if (pthread_create(&fx.loop, NULL, loop_main, &fx) != 0) return -1;
    fx.running = true;
    for (int64_t deadline = now_ms() + 5000; !atomic_load(&fx.started);) {
        if (now_ms() > deadline) return -1;
        sleep_ms(5);
    }
    wait_state("t", CNODE_UP, 5000);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    gateway_cnode_info info;
    if (fx.gw && gateway_cnode_info_by_name(fx.gw, "t", &info) == 0) remember_pid(info.os_pid);
    if (fx.running) {
        gateway_request_stop(fx.gw);
        pthread_join(fx.loop, NULL); /* every call has completed */
        fx.running = false;
    }
    http_api_stop(fx.http);
    gateway_free(fx.gw);
    config_free(fx.cfg);
    for (size_t i = 0; i < fx.npids; i++) {
        if (!pid_gone(fx.pids[i])) {
            print_error("C-node pid %d still alive\n", (int)fx.pids[i]);
            kill(fx.pids[i], SIGKILL);
            waitpid(fx.pids[i], NULL, 0);
            return -1;
        }
    }
    return 0;
}

/* ---- raw HTTP/1.1 client ------------------------------------------------------------------ */

typedef struct response {
    int status;
    char head[8192]; /* status line and headers, as received */
    strbuf body;
    bool closed; /* the server closed the connection after it */
} response;

static int http_connect(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)fx.http_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void send_all(int fd, const char *data, size_t len) {
    while (len) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n <= 0) fail_msg("send: %s", strerror(errno));
        data += n;
        len -= (size_t)n;
    }
}

/* Per-connection receive buffer: bytes of the next response may already be in it. */
typedef struct conn {
    int fd;
    char buf[1 << 16];
    size_t len;
} conn;

static ssize_t conn_fill(conn *c, int64_t deadline) {
    int left = (int)(deadline - now_ms());
    if (left <= 0) return -1;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (poll(&p, 1, left) <= 0) return -1;
    if (c->len == sizeof c->buf) fail_msg("response too large for the test buffer");
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (n < 0 && errno == ECONNRESET) n = 0;
    if (n > 0) c->len += (size_t)n;
    return n;
}

static void conn_consume(conn *c, size_t n) {
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* The value of header `name` in r->head (first occurrence), or NULL. */
static const char *header(const response *r, const char *name, char *out, size_t cap) {
    size_t nl = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
        const char *h = p + 2;
        if (strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
            h += nl + 1;
            while (*h == ' ') h++;
            size_t n = strcspn(h, "\r\n");
            if (n >= cap) n = cap - 1;
            memcpy(out, h, n);
            out[n] = '\0';
            return out;
        }
    }
    return NULL;
}

static void read_response(conn *c, response *r) {
    memset(r, 0, sizeof *r);
    int64_t deadline = now_ms() + 10000;
    char *end;
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
        if (conn_fill(c, deadline) <= 0) fail_msg("no complete response head");
    size_t hl = (size_t)(end - c->buf) + 4;
    assert_true(hl < sizeof r->head);
    memcpy(r->head, c->buf, hl);
    r->head[hl] = '\0';
    conn_consume(c, hl);
    assert_int_equal(sscanf(r->head, "HTTP/1.1 %d", &r->status), 1);
    char v[128];
    if (header(r, "Content-Length", v, sizeof v)) {
        size_t want = strtoul(v, NULL, 10);
        while (c->len < want)
            if (conn_fill(c, deadline) <= 0) fail_msg("body shorter than Content-Length");
        strbuf_append(&r->body, c->buf, want);
        conn_consume(c, want);
    } else if (header(r, "Transfer-Encoding", v, sizeof v) && strcasestr(v, "chunked")) {
        for (;;) {
            char *nl;
            while (!(nl = memmem(c->buf, c->len, "\r\n", 2)))
                if (conn_fill(c, deadline) <= 0) fail_msg("chunk size missing");
            size_t size = strtoul(c->buf, NULL, 16);
            conn_consume(c, (size_t)(nl - c->buf) + 2);
            while (c->len < size + 2)
                if (conn_fill(c, deadline) <= 0) fail_msg("chunk data missing");
            strbuf_append(&r->body, c->buf, size);
            conn_consume(c, size + 2);
            if (size == 0) break;
        }
    } else {
        ssize_t n;
        while ((n = conn_fill(c, deadline)) > 0) {
        }
        strbuf_append(&r->body, c->buf, c->len);
        c->len = 0;
    }
    if (!r->body.data) strbuf_puts(&r->body, "");
    r->closed = header(r, "Connection", v, sizeof v) && strcasecmp(v, "close") == 0;
}

/* One request on a fresh connection. `extra` holds header lines, each ending in \r\n. */
static void request(const char *method, const char *path, const char *extra, const char *body,
                    size_t body_len, response *r) {
    conn *c = calloc(1, sizeof *c);
    c->fd = http_connect();
    char head[2048];
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: test\r\n%s", method, path,
                     extra ? extra : "");
    if (body) n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: %zu\r\n", body_len);
    n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    send_all(c->fd, head, (size_t)n);
    if (body) send_all(c->fd, body, body_len);
    read_response(c, r);
    close(c->fd);
    free(c);
}

static void response_free(response *r) {
    strbuf_free(&r->body);
}

/* The body is valid JSON (decodes to a term). */
static void assert_json(const response *r) {
    ei_x_buff x;
    ei_x_new(&x);
    term_error err;
    if (term_from_json(r->body.data, r->body.len, NULL, NULL, &x, &err) != 0)
        fail_msg("not JSON (%s): %s", err.message, r->body.data);
    ei_x_free(&x);
}

/* status, application/json, and exactly {"error":{"code":CODE,"message":"..."}} */
static void assert_error(const response *r, int status, const char *code) {
    if (r->status != status) fail_msg("status %d, want %d: %s", r->status, status, r->body.data);
    char v[128];
    assert_non_null(header(r, "Content-Type", v, sizeof v));
    assert_string_equal(v, "application/json");
    assert_json(r);
    char prefix[128];
    snprintf(prefix, sizeof prefix, "{\"error\":{\"code\":\"%s\",\"message\":\"", code);
    if (strncmp(r->body.data, prefix, strlen(prefix)) != 0)
        fail_msg("error body %s does not start with %s", r->body.data, prefix);
    size_t len = r->body.len;
    assert_true(len > strlen(prefix) + 3);
    assert_string_equal(r->body.data + len - 3, "\"}}");
    assert_true(len > strlen(prefix) + 3); /* a non-empty message */
}

static void call_json(const char *path, const char *extra, const char *body, response *r) {
    char hdr[512];
    snprintf(hdr, sizeof hdr, "Content-Type: application/json\r\n%s", extra ? extra : "");
    request("POST", path, hdr, body, strlen(body), r);
}

static const char ping_json[] = "{\"$tuple\":[{\"$atom\":\"ping\"},\"hi\"]}";
static const char pong_json[] = "{\"$tuple\":[{\"$atom\":\"pong\"},\"hi\"]}";

/* ---- tests -------------------------------------------------------------------------------- */

static void test_unknown_routes_are_404_with_an_error_body(void **state) {
    (void)state;
    static const char *const paths[] = {
        "/", "/nope", "/healthz/x", "/cnodes/t/x", "/cnodes/t/call/x", "/cnodesx", "/eventsx"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        response r;
        request("GET", paths[i], NULL, NULL, 0, &r);
        assert_error(&r, 404, "not_found");
        response_free(&r);
    }
    response r;
    request("GET", "/cnodes/nope", NULL, NULL, 0, &r);
    assert_error(&r, 404, "not_found");
    assert_non_null(strstr(r.body.data, "nope"));
    response_free(&r);
    call_json("/cnodes/nope/call", NULL, ping_json, &r);
    assert_error(&r, 404, "not_found");
    response_free(&r);
}

static void test_wrong_methods_are_405_with_allow(void **state) {
    (void)state;
    static const struct {
        const char *method, *path, *allow;
    } cases[] = {
        {"POST", "/healthz", "GET"},       {"DELETE", "/healthz", "GET"},
        {"POST", "/readyz", "GET"},        {"POST", "/cnodes", "GET"},
        {"PUT", "/cnodes", "GET"},         {"POST", "/cnodes/t", "GET"},
        {"GET", "/cnodes/t/call", "POST"}, {"PUT", "/cnodes/t/call", "POST"},
        {"GET", "/cnodes/t/cast", "POST"}, {"POST", "/events", "GET"},
        {"DELETE", "/events", "GET"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        response r;
        request(cases[i].method, cases[i].path, NULL, cases[i].method[0] == 'G' ? NULL : "", 0, &r);
        assert_error(&r, 405, "method_not_allowed");
        char allow[64];
        if (!header(&r, "Allow", allow, sizeof allow))
            fail_msg("%s %s: no Allow header", cases[i].method, cases[i].path);
        assert_string_equal(allow, cases[i].allow);
        response_free(&r);
    }
    response r;
    request("GET", "/healthz", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "{\"status\":\"ok\"}");
    response_free(&r);
}

static void test_content_negotiation(void **state) {
    (void)state;
    response r;
    /* JSON in, JSON out. */
    call_json("/cnodes/t/call", NULL, ping_json, &r);
    assert_int_equal(r.status, 200);
    char v[128];
    assert_string_equal(header(&r, "Content-Type", v, sizeof v), "application/json");
    assert_string_equal(r.body.data, pong_json);
    response_free(&r);

    /* A Content-Type we do not read: 415. */
    request("POST", "/cnodes/t/call", "Content-Type: text/plain\r\n", "x", 1, &r);
    assert_error(&r, 415, "unsupported_media_type");
    response_free(&r);

    /* An Accept we cannot satisfy: 406. */
    call_json("/cnodes/t/call", "Accept: text/html\r\n", ping_json, &r);
    assert_error(&r, 406, "not_acceptable");
    response_free(&r);

    /* Text in, text out (no Accept: the request's own format). */
    const char text[] = "{ping, <<\"hi\">>}";
    request("POST", "/cnodes/t/call", "Content-Type: application/x-erlang-text\r\n", text,
            strlen(text), &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type", v, sizeof v), "application/x-erlang-text");
    assert_string_equal(r.body.data, "{pong,<<\"hi\">>}");
    response_free(&r);

    /* Text in, Accept: application/json: JSON out. */
    request("POST", "/cnodes/t/call",
            "Content-Type: application/x-erlang-text\r\nAccept: application/json\r\n", text,
            strlen(text), &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type", v, sizeof v), "application/json");
    assert_string_equal(r.body.data, pong_json);
    response_free(&r);

    /* The first type we produce in a list wins; a wildcard means the request's format. */
    request("POST", "/cnodes/t/call",
            "Content-Type: application/json\r\n"
            "Accept: text/html, application/x-erlang-text;q=0.5, application/json\r\n",
            ping_json, strlen(ping_json), &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type", v, sizeof v), "application/x-erlang-text");
    response_free(&r);
    call_json("/cnodes/t/call", "Accept: */*\r\n", ping_json, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type", v, sizeof v), "application/json");
    response_free(&r);

    /* curl -d's default Content-Type is taken as JSON; so is no Content-Type at all. */
    request("POST", "/cnodes/t/call", "Content-Type: application/x-www-form-urlencoded\r\n",
            ping_json, strlen(ping_json), &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type", v, sizeof v), "application/json");
    assert_string_equal(r.body.data, pong_json);
    response_free(&r);
    request("POST", "/cnodes/t/call", NULL, ping_json, strlen(ping_json), &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, pong_json);
    response_free(&r);

    /* ETF in, ETF out: version byte, then the reply's bytes. */
    static const char etf[] = {(char)131, 104, 2,   100, 0, 4,   'p', 'i',
                               'n',       'g', 100, 0,   2, 'h', 'i'};
    request("POST", "/cnodes/t/call", "Content-Type: application/x-erlang-binary\r\n", etf,
            sizeof etf, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type", v, sizeof v), "application/x-erlang-binary");
    assert_int_equal((unsigned char)r.body.data[0], 131);
    ei_x_buff x;
    ei_x_new(&x);
    term_error err;
    assert_int_equal(term_from_etf(r.body.data, r.body.len, NULL, &x, &err), 0);
    strbuf sb = {0};
    int idx = 0;
    assert_int_equal(term_to_text(x.buff, (size_t)x.index, &idx, NULL, &sb, &err), 0);
    assert_string_equal(sb.data, "{pong,hi}");
    strbuf_free(&sb);
    ei_x_free(&x);
    response_free(&r);
}

static void test_body_over_max_body_bytes_is_413(void **state) {
    (void)state;
    /* Announced by Content-Length: answered from the headers, before any body byte. */
    conn *c = calloc(1, sizeof *c);
    c->fd = http_connect();
    char head[256];
    int n = snprintf(head, sizeof head,
                     "POST /cnodes/t/call HTTP/1.1\r\nHost: test\r\nContent-Type: "
                     "application/json\r\nContent-Length: %d\r\n\r\n",
                     MAX_BODY + 1);
    send_all(c->fd, head, (size_t)n);
    response r;
    read_response(c, &r);
    assert_error(&r, 413, "payload_too_large");
    response_free(&r);
    close(c->fd);

    /* Chunked: the size is known only while reading. */
    memset(c, 0, sizeof *c);
    c->fd = http_connect();
    const char *ch = "POST /cnodes/t/call HTTP/1.1\r\nHost: test\r\nContent-Type: "
                     "application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    send_all(c->fd, ch, strlen(ch));
    char chunk[300 + 16];
    int k = snprintf(chunk, sizeof chunk, "%x\r\n", 300);
    memset(chunk + k, ' ', 300);
    memcpy(chunk + k + 300, "\r\n", 2);
    for (int i = 0; i < 4; i++) send_all(c->fd, chunk, (size_t)k + 302); /* 1200 > 1024 */
    send_all(c->fd, "0\r\n\r\n", 5);
    read_response(c, &r);
    assert_error(&r, 413, "payload_too_large");
    response_free(&r);
    close(c->fd);

    /* Exactly at the limit is fine (spaces around a valid term). */
    memset(c, 0, sizeof *c);
    c->fd = http_connect();
    send_all(c->fd, ch, strlen(ch));
    char body[MAX_BODY];
    memset(body, ' ', sizeof body);
    memcpy(body, ping_json, strlen(ping_json));
    k = snprintf(chunk, sizeof chunk, "%x\r\n", 256);
    for (int i = 0; i < 4; i++) {
        send_all(c->fd, chunk, (size_t)k);
        send_all(c->fd, body + 256 * i, 256);
        send_all(c->fd, "\r\n", 2);
    }
    send_all(c->fd, "0\r\n\r\n", 5);
    read_response(c, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, pong_json);
    response_free(&r);
    close(c->fd);
    free(c);
}

/* Every body-reading route answers 413 for a chunked body over the limit, POST /nodes too:
 * its oversized body must not be taken for an empty one ("count 1"). */
static void test_chunked_body_over_limit_is_413_on_every_body_route(void **state) {
    (void)state;
    static const struct {
        const char *method, *path;
    } routes[] = {{"POST", "/cnodes/t/call"},
                  {"POST", "/cnodes/t/cast"},
                  {"POST", "/cnodes/t/stream"},
                  {"POST", "/nodes/x@127.0.0.1/rpc"},
                  {"PUT", "/nodes/x@127.0.0.1/modules/m"},
                  {"POST", "/nodes"}};
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        conn *c = calloc(1, sizeof *c);
        c->fd = http_connect();
        char head[256];
        int n = snprintf(head, sizeof head,
                         "%s %s HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n",
                         routes[i].method, routes[i].path);
        send_all(c->fd, head, (size_t)n);
        char chunk[400 + 16];
        int k = snprintf(chunk, sizeof chunk, "%x\r\n", 400);
        memset(chunk + k, ' ', 400);
        memcpy(chunk + k + 400, "\r\n", 2);
        for (int j = 0; j < 3; j++) send_all(c->fd, chunk, (size_t)k + 402); /* 1200 > 1024 */
        send_all(c->fd, "0\r\n\r\n", 5);
        response r;
        read_response(c, &r);
        close(c->fd);
        free(c);
        int status = r.status;
        char body[256];
        snprintf(body, sizeof body, "%s", r.body.data);
        if (status == 413) assert_error(&r, 413, "payload_too_large");
        response_free(&r); /* before any failure: a failed test must not leak under ASan */
        if (status != 413)
            fail_msg("%s %s with a 1200-byte chunked body: %d %s (want 413)", routes[i].method,
                     routes[i].path, status, body);
    }
}

static void test_bad_json_is_400_naming_the_path(void **state) {
    (void)state;
    response r;
    call_json("/cnodes/t/call", NULL, "{\"a\":[1,{\"$nope\":2}]}", &r);
    assert_error(&r, 400, "bad_tag");
    if (!strstr(r.body.data, "$.a[1]")) fail_msg("no JSON path in %s", r.body.data);
    response_free(&r);
    call_json("/cnodes/t/call", NULL, "[1,2,]", &r);
    assert_error(&r, 400, "bad_syntax");
    if (!strstr(r.body.data, "$[2]")) fail_msg("no JSON path in %s", r.body.data);
    response_free(&r);
    request("POST", "/cnodes/t/call", "Content-Type: application/x-erlang-text\r\n", "{ping,", 6,
            &r);
    assert_error(&r, 400, "bad_syntax");
    response_free(&r);
}

static void test_timeout_ms_is_validated(void **state) {
    (void)state;
    static const char *const bad[] = {"0", "-1", "abc", "10001", "", "5x", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[128];
        snprintf(path, sizeof path, "/cnodes/t/call?timeout_ms=%s", bad[i]);
        response r;
        call_json(path, NULL, ping_json, &r);
        assert_error(&r, 400, "bad_request");
        if (!strstr(r.body.data, "10000")) fail_msg("timeout_ms=%s: %s", bad[i], r.body.data);
        response_free(&r);
    }
    response r;
    call_json("/cnodes/t/call?timeout_ms=10000", NULL, ping_json, &r);
    assert_int_equal(r.status, 200);
    response_free(&r);
    /* A valid timeout that expires: 504 in the error shape. */
    call_json("/cnodes/t/call?timeout_ms=100", NULL, "{\"$tuple\":[{\"$atom\":\"sleep\"},300,1]}",
              &r);
    assert_error(&r, 504, "timeout");
    assert_non_null(strstr(r.body.data, "100 ms"));
    response_free(&r);
}

static void test_keep_alive_serves_three_requests_on_one_socket(void **state) {
    (void)state;
    conn *c = calloc(1, sizeof *c);
    c->fd = http_connect();
    char req[512];
    int n = snprintf(req, sizeof req,
                     "POST /cnodes/t/call HTTP/1.1\r\nHost: test\r\nContent-Type: "
                     "application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(ping_json), ping_json);
    const char *get = "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";
    response r;
    send_all(c->fd, get, strlen(get));
    read_response(c, &r);
    assert_int_equal(r.status, 200);
    assert_false(r.closed);
    response_free(&r);
    send_all(c->fd, req, (size_t)n);
    read_response(c, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, pong_json);
    assert_false(r.closed);
    response_free(&r);
    /* An error answer keeps the connection too. */
    const char *bad = "GET /nope HTTP/1.1\r\nHost: test\r\n\r\n";
    send_all(c->fd, bad, strlen(bad));
    read_response(c, &r);
    assert_error(&r, 404, "not_found");
    response_free(&r);
    /* Pipelined: two requests in one write, answered in order. */
    char two[1024];
    int m = snprintf(two, sizeof two, "%s%s", req, get);
    send_all(c->fd, two, (size_t)m);
    read_response(c, &r);
    assert_string_equal(r.body.data, pong_json);
    response_free(&r);
    read_response(c, &r);
    assert_string_equal(r.body.data, "{\"status\":\"ok\"}");
    response_free(&r);
    close(c->fd);
    free(c);
}

static void test_get_cnodes_lists_every_field(void **state) {
    (void)state;
    response r;
    call_json("/cnodes/t/call", NULL, ping_json, &r); /* one call for calls_total */
    response_free(&r);
    gateway_cnode_info info;
    assert_int_equal(gateway_cnode_info_by_name(fx.gw, "t", &info), 0);
    request("GET", "/cnodes", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_json(&r);
    assert_true(strncmp(r.body.data, "{\"cnodes\":[{\"name\":\"t\",", 23) == 0);
    assert_string_equal(r.body.data + r.body.len - 3, "}]}"); /* one C-node */
    char fields[12][256];
    int nf = 0;
    snprintf(fields[nf++], 256, "\"node\":\"%.200s\"", info.node);
    snprintf(fields[nf++], 256, "\"os_pid\":%d,", (int)info.os_pid);
    static const char *const fixed[] = {"\"state\":\"up\",",      "\"restarts\":0,",
                                        "\"last_exit\":null,",    "\"last_error\":null,",
                                        "\"in_flight\":0,",       "\"uptime_ms\":",
                                        "\"calls_total\":1,",     "\"dropped_messages\":0,",
                                        "\"direction\":\"back\"", "\"protocol\":\"raw\""};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        snprintf(fields[nf++], 256, "%s", fixed[i]);
    for (int i = 0; i < nf; i++)
        if (!strstr(r.body.data, fields[i])) fail_msg("no %s in %s", fields[i], r.body.data);
    long uptime = strtol(strstr(r.body.data, "\"uptime_ms\":") + 12, NULL, 10);
    assert_true(uptime >= 0 && uptime < 60000);
    /* One C-node by name: the same fields. */
    char *list = strbuf_detach(&r.body, NULL);
    request("GET", "/cnodes/t", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_json(&r);
    assert_true(strncmp(r.body.data, "{\"name\":\"t\",", 12) == 0);
    for (int i = 0; i < nf; i++)
        if (!strstr(r.body.data, fields[i]))
            fail_msg("GET /cnodes/t: no %s in %s", fields[i], r.body.data);
    free(list);
    response_free(&r);
}

static void test_readyz_is_200_when_up_and_503_once_the_cnode_failed(void **state) {
    (void)state;
    response r;
    request("GET", "/readyz", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "{\"status\":\"ready\"}");
    response_free(&r);
    /* max_restarts 0: the first crash fails the C-node for good. */
    gateway_cnode_info info = wait_state("t", CNODE_UP, 1000);
    assert_int_equal(kill(info.os_pid, SIGKILL), 0);
    info = wait_state("t", CNODE_FAILED, 5000);
    request("GET", "/readyz", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body.data, "{\"status\":\"not_ready\"}");
    char v[32];
    assert_non_null(header(&r, "Retry-After", v, sizeof v));
    response_free(&r);
    /* Calls are refused in the error shape; /healthz is still fine. */
    call_json("/cnodes/t/call", NULL, ping_json, &r);
    assert_error(&r, 503, "unavailable");
    response_free(&r);
    request("GET", "/cnodes/t", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body.data, "\"state\":\"failed\""));
    assert_non_null(strstr(r.body.data, "\"os_pid\":null"));
    assert_non_null(strstr(r.body.data, "signal 9"));
    response_free(&r);
    request("GET", "/healthz", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    response_free(&r);
}

static int group_setup(void **state) {
    (void)state;
    find_test_cnode();
    return start_epmd();
}

static int group_teardown(void **state) {
    (void)state;
    stop_epmd();
    unsetenv("ERL_EPMD_PORT");
    return 0;
}

int main(void) {
    gateway_block_signals(); /* before any thread (MHD's and the gateway's inherit it) */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_unknown_routes_are_404_with_an_error_body, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_wrong_methods_are_405_with_allow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_content_negotiation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_over_max_body_bytes_is_413, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_body_over_limit_is_413_on_every_body_route,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_json_is_400_naming_the_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_ms_is_validated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive_serves_three_requests_on_one_socket, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_get_cnodes_lists_every_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readyz_is_200_when_up_and_503_once_the_cnode_failed,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
