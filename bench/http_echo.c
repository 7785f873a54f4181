/* http_echo: libmicrohttpd set up like nodexd's HTTP API, echoing bodies: the library ceiling.
 * --threads N: an epoll pool of N threads (http.threads: N); --threads 0: one thread drives MHD
 * from its own epoll loop, as nodexd's event loop does (http.threads: 0, the default). */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <microhttpd.h>

#include "echo_tls.h"

#define MAX_BODY      (8u << 20) /* nodexd's default max_body_bytes; over it: 413 */
#define STOP_GRACE_MS 2000       /* how long resumed requests may take to complete at stop */

/* One request (MHD's con_cls), freed by the completion callback. */
typedef struct request {
    struct MHD_Connection *conn;
    char *body;
    size_t len, cap;
    bool too_large;
    bool submitted;   /* suspended and queued for the worker */
    atomic_bool done; /* set by the worker before it resumes the connection */
    struct request *next;
} request;

/* The --suspend worker: a queue of suspended requests it resumes, like nodexd's gateway loop. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* queue not empty, or stopping */
    request *head, *tail;
    bool stopping;         /* no more suspensions: requests are answered at once */
    atomic_size_t pending; /* suspended and not yet completed */
} work = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, false, 0};

static bool suspend_mode;

static void *worker_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&work.mu);
    for (;;) {
        while (!work.head && !work.stopping) pthread_cond_wait(&work.cv, &work.mu);
        request *r = work.head;
        if (!r) break; /* stopping and drained */
        work.head = r->next;
        if (!work.head) work.tail = NULL;
        pthread_mutex_unlock(&work.mu);
        struct MHD_Connection *conn = r->conn;
        atomic_store(&r->done, true);
        MHD_resume_connection(conn); /* r may be freed by an MHD thread from here on */
        pthread_mutex_lock(&work.mu);
    }
    pthread_mutex_unlock(&work.mu);
    return NULL;
}

/* Loop mode (--threads 0): resumes every queued request on the loop thread, as nodexd's loop
 * resumes a connection when its reply arrives. Returns how many. */
static size_t resume_queued(void) {
    size_t n = 0;
    pthread_mutex_lock(&work.mu);
    for (request *r = work.head, *next; r; r = next, n++) {
        next = r->next;
        atomic_store(&r->done, true);
        MHD_resume_connection(r->conn);
    }
    work.head = work.tail = NULL;
    pthread_mutex_unlock(&work.mu);
    return n;
}

/* The loop of --threads 0 until SIGTERM/SIGINT: MHD's epoll fd and a signalfd in one epoll. */
static int run_loop(struct MHD_Daemon *d, const sigset_t *set) {
    const union MHD_DaemonInfo *ep = MHD_get_daemon_info(d, MHD_DAEMON_INFO_EPOLL_FD);
    int sfd = signalfd(-1, set, SFD_CLOEXEC);
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event mhd_ev = {.events = EPOLLIN, .data.fd = ep ? ep->epoll_fd : -1};
    struct epoll_event sig_ev = {.events = EPOLLIN, .data.fd = sfd};
    if (!ep || sfd < 0 || epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, ep->epoll_fd, &mhd_ev) ||
        epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &sig_ev)) {
        fprintf(stderr, "http_echo: cannot set up the loop: %s\n", strerror(errno));
        return 1;
    }
    for (bool stop = false; !stop;) {
        MHD_UNSIGNED_LONG_LONG ms = 1000;
        if (MHD_get_timeout(d, &ms) != MHD_YES || ms > 1000) ms = 1000;
        struct epoll_event evs[8];
        int n = epoll_wait(epfd, evs, 8, (int)ms);
        for (int i = 0; i < n; i++)
            if (evs[i].data.fd == sfd) stop = true;
        MHD_run(d);
        if (resume_queued()) MHD_run(d); /* the answers go out in this iteration */
    }
    pthread_mutex_lock(&work.mu);
    work.stopping = true;
    pthread_mutex_unlock(&work.mu);
    for (int i = 0; i < 50 && (resume_queued() || atomic_load(&work.pending)); i++) {
        MHD_run(d);
        const struct timespec tick = {0, 1000000L};
        nanosleep(&tick, NULL);
    }
    close(epfd);
    close(sfd);
    return 0;
}

/* Suspends the connection and queues it for the worker; false when stopping (answer at once). */
static bool submit(request *r) {
    pthread_mutex_lock(&work.mu);
    bool ok = !work.stopping;
    if (ok) {
        MHD_suspend_connection(r->conn);
        r->submitted = true;
        r->next = NULL;
        if (work.tail)
            work.tail->next = r;
        else
            work.head = r;
        work.tail = r;
        atomic_fetch_add(&work.pending, 1);
        pthread_cond_signal(&work.cv);
    }
    pthread_mutex_unlock(&work.mu);
    return ok;
}

static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned status, char *data,
                                 size_t len) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(data);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result send_text(struct MHD_Connection *conn, unsigned status, const char *s) {
    char *data = strdup(s);
    return data ? send_json(conn, status, data, strlen(s)) : MHD_NO;
}

/* The reply: the request body with its first "ping" turned into "pong" (nodexd's example
 * C-node answers {ping, X} with {pong, X}: the same bytes nodexd sends for that JSON). */
static enum MHD_Result answer(request *r) {
    if (r->too_large) return send_text(r->conn, 413, "{\"error\":\"payload_too_large\"}");
    char *body = r->body ? r->body : malloc(1);
    if (!body) return MHD_NO;
    r->body = NULL;
    char *p = r->len >= 6 ? memmem(body, r->len, "\"ping\"", 6) : NULL;
    if (p) memcpy(p + 1, "pong", 4);
    return send_json(r->conn, MHD_HTTP_OK, body, r->len);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **con_cls) {
    (void)cls;
    (void)url;
    (void)version;
    request *r = *con_cls;
    if (!r) { /* headers only: answer on a later call */
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->conn = conn;
        atomic_init(&r->done, false);
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->too_large) return MHD_YES;
        if (r->len + n > MAX_BODY) {
            r->too_large = true;
            free(r->body);
            r->body = NULL;
            r->len = r->cap = 0;
            return MHD_YES;
        }
        if (r->len + n > r->cap) {
            size_t cap = r->cap ? r->cap : 256;
            while (cap < r->len + n) cap *= 2;
            char *b = realloc(r->body, cap);
            if (!b) return MHD_NO;
            r->body = b;
            r->cap = cap;
        }
        memcpy(r->body + r->len, upload_data, n);
        r->len += n;
        return MHD_YES;
    }
    if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
        return send_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "{\"error\":\"method_not_allowed\"}");
    if (!suspend_mode) return answer(r);
    if (!r->submitted) return submit(r) ? MHD_YES : answer(r);
    if (!atomic_load(&r->done)) return MHD_YES; /* not our wake-up yet */
    return answer(r);
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)conn;
    (void)toe;
    request *r = *con_cls;
    if (!r) return;
    if (r->submitted) atomic_fetch_sub(&work.pending, 1);
    free(r->body);
    free(r);
    *con_cls = NULL;
}

/* MHD's own messages (mostly clients that went away): dropped, as nodexd logs them at debug. */
static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    (void)fmt;
    (void)ap;
}

static int usage(void) {
    fprintf(stderr, "usage: http_echo [--threads N (0: one loop thread)] [--suspend] "
                    "[--tls CERT_PEM KEY_PEM]\n");
    return 2;
}

int main(int argc, char **argv) {
    unsigned threads = 2;
    tls_pem pem = {0}; /* --tls: HTTPS as nodexd's (its priorities, GnuTLS) */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--suspend") == 0) {
            suspend_mode = true;
        } else if (strcmp(argv[i], "--tls") == 0 && i + 2 < argc && !pem.cert) {
            if (echo_tls_load("http_echo", argv[i + 1], argv[i + 2], &pem) != 0) return 1;
            i += 2;
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            char *end;
            unsigned long n = strtoul(argv[++i], &end, 10);
            if (*end || n > 1024) return usage();
            threads = (unsigned)n;
        } else {
            return usage();
        }
    }
    /* Every thread created from here on inherits this mask; main waits for the signal. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    pthread_t worker;
    bool on_loop = threads == 0;
    if (suspend_mode && !on_loop && pthread_create(&worker, NULL, worker_main, NULL) != 0) {
        fprintf(stderr, "http_echo: cannot start the worker thread\n");
        return 1;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* The same daemon as src/http_api.c http_api_start (defaults of http.connection_timeout_s
     * and http.max_connections). */
    unsigned flags = (on_loop ? 0 : MHD_USE_INTERNAL_POLLING_THREAD) | MHD_USE_EPOLL |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | (pem.cert ? MHD_USE_TLS : 0);
    struct MHD_OptionItem pool[5];
    size_t np = 0;
    if (!on_loop) pool[np++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, threads, NULL};
    if (pem.cert) {
        pool[np++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, pem.cert};
        pool[np++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, pem.key};
        pool[np++] =
            (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)TLS_PRIORITIES};
    }
    pool[np] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, 0, NULL, NULL, handler, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_ARRAY, pool, MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
        MHD_OPTION_CONNECTION_TIMEOUT, 60u, MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
        MHD_OPTION_CONNECTION_LIMIT, 10000u, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
    int rc = 0;
    if (!d) {
        fprintf(stderr, "http_echo: cannot start the daemon: %s\n", strerror(errno));
        rc = 1;
    } else {
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
        printf("http_echo ready port=%u threads=%u suspend=%d tls=%d\n",
               info ? (unsigned)info->port : 0, threads, (int)suspend_mode, pem.cert != NULL);
        fflush(stdout);
        if (on_loop) {
            rc = run_loop(d, &set);
        } else {
            int sig = 0;
            sigwait(&set, &sig);
        }
    }
    /* No connection may stay suspended into MHD_stop_daemon: stop suspending, let the worker
     * resume what it holds, and wait (bounded) until those requests are completed. */
    if (suspend_mode && !on_loop) {
        pthread_mutex_lock(&work.mu);
        work.stopping = true;
        pthread_cond_broadcast(&work.cv);
        pthread_mutex_unlock(&work.mu);
        pthread_join(worker, NULL);
        const struct timespec tick = {0, 1000000L};
        for (int ms = 0; atomic_load(&work.pending) > 0 && ms < STOP_GRACE_MS; ms++)
            nanosleep(&tick, NULL);
        size_t left = atomic_load(&work.pending);
        if (left) fprintf(stderr, "http_echo: %zu resumed requests not completed at stop\n", left);
    }
    if (d) MHD_stop_daemon(d);
    tls_pem_clear(&pem);
    return rc;
}
