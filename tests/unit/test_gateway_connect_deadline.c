/* test_gateway_connect_deadline: a node that accepts TCP but never answers the handshake must
 * not hold a connector thread past its deadline (ei's own connect has no timeout; nodexd's
 * outgoing handshakes run on ei_sock's deadline-bound sockets). */
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

__attribute__((unused)) static int http_connect(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)fx.http_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

__attribute__((unused)) static void send_all(int fd, const char *data, size_t len) {
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

__attribute__((unused)) static ssize_t conn_fill(conn *c, int64_t deadline) {
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

__attribute__((unused)) static void conn_consume(conn *c, size_t n) {
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* The value of header `name` in r->head (first occurrence), or NULL. */
__attribute__((unused)) static const char *header(const response *r, const char *name, char *out,
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

__attribute__((unused)) static void read_response(conn *c, response *r) {
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
__attribute__((unused)) static void request(const char *method, const char *path, const char *extra,
                                            const char *body, size_t body_len, response *r) {
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

__attribute__((unused)) static void response_free(response *r) {
    strbuf_free(&r->body);
}

/* The body is valid JSON (decodes to a term). */
__attribute__((unused)) static void assert_json(const response *r) {
    ei_x_buff x;
    ei_x_new(&x);
    term_error err;
    if (term_from_json(r->body.data, r->body.len, NULL, NULL, &x, &err) != 0)
        fail_msg("not JSON (%s): %s", err.message, r->body.data);
    ei_x_free(&x);
}

/* status, application/json, and exactly {"error":{"code":CODE,"message":"..."}} */
__attribute__((unused)) static void assert_error(const response *r, int status, const char *code) {
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

__attribute__((unused)) static void call_json(const char *path, const char *extra, const char *body,
                                              response *r) {
    char hdr[512];
    snprintf(hdr, sizeof hdr, "Content-Type: application/json\r\n%s", extra ? extra : "");
    request("POST", path, hdr, body, strlen(body), r);
}

__attribute__((unused)) static const char ping_json[] =
    "{\"$tuple\":[{\"$atom\":\"ping\"},\"hi\"]}";
__attribute__((unused)) static const char pong_json[] =
    "{\"$tuple\":[{\"$atom\":\"pong\"},\"hi\"]}";

/* ---- tests -------------------------------------------------------------------------------- */

/* ---- review: connector without a timeout ------------------------------------------------- */

#include <dirent.h>

static int thread_count(void) {
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static atomic_bool rpc_done;
static void on_rpc_done(call *c, void *ctx) {
    (void)c;
    (void)ctx;
    atomic_store(&rpc_done, true);
}

static void test_connector_gives_up_with_the_loop(void **state) {
    (void)state;
    /* A "node" registered in epmd whose port completes TCP connects (backlog) but never
     * speaks the distribution handshake. */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 16), 0);
    socklen_t alen = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &alen);
    ei_cnode hole;
    struct in_addr lo = {htonl(INADDR_LOOPBACK)};
    assert_true(ei_connect_xinit(&hole, "127.0.0.1", "blackhole", "blackhole@127.0.0.1", &lo,
                                 "httptestcookie", 1) >= 0);
    int pub = ei_publish(&hole, ntohs(a.sin_port));
    assert_true(pub >= 0);

    int before = thread_count();
    call c = {0};
    gateway_make_pid(fx.gw, &c.pid);
    c.on_done = on_rpc_done;
    atomic_store(&rpc_done, false);
    int64_t t0 = now_ms();
    assert_int_equal(gateway_rpc(fx.gw, "blackhole@127.0.0.1", &c, "erlang", "node", "j", 1, 300),
                     GATEWAY_OK);
    while (!atomic_load(&rpc_done) && now_ms() - t0 < 10000) sleep_ms(10);
    assert_true(atomic_load(&rpc_done));
    call_clear(&c);
    /* The loop declares the attempt failed after connect_timeout_ms (3 s) + 1 s; give the
     * connector 3 s more than that to end. */
    while (thread_count() > before && now_ms() - t0 < 7000) sleep_ms(50);
    int after = thread_count();
    close(pub);
    close(lfd);
    if (after > before)
        fail_msg("%d thread(s) still running %lld ms after the rpc started (connector stuck in "
                 "ei_connect)",
                 after - before, (long long)(now_ms() - t0));
}

static int group_setup(void **state) {
    (void)state;
    find_test_cnode();
    return start_epmd();
}

static int group_teardown(void **state) {
    (void)state;
    stop_epmd();
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connector_gives_up_with_the_loop, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
