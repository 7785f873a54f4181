/* dist: one Erlang distribution connection after the handshake: framing, dispatch and sends. */
#include "dist.h"

#include "term.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* Control message types of the distribution protocol (erts/doc dist_protocol). */
enum {
    DOP_SEND = 2,
    DOP_REG_SEND = 6,
    DOP_SEND_TT = 12,
    DOP_REG_SEND_TT = 16,
    DOP_SEND_SENDER = 22,
    DOP_SEND_SENDER_TT = 23,
    DOP_MONITOR_P = 19,
    DOP_DEMONITOR_P = 20,
    DOP_MONITOR_P_EXIT = 21,
    DOP_PAYLOAD_MONITOR_P_EXIT = 28,
    DOP_ALIAS_SEND = 33,
    DOP_ALIAS_SEND_TT = 34,
    DOP_UNLINK_ID = 35,
    DOP_UNLINK_ID_ACK = 36,
};

#define DIST_VERSION_BYTE   131
#define DIST_TICK_ANSWER_MS 1000       /* answer a tick only after this long without sending */
#define DIST_RBUF_INITIAL   4096       /* per-connection read buffer to start with */
#define DIST_RBUF_KEEP      (64 << 10) /* a buffer grown past this shrinks back when drained */
#define DIST_PASS_THROUGH   'p'
#define DIST_QUEUE_MAX      ((size_t)256 << 20) /* queued + backlog bytes before a peer is stuck */

static const char *const dist_close_texts[] = {
#define X(id, text) text,
    DIST_CLOSE_REASONS(X)
#undef X
};

static const char *const dist_ignored_names[] = {
#define X(id, op, name) name,
    DIST_IGNORED_CONTROLS(X)
#undef X
};

const char *dist_ignored_control_name(dist_ignored_control kind) {
    return (unsigned)kind < DIST_CTL_KINDS ? dist_ignored_names[kind] : "other";
}

uint64_t dist_ignored_count(const dist_conn *c, dist_ignored_control kind) {
    return (unsigned)kind < DIST_CTL_KINDS ? atomic_load(&c->ignored[kind]) : 0;
}

uint64_t dist_bytes_in(const dist_conn *c) {
    return atomic_load_explicit(&c->bytes_in, memory_order_relaxed);
}

uint64_t dist_bytes_out(const dist_conn *c) {
    return atomic_load_explicit(&c->bytes_out, memory_order_relaxed);
}

/* Counts a control message that nodexd does not act on under its kind. */
static void dist_count_ignored(dist_conn *c, long type) {
    static const long ops[] = {
#define X(id, op, name) op,
        DIST_IGNORED_CONTROLS(X)
#undef X
    };
    dist_ignored_control kind = DIST_CTL_OTHER;
    for (unsigned i = 0; i < DIST_CTL_OTHER; i++)
        if (ops[i] == type) kind = (dist_ignored_control)i;
    atomic_fetch_add(&c->ignored[kind], 1);
}

const char *dist_close_reason_text(dist_close_reason reason) {
    return (unsigned)reason < sizeof dist_close_texts / sizeof dist_close_texts[0]
               ? dist_close_texts[reason]
               : "unknown";
}

int64_t dist_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t dist_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

dist_conn *dist_conn_new(int fd, const char *peer, size_t max_packet) {
    dist_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        free(c);
        return NULL;
    }
    c->fd = fd;
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    atomic_init(&c->refs, 1);
    atomic_init(&c->broken, false);
    int64_t now = dist_now_ms();
    atomic_init(&c->last_recv_ms, now);
    atomic_init(&c->last_send_ms, now);
    pthread_mutex_init(&c->send_lock, NULL);
    c->max_packet = max_packet;
    c->read_budget = DIST_READ_BUDGET;
    return c;
}

void dist_conn_ref(dist_conn *c) {
    atomic_fetch_add(&c->refs, 1);
}

void dist_conn_unref(dist_conn *c) {
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1) return;
    ei_close_connection(c->fd); /* also drops ei's per-fd bookkeeping */
    pthread_mutex_destroy(&c->send_lock);
    free(c->rbuf);
    free(c->wbuf);
    free(c->lbuf);
    free(c);
}

void dist_conn_shutdown(dist_conn *c) {
    atomic_store(&c->broken, true);
    shutdown(c->fd, SHUT_RDWR);
}

/* Writes what the socket takes now from iov (at most 5 pieces; never waits) and adds the bytes
 * written to *written. Returns 0, or -1 on error. Caller holds send_lock. */
static int dist_write_iov(dist_conn *c, const struct iovec *iov_in, int iovcnt, size_t *written) {
    struct iovec local[5];
    struct iovec *iov = local;
    memcpy(local, iov_in, (size_t)iovcnt * sizeof *iov);
    while (iovcnt > 0) {
        /* sendmsg for MSG_NOSIGNAL: a dead peer is an error return, never a SIGPIPE. */
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
        ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno == EAGAIN ? 0 : -1;
        }
        *written += (size_t)n;
        atomic_fetch_add_explicit(&c->bytes_out, (uint64_t)n, memory_order_relaxed);
        while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/* Appends n bytes to *buf (growing it); -1 when out of memory or over DIST_QUEUE_MAX. */
static int dist_buf_append(char **buf, size_t *len, size_t *cap, const void *p, size_t n) {
    if (n == 0) return 0; /* p may be NULL then (an empty prefix) */
    if (*len + n > *cap) {
        size_t want = *cap ? *cap : 4096;
        while (want < *len + n) want *= 2;
        if (want > DIST_QUEUE_MAX) return -1;
        char *nb = realloc(*buf, want);
        if (!nb) return -1;
        *buf = nb;
        *cap = want;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    return 0;
}

/* The calling thread's cork: connections with queued sends (a reference held on each). */
static _Thread_local struct {
    bool on;
    dist_conn **conns;
    size_t count, cap;
} dist_cork;

void dist_cork_begin(void) {
    dist_cork.on = true;
}

/* Queues iov on a corked thread. Returns 0, or -1 (connection shut down). */
static int dist_queue(dist_conn *c, const struct iovec *iov, int iovcnt) {
    if (!c->lqueued) {
        if (dist_cork.count == dist_cork.cap) {
            size_t cap = dist_cork.cap ? dist_cork.cap * 2 : 16;
            dist_conn **nv = realloc(dist_cork.conns, cap * sizeof *nv);
            if (!nv) goto fail;
            dist_cork.conns = nv;
            dist_cork.cap = cap;
        }
        dist_conn_ref(c);
        dist_cork.conns[dist_cork.count++] = c;
        c->lqueued = true;
    }
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) total += iov[i].iov_len;
    if (dist_pending_bytes(c) + total > DIST_QUEUE_MAX) goto fail;
    for (int i = 0; i < iovcnt; i++)
        if (dist_buf_append(&c->lbuf, &c->llen, &c->lcap, iov[i].iov_base, iov[i].iov_len) != 0)
            goto fail;
    atomic_store(&c->queued_bytes, c->llen);
    return 0;
fail:
    dist_conn_shutdown(c);
    return -1;
}

size_t dist_pending_bytes(dist_conn *c) {
    return atomic_load(&c->backlog_bytes) + atomic_load(&c->queued_bytes);
}

/* Appends n bytes to the backlog, first dropping what was already sent when that is at least as
 * much as what is left (so each byte is moved O(1) times). Caller holds send_lock. */
static int dist_backlog_append(dist_conn *c, const void *p, size_t n) {
    if (c->woff && c->woff >= c->wlen - c->woff) {
        memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
        c->wlen -= c->woff;
        c->woff = 0;
    }
    return dist_buf_append(&c->wbuf, &c->wlen, &c->wcap, p, n);
}

/* Records the backlog's new size after a change. Caller holds send_lock. */
static void dist_backlog_settle(dist_conn *c, size_t progress) {
    if (c->woff == c->wlen) c->woff = c->wlen = 0;
    if (progress > 0 || !atomic_load(&c->backlog))
        atomic_store(&c->backlog_progress_ms, dist_now_ms());
    if (progress > 0) atomic_store(&c->last_send_ms, dist_now_ms());
    atomic_store(&c->backlog_bytes, c->wlen - c->woff);
    atomic_store(&c->backlog, c->wlen > c->woff);
    /* A buffer grown for large messages goes back once empty. */
    if (c->wlen == 0 && c->wcap > DIST_RBUF_KEEP) {
        free(c->wbuf);
        c->wbuf = NULL;
        c->wcap = 0;
    }
}

/* Writes the backlog and, on the corked thread (with_queue), its queue, without blocking; what
 * is left becomes the backlog. Caller holds send_lock. Returns 0, or -1 on error. */
static int dist_flush_locked(dist_conn *c, bool with_queue) {
    size_t wp = c->wlen - c->woff;
    size_t llen = with_queue ? c->llen : 0;
    if (wp == 0 && llen == 0) return 0;
    struct iovec iov[2] = {{wp ? c->wbuf + c->woff : NULL, wp},
                           {with_queue ? c->lbuf : NULL, llen}};
    size_t n = 0;
    if (dist_write_iov(c, iov, 2, &n) != 0) return -1;
    size_t from_w = n < wp ? n : wp;
    size_t from_l = n - from_w;
    c->woff += from_w;
    if (llen - from_l && dist_backlog_append(c, c->lbuf + from_l, llen - from_l) != 0) return -1;
    if (with_queue) {
        c->llen = 0;
        atomic_store(&c->queued_bytes, 0);
        if (c->lcap > DIST_RBUF_KEEP) {
            free(c->lbuf);
            c->lbuf = NULL;
            c->lcap = 0;
        }
    }
    dist_backlog_settle(c, n);
    return 0;
}

int dist_flush(dist_conn *c) {
    if (atomic_load(&c->broken)) return -1;
    if (pthread_mutex_trylock(&c->send_lock) != 0) return 1;
    int rc = dist_flush_locked(c, true);
    bool left = c->wlen > c->woff;
    pthread_mutex_unlock(&c->send_lock);
    if (rc != 0) {
        dist_conn_shutdown(c);
        return -1;
    }
    return left ? 1 : 0;
}

size_t dist_cork_flush(void (*on_backlog)(dist_conn *c, void *ctx), void *ctx) {
    size_t kept = 0;
    for (size_t i = 0; i < dist_cork.count; i++) {
        dist_conn *c = dist_cork.conns[i];
        int rc = 0;
        bool busy = false;
        if (atomic_load(&c->broken)) {
            c->llen = 0;
        } else if (pthread_mutex_trylock(&c->send_lock) != 0) {
            /* Another thread is writing (briefly): never wait here, flush next time. */
            busy = true;
        } else {
            rc = dist_flush_locked(c, true);
            pthread_mutex_unlock(&c->send_lock);
        }
        if (rc != 0) {
            c->llen = 0;
            dist_conn_shutdown(c);
        }
        if (busy) {
            dist_cork.conns[kept++] = c;
            continue;
        }
        c->lqueued = false;
        if (rc == 0 && !atomic_load(&c->broken) && atomic_load(&c->backlog) && on_backlog)
            on_backlog(c, ctx);
        dist_conn_unref(c);
    }
    dist_cork.count = kept;
    return kept;
}

void dist_cork_end(void) {
    /* Connections another thread was sending on: wait for its lock (never held long). */
    dist_cork_flush(NULL, NULL);
    for (size_t i = 0; i < dist_cork.count; i++) {
        dist_conn *c = dist_cork.conns[i];
        pthread_mutex_lock(&c->send_lock);
        if (dist_flush_locked(c, true) != 0) dist_conn_shutdown(c);
        c->llen = 0;
        atomic_store(&c->queued_bytes, 0);
        pthread_mutex_unlock(&c->send_lock);
        c->lqueued = false;
        dist_conn_unref(c);
    }
    free(dist_cork.conns);
    dist_cork.conns = NULL;
    dist_cork.count = dist_cork.cap = 0;
    dist_cork.on = false;
}

/* Writes iov now or, behind a backlog or on a full socket, keeps the rest as backlog (never
 * waits). Sets *began when the backlog starts with it. Caller holds send_lock. Returns 0 or -1. */
static int dist_send_now_locked(dist_conn *c, const struct iovec *iov, int iovcnt, bool *began) {
    bool had_backlog = c->wlen > c->woff;
    size_t n = 0, total = 0;
    for (int k = 0; k < iovcnt; k++) total += iov[k].iov_len;
    if (dist_pending_bytes(c) + total > DIST_QUEUE_MAX) return -1;
    if (!had_backlog && dist_write_iov(c, iov, iovcnt, &n) != 0) return -1;
    size_t written = n;
    for (int k = 0; k < iovcnt; k++) {
        if (n >= iov[k].iov_len) {
            n -= iov[k].iov_len;
            continue;
        }
        if (dist_backlog_append(c, (const char *)iov[k].iov_base + n, iov[k].iov_len - n) != 0)
            return -1;
        n = 0;
    }
    if (had_backlog) return dist_flush_locked(c, false); /* some progress, in order */
    dist_backlog_settle(c, written);
    *began = c->wlen > c->woff;
    return 0;
}

/* Sends iov on the calling thread: queued when it is corked, else written now with the rest
 * kept as backlog (its owner told through on_backlog). Returns 0, or -1 (connection shut down). */
static int dist_send_iov(dist_conn *c, const struct iovec *iov, int iovcnt) {
    if (dist_cork.on) return dist_queue(c, iov, iovcnt);
    bool began = false;
    pthread_mutex_lock(&c->send_lock);
    int rc = dist_send_now_locked(c, iov, iovcnt, &began);
    pthread_mutex_unlock(&c->send_lock);
    if (rc != 0) {
        dist_conn_shutdown(c);
        return -1;
    }
    if (began && c->on_backlog) c->on_backlog(c, c->backlog_ctx);
    return 0;
}

/* Sends one pass-through packet: [len]['p'][131 control][131 prefix msg]. */
static int dist_send_packet(dist_conn *c, const char *ctrl, size_t ctrl_len, const char *prefix,
                            size_t prefix_len, const char *msg, size_t msg_len) {
    if (atomic_load(&c->broken)) return -1;
    size_t total = 1 + ctrl_len + 1 + prefix_len + msg_len;
    if (total > UINT32_MAX) return -1;
    unsigned char head[5] = {(unsigned char)(total >> 24), (unsigned char)(total >> 16),
                             (unsigned char)(total >> 8), (unsigned char)total, DIST_PASS_THROUGH};
    static const unsigned char version = DIST_VERSION_BYTE;
    const struct iovec iov[5] = {
        {head, sizeof head},          {(void *)ctrl, ctrl_len}, {(void *)&version, 1},
        {(void *)prefix, prefix_len}, {(void *)msg, msg_len},
    };
    return dist_send_iov(c, iov, 5);
}

/* Sends a control message that carries no message (an acknowledgement). */
static int dist_send_control(dist_conn *c, const char *ctrl, size_t ctrl_len) {
    if (atomic_load(&c->broken)) return -1;
    size_t total = 1 + ctrl_len;
    unsigned char head[5] = {(unsigned char)(total >> 24), (unsigned char)(total >> 16),
                             (unsigned char)(total >> 8), (unsigned char)total, DIST_PASS_THROUGH};
    const struct iovec iov[2] = {{head, sizeof head}, {(void *)ctrl, ctrl_len}};
    return dist_send_iov(c, iov, 2);
}

int dist_send_reg(dist_conn *c, const erlang_pid *from, const char *to_name, const char *prefix,
                  size_t prefix_len, const char *msg, size_t msg_len) {
    char ctrl[MAXATOMLEN_UTF8 * 3 + 64];
    int i = 0;
    /* {REG_SEND, From, '', ToName} */
    if (ei_encode_version(ctrl, &i) || ei_encode_tuple_header(ctrl, &i, 4) ||
        ei_encode_long(ctrl, &i, DOP_REG_SEND) || ei_encode_pid(ctrl, &i, from) ||
        ei_encode_atom(ctrl, &i, "") || ei_encode_atom(ctrl, &i, to_name))
        return -1;
    return dist_send_packet(c, ctrl, (size_t)i, prefix, prefix_len, msg, msg_len);
}

/* {MONITOR_P | DEMONITOR_P, From, ToName, Ref}: a control message with no message. */
static int dist_send_monitor_op(dist_conn *c, long op, const erlang_pid *from, const char *to_name,
                                const erlang_ref *ref) {
    char ctrl[MAXATOMLEN_UTF8 * 4 + 96];
    int i = 0;
    if (ei_encode_version(ctrl, &i) || ei_encode_tuple_header(ctrl, &i, 4) ||
        ei_encode_long(ctrl, &i, op) || ei_encode_pid(ctrl, &i, from) ||
        ei_encode_atom(ctrl, &i, to_name) || ei_encode_ref(ctrl, &i, ref))
        return -1;
    return dist_send_control(c, ctrl, (size_t)i);
}

int dist_send_monitor(dist_conn *c, const erlang_pid *from, const char *to_name,
                      const erlang_ref *ref) {
    return dist_send_monitor_op(c, DOP_MONITOR_P, from, to_name, ref);
}

int dist_send_demonitor(dist_conn *c, const erlang_pid *from, const char *to_name,
                        const erlang_ref *ref) {
    return dist_send_monitor_op(c, DOP_DEMONITOR_P, from, to_name, ref);
}

int dist_send_pid(dist_conn *c, const erlang_pid *to, const char *prefix, size_t prefix_len,
                  const char *msg, size_t msg_len) {
    char ctrl[MAXATOMLEN_UTF8 * 2 + 64];
    int i = 0;
    /* {SEND, '', To} */
    if (ei_encode_version(ctrl, &i) || ei_encode_tuple_header(ctrl, &i, 3) ||
        ei_encode_long(ctrl, &i, DOP_SEND) || ei_encode_atom(ctrl, &i, "") ||
        ei_encode_pid(ctrl, &i, to))
        return -1;
    return dist_send_packet(c, ctrl, (size_t)i, prefix, prefix_len, msg, msg_len);
}

int dist_send_tick(dist_conn *c) {
    if (atomic_load(&c->broken)) return -1;
    static const unsigned char tick[4] = {0, 0, 0, 0};
    const struct iovec iov = {(void *)tick, sizeof tick};
    /* Bytes already waiting are traffic enough. */
    if ((dist_cork.on && c->llen) || atomic_load(&c->backlog)) return 0;
    return dist_send_iov(c, &iov, 1);
}

/* Size in bytes of the atom encoded at buf[idx], checking the bounds; -1 if not an atom. */
static long dist_atom_size(const char *buf, size_t len, size_t idx) {
    if (idx + 2 > len) return -1;
    unsigned char tag = (unsigned char)buf[idx];
    size_t size;
    if (tag == ERL_SMALL_ATOM_EXT || tag == ERL_SMALL_ATOM_UTF8_EXT) {
        size = 2 + (unsigned char)buf[idx + 1];
    } else if (tag == ERL_ATOM_EXT || tag == ERL_ATOM_UTF8_EXT) {
        if (idx + 3 > len) return -1;
        size = 3 + (((size_t)(unsigned char)buf[idx + 1] << 8) | (unsigned char)buf[idx + 2]);
    } else {
        return -1;
    }
    return idx + size <= len ? (long)size : -1;
}

/* Decodes a pid with bounds checks (ei_decode_pid itself reads without any). */
static int dist_decode_pid(const char *buf, size_t len, int *idx, erlang_pid *pid) {
    if ((size_t)*idx >= len) return -1;
    unsigned char tag = (unsigned char)buf[*idx];
    if (tag != ERL_PID_EXT && tag != ERL_NEW_PID_EXT) return -1;
    long asize = dist_atom_size(buf, len, (size_t)*idx + 1);
    if (asize < 0 || (size_t)asize > MAXATOMLEN_UTF8 + 2) return -1;
    size_t need = 1 + (size_t)asize + (tag == ERL_NEW_PID_EXT ? 12 : 9);
    if ((size_t)*idx + need > len) return -1;
    return ei_decode_pid(buf, idx, pid) < 0 ? -1 : 0;
}

/* Decodes a reference with bounds checks (NEWER_ or NEW_REFERENCE_EXT, at most 5 words). */
static int dist_decode_ref(const char *buf, size_t len, int *idx, erlang_ref *ref) {
    size_t at = (size_t)*idx;
    if (at + 3 > len) return -1;
    unsigned char tag = (unsigned char)buf[at];
    if (tag != ERL_NEWER_REFERENCE_EXT && tag != ERL_NEW_REFERENCE_EXT) return -1;
    size_t words = ((size_t)(unsigned char)buf[at + 1] << 8) | (unsigned char)buf[at + 2];
    long asize = dist_atom_size(buf, len, at + 3);
    if (words < 1 || words > 5 || asize < 0 || (size_t)asize > MAXATOMLEN_UTF8 + 2) return -1;
    size_t need = 3 + (size_t)asize + (tag == ERL_NEWER_REFERENCE_EXT ? 4 : 1) + 4 * words;
    if (at + need > len) return -1;
    return ei_decode_ref(buf, idx, ref) < 0 ? -1 : 0;
}

/* Skips one atom, small integer or pid with bounds checks: all a control tuple's slots hold. */
static int dist_skip_small_term(const char *buf, size_t len, int *idx) {
    if ((size_t)*idx >= len) return -1;
    unsigned char tag = (unsigned char)buf[*idx];
    size_t size;
    switch (tag) {
    case ERL_SMALL_INTEGER_EXT: size = 2; break;
    case ERL_INTEGER_EXT: size = 5; break;
    case ERL_NIL_EXT: size = 1; break;
    case ERL_PID_EXT:
    case ERL_NEW_PID_EXT: {
        erlang_pid p;
        return dist_decode_pid(buf, len, idx, &p);
    }
    default: {
        long asize = dist_atom_size(buf, len, (size_t)*idx);
        if (asize < 0) return -1;
        size = (size_t)asize;
    }
    }
    if ((size_t)*idx + size > len) return -1;
    *idx += (int)size;
    return 0;
}

/* {UNLINK_ID, Id, From, To}: OTP 26+ peers wait for {UNLINK_ID_ACK, Id, To, From} before they
 * forget the link, so every one is acknowledged (nodexd holds no links to drop). */
static int dist_ack_unlink(dist_conn *c, const char *buf, size_t len, int idx, int arity) {
    unsigned long long id = 0;
    erlang_pid from, to;
    if (arity != 4 || (size_t)idx >= len || ei_decode_ulonglong(buf, &idx, &id) < 0 ||
        dist_decode_pid(buf, len, &idx, &from) < 0 || dist_decode_pid(buf, len, &idx, &to) < 0)
        return -1;
    char ctrl[MAXATOMLEN_UTF8 * 2 + 96];
    int i = 0;
    if (ei_encode_version(ctrl, &i) || ei_encode_tuple_header(ctrl, &i, 4) ||
        ei_encode_long(ctrl, &i, DOP_UNLINK_ID_ACK) || ei_encode_ulonglong(ctrl, &i, id) ||
        ei_encode_pid(ctrl, &i, &to) || ei_encode_pid(ctrl, &i, &from))
        return -1;
    (void)dist_send_control(c, ctrl, (size_t)i); /* a failed send breaks the connection anyway */
    return 0;
}

/* Parses one pass-through packet and dispatches its message, if it carries one. */
static int dist_dispatch(dist_conn *c, const char *p, size_t len,
                         void (*on_message)(void *, dist_conn *, const dist_message *), void *ctx) {
    if (len < 1 || p[0] != DIST_PASS_THROUGH) return -1;
    const char *buf = p + 1;
    size_t blen = len - 1;
    int idx = 0, version, arity;
    long type;
    if (blen < 4 || ei_decode_version(buf, &idx, &version) < 0 || version != DIST_VERSION_BYTE)
        return -1;
    if ((size_t)idx + 2 > blen || (unsigned char)buf[idx] != ERL_SMALL_TUPLE_EXT) return -1;
    if (ei_decode_tuple_header(buf, &idx, &arity) < 0 || arity < 1) return -1;
    if ((size_t)idx + 2 > blen || (unsigned char)buf[idx] != ERL_SMALL_INTEGER_EXT ||
        ei_decode_long(buf, &idx, &type) < 0)
        return -1;

    dist_message m = {.type = type};
    char to_name[MAXATOMLEN_UTF8];
    switch (type) {
    case DOP_SEND:           /* {2, Unused, ToPid} */
    case DOP_SEND_TT:        /* {12, Unused, ToPid, Trace} */
    case DOP_SEND_SENDER:    /* {22, FromPid, ToPid} */
    case DOP_SEND_SENDER_TT: /* {23, FromPid, ToPid, Trace} */
        if (arity < 3 || dist_skip_small_term(buf, blen, &idx) < 0 ||
            dist_decode_pid(buf, blen, &idx, &m.to) < 0)
            return -1;
        m.to_pid = true;
        break;
    case DOP_REG_SEND:    /* {6, FromPid, Unused, ToName} */
    case DOP_REG_SEND_TT: /* {16, FromPid, Unused, ToName, Trace} */
        if (arity < 4 || dist_skip_small_term(buf, blen, &idx) < 0 ||
            dist_skip_small_term(buf, blen, &idx) < 0)
            return -1;
        if ((size_t)idx + 3 > blen) return -1;
        if (dist_atom_size(buf, blen, (size_t)idx) < 0 ||
            ei_decode_atom_as(buf, &idx, to_name, sizeof to_name, ERLANG_UTF8, NULL, NULL) < 0)
            return -1;
        m.to_name = to_name;
        break;
    case DOP_MONITOR_P_EXIT:         /* {21, FromProc, ToPid, Ref, Reason} */
    case DOP_PAYLOAD_MONITOR_P_EXIT: /* {28, FromProc, ToPid, Ref}, then Reason as the message */
        if (arity < (type == DOP_MONITOR_P_EXIT ? 5 : 4) ||
            dist_skip_small_term(buf, blen, &idx) < 0 ||
            dist_decode_pid(buf, blen, &idx, &m.to) < 0 ||
            dist_decode_ref(buf, blen, &idx, &m.ref) < 0)
            return -1;
        m.to_pid = true;
        m.monitor_exit = true;
        if (type == DOP_MONITOR_P_EXIT) { /* the reason is the control tuple's last element */
            int end = idx;
            term_error err;
            if (term_validate(buf, blen, &end, &term_limits_default, &err) != 0) return -1;
            m.msg = buf + idx;
            m.msg_len = (size_t)(end - idx);
            on_message(ctx, c, &m);
            return 0;
        }
        break;
    case DOP_ALIAS_SEND:    /* {33, FromPid, Alias} */
    case DOP_ALIAS_SEND_TT: /* {34, FromPid, Alias, Token} */
        if (arity < 3 || dist_skip_small_term(buf, blen, &idx) < 0 ||
            dist_decode_ref(buf, blen, &idx, &m.ref) < 0)
            return -1;
        m.to_alias = true;
        break;
    case DOP_UNLINK_ID: return dist_ack_unlink(c, buf, blen, idx, arity);
    default: /* link, exit, monitor, alias sends...: nothing for us, but counted */
        dist_count_ignored(c, type);
        return 0;
    }
    /* Skip what is left of the control tuple (trace token): find the message's version byte.
     * Control tuples we accept end with the element just read, except the _TT forms. */
    if (type == DOP_SEND_TT || type == DOP_SEND_SENDER_TT || type == DOP_REG_SEND_TT ||
        type == DOP_ALIAS_SEND_TT) {
        /* The trace token: its label may be any term, so skip it with the bounded walker. */
        term_error err;
        if (term_validate(buf, blen, &idx, &term_limits_default, &err) != 0) return -1;
    }
    if ((size_t)idx >= blen || (unsigned char)buf[idx] != DIST_VERSION_BYTE) return -1;
    idx++;
    m.msg = buf + idx;
    m.msg_len = blen - (size_t)idx;
    on_message(ctx, c, &m);
    return 0;
}

/* Makes room to read into: small to start (a gateway may hold thousands of connections), then
 * doubled as bytes arrive, but never past what the packet in progress needs. */
static int dist_rbuf_reserve(dist_conn *c) {
    bool packet_fits = c->rneed && c->rneed <= c->rcap;
    if (c->rcap - c->rlen >= 1024 || (packet_fits && c->rlen < c->rneed)) return 0;
    size_t cap = c->rcap ? c->rcap * 2 : DIST_RBUF_INITIAL;
    if (c->rneed > c->rcap && cap > c->rneed) cap = c->rneed;
    char *nb = realloc(c->rbuf, cap);
    if (!nb) return -1;
    c->rbuf = nb;
    c->rcap = cap;
    return 0;
}

dist_close_reason
dist_read(dist_conn *c, void (*on_message)(void *, dist_conn *, const dist_message *), void *ctx) {
    size_t budget = c->read_budget;
    while (budget > 0) {
        if (dist_rbuf_reserve(c) != 0) return DIST_NO_MEMORY;
        size_t space = c->rcap - c->rlen;
        if (space > budget) space = budget;
        ssize_t n = read(c->fd, c->rbuf + c->rlen, space);
        if (n == 0) return DIST_CLOSED_BY_PEER;
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            return DIST_READ_ERROR;
        }
        c->rlen += (size_t)n;
        budget -= (size_t)n;
        atomic_fetch_add_explicit(&c->bytes_in, (uint64_t)n, memory_order_relaxed);
        atomic_store(&c->last_recv_ms, dist_now_ms());
        /* Dispatch every complete packet in the buffer. */
        size_t off = 0;
        c->rneed = 0;
        while (c->rlen - off >= 4) {
            const unsigned char *h = (const unsigned char *)c->rbuf + off;
            size_t plen = ((size_t)h[0] << 24) | ((size_t)h[1] << 16) | ((size_t)h[2] << 8) | h[3];
            if (plen > c->max_packet) return DIST_TOO_LARGE;
            if (c->rlen - off - 4 < plen) {
                c->rneed = plen + 4; /* incomplete: moved to rbuf[0] below */
                break;
            }
            if (plen == 0) {
                /* A tick (or ei's tock answering ours) proves the peer alive. Answer it only
                 * when we have been silent for a while, so a peer with a shorter net_ticktime
                 * than ours still hears from us; answering every tick would ping-pong forever
                 * with ei, which answers each of ours with a tock. */
                if (dist_now_ms() - atomic_load(&c->last_send_ms) >= DIST_TICK_ANSWER_MS &&
                    dist_send_tick(c) != 0)
                    return DIST_READ_ERROR;
            } else if (dist_dispatch(c, c->rbuf + off + 4, plen, on_message, ctx) != 0) {
                return DIST_PROTOCOL_ERROR;
            }
            off += 4 + plen;
        }
        if (off) {
            memmove(c->rbuf, c->rbuf + off, c->rlen - off);
            c->rlen -= off;
        }
        /* Shrink a buffer that grew for a large packet once it is drained. */
        if (c->rcap > DIST_RBUF_KEEP && c->rlen == 0) {
            char *nb = realloc(c->rbuf, DIST_RBUF_INITIAL);
            if (nb) {
                c->rbuf = nb;
                c->rcap = DIST_RBUF_INITIAL;
            }
        }
        if ((size_t)n < space) break; /* the socket had less than we could take: drained */
    }
    return DIST_OPEN;
}
