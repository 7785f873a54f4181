/* conns: distribution connections: acceptor and connector threads, hand-offs, reads, ticks. */
#include "conns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "ei_sock.h"
#include "epmd.h"
#include "log.h"

#define CONNS_SEND_TIMEOUT_MS 5000 /* a peer that takes no bytes this long is broken */
#define CONNS_MAX_PACKET      (256u << 20)
#define CONNS_MAX_ACCEPTORS   16

/* A live distribution connection and its loop registration (loop thread only). */
struct conns_conn {
    dist_conn *dc;
    conns *cs;
    void *owner;             /* the supervisor's entry; NULL for other peers */
    int64_t silence_ms;      /* lost when nothing arrives this long */
    loop_watch *watch;       /* writable on while its backlog waits for socket space */
    bool closed;             /* closed during this loop iteration; freed at its end */
    struct conns_conn *next; /* in cs->live, or in cs->graveyard once closed */
};

/* Handed from the acceptor and connector threads to the loop. */
typedef struct conns_handoff {
    int fd; /* -1: a failed connect */
    char peer[MAXNODELEN * 4];
    bool connector; /* a connector's result (for owner), else an accepted connection */
    void *owner;
    unsigned generation;
    unsigned timeout_ms;
    bool retry;
    conns *cs;
    char error[128];
    struct conns_handoff *next;
} conns_handoff;

struct conns {
    loop *loop;
    ei_cnode accept_ec;  /* acceptors copy it: ei state is not shared across threads */
    ei_cnode connect_ec; /* connectors copy it */
    const atomic_bool *stop;
    int64_t tick_ms;
    conns_callbacks cb;
    void *ctx;
    pthread_t acceptors[CONNS_MAX_ACCEPTORS];
    size_t acceptor_count;
    int listen_fd;
    atomic_int connectors; /* running connector threads */
    conns_conn *live;
    conns_conn *graveyard; /* closed connections, freed after the current epoll batch */
    pthread_mutex_t mu;    /* guards handoffs and backlogged */
    conns_handoff *handoffs;
    dist_conn *backlogged; /* connections other threads left a backlog on */
};

/* ------------------------------------------------------------------------------------------ */
/* Backlogs */

static void conns_want_out(conns *cs, conns_conn *c, bool on) {
    loop_watch_set_writable(cs->loop, c->watch, on);
}

/* dist_cork_flush: a connection kept bytes the socket did not take; wait for room. */
static void conns_on_backlog(dist_conn *dc, void *ctx) {
    conns_want_out(ctx, dc->owner, true);
}

/* dist's on_backlog: another thread's send left a backlog. The loop must watch for room. */
static void conns_on_backlog_any_thread(dist_conn *dc, void *ctx) {
    conns *cs = ctx;
    if (loop_on_thread(cs->loop)) {
        conns_on_backlog(dc, cs);
        return;
    }
    pthread_mutex_lock(&cs->mu);
    if (!dc->backlog_listed) {
        dist_conn_ref(dc);
        dc->backlog_listed = true;
        dc->backlog_next = cs->backlogged;
        cs->backlogged = dc;
    }
    pthread_mutex_unlock(&cs->mu);
    loop_wake(cs->loop);
}

/* Loop thread: watches the connections conns_on_backlog_any_thread listed for room. */
static void conns_watch_backlogs(conns *cs) {
    pthread_mutex_lock(&cs->mu);
    dist_conn *list = cs->backlogged;
    cs->backlogged = NULL;
    for (dist_conn *dc = list; dc; dc = dc->backlog_next) dc->backlog_listed = false;
    pthread_mutex_unlock(&cs->mu);
    while (list) {
        dist_conn *dc = list;
        list = dc->backlog_next;
        /* A closed connection is broken: its conns_conn may be gone. */
        if (!atomic_load(&dc->broken)) conns_on_backlog(dc, cs);
        dist_conn_unref(dc);
    }
}

size_t conns_flush_corked(conns *cs) {
    return dist_cork_flush(conns_on_backlog, cs);
}

/* ------------------------------------------------------------------------------------------ */
/* Connections */

conns *conns_new(loop *l, const ei_cnode *accept_ec, const ei_cnode *connect_ec,
                 const atomic_bool *stop, int64_t tick_ms, const conns_callbacks *cb, void *ctx) {
    conns *cs = calloc(1, sizeof *cs);
    if (!cs) return NULL;
    cs->loop = l;
    cs->accept_ec = *accept_ec;
    cs->connect_ec = *connect_ec;
    cs->stop = stop;
    cs->tick_ms = tick_ms;
    cs->cb = *cb;
    cs->ctx = ctx;
    cs->listen_fd = -1;
    atomic_init(&cs->connectors, 0);
    pthread_mutex_init(&cs->mu, NULL);
    return cs;
}

void conns_close(conns *cs, conns_conn *c) {
    loop_watch_remove(cs->loop, c->watch);
    c->watch = NULL;
    for (conns_conn **pp = &cs->live; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    dist_conn_shutdown(c->dc);
    c->closed = true;
    c->next = cs->graveyard;
    cs->graveyard = c;
}

void conns_bury(conns *cs) {
    while (cs->graveyard) {
        conns_conn *c = cs->graveyard;
        cs->graveyard = c->next;
        dist_conn_unref(c->dc);
        free(c);
    }
}

void conns_close_all(conns *cs) {
    while (cs->live) conns_close(cs, cs->live);
    conns_bury(cs);
    pthread_mutex_lock(&cs->mu);
    conns_handoff *h = cs->handoffs;
    cs->handoffs = NULL;
    pthread_mutex_unlock(&cs->mu);
    for (conns_handoff *next; h; h = next) {
        next = h->next;
        if (h->fd >= 0) ei_close_connection(h->fd);
        free(h);
    }
}

static void conns_on_message(void *ctx, dist_conn *dc, const dist_message *m) {
    conns *cs = ctx;
    cs->cb.on_message(cs->ctx, dc->owner, m);
}

static void conns_on_readable(conns *cs, conns_conn *c) {
    c->dc->owner = c;
    dist_close_reason r = dist_read(c->dc, conns_on_message, cs);
    if (r == DIST_OPEN) return;
    if (c->owner) {
        cs->cb.on_lost(cs->ctx, c->owner, c->dc->peer, dist_close_reason_text(r), true);
    } else {
        log_info("node %s disconnected: %s", c->dc->peer, dist_close_reason_text(r));
        conns_close(cs, c);
    }
}

static void conns_on_ready(void *ctx, unsigned ready) {
    conns_conn *c = ctx;
    conns *cs = c->cs;
    if (!c->closed && (ready & LOOP_WRITABLE) && dist_flush(c->dc) == 0)
        conns_want_out(cs, c, false);
    if (!c->closed && (ready & LOOP_READABLE)) conns_on_readable(cs, c);
}

conns_conn *conns_add(conns *cs, int fd, const char *peer) {
    conns_conn *c = calloc(1, sizeof *c);
    dist_conn *dc = c ? dist_conn_new(fd, peer, CONNS_MAX_PACKET) : NULL;
    if (!dc) {
        free(c);
        ei_close_connection(fd);
        return NULL;
    }
    c->dc = dc;
    dc->owner = c;
    dc->on_backlog = conns_on_backlog_any_thread;
    dc->backlog_ctx = cs;
    c->cs = cs;
    if (!(c->watch = loop_watch_add(cs->loop, fd, conns_on_ready, c))) {
        dist_conn_unref(dc);
        free(c);
        return NULL;
    }
    c->next = cs->live;
    cs->live = c;
    return c;
}

void conns_set_owner(conns_conn *c, void *owner, int64_t silence_ms) {
    c->owner = owner;
    c->silence_ms = silence_ms;
}

void *conns_owner(const conns_conn *c) {
    return c->owner;
}

dist_conn *conns_dist(const conns_conn *c) {
    return c->dc;
}

void conns_tick(conns *cs, int64_t now) {
    int64_t tick = cs->tick_ms;
    for (conns_conn *c = cs->live, *next; c; c = next) {
        next = c->next;
        dist_conn *dc = c->dc;
        int64_t silence = c->silence_ms ? c->silence_ms : tick;
        bool silent = now - atomic_load(&dc->last_recv_ms) > silence;
        /* A peer that takes none of our backlog for the send timeout is stuck. */
        if (atomic_load(&dc->backlog) && !atomic_load(&dc->broken) &&
            now - atomic_load(&dc->backlog_progress_ms) > CONNS_SEND_TIMEOUT_MS) {
            log_warn("node %s took none of %zu pending bytes for %d ms; disconnecting", dc->peer,
                     dist_pending_bytes(dc), CONNS_SEND_TIMEOUT_MS);
            dist_conn_shutdown(dc);
        }
        if (!silent && now - atomic_load(&dc->last_send_ms) >= tick / 4) dist_send_tick(dc);
        if (!silent && !atomic_load(&dc->broken)) continue;
        const char *why = silent ? "no answer to ticks (tick_time)" : "send failed";
        if (c->owner) {
            cs->cb.on_lost(cs->ctx, c->owner, dc->peer, why, false);
        } else {
            log_warn("node %s: %s; disconnected", dc->peer, why);
            conns_close(cs, c);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Threads that block in ei: the acceptors and the connectors */

static void conns_handoff_push(conns *cs, conns_handoff *h) {
    pthread_mutex_lock(&cs->mu);
    h->next = cs->handoffs;
    cs->handoffs = h;
    pthread_mutex_unlock(&cs->mu);
    loop_wake(cs->loop);
}

static void *conns_acceptor_main(void *arg) {
    conns *cs = arg;
    ei_cnode ec = cs->accept_ec; /* a private copy: ei state is not shared across threads */
    while (!atomic_load(cs->stop)) {
        ErlConnect conp;
        int fd = ei_accept(&ec, cs->listen_fd, &conp);
        if (fd < 0) {
            if (atomic_load(cs->stop)) break;
            if (errno == EMFILE || errno == ENFILE) {
                log_warn("accept: out of descriptors");
                usleep(100000);
            }
            continue;
        }
        conns_handoff *h = calloc(1, sizeof *h);
        if (!h) {
            ei_close_connection(fd);
            continue;
        }
        h->fd = fd;
        snprintf(h->peer, sizeof h->peer, "%s", conp.nodename);
        conns_handoff_push(cs, h);
    }
    return NULL;
}

int conns_start_acceptors(conns *cs, int listen_fd, size_t n) {
    cs->listen_fd = listen_fd;
    for (size_t i = 0; i < n && i < CONNS_MAX_ACCEPTORS; i++) {
        if (pthread_create(&cs->acceptors[i], NULL, conns_acceptor_main, cs) != 0) return -1;
        cs->acceptor_count++;
    }
    return 0;
}

/* One attempt to reach `peer` (alive@host) before `deadline`: the host resolved, its epmd
 * asked for the node's port with the deadline (ei_connect's own lookup waits without a limit
 * for an epmd that accepts and never answers), then the handshake on ei_sock's deadline-bound
 * sockets. Returns the fd, or -1 with the reason in `why`. */
static int conns_dial(ei_cnode *ec, const char *peer, int64_t deadline, char *why, size_t cap) {
    const char *at = strchr(peer, '@');
    char alive[MAXATOMLEN];
    if (!at || at == peer || (size_t)(at - peer) >= sizeof alive) {
        snprintf(why, cap, "bad node name");
        return -1;
    }
    snprintf(alive, sizeof alive, "%.*s", (int)(at - peer), peer);
    struct in_addr addr;
    if (inet_pton(AF_INET, at + 1, &addr) != 1) {
        /* The resolver is bounded by its own timeouts (resolv.conf), not by the deadline. */
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
        int rc = getaddrinfo(at + 1, NULL, &hints, &res);
        if (rc != 0 || !res) {
            snprintf(why, cap, "host %.64s: %s", at + 1, gai_strerror(rc));
            if (res) freeaddrinfo(res);
            return -1;
        }
        addr = ((const struct sockaddr_in *)(const void *)res->ai_addr)->sin_addr;
        freeaddrinfo(res);
    }
    int port = epmd_port_please(&addr, alive, deadline);
    if (port == 0) {
        snprintf(why, cap, "not registered with epmd on %.64s", at + 1);
        return -1;
    }
    if (port < 0) {
        snprintf(why, cap, "epmd on %.64s: %s", at + 1, strerror(errno));
        return -1;
    }
    int fd = ei_xconnect_host_port(ec, &addr, port);
    if (fd < 0) snprintf(why, cap, "handshake failed");
    return fd;
}

static void *conns_connector_main(void *arg) {
    conns_handoff *job = arg;
    conns *cs = job->cs;
    ei_cnode ec = cs->connect_ec; /* written once, before any connector runs */
    int64_t deadline = dist_now_ms() + job->timeout_ms;
    /* A peer that accepts TCP but never finishes the handshake fails at the deadline instead
     * of holding this thread forever. */
    ei_sock_set_deadline(deadline);
    int fd = -1;
    char why[96] = "stopping";
    while (!atomic_load(cs->stop)) {
        fd = conns_dial(&ec, job->peer, deadline, why, sizeof why);
        if (fd >= 0 || !job->retry || dist_now_ms() >= deadline) break;
        usleep(50000);
    }
    job->fd = fd < 0 ? -1 : fd;
    if (fd < 0)
        snprintf(job->error, sizeof job->error, "cannot connect to %.100s: %s", job->peer, why);
    conns_handoff_push(cs, job);
    atomic_fetch_sub(&cs->connectors, 1);
    return NULL;
}

int conns_connect(conns *cs, void *owner, unsigned generation, const char *peer,
                  unsigned timeout_ms, bool retry) {
    conns_handoff *job = calloc(1, sizeof *job);
    if (!job) {
        errno = ENOMEM;
        return -1;
    }
    job->connector = true;
    job->owner = owner;
    job->generation = generation;
    job->timeout_ms = timeout_ms;
    job->retry = retry;
    job->cs = cs;
    snprintf(job->peer, sizeof job->peer, "%s", peer);
    atomic_fetch_add(&cs->connectors, 1);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, conns_connector_main, job);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        atomic_fetch_sub(&cs->connectors, 1);
        free(job);
        errno = rc == ENOMEM ? EAGAIN : rc;
        return -1;
    }
    return 0;
}

void conns_on_wake(conns *cs) {
    pthread_mutex_lock(&cs->mu);
    conns_handoff *h = cs->handoffs;
    cs->handoffs = NULL;
    pthread_mutex_unlock(&cs->mu);
    while (h) {
        conns_handoff *next = h->next;
        if (h->connector)
            cs->cb.on_connected(cs->ctx, h->owner, h->generation, h->fd, h->peer, h->error);
        else
            cs->cb.on_accepted(cs->ctx, h->fd, h->peer);
        free(h);
        h = next;
    }
    conns_watch_backlogs(cs);
}

bool conns_stop(conns *cs) {
    if (cs->acceptor_count) shutdown(cs->listen_fd, SHUT_RDWR); /* wakes accept() */
    for (size_t i = 0; i < cs->acceptor_count; i++) pthread_join(cs->acceptors[i], NULL);
    cs->acceptor_count = 0;
    /* Connector threads end within their connect timeout; wait for them (bounded). */
    for (int i = 0; i < 600 && atomic_load(&cs->connectors) > 0; i++) usleep(10000);
    return atomic_load(&cs->connectors) == 0;
}

void conns_free(conns *cs) {
    if (!cs) return;
    while (cs->backlogged) {
        dist_conn *dc = cs->backlogged;
        cs->backlogged = dc->backlog_next;
        dist_conn_unref(dc);
    }
    pthread_mutex_destroy(&cs->mu);
    free(cs);
}
