/* nodex_cnode: a small library for writing Erlang C-nodes that run under nodexd (or Nodex). */
#ifndef NODEX_CNODE_H
#define NODEX_CNODE_H

/*
 * The whole API. A C-node built on it:
 *
 *     static int on_request(nodex_request *req, void *user) {
 *         ei_x_buff *r = nodex_reply_begin(req);   // encode exactly one term into r
 *         ei_x_encode_atom(r, "ok");
 *         nodex_reply_send(req);                    // fails only if the gateway is gone
 *         return 0;
 *     }
 *     int main(int argc, char **argv) {
 *         nodex_cnode_options o = {.on_request = on_request};
 *         return nodex_cnode_main(argc, argv, &o);  // 0 when the gateway lets us go
 *     }
 *
 * Protocol handled for the author: argv `<sname> <hostname> <cookie> <gateway-sname> [extra...]`
 * (cookie "" or "-" = from the environment), connect back to `<gateway-sname>@<hostname>` (or
 * publish and accept, NODEX_DIRECTION_TO), the ready line `<sname>@<hostname> ready` on stdout
 * once messages can be taken, ticks, replies to the right pid (registered send: the sender pid;
 * `{'$gen_call', {Pid, Ref}, Req}`: `{Ref, Reply}` to Pid), serialized sends, and a clean return
 * when the connection drops.
 *
 * Threads: without workers every callback runs on the thread that called nodex_cnode_run (the
 * receive thread). With `workers` = N > 0, callbacks run on N worker threads, concurrently and in
 * any order; the receive thread keeps answering ticks meanwhile. One mutex serializes every
 * write on the connection (replies, sends, and the tocks ei writes while receiving), so a large
 * incoming message delays replies until it is read. All functions here are safe to call from any
 * callback unless said otherwise.
 *
 * Memory: nothing is allocated per message that is not freed; receive and reply buffers are
 * reused. nodex_cnode_close frees everything nodex_cnode_open allocated.
 */

#include <stddef.h>
#include <stdio.h>

#include <ei.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NODEX_CNODE_VERSION "0.1.0"

/* Status codes: NODEX_OK and NODEX_DISCONNECTED are normal outcomes, negatives are errors. */
typedef enum nodex_status {
    NODEX_OK = 0,
    NODEX_DISCONNECTED = 1, /* run: the connection dropped; the normal end of a C-node (exit 0) */
    NODEX_STOPPED = 2,      /* run: nodex_cnode_stop was called (exit 0) */
    NODEX_EUSAGE = -1,      /* bad argv or options */
    NODEX_EINIT = -2,       /* ei_init or ei_connect_xinit failed */
    NODEX_ECONNECT = -3,    /* cannot connect to the gateway, listen, publish or accept */
    NODEX_ENOMEM = -4,      /* out of memory */
    NODEX_ESEND = -5,       /* a send failed: the connection is gone */
    NODEX_ENOSENDER = -6,   /* reply: the message has no reply target (a send to a pid) */
    NODEX_ESTATE = -7,      /* called at the wrong time (reply sent twice, run called twice) */
    NODEX_EIO = -8          /* the connection failed in another way than a clean drop */
} nodex_status;

/* Which side connects: BACK = the C-node connects to the gateway (Nodex default, nodexd
 * `direction: back`); TO = the C-node publishes itself in epmd and accepts one connection
 * (nodexd `direction: to`). */
typedef enum nodex_direction { NODEX_DIRECTION_BACK = 0, NODEX_DIRECTION_TO = 1 } nodex_direction;

/* How a message arrived, which decides where nodex_reply_send answers. */
typedef enum nodex_request_kind {
    NODEX_REQUEST_RAW = 0,      /* registered send: the reply goes to the sender pid as is */
    NODEX_REQUEST_GEN_CALL = 1, /* {'$gen_call', {Pid, Ref}, Req}: reply {Ref, Reply} to Pid */
    NODEX_REQUEST_SEND = 2      /* send to a pid: no sender is known, replies fail */
} nodex_request_kind;

typedef struct nodex_cnode nodex_cnode;
typedef struct nodex_worker nodex_worker;

/* One received message, owned by the library: valid only during the callback it is passed to. */
typedef struct nodex_request {
    const char *buf; /* the whole message as received, version byte first (read only) */
    int index;       /* offset in buf where the request term starts (the Req of a gen_call) */
    int len;         /* bytes in buf; a peer may send trailing bytes after the term */
    nodex_request_kind kind; /* how it arrived */
    erlang_pid from;         /* the reply target (RAW: sender; GEN_CALL: Pid); unset for SEND */
    const char *to_name;     /* registered name it was sent to; "" for a send to a pid */
    nodex_cnode *cnode;      /* the C-node it arrived on */
    /* private to the library: */
    int ref_index, ref_len; /* encoded Ref of a gen_call inside buf */
    int replied;
    ei_x_buff *reply; /* the reply buffer of the thread running the callback */
} nodex_request;

/* Handles one request. Runs on the receive thread (no workers) or a worker thread. It may reply
 * (at most once), send, or call nodex_cnode_stop. It must not keep `req` or pointers into
 * req->buf after it returns, must not call nodex_cnode_run/close, and without workers must return
 * well within the gateway's tick time (nodexd: 4 s) or the gateway declares the node down.
 * Return 0 to go on, non-zero to stop the C-node (run then returns NODEX_STOPPED). */
typedef int (*nodex_request_cb)(nodex_request *req, void *user);

/* What the library needs from the author; zero-initialize, then set on_request at least. */
typedef struct nodex_cnode_options {
    nodex_request_cb on_request; /* required */
    void *user;                  /* passed to every callback; the library never touches it */
    unsigned workers;            /* 0: callbacks on the receive thread; N: a pool of N threads */
    nodex_direction direction;   /* BACK (default) or TO */
    const char *cookie_env;      /* variable read when argv's cookie is "" or "-"; NULL =
                                    "NODEX_COOKIE" */
    FILE *ready_stream;          /* where the ready line goes; NULL = stdout */
    const char *program;         /* prefix of nodex_cnode_main's messages; NULL = argv[0] */
} nodex_cnode_options;

/* The parsed argv convention. Every pointer points into argv or the environment (not owned). */
typedef struct nodex_args {
    const char *sname;         /* our alive name */
    const char *hostname;      /* host part of our node name and the gateway's */
    const char *cookie;        /* argv[3], or the cookie_env variable when argv[3] is "" or "-" */
    const char *gateway_sname; /* the gateway's alive name */
    int extra_argc;            /* arguments after the four, for the author */
    char **extra_argv;
} nodex_args;

/* Parses `<sname> <hostname> <cookie> <gateway-sname> [extra...]` (argv[0] is the program).
 * cookie_env NULL means "NODEX_COOKIE". On error returns NODEX_EUSAGE and writes a one-line
 * reason into err (err may be NULL). Never allocates. */
int nodex_args_parse(nodex_args *out, int argc, char **argv, const char *cookie_env, char *err,
                     size_t err_len);

/* Becomes the node <sname>@<hostname>; BACK connects to the gateway, TO listens and publishes.
 * Prints nothing. Sets SIGPIPE to ignored if it is at its default (a send to a gateway that went
 * away must fail, not kill the process). On success *out is a new C-node the caller frees with
 * nodex_cnode_close; `args` and `opts` are copied (the strings they point to must outlive the
 * C-node). On error returns a negative status, *out is NULL and err says why. Call from one thread;
 * calls ei_init. */
int nodex_cnode_open(nodex_cnode **out, const nodex_args *args, const nodex_cnode_options *opts,
                     char *err, size_t err_len);

/* Prints the ready line, (TO) accepts the gateway, then serves messages until the connection
 * drops (NODEX_DISCONNECTED), nodex_cnode_stop or `init ! {stop, stop}` (NODEX_STOPPED) or an
 * error (negative); messages to the registered name `init` never reach callbacks. Blocks
 * the calling thread, which becomes the receive thread; starts and joins the workers. Call once.
 * Returning rather than exiting leaves the exit status to the caller: exit 0 on a drop. */
int nodex_cnode_run(nodex_cnode *cn);

/* Asks run to return NODEX_STOPPED soon; safe from any thread and from callbacks. Requests
 * already handed to workers still finish. */
void nodex_cnode_stop(nodex_cnode *cn);

/* Closes the connection and frees the C-node. Not from a callback, and not while run runs. */
void nodex_cnode_close(nodex_cnode *cn);

/* Our full node name, "<sname>@<hostname>" (owned by cn). */
const char *nodex_cnode_node_name(const nodex_cnode *cn);

/* The ei node state, for ei calls that need one (e.g. ei_make_ref). Owned by cn; not thread
 * safe: serialize your own use of it. */
ei_cnode *nodex_cnode_ei(nodex_cnode *cn);

/* parse + open + run + close, for main(): messages go to stderr, and SIGTERM/SIGINT handlers are
 * installed that stop the C-node (nodexd stops C-nodes with SIGTERM). Returns a process exit
 * status: 0 when the connection dropped or the C-node was stopped, 2 on bad usage, 1 on other
 * errors. Call once per process. */
int nodex_cnode_main(int argc, char **argv, const nodex_cnode_options *opts);

/* Starts the reply to req: rewinds the calling thread's reply buffer (owned by the library),
 * writes the version byte and, for a gen_call, the `{Ref,` envelope, and returns it. Encode
 * exactly one term into it with ei_x_encode_*, then call nodex_reply_send. Calling it again
 * starts over. Valid only inside the callback that received req. */
ei_x_buff *nodex_reply_begin(nodex_request *req);

/* Sends what was encoded since nodex_reply_begin to the reply target. At most once per
 * request: NODEX_ESTATE after that, NODEX_ENOSENDER for a SEND, NODEX_ESEND if the connection
 * is gone (run then returns NODEX_DISCONNECTED on its own). Serialized with every other send. */
int nodex_reply_send(nodex_request *req);

/* Replies with one already-encoded term: `term` (no version byte, owned by the caller, only read)
 * of `len` bytes; wrapped for a gen_call. Same rules as nodex_reply_send. */
int nodex_reply_term(nodex_request *req, const char *term, int len);

/* Replies with the atom `atom`. Same rules as nodex_reply_send. */
int nodex_reply_atom(nodex_request *req, const char *atom);

/* Replies with {error, Reason}, Reason the atom `reason`. Same rules as nodex_reply_send. */
int nodex_reply_error(nodex_request *req, const char *reason);

/* Sends the encoded message buf[0..len) (version byte first; owned by the caller, only read) to
 * `to`. Any thread; serialized with every other send on cn. NODEX_ESEND if the connection is gone
 * or not yet up. */
int nodex_send(nodex_cnode *cn, const erlang_pid *to, const char *buf, int len);

/* A static English description of a status. */
const char *nodex_strerror(int status);

#ifdef __cplusplus
}
#endif

#endif /* NODEX_CNODE_H */
