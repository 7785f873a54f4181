/* example_cnode: a minimal Nodex-style C-node on plain ei, annotated as a tutorial. */

/*
 * What it does: {ping, T} -> {pong, T}; anything else -> {error, unknown_call}.
 *
 * Lifecycle (the Nodex convention that nodexd's default argv template follows):
 *   1. nodexd starts us as `example_cnode <sname> <hostname> <cookie> <gateway-sname>`;
 *   2. we become the node <sname>@<hostname> and connect BACK to <gateway-sname>@<hostname>;
 *   3. we print "<sname>@<hostname> ready" so nodexd knows the connection is up;
 *   4. we serve messages sent to our registered name until the connection drops, then exit 0.
 *
 * Only the ei_* API is used: the legacy erl_* API (erl_interface.h) was removed in OTP 23.
 */

#include <arpa/inet.h> /* inet_pton: the IP address handed to ei_connect_xinit */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ei.h> /* the whole ei API: node setup, connections, term encoding and decoding */

static void usage(FILE *out) {
    fprintf(out, "usage: example_cnode <sname> <hostname> <cookie> <gateway-sname>\n"
                 "  Connects to <gateway-sname>@<hostname> as <sname>@<hostname>, prints\n"
                 "  \"<sname>@<hostname> ready\" and answers {ping, T} with {pong, T}.\n");
}

/* Setup errors are fatal: say why on stderr and exit 1, which nodexd reports as "exit status 1". */
static void die(const char *what) {
    fprintf(stderr, "example_cnode: %s (erl_errno %d)\n", what, erl_errno);
    exit(1);
}

/* Builds the reply to one request. `req` holds the message with its version byte, as received. */
static void handle(const ei_x_buff *req, ei_x_buff *reply) {
    int index = 0, version = 0, arity = 0;
    char atom[MAXATOMLEN_UTF8]; /* room for the longest atom, in UTF-8 */

    /* Every reply starts afresh in the reused buffer: rewind it, then the version byte (131). */
    reply->index = 0;
    ei_x_encode_version(reply);

    /* Decode step by step; each ei_decode_* returns -1 when the term is not what we expect. */
    if (ei_decode_version(req->buff, &index, &version) == 0 &&
        ei_decode_tuple_header(req->buff, &index, &arity) == 0 && arity == 2 &&
        ei_decode_atom(req->buff, &index, atom) == 0 && strcmp(atom, "ping") == 0) {
        /* T can be any term. Rather than decode and re-encode it (lossy for some types), find
         * where it ends with ei_skip_term and copy its encoded bytes as they are. */
        int start = index;
        if (ei_skip_term(req->buff, &index) == 0) {
            ei_x_encode_tuple_header(reply, 2);
            ei_x_encode_atom(reply, "pong");
            ei_x_append_buf(reply, req->buff + start, index - start);
            return;
        }
    }
    /* Anything else, including a malformed ping: a well-formed error term. */
    ei_x_encode_tuple_header(reply, 2);
    ei_x_encode_atom(reply, "error");
    ei_x_encode_atom(reply, "unknown_call");
}

int main(int argc, char **argv) {
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc != 5) {
        usage(stderr);
        return 1;
    }
    /* argv: our short name, our host, the cookie, the gateway's short name (Nodex order). */
    const char *sname = argv[1], *hostname = argv[2], *cookie = argv[3], *gateway = argv[4];

    char nodename[MAXNODELEN + 1], gateway_node[MAXNODELEN + 1];
    if (snprintf(nodename, sizeof nodename, "%s@%s", sname, hostname) >= (int)sizeof nodename ||
        snprintf(gateway_node, sizeof gateway_node, "%s@%s", gateway, hostname) >=
            (int)sizeof gateway_node) {
        fprintf(stderr, "example_cnode: node name too long\n");
        return 1;
    }

    /* ei_init must come first: it sets up ei's internals (and its socket layer). */
    if (ei_init() != 0) die("ei_init failed");

    /* Our own IP address only matters as the node's identity, so for a host name that is not a
     * literal address, loopback is good enough. */
    struct in_addr addr;
    if (inet_pton(AF_INET, hostname, &addr) != 1) inet_pton(AF_INET, "127.0.0.1", &addr);

    /* creation tells incarnations of the same node name apart: pids of an old incarnation must not
     * reach a new one. Any non-zero value that differs between runs will do. */
    unsigned creation = ((unsigned)time(NULL) ^ ((unsigned)getpid() << 8)) | 1u;

    /* ei_connect_xinit (not ei_connect_init) sets host, alive part and full name exactly as given.
     */
    ei_cnode ec;
    if (ei_connect_xinit(&ec, hostname, sname, nodename, &addr, cookie, creation) < 0)
        die("ei_connect_xinit failed");

    /* Connect back to the gateway: ei asks epmd (honouring ERL_EPMD_PORT) for its port, then runs
     * the distribution handshake with the cookie. The result is a plain socket descriptor. */
    int fd = ei_connect(&ec, gateway_node);
    if (fd < 0) die("cannot connect to the gateway");

    /* The ready line tells the supervisor that we are connected. Flush it: stdout is a pipe, hence
     * fully buffered, and a line stuck in our buffer would look like a C-node that never started.
     */
    printf("%s ready\n", nodename);
    fflush(stdout);

    /* Two growable buffers, allocated once and reused for every message: ei_xreceive_msg grows
     * `in` as needed, and handle() rewinds `out`. */
    ei_x_buff in, out;
    ei_x_new(&in);
    ei_x_new(&out);

    for (;;) {
        erlang_msg msg;
        /* Blocks until one whole message arrives. ei answers the peer's ticks by itself inside this
         * call and then returns ERL_TICK, which only means "still alive". */
        int rc = ei_xreceive_msg(fd, &msg, &in);
        if (rc == ERL_TICK) continue;
        if (rc == ERL_ERROR) break; /* the connection dropped: the gateway is gone or let us go */

        /* A registered send ({nil, Node} ! Request in Erlang) carries the sender's pid in msg.from;
         * that is where the reply goes. In a send to a pid (ERL_SEND) only msg.to is valid and
         * msg.from is garbage, so a raw C-node like this one serves registered sends only. */
        if (msg.msgtype != ERL_REG_SEND) continue;

        handle(&in, &out);
        if (ei_send(fd, &msg.from, out.buff, out.index) < 0) break;
    }

    /* A dropped connection is the normal way to stop: exit 0 so that supervisors with a transient
     * restart policy treat it as a clean shutdown. */
    ei_x_free(&in);
    ei_x_free(&out);
    close(fd);
    return 0;
}
