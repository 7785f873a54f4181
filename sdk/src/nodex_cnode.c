/* nodex_cnode: argv, connection, receive loop, worker pool and reply helpers of the C-node SDK. */
#include "nodex_cnode.h"
#include "nodex_cnode_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Idle receive buffers kept for reuse beyond one per worker; more are freed when they return. */
#define NODEX_SPARE_JOBS  16
#define NODEX_MAX_WORKERS 1024

/* One received message on its way to a callback; its buffer is reused for later messages. */
typedef struct nodex_job {
    struct nodex_job *next;
    ei_x_buff in;
    erlang_msg msg;
} nodex_job;

struct nodex_cnode {
    ei_cnode ec;
    nodex_cnode_options opts;
    nodex_args args;
    char node_name[MAXNODELEN + 1];
    char gateway_node[MAXNODELEN + 1];
    struct in_addr addr;
    atomic_int fd; /* the connection, -1 until up */
    int listen_fd; /* TO: the listening socket until the gateway is accepted */
    int epmd_fd;   /* TO: the epmd registration, open while the node lives */
    int wake[2];   /* nodex_cnode_stop writes a byte to wake[1] */
    atomic_int stop;
    int ran;
    pthread_mutex_t send_mu; /* one writer at a time on fd, tocks included */
    /* the worker pool */
    pthread_mutex_t q_mu;
    pthread_cond_t q_cv;
    nodex_job *q_head, *q_tail, *spare;
    unsigned spare_count;
    int q_closing;
    pthread_t *threads;
    unsigned thread_count;
};

static void set_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t err_len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    /* clang-analyzer 14 misses the va_start above (valist.Uninitialized false positive) */
    if (err && err_len > 0) vsnprintf(err, err_len, fmt, ap); // NOLINT(clang-analyzer-valist.*)
    va_end(ap);
}

const char *nodex_strerror(int status) {
    switch (status) {
    case NODEX_OK: return "ok";
    case NODEX_DISCONNECTED: return "connection dropped";
    case NODEX_STOPPED: return "stopped";
    case NODEX_EUSAGE: return "bad usage";
    case NODEX_EINIT: return "cannot initialize ei";
    case NODEX_ECONNECT: return "cannot connect";
    case NODEX_ENOMEM: return "out of memory";
    case NODEX_ESEND: return "send failed: connection gone";
    case NODEX_ENOSENDER: return "message has no sender to reply to";
    case NODEX_ESTATE: return "called at the wrong time";
    case NODEX_EIO: return "connection error";
    default: return "unknown status";
    }
}

/* ------------------------------------------------------------------------------------------ */
/* argv */

static int valid_name(const char *s, size_t max) {
    size_t n = strlen(s);
    return n > 0 && n <= max && strchr(s, '@') == NULL;
}

int nodex_args_parse(nodex_args *out, int argc, char **argv, const char *cookie_env, char *err,
                     size_t err_len) {
    memset(out, 0, sizeof *out);
    if (!cookie_env) cookie_env = "NODEX_COOKIE";
    if (argc < 5 || !argv) {
        set_err(err, err_len,
                "expected <sname> <hostname> <cookie> <gateway-sname>, got %d argument%s",
                argc > 0 ? argc - 1 : 0, argc == 2 ? "" : "s");
        return NODEX_EUSAGE;
    }
    const char *sname = argv[1], *host = argv[2], *cookie = argv[3], *gw = argv[4];
    if (!valid_name(sname, EI_MAXALIVELEN)) {
        set_err(err, err_len, "bad sname \"%s\" (1 to %d characters, no '@')", sname,
                EI_MAXALIVELEN);
        return NODEX_EUSAGE;
    }
    if (!valid_name(host, EI_MAXHOSTNAMELEN)) {
        set_err(err, err_len, "bad hostname \"%s\" (1 to %d characters, no '@')", host,
                EI_MAXHOSTNAMELEN);
        return NODEX_EUSAGE;
    }
    if (!valid_name(gw, EI_MAXALIVELEN)) {
        set_err(err, err_len, "bad gateway sname \"%s\" (1 to %d characters, no '@')", gw,
                EI_MAXALIVELEN);
        return NODEX_EUSAGE;
    }
    if (strlen(sname) + 1 + strlen(host) > MAXNODELEN ||
        strlen(gw) + 1 + strlen(host) > MAXNODELEN) {
        set_err(err, err_len, "node name longer than %d characters", MAXNODELEN);
        return NODEX_EUSAGE;
    }
    if (cookie[0] == '\0' || strcmp(cookie, "-") == 0) {
        cookie = getenv(cookie_env);
        if (!cookie || !cookie[0]) {
            set_err(err, err_len, "no cookie: argument is \"%s\" and $%s is not set", argv[3],
                    cookie_env);
            return NODEX_EUSAGE;
        }
    }
    if (strlen(cookie) > EI_MAX_COOKIE_SIZE) {
        set_err(err, err_len, "cookie longer than %d characters", EI_MAX_COOKIE_SIZE);
        return NODEX_EUSAGE;
    }
    out->sname = sname;
    out->hostname = host;
    out->cookie = cookie;
    out->gateway_sname = gw;
    out->extra_argc = argc - 5;
    out->extra_argv = argv + 5;
    return NODEX_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* requests and replies */

void nodex_request_decode(nodex_request *req, const char *buf, int len, const erlang_msg *msg) {
    memset(req, 0, sizeof *req);
    req->buf = buf;
    req->len = len;
    int i = 0, version = 0;
    if (ei_decode_version(buf, &i, &version) < 0) i = 0;
    req->index = i;
    int type = msg ? (int)msg->msgtype : ERL_REG_SEND;
    if (type == ERL_REG_SEND || type == ERL_REG_SEND_TT) {
        req->kind = NODEX_REQUEST_RAW;
        req->from = msg ? msg->from : req->from;
        req->to_name = msg ? msg->toname : "";
    } else {
        req->kind = NODEX_REQUEST_SEND;
        req->to_name = "";
    }
    /* {'$gen_call', {Pid, Ref}, Req} */
    int arity = 0, ref_start = 0;
    char tag[MAXATOMLEN_UTF8];
    erlang_pid pid;
    if (ei_decode_tuple_header(buf, &i, &arity) == 0 && arity == 3 &&
        ei_decode_atom(buf, &i, tag) == 0 && strcmp(tag, "$gen_call") == 0 &&
        ei_decode_tuple_header(buf, &i, &arity) == 0 && arity == 2 &&
        ei_decode_pid(buf, &i, &pid) == 0 && (ref_start = i, ei_skip_term(buf, &i) == 0) &&
        i <= len) {
        req->kind = NODEX_REQUEST_GEN_CALL;
        req->from = pid;
        req->ref_index = ref_start;
        req->ref_len = i - ref_start;
        req->index = i;
    }
}

ei_x_buff *nodex_reply_begin(nodex_request *req) {
    ei_x_buff *r = req->reply;
    r->index = 0;
    ei_x_encode_version(r);
    if (req->kind == NODEX_REQUEST_GEN_CALL) {
        ei_x_encode_tuple_header(r, 2);
        ei_x_append_buf(r, req->buf + req->ref_index, req->ref_len);
    }
    if (req->replied == 0) req->replied = 1;
    return r;
}

int nodex_reply_send(nodex_request *req) {
    if (req->replied != 1) return NODEX_ESTATE;
    if (req->kind == NODEX_REQUEST_SEND) return NODEX_ENOSENDER;
    req->replied = 2;
    return nodex_send(req->cnode, &req->from, req->reply->buff, req->reply->index);
}

int nodex_reply_term(nodex_request *req, const char *term, int len) {
    if (req->replied == 2) return NODEX_ESTATE;
    ei_x_buff *r = nodex_reply_begin(req);
    if (ei_x_append_buf(r, term, len) < 0) return NODEX_ENOMEM;
    return nodex_reply_send(req);
}

int nodex_reply_atom(nodex_request *req, const char *atom) {
    if (req->replied == 2) return NODEX_ESTATE;
    ei_x_buff *r = nodex_reply_begin(req);
    if (ei_x_encode_atom(r, atom) < 0) return NODEX_ENOMEM;
    return nodex_reply_send(req);
}

int nodex_reply_error(nodex_request *req, const char *reason) {
    if (req->replied == 2) return NODEX_ESTATE;
    ei_x_buff *r = nodex_reply_begin(req);
    if (ei_x_encode_tuple_header(r, 2) < 0 || ei_x_encode_atom(r, "error") < 0 ||
        ei_x_encode_atom(r, reason) < 0)
        return NODEX_ENOMEM;
    return nodex_reply_send(req);
}

int nodex_send(nodex_cnode *cn, const erlang_pid *to, const char *buf, int len) {
    if (!cn) return NODEX_ESEND;
    erlang_pid dest = *to; /* ei_send takes non-const arguments it only reads */
    pthread_mutex_lock(&cn->send_mu);
    int fd = atomic_load(&cn->fd);
    int rc = fd < 0 ? -1 : ei_send(fd, &dest, (char *)buf, len);
    pthread_mutex_unlock(&cn->send_mu);
    return rc < 0 ? NODEX_ESEND : NODEX_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* setup */

static void resolve_host(const char *host, struct in_addr *addr) {
    if (inet_pton(AF_INET, host, addr) == 1) return;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) == 0 && res) {
        *addr = ((const struct sockaddr_in *)(const void *)res->ai_addr)->sin_addr;
        freeaddrinfo(res);
        return;
    }
    inet_pton(AF_INET, "127.0.0.1", addr);
}

int nodex_cnode_open(nodex_cnode **out, const nodex_args *args, const nodex_cnode_options *opts,
                     char *err, size_t err_len) {
    static atomic_uint incarnation;
    *out = NULL;
    if (!opts || !opts->on_request || !args || !args->sname) {
        set_err(err, err_len, "options.on_request and args are required");
        return NODEX_EUSAGE;
    }
    if (opts->workers > NODEX_MAX_WORKERS) {
        set_err(err, err_len, "at most %d workers", NODEX_MAX_WORKERS);
        return NODEX_EUSAGE;
    }
    nodex_cnode *cn = calloc(1, sizeof *cn);
    if (!cn) {
        set_err(err, err_len, "out of memory");
        return NODEX_ENOMEM;
    }
    cn->opts = *opts;
    cn->args = *args;
    atomic_init(&cn->fd, -1);
    atomic_init(&cn->stop, 0);
    cn->listen_fd = cn->epmd_fd = -1;
    cn->wake[0] = cn->wake[1] = -1;
    pthread_mutex_init(&cn->send_mu, NULL);
    pthread_mutex_init(&cn->q_mu, NULL);
    pthread_cond_init(&cn->q_cv, NULL);
    snprintf(cn->node_name, sizeof cn->node_name, "%s@%s", args->sname, args->hostname);
    snprintf(cn->gateway_node, sizeof cn->gateway_node, "%s@%s", args->gateway_sname,
             args->hostname);

    int status = NODEX_EINIT;
    if (pipe2(cn->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        set_err(err, err_len, "pipe: %s", strerror(errno));
        goto fail;
    }
    /* A send to a gateway that went away must fail with EPIPE, not kill the process. */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);

    if (ei_init() != 0) {
        set_err(err, err_len, "ei_init failed");
        goto fail;
    }
    resolve_host(args->hostname, &cn->addr);
    unsigned creation = ((unsigned)time(NULL) ^ ((unsigned)getpid() << 8) ^
                         (atomic_fetch_add(&incarnation, 1) << 20)) |
                        1u;
    if (ei_connect_xinit(&cn->ec, args->hostname, args->sname, cn->node_name, &cn->addr,
                         args->cookie, creation) < 0) {
        set_err(err, err_len, "ei_connect_xinit failed for %s (erl_errno %d)", cn->node_name,
                erl_errno);
        goto fail;
    }
    status = NODEX_ECONNECT;
    if (opts->direction == NODEX_DIRECTION_TO) {
        int port = 0;
        cn->listen_fd = ei_xlisten(&cn->ec, &cn->addr, &port, 5);
        if (cn->listen_fd < 0) {
            set_err(err, err_len, "cannot listen on %s (erl_errno %d)", args->hostname, erl_errno);
            goto fail;
        }
        cn->epmd_fd = ei_publish(&cn->ec, port);
        if (cn->epmd_fd < 0) {
            set_err(err, err_len, "cannot register %s with epmd (erl_errno %d)", cn->node_name,
                    erl_errno);
            goto fail;
        }
    } else {
        int fd = ei_connect(&cn->ec, cn->gateway_node);
        if (fd < 0) {
            set_err(err, err_len, "cannot connect to %s (erl_errno %d)", cn->gateway_node,
                    erl_errno);
            goto fail;
        }
        atomic_store(&cn->fd, fd);
    }
    *out = cn;
    return NODEX_OK;
fail:
    nodex_cnode_close(cn);
    return status;
}

const char *nodex_cnode_node_name(const nodex_cnode *cn) {
    return cn->node_name;
}

ei_cnode *nodex_cnode_ei(nodex_cnode *cn) {
    return &cn->ec;
}

void nodex_cnode_stop(nodex_cnode *cn) {
    atomic_store(&cn->stop, 1);
    if (cn->wake[1] >= 0) {
        ssize_t n = write(cn->wake[1], "s", 1);
        (void)n; /* a full pipe already wakes the loop */
    }
}

static void job_free(nodex_job *j) {
    ei_x_free(&j->in);
    free(j);
}

void nodex_cnode_close(nodex_cnode *cn) {
    if (!cn) return;
    int fd = atomic_load(&cn->fd);
    if (fd >= 0) ei_close_connection(fd);
    if (cn->listen_fd >= 0) close(cn->listen_fd);
    if (cn->epmd_fd >= 0) close(cn->epmd_fd);
    for (int i = 0; i < 2; i++)
        if (cn->wake[i] >= 0) close(cn->wake[i]);
    while (cn->spare) {
        nodex_job *j = cn->spare;
        cn->spare = j->next;
        job_free(j);
    }
    pthread_mutex_destroy(&cn->send_mu);
    pthread_mutex_destroy(&cn->q_mu);
    pthread_cond_destroy(&cn->q_cv);
    free(cn);
}

/* ------------------------------------------------------------------------------------------ */
/* the receive loop and the worker pool */

static void handle(nodex_cnode *cn, nodex_job *j, ei_x_buff *reply) {
    nodex_request req;
    nodex_request_decode(&req, j->in.buff, j->in.index, &j->msg);
    req.cnode = cn;
    req.reply = reply;
    if (cn->opts.on_request(&req, cn->opts.user) != 0) nodex_cnode_stop(cn);
}

static nodex_job *job_get(nodex_cnode *cn) {
    pthread_mutex_lock(&cn->q_mu);
    nodex_job *j = cn->spare;
    if (j) {
        cn->spare = j->next;
        cn->spare_count--;
    }
    pthread_mutex_unlock(&cn->q_mu);
    if (j) return j;
    j = calloc(1, sizeof *j);
    if (j && ei_x_new(&j->in) < 0) {
        free(j);
        j = NULL;
    }
    return j;
}

/* Called with q_mu held. */
static void job_put_locked(nodex_cnode *cn, nodex_job *j) {
    if (cn->spare_count >= cn->thread_count + NODEX_SPARE_JOBS) {
        job_free(j);
        return;
    }
    j->next = cn->spare;
    cn->spare = j;
    cn->spare_count++;
}

static void *worker_main(void *arg) {
    nodex_cnode *cn = arg;
    ei_x_buff reply;
    int ok = ei_x_new(&reply) == 0;
    pthread_mutex_lock(&cn->q_mu);
    for (;;) {
        while (!cn->q_head && !cn->q_closing) pthread_cond_wait(&cn->q_cv, &cn->q_mu);
        nodex_job *j = cn->q_head;
        if (!j) break;
        cn->q_head = j->next;
        if (!cn->q_head) cn->q_tail = NULL;
        pthread_mutex_unlock(&cn->q_mu);
        if (ok) handle(cn, j, &reply);
        pthread_mutex_lock(&cn->q_mu);
        job_put_locked(cn, j);
    }
    pthread_mutex_unlock(&cn->q_mu);
    if (ok) ei_x_free(&reply);
    return NULL;
}

static int start_workers(nodex_cnode *cn) {
    if (cn->opts.workers == 0) return NODEX_OK;
    cn->threads = calloc(cn->opts.workers, sizeof *cn->threads);
    if (!cn->threads) return NODEX_ENOMEM;
    for (unsigned i = 0; i < cn->opts.workers; i++) {
        if (pthread_create(&cn->threads[i], NULL, worker_main, cn) != 0) return NODEX_ENOMEM;
        cn->thread_count++;
    }
    return NODEX_OK;
}

static void stop_workers(nodex_cnode *cn) {
    pthread_mutex_lock(&cn->q_mu);
    cn->q_closing = 1;
    pthread_cond_broadcast(&cn->q_cv);
    pthread_mutex_unlock(&cn->q_mu);
    for (unsigned i = 0; i < cn->thread_count; i++) pthread_join(cn->threads[i], NULL);
    free(cn->threads);
    cn->threads = NULL;
    cn->thread_count = 0;
}

/* After ERL_ERROR/EIO: ei also says EIO for control messages it does not understand (link,
 * monitor, alias signals), in which case the packet was consumed and the link is fine. */
static int link_alive(int fd) {
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
}

/* Messages to the registered name `init` are the node's, not the author's: 0 = not one, 1 = one
 * to ignore, 2 = `init ! {stop, stop}`, how a gateway asks an Erlang node (or C-node) to stop. */
static int init_message(const nodex_job *j) {
    long t = j->msg.msgtype;
    if ((t != ERL_REG_SEND && t != ERL_REG_SEND_TT) || strcmp(j->msg.toname, "init") != 0) return 0;
    int i = 0, version = 0, arity = 0;
    char a[MAXATOMLEN_UTF8], b[MAXATOMLEN_UTF8];
    int stop = ei_decode_version(j->in.buff, &i, &version) == 0 &&
               ei_decode_tuple_header(j->in.buff, &i, &arity) == 0 && arity == 2 &&
               ei_decode_atom(j->in.buff, &i, a) == 0 && ei_decode_atom(j->in.buff, &i, b) == 0 &&
               strcmp(a, "stop") == 0 && strcmp(b, "stop") == 0;
    return stop ? 2 : 1;
}

/* Waits until fd is readable (1) or a stop was asked (0). */
static int wait_readable(nodex_cnode *cn, int fd) {
    for (;;) {
        if (atomic_load(&cn->stop)) return 0;
        struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = cn->wake[0], .events = POLLIN}};
        int n = poll(p, 2, -1);
        if (n < 0 && errno != EINTR) return -1;
        if (atomic_load(&cn->stop)) return 0;
        if (n > 0 && p[0].revents) return 1;
    }
}

static int accept_gateway(nodex_cnode *cn) {
    int r = wait_readable(cn, cn->listen_fd);
    if (r <= 0) return r == 0 ? NODEX_STOPPED : NODEX_ECONNECT;
    ErlConnect peer;
    int fd = ei_accept(&cn->ec, cn->listen_fd, &peer);
    if (fd < 0) return NODEX_ECONNECT;
    close(cn->listen_fd);
    cn->listen_fd = -1;
    atomic_store(&cn->fd, fd);
    return NODEX_OK;
}

static int receive_loop(nodex_cnode *cn, int fd) {
    ei_x_buff reply = {0};
    if (cn->thread_count == 0 && ei_x_new(&reply) < 0) return NODEX_ENOMEM;
    nodex_job *j = NULL;
    int status;
    for (;;) {
        if (!j && !(j = job_get(cn))) {
            status = NODEX_ENOMEM;
            break;
        }
        int r = wait_readable(cn, fd);
        if (r <= 0) {
            status = r == 0 ? NODEX_STOPPED : NODEX_EIO;
            break;
        }
        /* ei may write a tock from inside the receive: hold the send lock so it cannot land in
         * the middle of a worker's message. The packet has begun to arrive, so this is short. */
        pthread_mutex_lock(&cn->send_mu);
        int rc = ei_xreceive_msg(fd, &j->msg, &j->in);
        int e = erl_errno;
        pthread_mutex_unlock(&cn->send_mu);
        if (rc == ERL_TICK) continue;
        if (rc == ERL_ERROR) {
            if (e == EIO && link_alive(fd)) continue;
            status = (e == EIO || e == ECONNRESET || e == EPIPE) ? NODEX_DISCONNECTED : NODEX_EIO;
            break;
        }
        long t = j->msg.msgtype;
        if (t != ERL_SEND && t != ERL_REG_SEND && t != ERL_SEND_TT && t != ERL_REG_SEND_TT)
            continue; /* link, unlink, exit, monitor signals: nothing to answer */
        int init = init_message(j);
        if (init == 2) {
            status = NODEX_STOPPED;
            break;
        }
        if (init == 1) continue;
        if (cn->thread_count == 0) {
            handle(cn, j, &reply);
            continue;
        }
        pthread_mutex_lock(&cn->q_mu);
        j->next = NULL;
        if (cn->q_tail)
            cn->q_tail->next = j;
        else
            cn->q_head = j;
        cn->q_tail = j;
        pthread_cond_signal(&cn->q_cv);
        pthread_mutex_unlock(&cn->q_mu);
        j = NULL;
    }
    if (j) {
        pthread_mutex_lock(&cn->q_mu);
        job_put_locked(cn, j);
        pthread_mutex_unlock(&cn->q_mu);
    }
    if (cn->thread_count == 0) ei_x_free(&reply);
    return status;
}

int nodex_cnode_run(nodex_cnode *cn) {
    if (cn->ran) return NODEX_ESTATE;
    cn->ran = 1;
    FILE *ready = cn->opts.ready_stream ? cn->opts.ready_stream : stdout;
    if (fprintf(ready, "%s ready\n", cn->node_name) < 0 || fflush(ready) != 0) return NODEX_EIO;
    if (cn->opts.direction == NODEX_DIRECTION_TO) {
        int rc = accept_gateway(cn);
        if (rc != NODEX_OK) return rc;
    }
    int status = start_workers(cn);
    if (status == NODEX_OK) status = receive_loop(cn, atomic_load(&cn->fd));
    stop_workers(cn);
    return status;
}

/* nodex_cnode_main's C-node, for its SIGTERM/SIGINT handler (NULL outside run). */
static nodex_cnode *_Atomic main_cnode;
static volatile sig_atomic_t main_terminated;

static void on_terminate(int sig) {
    (void)sig;
    int saved = errno;
    nodex_cnode *cn = atomic_load(&main_cnode);
    main_terminated = 1;
    if (cn) nodex_cnode_stop(cn); /* an atomic store and a write(2): async-signal-safe */
    errno = saved;
}

/* Publishes cn to the signal handler, or withdraws it, with the signals blocked meanwhile. */
static void main_set_cnode(nodex_cnode *cn) {
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    atomic_store(&main_cnode, cn);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

int nodex_cnode_main(int argc, char **argv, const nodex_cnode_options *opts) {
    const char *prog = opts && opts->program         ? opts->program
                       : argc > 0 && argv && argv[0] ? argv[0]
                                                     : "cnode";
    char err[512];
    nodex_args args;
    if (nodex_args_parse(&args, argc, argv, opts ? opts->cookie_env : NULL, err, sizeof err) !=
        NODEX_OK) {
        fprintf(stderr, "%s: %s\nusage: %s <sname> <hostname> <cookie> <gateway-sname>\n", prog,
                err, prog);
        return 2;
    }
    /* SIGTERM (how nodexd stops a C-node) and SIGINT end the C-node cleanly, with status 0. The
     * handler stays installed (it does nothing once the C-node is gone). */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_terminate;
    sa.sa_flags = SA_RESTART; /* poll still returns EINTR; reads and writes resume */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    nodex_cnode *cn = NULL;
    int rc = nodex_cnode_open(&cn, &args, opts, err, sizeof err);
    if (rc != NODEX_OK) {
        if (main_terminated) return 0;
        fprintf(stderr, "%s: %s\n", prog, err);
        return rc == NODEX_EUSAGE ? 2 : 1;
    }
    main_set_cnode(cn);
    rc = main_terminated ? NODEX_STOPPED : nodex_cnode_run(cn);
    main_set_cnode(NULL);
    nodex_cnode_close(cn);
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", prog, nodex_strerror(rc));
        return 1;
    }
    return 0;
}
