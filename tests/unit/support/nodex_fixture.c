/* nodex_fixture: see nodex_fixture.h. */
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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "epmd.h"
#include "log.h"
#include "nodex_fixture.h"
#include "term.h"

/* ---- time and processes ------------------------------------------------------------------- */

int64_t fixture_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fixture_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

bool fixture_pid_gone(pid_t pid) {
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

void fixture_process_init(void) {
    /* Before any thread: every thread inherits the mask; the loop reads them via signalfd. */
    gateway_block_signals();
    /* Whatever escapes the gateway's supervision is reparented to us, not to init. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
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

int fixture_epmd_start(void) {
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
    for (int64_t deadline = fixture_now_ms() + 5000; !epmd_is_running(200);) {
        if (fixture_now_ms() > deadline) return -1;
        fixture_sleep_ms(20);
    }
    return 0;
}

void fixture_epmd_stop(void) {
    if (epmd_pid > 0) {
        kill(epmd_pid, SIGKILL);
        waitpid(epmd_pid, NULL, 0);
        epmd_pid = 0;
    }
}

/* ---- test C-node -------------------------------------------------------------------------- */

static char test_cnode_path[1024];

void fixture_find_test_cnode(void) {
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

const char *fixture_test_cnode_path(void) {
    return test_cnode_path;
}

int fixture_group_setup(void **state) {
    (void)state;
    fixture_find_test_cnode();
    return fixture_epmd_start();
}

int fixture_group_teardown(void **state) {
    (void)state;
    fixture_epmd_stop();
    unsetenv("ERL_EPMD_PORT");
    return 0;
}

/* ---- gateway on its own thread ------------------------------------------------------------ */

static void on_started(void *ctx) {
    atomic_store(&((fixture_gateway *)ctx)->started, true);
}

static void *loop_main(void *arg) {
    fixture_gateway *f = arg;
    f->run_rc = gateway_run(f->gw, on_started, f);
    return NULL;
}

int fixture_gateway_start(fixture_gateway *f, const char *yaml, const char *source,
                          const char *cookie, fixture_hook attach, void *ctx) {
    memset(f, 0, sizeof *f);
    config_error cerr;
    f->cfg = config_load_string(yaml, strlen(yaml), source, &cerr);
    if (!f->cfg) {
        print_error("config: %s\n", cerr.message);
        return -1;
    }
    log_set_level(f->cfg->log_level);
    char err[512];
    f->gw = gateway_new(f->cfg, cookie, err, sizeof err);
    if (!f->gw) {
        print_error("gateway_new: %s\n", err);
        return -1;
    }
    if (attach && attach(f, ctx) != 0) return -1;
    if (pthread_create(&f->loop, NULL, loop_main, f) != 0) return -1;
    f->running = true;
    for (int64_t deadline = fixture_now_ms() + 5000; !atomic_load(&f->started);) {
        if (fixture_now_ms() > deadline) return -1;
        fixture_sleep_ms(5);
    }
    return 0;
}

void fixture_gateway_stop_loop(fixture_gateway *f) {
    if (!f->running) return;
    gateway_request_stop(f->gw);
    pthread_join(f->loop, NULL); /* every gateway call has completed */
    f->running = false;
}

int fixture_gateway_stop(fixture_gateway *f, fixture_hook detach, void *ctx) {
    for (size_t i = 0; f->gw && i < gateway_cnode_count(f->gw); i++) {
        gateway_cnode_info info;
        if (gateway_cnode_info_at(f->gw, i, &info) == 0) fixture_remember_pid(f, info.os_pid);
    }
    fixture_gateway_stop_loop(f);
    int rc = detach ? detach(f, ctx) : 0;
    gateway_free(f->gw);
    f->gw = NULL;
    config_free(f->cfg);
    f->cfg = NULL;
    /* gateway_run stopped and reaped every C-node it started. */
    for (size_t i = 0; i < f->npids; i++) {
        if (!fixture_pid_gone(f->pids[i])) {
            print_error("C-node pid %d still alive after gateway_run returned\n", (int)f->pids[i]);
            kill(f->pids[i], SIGKILL);
            waitpid(f->pids[i], NULL, 0);
            return -1;
        }
    }
    return rc;
}

void fixture_remember_pid(fixture_gateway *f, pid_t pid) {
    for (size_t i = 0; i < f->npids; i++)
        if (f->pids[i] == pid) return;
    if (pid > 0 && f->npids < sizeof f->pids / sizeof f->pids[0]) f->pids[f->npids++] = pid;
}

/* Waits on C-node `name` (if non-NULL) or at `index`. */
static gateway_cnode_info wait_state(fixture_gateway *f, const char *name, size_t index,
                                     cnode_state state, int timeout_ms) {
    gateway_cnode_info info;
    int64_t deadline = fixture_now_ms() + timeout_ms;
    for (;;) {
        if (name)
            assert_int_equal(gateway_cnode_info_by_name(f->gw, name, &info), 0);
        else
            assert_int_equal(gateway_cnode_info_at(f->gw, index, &info), 0);
        fixture_remember_pid(f, info.os_pid);
        if (info.state == state) return info;
        if (fixture_now_ms() > deadline)
            fail_msg("C-node %s is %s, not %s, after %d ms (last_error: %s)",
                     name ? name : info.name, cnode_state_name(info.state), cnode_state_name(state),
                     timeout_ms, info.last_error);
        fixture_sleep_ms(5);
    }
}

gateway_cnode_info fixture_wait_state(fixture_gateway *f, const char *name, cnode_state state,
                                      int timeout_ms) {
    return wait_state(f, name, 0, state, timeout_ms);
}

gateway_cnode_info fixture_wait_state_at(fixture_gateway *f, size_t index, cnode_state state,
                                         int timeout_ms) {
    return wait_state(f, NULL, index, state, timeout_ms);
}

/* ---- raw HTTP/1.1 client ------------------------------------------------------------------ */

const char fixture_ping_json[] = "{\"$tuple\":[{\"$atom\":\"ping\"},\"hi\"]}";
const char fixture_pong_json[] = "{\"$tuple\":[{\"$atom\":\"pong\"},\"hi\"]}";

int fixture_address_port(const char *address) {
    const char *colon = address ? strrchr(address, ':') : NULL;
    return colon ? atoi(colon + 1) : 0;
}

int fixture_http_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

void fixture_send_all(int fd, const char *data, size_t len) {
    while (len) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n <= 0) fail_msg("send: %s", strerror(errno));
        data += n;
        len -= (size_t)n;
    }
}

ssize_t fixture_conn_fill(fixture_conn *c, int64_t deadline) {
    int left = (int)(deadline - fixture_now_ms());
    if (left <= 0) return -1;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (poll(&p, 1, left) <= 0) return -1;
    if (c->len == sizeof c->buf) fail_msg("response too large for the test buffer");
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (n < 0 && errno == ECONNRESET) n = 0;
    if (n > 0) c->len += (size_t)n;
    return n;
}

void fixture_conn_consume(fixture_conn *c, size_t n) {
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

const char *fixture_http_header(const fixture_response *r, const char *name, char *out,
                                size_t cap) {
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

void fixture_http_read_response(fixture_conn *c, fixture_response *r) {
    memset(r, 0, sizeof *r);
    int64_t deadline = fixture_now_ms() + 10000;
    char *end;
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
        if (fixture_conn_fill(c, deadline) <= 0) fail_msg("no complete response head");
    size_t hl = (size_t)(end - c->buf) + 4;
    assert_true(hl < sizeof r->head);
    memcpy(r->head, c->buf, hl);
    r->head[hl] = '\0';
    fixture_conn_consume(c, hl);
    assert_int_equal(sscanf(r->head, "HTTP/1.1 %d", &r->status), 1);
    char v[128];
    if (fixture_http_header(r, "Content-Length", v, sizeof v)) {
        size_t want = strtoul(v, NULL, 10);
        while (c->len < want)
            if (fixture_conn_fill(c, deadline) <= 0) fail_msg("body shorter than Content-Length");
        strbuf_append(&r->body, c->buf, want);
        fixture_conn_consume(c, want);
    } else if (fixture_http_header(r, "Transfer-Encoding", v, sizeof v) &&
               strcasestr(v, "chunked")) {
        for (;;) {
            char *nl;
            while (!(nl = memmem(c->buf, c->len, "\r\n", 2)))
                if (fixture_conn_fill(c, deadline) <= 0) fail_msg("chunk size missing");
            size_t size = strtoul(c->buf, NULL, 16);
            fixture_conn_consume(c, (size_t)(nl - c->buf) + 2);
            while (c->len < size + 2)
                if (fixture_conn_fill(c, deadline) <= 0) fail_msg("chunk data missing");
            strbuf_append(&r->body, c->buf, size);
            fixture_conn_consume(c, size + 2);
            if (size == 0) break;
        }
    } else {
        ssize_t n;
        while ((n = fixture_conn_fill(c, deadline)) > 0) {
        }
        strbuf_append(&r->body, c->buf, c->len);
        c->len = 0;
    }
    if (!r->body.data) strbuf_puts(&r->body, "");
    r->closed = fixture_http_header(r, "Connection", v, sizeof v) && strcasecmp(v, "close") == 0;
}

void fixture_http_request(int port, const char *method, const char *path, const char *extra,
                          const char *body, size_t body_len, fixture_response *r) {
    fixture_conn *c = calloc(1, sizeof *c);
    c->fd = fixture_http_connect(port);
    char head[2048];
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: localhost\r\n%s", method, path,
                     extra ? extra : "");
    if (body) n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: %zu\r\n", body_len);
    n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    fixture_send_all(c->fd, head, (size_t)n);
    if (body) fixture_send_all(c->fd, body, body_len);
    fixture_http_read_response(c, r);
    close(c->fd);
    free(c);
}

void fixture_http_call_json(int port, const char *path, const char *extra, const char *body,
                            fixture_response *r) {
    char hdr[512];
    snprintf(hdr, sizeof hdr, "Content-Type: application/json\r\n%s", extra ? extra : "");
    fixture_http_request(port, "POST", path, hdr, body, strlen(body), r);
}

void fixture_http_response_free(fixture_response *r) {
    strbuf_free(&r->body);
}

void fixture_assert_json(const fixture_response *r) {
    ei_x_buff x;
    ei_x_new(&x);
    term_error err;
    if (term_from_json(r->body.data, r->body.len, NULL, NULL, &x, &err) != 0)
        fail_msg("not JSON (%s): %s", err.message, r->body.data);
    ei_x_free(&x);
}

void fixture_assert_http_error(const fixture_response *r, int status, const char *code) {
    if (r->status != status) fail_msg("status %d, want %d: %s", r->status, status, r->body.data);
    char v[128];
    assert_non_null(fixture_http_header(r, "Content-Type", v, sizeof v));
    assert_string_equal(v, "application/json");
    fixture_assert_json(r);
    char prefix[128];
    snprintf(prefix, sizeof prefix, "{\"error\":{\"code\":\"%s\",\"message\":\"", code);
    if (strncmp(r->body.data, prefix, strlen(prefix)) != 0)
        fail_msg("error body %s does not start with %s", r->body.data, prefix);
    size_t len = r->body.len;
    assert_true(len > strlen(prefix) + 3);
    assert_string_equal(r->body.data + len - 3, "\"}}");
    assert_true(len > strlen(prefix) + 3); /* a non-empty message */
}

/* ---- the standard HTTP gateway ------------------------------------------------------------ */

int fixture_http_attach(fixture_gateway *f, void *ctx) {
    fixture_http *h = ctx;
    char err[512];
    h->svc = service_new(f->cfg, f->gw, err, sizeof err);
    if (!h->svc) {
        print_error("service_new: %s\n", err);
        return -1;
    }
    h->api = http_api_start(f->cfg, f->gw, h->svc, err, sizeof err);
    if (!h->api) {
        print_error("http_api_start: %s\n", err);
        return -1;
    }
    h->port = fixture_address_port(http_api_address(h->api));
    return h->port > 0 ? 0 : -1;
}

int fixture_http_detach(fixture_gateway *f, void *ctx) {
    (void)f;
    fixture_http *h = ctx;
    http_api_stop(h->api);
    h->api = NULL;
    service_free(h->svc);
    h->svc = NULL;
    return 0;
}

int fixture_http_gateway_start(fixture_gateway *f, fixture_http *h, int max_body) {
    static unsigned instance;
    memset(h, 0, sizeof *h);
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
             /* on, so their routes get as far as their bodies (the switches are checked first) */
             "  rpc: true\n"
             "  load_modules: true\n"
             "  spawn: true\n"
             "  rpc_nodes: [\"*@127.0.0.1\"]\n"
             "log:\n"
             "  level: error\n"
             "cnodes:\n"
             "  - name: t\n"
             "    executable: %s\n"
             "    max_restarts: 0\n"
             "    max_call_timeout_ms: 10000\n"
             "    shutdown_timeout_ms: 1000\n",
             (int)getpid() % 100000, ++instance, max_body, test_cnode_path);
    if (fixture_gateway_start(f, yaml, "test_http_api", "httptestcookie", fixture_http_attach, h) !=
        0)
        return -1;
    fixture_wait_state(f, "t", CNODE_UP, 5000);
    return 0;
}

int fixture_http_gateway_stop(fixture_gateway *f, fixture_http *h) {
    return fixture_gateway_stop(f, fixture_http_detach, h);
}

fixture_gateway fixture_http_gw;
fixture_http fixture_http_fe;

int fixture_http_setup(void **state) {
    (void)state;
    return fixture_http_gateway_start(&fixture_http_gw, &fixture_http_fe, FIXTURE_HTTP_MAX_BODY);
}

int fixture_http_teardown(void **state) {
    (void)state;
    return fixture_http_gateway_stop(&fixture_http_gw, &fixture_http_fe);
}
