/* conns: distribution connections: acceptor and connector threads, hand-offs, reads, ticks. */
#ifndef NODEX_CONNS_H
#define NODEX_CONNS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ei.h>

#include "dist.h"
#include "loop.h"

/* Threading. The acceptor threads (ei_accept) and the connector threads (one per attempt,
 * ei_connect) block in ei and touch nothing but their hand-off, which the loop thread takes in
 * conns_on_wake. Everything else runs on the loop thread, and every callback is called there,
 * except where a function says "any thread". A connection is owned by conns; its owner pointer
 * (the supervisor's entry) is the caller's. */
typedef struct conns conns;
/* One live connection; valid until the conns_bury after its conns_close. */
typedef struct conns_conn conns_conn;

typedef struct conns_callbacks {
    /* A message arrived on `c` (owner: conns_owner(c), NULL for none). */
    void (*on_message)(void *ctx, conns_conn *c, const dist_message *m);
    /* A node connected in: take the handshaken `fd` with conns_add, or close it with
     * ei_close_connection. */
    void (*on_accepted)(void *ctx, int fd, const char *peer);
    /* A conns_connect attempt ended: `fd` >= 0 connected (take or close it as above), or -1 with
     * `error` set. `owner` and `generation` are those given to conns_connect. */
    void (*on_connected)(void *ctx, void *owner, unsigned generation, int fd, const char *peer,
                         const char *error);
    /* The connection of `owner` is lost: closed by the peer or a read error (`by_peer`), or
     * silent past its tick time, or its sends failed or stalled. The connection stays open
     * until the callee closes it (conns_close). Connections of no owner are closed by conns. */
    void (*on_lost)(void *ctx, void *owner, const char *peer, const char *why, bool by_peer);
} conns_callbacks;

/* Connections on `l`, with handshakes as `accept_ec` (acceptors) and `connect_ec` (connectors,
 * deadline-bound sockets), both copied; silence past `tick_ms` loses a connection (see
 * conns_set_owner). Acceptors and connector retries stop once `*stop` is true (it must outlive
 * conns). NULL when out of memory. Call before any thread uses it. */
conns *conns_new(loop *l, const ei_cnode *accept_ec, const ei_cnode *connect_ec,
                 const atomic_bool *stop, int64_t tick_ms, const conns_callbacks *cb, void *ctx);
/* Starts `n` acceptor threads on the handshake listener `listen_fd` (a stalled handshake holds
 * one, not all). Returns 0, or -1 when a thread cannot be started (those started keep running
 * until conns_stop). */
int conns_start_acceptors(conns *cs, int listen_fd, size_t n);
/* Starts a connector thread that connects to `peer` within `timeout_ms` (with `retry`, again and
 * again until then: a node just started may not be in epmd yet) and reports to on_connected with
 * `owner` and `generation`. Returns 0, or -1 with errno ENOMEM (out of memory) or another errno
 * (no thread could be started). */
int conns_connect(conns *cs, void *owner, unsigned generation, const char *peer,
                  unsigned timeout_ms, bool retry);
/* Ends the acceptors (the listener is shut down; `*stop` must be true) and waits a bounded time
 * for connectors to finish. Returns false when some still run: then conns must be leaked, not
 * freed (they still use it). Any thread but the loop's, once the loop has returned. */
bool conns_stop(conns *cs);
/* Frees conns: every connection must be closed and buried (conns_close_all). */
void conns_free(conns *cs);

/* Takes the handshaken `fd` as a connection to `peer`, watched on the loop. On failure the fd is
 * closed and NULL returned. */
conns_conn *conns_add(conns *cs, int fd, const char *peer);
/* Attaches `owner` (NULL for none) to `c`; silence past `silence_ms` (0: conns' tick time) loses
 * it. */
void conns_set_owner(conns_conn *c, void *owner, int64_t silence_ms);
/* The owner given to conns_set_owner, or NULL. */
void *conns_owner(const conns_conn *c);
/* The connection's dist_conn (a reference is held by conns until it is buried). */
dist_conn *conns_dist(const conns_conn *c);
/* Closes `c` (shut down, no more callbacks); its memory lives until conns_bury. */
void conns_close(conns *cs, conns_conn *c);
/* Closes every connection, buries them, and closes the fds of hand-offs not yet taken. */
void conns_close_all(conns *cs);
/* Frees the connections closed since the last call: once per loop iteration, after its events. */
void conns_bury(conns *cs);

/* Hand-offs from the acceptors and connectors (their callbacks run now), then connections whose
 * backlog another thread's send left waiting to be watched for room. Call when the loop wakes. */
void conns_on_wake(conns *cs);
/* Ticks idle connections (ei never ticks on its own), loses silent ones and those whose peer
 * took none of their backlog for the send timeout. */
void conns_tick(conns *cs, int64_t now_ms);
/* Writes the packets queued on the calling thread (dist_cork_flush); what a socket does not take
 * is watched for room. Returns dist_cork_flush's count of connections still busy. */
size_t conns_flush_corked(conns *cs);

#endif
