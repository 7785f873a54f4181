/* ei_sock: poll-based socket callbacks for ei's outgoing connections, bounded by a deadline. */
#include "ei_sock.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define EI_SOCK_DEFAULT_MS 10000 /* where ei asks to wait forever */

static _Thread_local int64_t ei_sock_deadline_ms;
static _Atomic unsigned ei_sock_accept_ms = 3000; /* an accepted handshake's whole deadline */

typedef struct ei_sock {
    int fd;
    int64_t deadline_ms; /* fixed when the socket is made: the whole handshake shares it */
    bool name_sent;      /* the handshake's send_name went out (with EI_SOCK_EXTRA_FLAGS) */
} ei_sock;

static int64_t ei_sock_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ei_sock_set_deadline(int64_t deadline_ms) {
    ei_sock_deadline_ms = deadline_ms;
}

void ei_sock_set_accept_deadline(unsigned ms) {
    ei_sock_accept_ms = ms;
}

/* Waits for `events` until the socket's deadline (or ei's tmo, whichever is sooner). */
static int ei_sock_wait(const ei_sock *s, short events, unsigned tmo) {
    int64_t deadline = s->deadline_ms;
    if (tmo != EI_SCLBK_INF_TMO) {
        int64_t d = ei_sock_now_ms() + tmo;
        if (d < deadline) deadline = d;
    }
    for (;;) {
        int64_t left = deadline - ei_sock_now_ms();
        if (left <= 0) return ETIMEDOUT;
        struct pollfd p = {.fd = s->fd, .events = events};
        int n = poll(&p, 1, left > 1000 ? 1000 : (int)left); /* a listener's is INT64_MAX */
        if (n == 0 && left > 1000) continue;
        if (n > 0) return 0;
        if (n == 0) return ETIMEDOUT;
        if (errno != EINTR) return errno;
    }
}

/* A context for `fd` whose I/O waits until `deadline_ms`. */
static int ei_sock_wrap(int fd, int64_t deadline_ms, void **ctx) {
    ei_sock *s = malloc(sizeof *s);
    if (!s) return ENOMEM;
    s->fd = fd;
    s->deadline_ms = deadline_ms;
    s->name_sent = false;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    *ctx = s;
    return 0;
}

static int ei_sock_socket(void **ctx, void *setup_ctx) {
    (void)setup_ctx;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return errno;
    int rc = ei_sock_wrap(
        fd, ei_sock_deadline_ms ? ei_sock_deadline_ms : ei_sock_now_ms() + EI_SOCK_DEFAULT_MS, ctx);
    if (rc) close(fd);
    return rc;
}

static int ei_sock_close(void *ctx) {
    ei_sock *s = ctx;
    int rc = close(s->fd) == 0 ? 0 : errno;
    free(s);
    return rc;
}

static int ei_sock_listen(void *ctx, void *addr, int *len, int backlog) {
    ei_sock *s = ctx;
    int on = 1;
    setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    socklen_t sl = (socklen_t)*len;
    if (bind(s->fd, addr, sl) != 0 || getsockname(s->fd, addr, &sl) != 0 ||
        listen(s->fd, backlog) != 0)
        return errno;
    *len = (int)sl;
    s->deadline_ms = INT64_MAX; /* a listener waits for connections for as long as it lives */
    return 0;
}

static int ei_sock_accept(void **ctx, void *addr, int *len, unsigned tmo) {
    ei_sock *l = *ctx;
    for (;;) {
        socklen_t sl = (socklen_t)*len;
        int fd = accept4(l->fd, addr, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            *len = (int)sl;
            /* The whole handshake from here shares one deadline: a peer trickling a byte at a
             * time is cut off at it, not allowed a fresh timeout per read. */
            int rc = ei_sock_wrap(fd, ei_sock_now_ms() + ei_sock_accept_ms, ctx);
            if (rc) close(fd);
            return rc;
        }
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno != EAGAIN) return errno;
        int rc = ei_sock_wait(l, POLLIN, tmo);
        if (rc) return rc;
    }
}

static int ei_sock_connect(void *ctx, void *addr, int len, unsigned tmo) {
    ei_sock *s = ctx;
    if (connect(s->fd, addr, (socklen_t)len) == 0) return 0;
    if (errno != EINPROGRESS) return errno;
    int rc = ei_sock_wait(s, POLLOUT, tmo);
    if (rc) return rc;
    int err = 0;
    socklen_t elen = sizeof err;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0) return errno;
    return err;
}

static int ei_sock_read(void *ctx, char *buf, ssize_t *len, unsigned tmo) {
    ei_sock *s = ctx;
    for (;;) {
        ssize_t n = read(s->fd, buf, (size_t)*len);
        if (n >= 0) {
            *len = n;
            return 0;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN) return errno;
        int rc = ei_sock_wait(s, POLLIN, tmo);
        if (rc) return rc;
    }
}

/* The big-endian unsigned integer of `n` bytes at p. */
static uint64_t ei_sock_get_be(const char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | (unsigned char)p[i];
    return v;
}

static void ei_sock_put_be(char *p, int n, uint64_t v) {
    for (int i = n - 1; i >= 0; i--, v >>= 8) p[i] = (char)(v & 0xff);
}

uint64_t ei_sock_offer_flags(char *msg, size_t len) {
    if (len < 3 || ei_sock_get_be(msg, 2) != len - 2) return 0;
    if (msg[2] == 'N' && len >= 17) { /* version 6: Len:16 'N' Flags:64 Creation:32 NLen:16 Name */
        ei_sock_put_be(msg + 3, 8, ei_sock_get_be(msg + 3, 8) | EI_SOCK_EXTRA_FLAGS);
        return ei_sock_get_be(msg + 3, 8);
    }
    if (msg[2] == 'n' && len >= 9) { /* version 5: Len:16 'n' Version:16 Flags:32 Name */
        ei_sock_put_be(msg + 5, 4, ei_sock_get_be(msg + 5, 4) | EI_SOCK_EXTRA_FLAGS);
        return ei_sock_get_be(msg + 5, 4);
    }
    return 0;
}

static int ei_sock_write(void *ctx, const char *buf, ssize_t *len, unsigned tmo) {
    ei_sock *s = ctx;
    char patched[512];
    if (!s->name_sent && *len > 0 && (size_t)*len <= sizeof patched) {
        /* The first write is ei's send_name: offer what nodexd handles beyond ei's flags. */
        s->name_sent = true;
        memcpy(patched, buf, (size_t)*len);
        if (ei_sock_offer_flags(patched, (size_t)*len)) buf = patched;
    }
    for (;;) {
        ssize_t n = send(s->fd, buf, (size_t)*len, MSG_NOSIGNAL);
        if (n >= 0) {
            *len = n;
            return 0;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN) return errno;
        int rc = ei_sock_wait(s, POLLOUT, tmo);
        if (rc) return rc;
    }
}

static int ei_sock_writev(void *ctx, const void *iov, int iovcnt, ssize_t *len, unsigned tmo) {
    ei_sock *s = ctx;
    if (!s->name_sent) {
        /* The first write is the send_name (see ei_sock_write): gathered, then written so. */
        const struct iovec *v = iov;
        char flat[512];
        size_t n = 0;
        for (int i = 0; i < iovcnt && n <= sizeof flat; i++) {
            if (v[i].iov_len > sizeof flat - n) {
                n = sizeof flat + 1;
                break;
            }
            memcpy(flat + n, v[i].iov_base, v[i].iov_len);
            n += v[i].iov_len;
        }
        if (n <= sizeof flat) {
            ssize_t flen = (ssize_t)n;
            int rc = ei_sock_write(ctx, flat, &flen, tmo);
            *len = flen;
            return rc;
        }
        s->name_sent = true;
    }
    for (;;) {
        struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
        ssize_t n = sendmsg(s->fd, &mh, MSG_NOSIGNAL);
        if (n >= 0) {
            *len = n;
            return 0;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN) return errno;
        int rc = ei_sock_wait(s, POLLOUT, tmo);
        if (rc) return rc;
    }
}

static int ei_sock_handshake_header_size(void *ctx, int *sz) {
    (void)ctx;
    *sz = 2;
    return 0;
}

static int ei_sock_handshake_complete(void *ctx) {
    (void)ctx;
    return 0;
}

static int ei_sock_get_fd(void *ctx, int *fd) {
    *fd = ((ei_sock *)ctx)->fd;
    return 0;
}

ei_socket_callbacks ei_sock_callbacks = {
    .flags = EI_SCLBK_FLG_FULL_IMPL,
    .socket = ei_sock_socket,
    .close = ei_sock_close,
    .listen = ei_sock_listen,
    .EI_ACCEPT_NAME = ei_sock_accept,
    .connect = ei_sock_connect,
    .writev = ei_sock_writev,
    .write = ei_sock_write,
    .read = ei_sock_read,
    .handshake_packet_header_size = ei_sock_handshake_header_size,
    .connect_handshake_complete = ei_sock_handshake_complete,
    .accept_handshake_complete = ei_sock_handshake_complete,
    .get_fd = ei_sock_get_fd,
};
