/* scale_load: an epoll HTTP/1.1 keep-alive load client for bench/scale.sh and bench/netns.sh.
 *
 * usage: scale_load --port P [--host 127.0.0.1] --conns C --cnodes N [--prefix c]
 *                   (--burst --sleep-ms M | --duration S [--warmup S]) [--timeout-ms T]
 *
 *   --burst      every connection sends ONE call {sleep, M, I} (I = the connection's index, unique)
 *                to C-node <prefix><I mod N>, all at once after every connection is established;
 *                the reply must be exactly {slept, I}.
 *   --duration   closed loop: every connection repeats {ping, <<"hello">>} to <prefix><I mod N>
 *                for S seconds (after S of --warmup); the reply must be exactly {pong,
 * <<"hello">>}.
 *   --sleep      closed loop with {sleep, M, I} / {slept, I} instead of ping (a C-node busy M ms
 *                per call, for pools).
 *   --spin-us U  closed loop with {spin, U, I} / {spun, I} (a C-node using U µs of CPU per call).
 *   --prefix     C-node name prefix; with --cnodes 1 and --exact the name is the prefix itself.
 *
 * Prints one JSON object on stdout: requests, ok, errors (by kind, with the first error's text),
 * elapsed seconds, calls/s and latency percentiles in ms. Exit status 0 when there was no error.
 * One thread, one outstanding request per connection (no pipelining).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_CONNECTING, ST_IDLE, ST_WRITING, ST_READING, ST_DONE };
enum { E_STATUS, E_BODY, E_CLOSED, E_TIMEOUT, E_CONNECT, E_PARSE, E_N };
static const char *e_names[E_N] = {"http_status", "wrong_reply", "closed",
                                   "timeout",     "connect",     "parse"};

typedef struct conn {
    int fd, state, index;
    char req[512];
    int req_len, req_off;
    char buf[8192];
    int buf_len;
    double t_sent;
} conn;

static long errors[E_N];
static char first_error[512];
static double *lat;
static size_t lat_n, lat_cap;
static long n_ok, n_sent;
static int burst, sleep_kind, exact, conns_n, cnodes_n = 1, sleep_ms = 500, timeout_ms = 10000;
static int spin_us; /* > 0: {spin, spin_us, I} calls */
static double duration = 5, warmup = 1;
static const char *host = "127.0.0.1", *prefix = "c";
static int port;
static int epfd;
static int measuring; /* closed loop: counts only after the warmup */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void record_error(int kind, const char *fmt, ...) {
    errors[kind]++;
    if (!first_error[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(first_error, sizeof first_error, fmt, ap);
        va_end(ap);
    }
}

static void body_for(int i, char *out, size_t n) {
    if (spin_us)
        snprintf(out, n, "{\"$tuple\":[{\"$atom\":\"spin\"},%d,%d]}", spin_us, i);
    else if (burst || sleep_kind)
        snprintf(out, n, "{\"$tuple\":[{\"$atom\":\"sleep\"},%d,%d]}", sleep_ms, i);
    else
        snprintf(out, n, "{\"$tuple\":[{\"$atom\":\"ping\"},\"hello\"]}");
}

static void expected_for(int i, char *out, size_t n) {
    if (spin_us)
        snprintf(out, n, "{\"$tuple\":[{\"$atom\":\"spun\"},%d]}", i);
    else if (burst || sleep_kind)
        snprintf(out, n, "{\"$tuple\":[{\"$atom\":\"slept\"},%d]}", i);
    else
        snprintf(out, n, "{\"$tuple\":[{\"$atom\":\"pong\"},\"hello\"]}");
}

static void build_request(conn *c) {
    char body[160], name[96];
    body_for(c->index, body, sizeof body);
    if (exact)
        snprintf(name, sizeof name, "%s", prefix);
    else
        snprintf(name, sizeof name, "%s%d", prefix, c->index % cnodes_n);
    c->req_len = snprintf(c->req, sizeof c->req,
                          "POST /cnodes/%s/call?timeout_ms=%d HTTP/1.1\r\nHost: %s\r\n"
                          "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                          name, timeout_ms, host, strlen(body), body);
    c->req_off = 0;
}

static void set_events(conn *c, uint32_t ev) {
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
}

static void conn_fail(conn *c, int kind, const char *what) {
    record_error(kind, "conn %d: %s", c->index, what);
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->state = ST_DONE;
}

static int try_write(conn *c) {
    while (c->req_off < c->req_len) {
        ssize_t w = write(c->fd, c->req + c->req_off, c->req_len - c->req_off);
        if (w < 0) {
            if (errno == EAGAIN) {
                set_events(c, EPOLLOUT);
                c->state = ST_WRITING;
                return 0;
            }
            if (errno == EINTR) continue;
            conn_fail(c, E_CLOSED, strerror(errno));
            return -1;
        }
        c->req_off += (int)w;
    }
    c->state = ST_READING;
    set_events(c, EPOLLIN);
    return 0;
}

static void send_request(conn *c) {
    build_request(c);
    c->buf_len = 0;
    c->t_sent = now();
    n_sent++;
    try_write(c);
}

/* Returns 1 when a whole response was consumed, 0 when more bytes are needed, -1 on error. */
static int parse_response(conn *c) {
    c->buf[c->buf_len] = '\0';
    char *end = strstr(c->buf, "\r\n\r\n");
    if (!end) return c->buf_len >= (int)sizeof c->buf - 1 ? -1 : 0;
    int status = 0;
    if (sscanf(c->buf, "HTTP/1.%*d %d", &status) != 1) return -1;
    long clen = -1;
    for (char *p = c->buf; p < end; p++) {
        if ((p == c->buf || p[-1] == '\n') && strncasecmp(p, "content-length:", 15) == 0) {
            clen = strtol(p + 15, NULL, 10);
            break;
        }
    }
    if (clen < 0) return -1;
    int head = (int)(end + 4 - c->buf);
    if (head + clen > (long)sizeof c->buf - 1) return -1;
    if (c->buf_len < head + clen) return 0;
    double t = now() - c->t_sent;
    char expected[160];
    expected_for(c->index, expected, sizeof expected);
    char *body = c->buf + head;
    if (status != 200) {
        record_error(E_STATUS, "conn %d: status %d: %.*s", c->index, status, (int)clen, body);
    } else if ((long)strlen(expected) != clen || memcmp(body, expected, clen) != 0) {
        record_error(E_BODY, "conn %d: expected %s, got %.*s", c->index, expected, (int)clen, body);
    } else if (burst || measuring) {
        n_ok++;
        if (lat_n == lat_cap) {
            lat_cap = lat_cap ? lat_cap * 2 : 1 << 16;
            lat = realloc(lat, lat_cap * sizeof *lat);
        }
        lat[lat_n++] = t * 1000.0;
    }
    int rest = c->buf_len - head - (int)clen;
    if (rest > 0) return -1; /* nothing was pipelined: extra bytes are an error */
    c->buf_len = 0;
    return 1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p) {
    if (!lat_n) return 0;
    size_t i = (size_t)(p / 100.0 * (lat_n - 1) + 0.5);
    return lat[i];
}

static void usage(void) {
    fprintf(
        stderr,
        "usage: scale_load --port P [--host H] --conns C --cnodes N [--prefix c] "
        "[--exact] (--burst [--sleep-ms M] | --duration S [--warmup S] [--sleep | --spin-us U]) "
        "[--timeout-ms T]\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define NEXT() (i + 1 < argc ? argv[++i] : (usage(), ""))
        if (!strcmp(a, "--port"))
            port = atoi(NEXT());
        else if (!strcmp(a, "--host"))
            host = NEXT();
        else if (!strcmp(a, "--conns"))
            conns_n = atoi(NEXT());
        else if (!strcmp(a, "--cnodes"))
            cnodes_n = atoi(NEXT());
        else if (!strcmp(a, "--prefix"))
            prefix = NEXT();
        else if (!strcmp(a, "--exact"))
            exact = 1;
        else if (!strcmp(a, "--burst"))
            burst = 1;
        else if (!strcmp(a, "--sleep-ms"))
            sleep_ms = atoi(NEXT());
        else if (!strcmp(a, "--sleep"))
            sleep_kind = 1;
        else if (!strcmp(a, "--spin-us"))
            spin_us = atoi(NEXT());
        else if (!strcmp(a, "--duration"))
            duration = atof(NEXT());
        else if (!strcmp(a, "--warmup"))
            warmup = atof(NEXT());
        else if (!strcmp(a, "--timeout-ms"))
            timeout_ms = atoi(NEXT());
        else
            usage();
    }
    if (port <= 0 || conns_n <= 0 || cnodes_n <= 0) usage();

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if ((rlim_t)conns_n + 16 > rl.rlim_cur) {
        fprintf(stderr, "scale_load: %d connections need more descriptors than %lu\n", conns_n,
                (unsigned long)rl.rlim_cur);
        return 2;
    }

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) usage();
    epfd = epoll_create1(EPOLL_CLOEXEC);
    conn *cs = calloc(conns_n, sizeof *cs);
    struct epoll_event evs[1024];

    /* 1. Establish every connection, at most 256 handshakes pending at once (the server's listen
     * backlog is finite; a dropped SYN would cost a 1 s retransmit). */
    double t_conn0 = now();
    int next = 0, pending = 0, established = 0;
    while (established + (int)errors[E_CONNECT] < conns_n) {
        while (next < conns_n && pending < 256) {
            conn *c = &cs[next];
            c->index = next++;
            c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (c->fd < 0) {
                record_error(E_CONNECT, "socket: %s", strerror(errno));
                c->state = ST_DONE;
                continue;
            }
            int one = 1;
            setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            c->state = ST_CONNECTING;
            if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS) {
                conn_fail(c, E_CONNECT, strerror(errno));
                continue;
            }
            struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
            epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &e);
            pending++;
        }
        int n = epoll_wait(epfd, evs, 1024, 5000);
        if (n == 0) {
            fprintf(stderr, "scale_load: connecting stalled (%d of %d up)\n", established, conns_n);
            break;
        }
        for (int k = 0; k < n; k++) {
            conn *c = evs[k].data.ptr;
            if (c->state != ST_CONNECTING) continue;
            pending--;
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err) {
                conn_fail(c, E_CONNECT, strerror(err));
                continue;
            }
            c->state = ST_IDLE;
            set_events(c, 0);
            established++;
        }
    }
    double t_conn = now() - t_conn0;

    /* 2. Load. */
    double t0 = now(), t_measure = t0 + (burst ? 0 : warmup), t_end = t_measure + duration;
    if (burst) {
        measuring = 1;
        t_end = t0 + timeout_ms / 1000.0 + 30.0; /* client-side guard only */
    }
    for (int i = 0; i < conns_n; i++)
        if (cs[i].state == ST_IDLE) send_request(&cs[i]);
    long done = 0, total_burst = established;
    double t_measured_start = t0;
    if (!burst && warmup <= 0) measuring = 1;
    for (;;) {
        double t = now();
        if (!burst && !measuring && t >= t_measure) {
            measuring = 1;
            t_measured_start = t;
        }
        if (t >= t_end) break;
        if (burst && done >= total_burst) break;
        int wait = (int)((t_end - t) * 1000) + 1;
        if (!burst && !measuring && (int)((t_measure - t) * 1000) + 1 < wait)
            wait = (int)((t_measure - t) * 1000) + 1;
        int n = epoll_wait(epfd, evs, 1024, wait > 1000 ? 1000 : wait);
        for (int k = 0; k < n; k++) {
            conn *c = evs[k].data.ptr;
            if (c->state == ST_DONE) continue;
            if (c->state == ST_WRITING) {
                try_write(c);
                continue;
            }
            if (c->state != ST_READING) continue;
            for (;;) {
                ssize_t r = read(c->fd, c->buf + c->buf_len, sizeof c->buf - 1 - c->buf_len);
                if (r < 0 && errno == EINTR) continue;
                if (r < 0 && errno == EAGAIN) break;
                if (r <= 0) {
                    conn_fail(c, E_CLOSED, r == 0 ? "closed by the server" : strerror(errno));
                    done++;
                    break;
                }
                c->buf_len += (int)r;
                int p = parse_response(c);
                if (p < 0) {
                    conn_fail(c, E_PARSE, "unparsable response");
                    done++;
                    break;
                }
                if (p == 1) {
                    done++;
                    if (burst) {
                        c->state = ST_DONE;
                        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
                    } else {
                        send_request(c);
                    }
                    break;
                }
            }
        }
    }
    double t_stop = now();
    if (burst) {
        for (int i = 0; i < conns_n; i++)
            if (cs[i].state == ST_READING || cs[i].state == ST_WRITING)
                record_error(E_TIMEOUT, "conn %d: no reply within the client guard", i);
    }
    double elapsed = burst ? t_stop - t0 : t_stop - t_measured_start;
    qsort(lat, lat_n, sizeof *lat, cmp_double);
    long nerr = 0;
    for (int k = 0; k < E_N; k++) nerr += errors[k];
    printf("{\"mode\":\"%s\",\"conns\":%d,\"established\":%d,\"connect_s\":%.3f,"
           "\"cnodes\":%d,\"requests\":%ld,\"ok\":%ld,\"errors\":%ld,\"error_kinds\":{",
           burst ? "burst" : "closed_loop", conns_n, established, t_conn, cnodes_n,
           burst ? n_sent : (long)lat_n + nerr, n_ok, nerr);
    int first = 1;
    for (int k = 0; k < E_N; k++) {
        if (!errors[k]) continue;
        printf("%s\"%s\":%ld", first ? "" : ",", e_names[k], errors[k]);
        first = 0;
    }
    printf("},\"first_error\":\"");
    for (const char *p = first_error; *p; p++) {
        if (*p == '"' || *p == '\\') putchar('\\');
        putchar((unsigned char)*p < 0x20 ? ' ' : *p);
    }
    printf("\",\"elapsed_s\":%.3f,\"calls_per_s\":%.1f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,"
           "\"p99_ms\":%.3f,\"max_ms\":%.3f}\n",
           elapsed, elapsed > 0 ? n_ok / elapsed : 0, pct(50), pct(90), pct(99),
           lat_n ? lat[lat_n - 1] : 0);
    for (int i = 0; i < conns_n; i++)
        if (cs[i].fd >= 0 && cs[i].state != ST_DONE) close(cs[i].fd);
    return nerr ? 1 : 0;
}
