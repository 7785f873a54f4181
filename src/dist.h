/* dist: one Erlang distribution connection after the handshake: framing, dispatch and sends. */
#ifndef NODEX_DIST_H
#define NODEX_DIST_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ei.h>

/* Why dist_read stopped reading a connection. */
#define DIST_CLOSE_REASONS(X)                                                                      \
    X(DIST_OPEN, "open")                                                                           \
    X(DIST_CLOSED_BY_PEER, "connection closed by peer")                                            \
    X(DIST_READ_ERROR, "read error")                                                               \
    X(DIST_PROTOCOL_ERROR, "distribution protocol error")                                          \
    X(DIST_TOO_LARGE, "packet over the size limit")                                                \
    X(DIST_NO_MEMORY, "out of memory")

typedef enum dist_close_reason {
#define X(id, text) id,
    DIST_CLOSE_REASONS(X)
#undef X
} dist_close_reason;

/* Describes a close reason ("connection closed by peer"). */
const char *dist_close_reason_text(dist_close_reason reason);

/* Control messages nodexd reads but does not act on, counted per kind (the rest is "other"). */
#define DIST_IGNORED_CONTROLS(X)                                                                   \
    X(DIST_CTL_LINK, 1, "link")                                                                    \
    X(DIST_CTL_EXIT, 3, "exit")                                                                    \
    X(DIST_CTL_UNLINK, 4, "unlink")                                                                \
    X(DIST_CTL_GROUP_LEADER, 7, "group_leader")                                                    \
    X(DIST_CTL_EXIT2, 8, "exit2")                                                                  \
    X(DIST_CTL_EXIT_TT, 13, "exit_tt")                                                             \
    X(DIST_CTL_EXIT2_TT, 18, "exit2_tt")                                                           \
    X(DIST_CTL_MONITOR_P, 19, "monitor_p")                                                         \
    X(DIST_CTL_DEMONITOR_P, 20, "demonitor_p")                                                     \
    X(DIST_CTL_PAYLOAD_EXIT, 24, "payload_exit")                                                   \
    X(DIST_CTL_PAYLOAD_EXIT_TT, 25, "payload_exit_tt")                                             \
    X(DIST_CTL_PAYLOAD_EXIT2, 26, "payload_exit2")                                                 \
    X(DIST_CTL_PAYLOAD_EXIT2_TT, 27, "payload_exit2_tt")                                           \
    X(DIST_CTL_SPAWN_REQUEST, 29, "spawn_request")                                                 \
    X(DIST_CTL_SPAWN_REQUEST_TT, 30, "spawn_request_tt")                                           \
    X(DIST_CTL_SPAWN_REPLY, 31, "spawn_reply")                                                     \
    X(DIST_CTL_SPAWN_REPLY_TT, 32, "spawn_reply_tt")                                               \
    X(DIST_CTL_UNLINK_ID_ACK, 36, "unlink_id_ack")                                                 \
    X(DIST_CTL_OTHER, -1, "other")

typedef enum dist_ignored_control {
#define X(id, op, name) id,
    DIST_IGNORED_CONTROLS(X)
#undef X
        DIST_CTL_KINDS
} dist_ignored_control;

/* "monitor_p", "alias_send", ... ("other" for an unknown kind). */
const char *dist_ignored_control_name(dist_ignored_control kind);

/* One message that reached us, as dispatched by dist_read. Pointers are into the connection's
 * read buffer: valid only during the callback. */
typedef struct dist_message {
    long type;           /* control message type: 2 SEND, 6 REG_SEND, 22 SEND_SENDER, ... */
    bool to_pid;         /* true when addressed to a pid (then `to` is set) */
    bool monitor_exit;   /* MONITOR_P_EXIT (21, 28): `to` is the watcher, `ref` the monitor's,
                            msg the reason (21: no version byte before it either) */
    bool to_alias;       /* ALIAS_SEND (33, 34): addressed to the alias `ref` */
    erlang_ref ref;      /* monitor_exit, to_alias */
    erlang_pid to;       /* recipient pid (to_pid only) */
    const char *to_name; /* recipient registered name (REG_SEND only), else NULL */
    const char *msg;     /* the message term, starting AFTER its version byte */
    size_t msg_len;      /* bytes from msg to the end of the packet (may include trailing bytes) */
} dist_message;

/* A connection. Created by dist_conn_new on a handshaken fd; shared between the event loop (the
 * only reader) and any thread that sends (sends are serialized by an internal lock). Reference
 * counted: the creator holds one reference; the fd is closed when the last one is dropped. */
typedef struct dist_conn {
    int fd;
    char peer[MAXNODELEN * 4]; /* peer node name */
    atomic_int refs;
    atomic_bool broken;        /* a send failed or the reader closed it */
    atomic_llong last_recv_ms; /* monotonic ms of the last byte received */
    atomic_llong last_send_ms; /* monotonic ms of the last completed send */
    pthread_mutex_t send_lock;
    /* bytes a non-blocking flush left unsent, written before anything else (under send_lock) */
    char *wbuf;
    size_t woff, wlen, wcap;          /* unsent bytes are wbuf[woff..wlen) */
    atomic_bool backlog;              /* wbuf holds unsent bytes */
    atomic_size_t backlog_bytes;      /* wlen - woff */
    atomic_size_t queued_bytes;       /* llen */
    atomic_llong backlog_progress_ms; /* when the backlog last shrank or began */
    /* sends of a corked thread (the event loop), written by its dist_cork_flush */
    char *lbuf;
    size_t llen, lcap;
    bool lqueued; /* on the corked thread's flush list */
    /* reader state (event loop thread only) */
    char *rbuf;
    size_t rlen, rcap;
    size_t rneed; /* bytes the packet at rbuf[0] needs in all once its header is in, else 0 */
    size_t max_packet;
    size_t read_budget; /* bytes one dist_read takes at most: DIST_READ_BUDGET unless lowered */
    atomic_uint_fast64_t ignored[DIST_CTL_KINDS]; /* control messages read and not acted on */
    atomic_uint_fast64_t bytes_in;                /* read from the socket so far */
    atomic_uint_fast64_t bytes_out;               /* written to the socket so far */
    void *owner;                                  /* the event loop's context for this connection */
    /* Called (outside the send lock) on the sending thread when a send that is not corked leaves
     * bytes the socket did not take: the owner must wait for EPOLLOUT and call dist_flush. Set
     * before the connection is shared; may be NULL. */
    void (*on_backlog)(struct dist_conn *c, void *ctx);
    void *backlog_ctx;
    struct dist_conn *backlog_next; /* free for the owner: its list of such connections */
    bool backlog_listed;
} dist_conn;

/* Wraps a connected, handshaken fd (made non-blocking here). Returns NULL when out of memory
 * (the fd is then left open for the caller). max_packet bounds one incoming packet. */
dist_conn *dist_conn_new(int fd, const char *peer, size_t max_packet);
/* Adds a reference (any thread). */
void dist_conn_ref(dist_conn *c);
/* Drops a reference (any thread); the last one closes the fd and frees. */
void dist_conn_unref(dist_conn *c);
/* Marks the connection broken and shuts the socket down so the reader sees the end at once. */
void dist_conn_shutdown(dist_conn *c);

/* Reads what the socket has, up to c->read_budget bytes per call so one busy peer cannot
 * starve the others (the fd stays readable: a level-triggered loop calls again), never blocking,
 * and calls on_message for each complete message; a tick refreshes last_recv_ms and is answered
 * only if nothing was sent for a second (ei answers every tick, so answering each would loop);
 * UNLINK_ID is acknowledged (UNLINK_ID_ACK, as OTP 26+ peers expect); other control messages
 * are counted by kind (dist_ignored_count) and dropped. The read buffer
 * grows as bytes arrive, never ahead of them to the size a header announces. Event loop thread
 * only. Returns DIST_OPEN while the connection lives, else why it ended. */
dist_close_reason dist_read(dist_conn *c,
                            void (*on_message)(void *ctx, dist_conn *c, const dist_message *m),
                            void *ctx);

/* Bytes one dist_read call takes from the socket at most. */
#define DIST_READ_BUDGET ((size_t)1 << 20)

/* How many control messages of `kind` c has read and dropped (any thread). */
uint64_t dist_ignored_count(const dist_conn *c, dist_ignored_control kind);
/* Bytes read from (received) and written to (sent) the socket so far. Any thread. */
uint64_t dist_bytes_in(const dist_conn *c);
uint64_t dist_bytes_out(const dist_conn *c);

/* Corks the calling thread (an event loop that must never block): from now on its sends are only
 * queued, whole packets in order per connection, until dist_cork_flush writes them. */
void dist_cork_begin(void);
/* Writes what the calling thread queued without blocking. Bytes a socket does not take stay in
 * that connection's backlog: `on_backlog` (may be NULL) is called for it so the loop can wait for
 * EPOLLOUT and call dist_flush. Returns the number of connections left queued because another
 * thread was sending on them (flush again soon). */
size_t dist_cork_flush(void (*on_backlog)(dist_conn *c, void *ctx), void *ctx);
/* Flushes, then uncorks the calling thread and frees its queue. */
void dist_cork_end(void);
/* Writes a connection's backlog without blocking (the loop, on EPOLLOUT). Returns 1 while bytes
 * remain (or another thread is sending), 0 when it is empty, -1 on error (connection shut down). */
int dist_flush(dist_conn *c);
/* Bytes waiting to go out on c (backlog and the loop's queue): the owner's measure of a peer that
 * does not keep up. Any thread. */
size_t dist_pending_bytes(dist_conn *c);

/* Sends `msg` (an encoded term WITHOUT version byte, len bytes) to the registered name `to_name`
 * on the peer, with `from` as sender pid; `prefix`/`prefix_len` (may be 0) are bytes of encoded
 * term placed before msg (used to wrap msg in an envelope). Any thread; never waits for the
 * peer: on a corked thread the packet is queued; elsewhere it is written at once (serialized per
 * connection, after any backlog) and what the socket does not take joins the backlog (see
 * on_backlog). Returns 0, or -1 when the connection is broken or its backlog passed 256 MiB
 * (it is then marked broken and shut down). */
int dist_send_reg(dist_conn *c, const erlang_pid *from, const char *to_name, const char *prefix,
                  size_t prefix_len, const char *msg, size_t msg_len);
/* Sends MONITOR_P {19, From, ToName, Ref}: the peer answers MONITOR_P_EXIT with `ref` when the
 * process registered as `to_name` is not there (noproc) or exits. Same threading and returns. */
int dist_send_monitor(dist_conn *c, const erlang_pid *from, const char *to_name,
                      const erlang_ref *ref);
/* Sends DEMONITOR_P {20, From, ToName, Ref}: ends a monitor of dist_send_monitor. */
int dist_send_demonitor(dist_conn *c, const erlang_pid *from, const char *to_name,
                        const erlang_ref *ref);
/* Same, addressed to a pid. */
int dist_send_pid(dist_conn *c, const erlang_pid *to, const char *prefix, size_t prefix_len,
                  const char *msg, size_t msg_len);
/* Sends a tick (an empty packet) unless bytes are waiting to go out (traffic enough). Returns 0
 * or -1 as above. */
int dist_send_tick(dist_conn *c);

/* Monotonic clock in milliseconds. */
int64_t dist_now_ms(void);
/* Monotonic clock in microseconds (durations of calls and requests). Any thread. */
int64_t dist_now_us(void);
/* A 64-bit key that identifies one of OUR pids (num and serial; creation and node are ours). */
static inline uint64_t dist_pid_key(const erlang_pid *p) {
    return ((uint64_t)p->serial << 32) | p->num;
}

#endif
