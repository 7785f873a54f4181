/* test_cnode: one purpose-built C-node, well-behaved or misbehaving by argv[5], for integration
 * tests. */

/*
 * usage: test_cnode <sname> <hostname> <cookie> <gateway-sname> [mode] [arg]
 * modes: serve (default), serve_to, never_ready, exit_before_ready, signal_before_ready,
 *        slow_ready [ms], ready_then_no_connect, serve_once (exits 0 after its first reply),
 *        exit_if_exists PATH (exits 3 before the ready line while PATH exists, else serves).
 * Requests understood while serving (the reply goes to the sender unless said otherwise):
 *   {ping, T} -> {pong, T}            {sleep, Ms, T} -> {slept, T} after Ms ms
 *   {spin, Us, T} -> {spun, T} after Us microseconds of busy CPU (work that needs a core)
 *   crash -> abort()                  {exit, Code} -> exit(Code)        hang -> SIGSTOP itself
 *   garbage -> bytes that are no term {noise, N, T} -> N x {noise, I}, then {reply, {pong, T}}
 *   {node_tagged, T} -> {other, 1}, then {'<own node>', {pong, T}}
 *   {unsolicited, N} -> N messages to pids nobody uses, then ok
 *   {flood, N, Size} -> N binaries of Size bytes, then {flooded, N}
 *   {trailing, T} -> {pong, T} plus 8 junk bytes   {twice, T} -> {pong, T} twice
 *   {reply_to, Pid, T} -> {pong, T} to Pid         {big, Size} -> binary of Size bytes
 *   {print, Lines, Bytes} -> printed, after Lines stdout lines of Bytes bytes each
 *   {exit2, T} -> an EXIT2 control message to the caller, then {pong, T}
 *   {'$gen_call', {Pid, Ref}, Req} -> Req as above, replies {Ref, Reply} to Pid
 *   anything else -> {error, unknown_call}
 */

#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ei.h>

/* Where replies of the current request go, and the gen_call reference that wraps them. */
typedef struct req_ctx {
    int fd;
    ei_cnode *ec;
    erlang_pid to;
    const char *ref; /* encoded Ref of a gen_call, NULL for raw */
    int ref_len;
} req_ctx;

static ei_x_buff out; /* reused for every outgoing message */

static void say(const char *fmt, const char *arg) {
    printf("test_cnode: ");
    printf(fmt, arg);
    printf("\n");
    fflush(stdout);
}

static void die(const char *what) {
    fprintf(stderr, "test_cnode: %s (erl_errno %d, errno %d)\n", what, erl_errno, errno);
    exit(1);
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Keeps the CPU busy for `us` microseconds. */
static void spin_us(long us) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000000L + (t.tv_nsec - t0.tv_nsec) / 1000 < us);
}

/* A plain message (no gen_call wrapping). */
static void msg_begin(void) {
    out.index = 0;
    ei_x_encode_version(&out);
}

/* A reply: wrapped as {Ref, Reply} for gen_call; the caller encodes Reply next. */
static void reply_begin(const req_ctx *c) {
    msg_begin();
    if (c->ref) {
        ei_x_encode_tuple_header(&out, 2);
        ei_x_append_buf(&out, c->ref, c->ref_len);
    }
}

/* A failed send means the connection is gone: that ends a C-node, with status 0. */
static void send_to(const req_ctx *c, const erlang_pid *to) {
    erlang_pid dest = *to; /* ei_send takes a non-const pid */
    if (ei_send(c->fd, &dest, out.buff, out.index) < 0) exit(0);
}

/* Encodes {Tag, T} where T's encoded bytes are copied verbatim. */
static void encode_tagged(const char *tag, const char *buf, int start, int end) {
    ei_x_encode_tuple_header(&out, 2);
    ei_x_encode_atom(&out, tag);
    ei_x_append_buf(&out, buf + start, end - start);
}

static void encode_filled_binary(long size, char fill) {
    char *bin = malloc(size > 0 ? (size_t)size : 1);
    if (!bin) die("out of memory");
    memset(bin, fill, (size_t)size);
    ei_x_encode_binary(&out, bin, size);
    free(bin);
}

/* Skips one term at *index, recording where it starts and ends. */
static int term_span(const char *buf, int *index, int *start, int *end) {
    *start = *index;
    if (ei_skip_term(buf, index) < 0) return -1;
    *end = *index;
    return 0;
}

static void reply_unknown(const req_ctx *c) {
    reply_begin(c);
    ei_x_encode_tuple_header(&out, 2);
    ei_x_encode_atom(&out, "error");
    ei_x_encode_atom(&out, "unknown_call");
    send_to(c, &c->to);
}

/* Ticks received from the gateway: `ticks` tells a test that time-driven ticking happened. */
static long ticks_received;

/* Handles the request term at buf[*index]. */
static void handle(const req_ctx *c, const char *buf, int *index) {
    int type = 0, size = 0, arity = 0, s = 0, e = 0;
    char tag[MAXATOMLEN_UTF8];
    long n = 0, m = 0;

    if (ei_get_type(buf, index, &type, &size) < 0) return reply_unknown(c);
    if (type == ERL_ATOM_EXT || type == ERL_SMALL_ATOM_EXT || type == ERL_ATOM_UTF8_EXT ||
        type == ERL_SMALL_ATOM_UTF8_EXT) {
        if (ei_decode_atom(buf, index, tag) < 0) return reply_unknown(c);
        if (strcmp(tag, "crash") == 0) abort();
        if (strcmp(tag, "hang") == 0) {
            raise(SIGSTOP);
            return;
        }
        if (strcmp(tag, "ticks") == 0) {
            reply_begin(c);
            ei_x_encode_tuple_header(&out, 2);
            ei_x_encode_atom(&out, "ticks");
            ei_x_encode_long(&out, ticks_received);
            send_to(c, &c->to);
            return;
        }
        if (strcmp(tag, "garbage") == 0) {
            /* A version byte, then tags no decoder knows. */
            static const char junk[] = {(char)131, (char)0xff, (char)0xfe, (char)0xfd, 0, 1, 2, 3};
            erlang_pid dest = c->to;
            if (ei_send(c->fd, &dest, (char *)junk, sizeof junk) < 0) exit(0);
            return;
        }
        return reply_unknown(c);
    }
    if (ei_decode_tuple_header(buf, index, &arity) < 0 || arity < 2 ||
        ei_decode_atom(buf, index, tag) < 0)
        return reply_unknown(c);

    if (strcmp(tag, "ping") == 0 && arity == 2) {
        if (term_span(buf, index, &s, &e) < 0) return reply_unknown(c);
        reply_begin(c);
        encode_tagged("pong", buf, s, e);
        send_to(c, &c->to);
    } else if (strcmp(tag, "exit2") == 0 && arity == 2) {
        /* an EXIT2 control message to the caller first (nodexd counts it, acts on nothing) */
        if (term_span(buf, index, &s, &e) < 0) return reply_unknown(c);
        ei_x_buff ctl;
        ei_x_new_with_version(&ctl);
        ei_x_encode_tuple_header(&ctl, 4); /* {EXIT2, From, To, Reason}, written by hand */
        ei_x_encode_long(&ctl, 8);
        ei_x_encode_pid(&ctl, ei_self(c->ec));
        ei_x_encode_pid(&ctl, &c->to);
        ei_x_encode_atom(&ctl, "bye");
        uint32_t plen = htonl((uint32_t)ctl.index + 1);
        int ok = write(c->fd, &plen, 4) == 4 && write(c->fd, "p", 1) == 1 &&
                 write(c->fd, ctl.buff, (size_t)ctl.index) == ctl.index;
        ei_x_free(&ctl);
        if (!ok) exit(0);
        reply_begin(c);
        encode_tagged("pong", buf, s, e);
        send_to(c, &c->to);
    } else if ((strcmp(tag, "sleep") == 0 || strcmp(tag, "spin") == 0) && arity == 3) {
        if (ei_decode_long(buf, index, &m) < 0 || term_span(buf, index, &s, &e) < 0)
            return reply_unknown(c);
        int is_sleep = tag[1] == 'l'; /* "sleep", else "spin" */
        if (is_sleep)
            sleep_ms(m);
        else
            spin_us(m);
        reply_begin(c);
        encode_tagged(is_sleep ? "slept" : "spun", buf, s, e);
        send_to(c, &c->to);
    } else if (strcmp(tag, "wait_file") == 0 && arity == 3) {
        /* {wait_file, Path, Tag}: replies {waited, Tag} once Path exists, so a test decides when
         * a slow call ends instead of betting on a duration. */
        char path[4096];
        long path_len = 0;
        if (ei_get_type(buf, index, &type, &size) < 0 || type != ERL_BINARY_EXT ||
            size >= (int)sizeof path || ei_decode_binary(buf, index, path, &path_len) < 0)
            return reply_unknown(c);
        path[path_len] = '\0';
        if (term_span(buf, index, &s, &e) < 0) return reply_unknown(c);
        while (access(path, F_OK) != 0) sleep_ms(5);
        reply_begin(c);
        encode_tagged("waited", buf, s, e);
        send_to(c, &c->to);
    } else if (strcmp(tag, "exit") == 0 && arity == 2) {
        if (ei_decode_long(buf, index, &n) < 0) return reply_unknown(c);
        exit((int)n);
    } else if (strcmp(tag, "noise") == 0 && arity == 3) {
        if (ei_decode_long(buf, index, &n) < 0 || term_span(buf, index, &s, &e) < 0)
            return reply_unknown(c);
        for (long i = 1; i <= n; i++) {
            msg_begin();
            ei_x_encode_tuple_header(&out, 2);
            ei_x_encode_atom(&out, "noise");
            ei_x_encode_long(&out, i);
            send_to(c, &c->to);
        }
        reply_begin(c);
        ei_x_encode_tuple_header(&out, 2);
        ei_x_encode_atom(&out, "reply");
        encode_tagged("pong", buf, s, e);
        send_to(c, &c->to);
    } else if (strcmp(tag, "node_tagged") == 0 && arity == 2) {
        if (term_span(buf, index, &s, &e) < 0) return reply_unknown(c);
        msg_begin();
        ei_x_encode_tuple_header(&out, 2);
        ei_x_encode_atom(&out, "other");
        ei_x_encode_long(&out, 1);
        send_to(c, &c->to);
        reply_begin(c);
        ei_x_encode_tuple_header(&out, 2);
        ei_x_encode_atom(&out, ei_thisnodename(c->ec));
        encode_tagged("pong", buf, s, e);
        send_to(c, &c->to);
    } else if (strcmp(tag, "unsolicited") == 0 && arity == 2) {
        if (ei_decode_long(buf, index, &n) < 0) return reply_unknown(c);
        for (long i = 0; i < n; i++) {
            /* Same node and creation as the caller's pid, but a serial thousands of wraps of
             * ei_make_pid's 15-bit num away: no call uses it, and Erlang still accepts it (a num
             * over 15 bits makes a real Erlang node drop the link as "corrupted"). */
            erlang_pid stray = c->to;
            stray.num = (c->to.num + 1000u + (unsigned)i) & 0x7fffu;
            stray.serial = (c->to.serial + 4096u) & 0x1fffu;
            msg_begin();
            ei_x_encode_tuple_header(&out, 2);
            ei_x_encode_atom(&out, "unsolicited");
            ei_x_encode_long(&out, i);
            send_to(c, &stray);
        }
        reply_begin(c);
        ei_x_encode_atom(&out, "ok");
        send_to(c, &c->to);
    } else if (strcmp(tag, "flood") == 0 && arity == 3) {
        if (ei_decode_long(buf, index, &n) < 0 || ei_decode_long(buf, index, &m) < 0 || m < 0)
            return reply_unknown(c);
        for (long i = 0; i < n; i++) {
            msg_begin();
            encode_filled_binary(m, 'f');
            send_to(c, &c->to);
        }
        reply_begin(c);
        ei_x_encode_tuple_header(&out, 2);
        ei_x_encode_atom(&out, "flooded");
        ei_x_encode_long(&out, n);
        send_to(c, &c->to);
    } else if (strcmp(tag, "trailing") == 0 && arity == 2) {
        if (term_span(buf, index, &s, &e) < 0) return reply_unknown(c);
        reply_begin(c);
        encode_tagged("pong", buf, s, e);
        ei_x_append_buf(&out, "JUNKJUNK", 8);
        send_to(c, &c->to);
    } else if (strcmp(tag, "twice") == 0 && arity == 2) {
        if (term_span(buf, index, &s, &e) < 0) return reply_unknown(c);
        for (int i = 0; i < 2; i++) {
            reply_begin(c);
            encode_tagged("pong", buf, s, e);
            send_to(c, &c->to);
        }
    } else if (strcmp(tag, "reply_to") == 0 && arity == 3) {
        erlang_pid pid;
        if (ei_decode_pid(buf, index, &pid) < 0 || term_span(buf, index, &s, &e) < 0)
            return reply_unknown(c);
        reply_begin(c);
        encode_tagged("pong", buf, s, e);
        send_to(c, &pid);
    } else if (strcmp(tag, "print") == 0 && arity == 3) {
        /* {print, Lines, Bytes}: writes Lines stdout lines of Bytes 'o's, then replies printed */
        long lines, bytes;
        if (ei_decode_long(buf, index, &lines) < 0 || ei_decode_long(buf, index, &bytes) < 0 ||
            lines < 0 || bytes < 0 || bytes > (1 << 20))
            return reply_unknown(c);
        char *line = malloc((size_t)bytes + 1);
        if (!line) return reply_unknown(c);
        memset(line, 'o', (size_t)bytes);
        line[bytes] = '\n';
        for (long k = 0; k < lines; k++) fwrite(line, 1, (size_t)bytes + 1, stdout);
        fflush(stdout);
        free(line);
        reply_begin(c);
        ei_x_encode_atom(&out, "printed");
        send_to(c, &c->to);
    } else if (strcmp(tag, "big") == 0 && arity == 2) {
        if (ei_decode_long(buf, index, &n) < 0 || n < 0) return reply_unknown(c);
        reply_begin(c);
        encode_filled_binary(n, 'b');
        send_to(c, &c->to);
    } else if (strcmp(tag, "$gen_call") == 0 && arity == 3 && !c->ref) {
        /* {'$gen_call', {Pid, Ref}, Req}: Ref is any term, copied as it came. */
        req_ctx gc = *c;
        int a2 = 0;
        if (ei_decode_tuple_header(buf, index, &a2) < 0 || a2 != 2 ||
            ei_decode_pid(buf, index, &gc.to) < 0 || term_span(buf, index, &s, &e) < 0)
            return reply_unknown(c);
        gc.ref = buf + s;
        gc.ref_len = e - s;
        handle(&gc, buf, index);
    } else {
        reply_unknown(c);
    }
}

static bool serve_once; /* mode serve_once: one message handled, then exit 0 */

/* Serves messages on fd until the connection drops, then exits 0. */
static void serve(ei_cnode *ec, int fd) {
    ei_x_buff in;
    ei_x_new(&in);
    ei_x_new(&out);
    for (;;) {
        erlang_msg msg;
        int rc = ei_xreceive_msg(fd, &msg, &in);
        if (rc == ERL_TICK) {
            ++ticks_received;
            continue;
        }
        if (rc == ERL_ERROR) {
            say("connection closed (%s), exiting", "ERL_ERROR");
            exit(0);
        }
        int index = 0, version = 0;
        if (ei_decode_version(in.buff, &index, &version) < 0) continue;
        req_ctx c = {.fd = fd, .ec = ec, .to = msg.from};
        if (msg.msgtype == ERL_REG_SEND) {
            handle(&c, in.buff, &index);
        } else if (msg.msgtype == ERL_SEND) {
            /* msg.from is garbage here; only a gen_call names its reply pid in the message. */
            int probe = index, arity = 0;
            char tag[MAXATOMLEN_UTF8];
            if (ei_decode_tuple_header(in.buff, &probe, &arity) == 0 && arity == 3 &&
                ei_decode_atom(in.buff, &probe, tag) == 0 && strcmp(tag, "$gen_call") == 0)
                handle(&c, in.buff, &index);
        }
        if (serve_once && (msg.msgtype == ERL_REG_SEND || msg.msgtype == ERL_SEND)) {
            say("served one message; exiting%s", "");
            exit(0);
        }
    }
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "--help") == 0) {
        printf("usage: test_cnode <sname> <hostname> <cookie> <gateway-sname> [mode] [arg]\n");
        return 0;
    }
    if (argc < 5) {
        fprintf(stderr, "usage: test_cnode <sname> <hostname> <cookie> <gateway-sname> [mode]\n");
        return 1;
    }
    const char *sname = argv[1], *host = argv[2], *cookie = argv[3], *gateway = argv[4];
    const char *mode = argc > 5 ? argv[5] : "serve";
    char node[MAXNODELEN + 1], gw[MAXNODELEN + 1];
    snprintf(node, sizeof node, "%s@%s", sname, host);
    snprintf(gw, sizeof gw, "%s@%s", gateway, host);
    say("mode %s", mode);
    fprintf(stderr, "test_cnode: %s starting (stderr)\n", node);

    if (strcmp(mode, "never_ready") == 0) {
        printf("starting\n");
        printf("a line ending in CRLF\r\n");
        printf("%s almost ready\n", node);
        fflush(stdout);
        fprintf(stderr, "never_ready: stderr line\n");
        for (;;) pause();
    }
    if (strcmp(mode, "exit_before_ready") == 0) {
        say("exiting with status 3 before the ready line%s", "");
        exit(3);
    }
    if (strcmp(mode, "signal_before_ready") == 0) {
        say("raising a signal before the ready line%s", "");
#ifdef __SANITIZE_ADDRESS__
        abort(); /* ASan would catch SIGSEGV and turn it into an exit status */
#else
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
        abort();
#endif
    }
    if (strcmp(mode, "ready_then_no_connect") == 0) {
        printf("%s ready\n", node);
        fflush(stdout);
        for (;;) pause();
    }
    if (strcmp(mode, "exit_if_exists") == 0) {
        if (argc > 6 && access(argv[6], F_OK) == 0) {
            say("%s exists: exiting with status 3", argv[6]);
            exit(3);
        }
        mode = "serve";
    }
    if (strcmp(mode, "serve_once") == 0) {
        serve_once = true;
        mode = "serve";
    }
    if (strcmp(mode, "slow_ready") == 0) {
        long ms = argc > 6 ? atol(argv[6]) : 1000;
        sleep_ms(ms);
    } else if (strcmp(mode, "serve") != 0 && strcmp(mode, "serve_to") != 0) {
        fprintf(stderr, "test_cnode: unknown mode %s\n", mode);
        return 1;
    }

    if (ei_init() != 0) die("ei_init failed");
    struct in_addr addr;
    if (inet_pton(AF_INET, host, &addr) != 1) inet_pton(AF_INET, "127.0.0.1", &addr);
    unsigned creation = ((unsigned)time(NULL) ^ ((unsigned)getpid() << 8)) | 1u;
    ei_cnode ec;
    if (ei_connect_xinit(&ec, host, sname, node, &addr, cookie, creation) < 0)
        die("ei_connect_xinit failed");

    int fd;
    if (strcmp(mode, "serve_to") == 0) {
        /* "to" direction: publish ourselves and wait for the gateway to connect to us. */
        struct in_addr lo;
        inet_pton(AF_INET, "127.0.0.1", &lo);
        int port = 0;
        int lfd = ei_xlisten(&ec, &lo, &port, 5);
        if (lfd < 0) die("ei_xlisten failed");
        int epmd_fd = ei_publish(&ec, port); /* stays open: closing it unregisters us */
        if (epmd_fd < 0) die("ei_publish failed");
        printf("test_cnode: listening on 127.0.0.1:%d\n", port);
        printf("%s ready\n", node);
        fflush(stdout);
        ErlConnect conn;
        fd = ei_accept(&ec, lfd, &conn);
        if (fd < 0) die("ei_accept failed");
        close(lfd);
        say("accepted %s", conn.nodename);
    } else {
        fd = ei_connect(&ec, gw);
        if (fd < 0) die("ei_connect to the gateway failed");
        printf("%s ready\n", node);
        fflush(stdout);
    }
    serve(&ec, fd);
    return 0;
}
