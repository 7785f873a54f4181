/* test_nodex_cnode: unit tests of the C-node SDK: argv, envelopes, replies, and a loopback gateway.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nodex_cnode.h"
#include "nodex_cnode_internal.h"

#define HOST   "127.0.0.1"
#define COOKIE "SDKTESTCOOKIE"

/* ------------------------------------------------------------------------------------------ */
/* argv */

static int parse(nodex_args *a, const char *cookie_env, char *err, int n, ...) {
    char *argv[16];
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) argv[i] = va_arg(ap, char *); // NOLINT(clang-analyzer-valist.*)
    va_end(ap);
    argv[n] = NULL;
    static char *keep[16]; /* the parsed pointers point into argv */
    memcpy(keep, argv, sizeof argv);
    return nodex_args_parse(a, n, keep, cookie_env, err, 256);
}

static void test_args_ok(void **state) {
    (void)state;
    nodex_args a;
    char err[256] = "";
    assert_int_equal(parse(&a, NULL, err, 5, "prog", "cn", "127.0.0.1", "ck", "gw"), NODEX_OK);
    assert_string_equal(a.sname, "cn");
    assert_string_equal(a.hostname, "127.0.0.1");
    assert_string_equal(a.cookie, "ck");
    assert_string_equal(a.gateway_sname, "gw");
    assert_int_equal(a.extra_argc, 0);
    assert_int_equal(parse(&a, NULL, err, 7, "p", "cn", "h", "ck", "gw", "to", "x"), NODEX_OK);
    assert_int_equal(a.extra_argc, 2);
    assert_string_equal(a.extra_argv[0], "to");
    assert_string_equal(a.extra_argv[1], "x");
}

static void test_args_errors(void **state) {
    (void)state;
    nodex_args a;
    char err[256] = "";
    assert_int_equal(parse(&a, NULL, err, 4, "p", "cn", "h", "ck"), NODEX_EUSAGE);
    assert_non_null(strstr(err, "got 3 arguments"));
    assert_int_equal(parse(&a, NULL, err, 1, "p"), NODEX_EUSAGE);
    assert_int_equal(parse(&a, NULL, err, 5, "p", "", "h", "ck", "gw"), NODEX_EUSAGE);
    assert_non_null(strstr(err, "bad sname"));
    assert_int_equal(parse(&a, NULL, err, 5, "p", "a@b", "h", "ck", "gw"), NODEX_EUSAGE);
    assert_int_equal(parse(&a, NULL, err, 5, "p", "cn", "", "ck", "gw"), NODEX_EUSAGE);
    assert_non_null(strstr(err, "bad hostname"));
    assert_int_equal(parse(&a, NULL, err, 5, "p", "cn", "h", "ck", ""), NODEX_EUSAGE);
    assert_non_null(strstr(err, "bad gateway sname"));
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(parse(&a, NULL, err, 5, "p", longname, "h", "ck", "gw"), NODEX_EUSAGE);
    longname[200] = '\0';
    assert_int_equal(parse(&a, NULL, err, 5, "p", longname, longname, "ck", "gw"), NODEX_EUSAGE);
    assert_non_null(strstr(err, "longer than"));
    /* NULL err is allowed */
    char *argv[] = {"p", NULL};
    assert_int_equal(nodex_args_parse(&a, 1, argv, NULL, NULL, 0), NODEX_EUSAGE);
}

static void test_args_cookie_from_env(void **state) {
    (void)state;
    nodex_args a;
    char err[256] = "";
    setenv("NODEX_COOKIE", "FROMENV", 1);
    assert_int_equal(parse(&a, NULL, err, 5, "p", "cn", "h", "-", "gw"), NODEX_OK);
    assert_string_equal(a.cookie, "FROMENV");
    assert_int_equal(parse(&a, NULL, err, 5, "p", "cn", "h", "", "gw"), NODEX_OK);
    assert_string_equal(a.cookie, "FROMENV");
    /* an explicit cookie wins over the environment */
    assert_int_equal(parse(&a, NULL, err, 5, "p", "cn", "h", "ARGV", "gw"), NODEX_OK);
    assert_string_equal(a.cookie, "ARGV");
    /* a configurable variable */
    setenv("MY_CNODE_COOKIE", "MINE", 1);
    assert_int_equal(parse(&a, "MY_CNODE_COOKIE", err, 5, "p", "cn", "h", "-", "gw"), NODEX_OK);
    assert_string_equal(a.cookie, "MINE");
    unsetenv("MY_CNODE_COOKIE");
    assert_int_equal(parse(&a, "MY_CNODE_COOKIE", err, 5, "p", "cn", "h", "-", "gw"), NODEX_EUSAGE);
    assert_non_null(strstr(err, "$MY_CNODE_COOKIE is not set"));
    setenv("NODEX_COOKIE", "", 1);
    assert_int_equal(parse(&a, NULL, err, 5, "p", "cn", "h", "", "gw"), NODEX_EUSAGE);
    unsetenv("NODEX_COOKIE");
}

/* ------------------------------------------------------------------------------------------ */
/* envelopes and replies, without a connection */

static erlang_pid test_pid(unsigned num) {
    erlang_pid p;
    memset(&p, 0, sizeof p);
    strcpy(p.node, "gw@127.0.0.1");
    p.num = num;
    p.serial = 0;
    p.creation = 7;
    return p;
}

static erlang_ref test_ref(unsigned n) {
    erlang_ref r;
    memset(&r, 0, sizeof r);
    strcpy(r.node, "gw@127.0.0.1");
    r.len = 3;
    r.n[0] = n;
    r.n[1] = 2;
    r.n[2] = 3;
    r.creation = 7;
    return r;
}

/* {ping, 42}, optionally inside {'$gen_call', {Pid, Ref}, _}, plus `trailing` junk bytes. */
static void encode_ping(ei_x_buff *x, const erlang_pid *pid, const erlang_ref *ref, int trailing) {
    ei_x_new_with_version(x);
    if (pid) {
        ei_x_encode_tuple_header(x, 3);
        ei_x_encode_atom(x, "$gen_call");
        ei_x_encode_tuple_header(x, 2);
        ei_x_encode_pid(x, pid);
        ei_x_encode_ref(x, ref);
    }
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "ping");
    ei_x_encode_long(x, 42);
    for (int i = 0; i < trailing; i++) ei_x_append_buf(x, "\xff", 1);
}

static void assert_ping_at(const nodex_request *req) {
    int i = req->index, arity = 0;
    long n = 0;
    char atom[MAXATOMLEN_UTF8];
    assert_int_equal(ei_decode_tuple_header(req->buf, &i, &arity), 0);
    assert_int_equal(arity, 2);
    assert_int_equal(ei_decode_atom(req->buf, &i, atom), 0);
    assert_string_equal(atom, "ping");
    assert_int_equal(ei_decode_long(req->buf, &i, &n), 0);
    assert_int_equal(n, 42);
}

static void test_decode_raw(void **state) {
    (void)state;
    ei_x_buff x;
    encode_ping(&x, NULL, NULL, 8);
    erlang_msg msg;
    memset(&msg, 0, sizeof msg);
    msg.msgtype = ERL_REG_SEND;
    msg.from = test_pid(11);
    strcpy(msg.toname, "nil");
    nodex_request req;
    nodex_request_decode(&req, x.buff, x.index, &msg);
    assert_int_equal(req.kind, NODEX_REQUEST_RAW);
    assert_int_equal(ei_cmp_pids(&req.from, &msg.from), 0);
    assert_string_equal(req.to_name, "nil");
    assert_int_equal(req.index, 1);
    assert_int_equal(req.len, x.index);
    assert_ptr_equal(req.buf, x.buff); /* borrowed, never copied */
    assert_ping_at(&req);

    msg.msgtype = ERL_SEND;
    nodex_request_decode(&req, x.buff, x.index, &msg);
    assert_int_equal(req.kind, NODEX_REQUEST_SEND);
    assert_string_equal(req.to_name, "");
    ei_x_free(&x);
}

static void test_decode_gen_call(void **state) {
    (void)state;
    erlang_pid pid = test_pid(5);
    erlang_ref ref = test_ref(99);
    ei_x_buff x;
    encode_ping(&x, &pid, &ref, 0);
    erlang_msg msg;
    memset(&msg, 0, sizeof msg);
    msg.msgtype = ERL_REG_SEND;
    msg.from = test_pid(6); /* the envelope's Pid wins */
    nodex_request req;
    nodex_request_decode(&req, x.buff, x.index, &msg);
    assert_int_equal(req.kind, NODEX_REQUEST_GEN_CALL);
    assert_int_equal(ei_cmp_pids(&req.from, &pid), 0);
    assert_ping_at(&req);
    /* a gen_call sent to a pid has a reply target too */
    msg.msgtype = ERL_SEND;
    nodex_request_decode(&req, x.buff, x.index, &msg);
    assert_int_equal(req.kind, NODEX_REQUEST_GEN_CALL);
    ei_x_free(&x);

    /* {'$gen_call', notatuple, Req} is an ordinary request */
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_atom(&x, "$gen_call");
    ei_x_encode_atom(&x, "notatuple");
    ei_x_encode_atom(&x, "req");
    msg.msgtype = ERL_REG_SEND;
    nodex_request_decode(&req, x.buff, x.index, &msg);
    assert_int_equal(req.kind, NODEX_REQUEST_RAW);
    assert_int_equal(req.index, 1);
    ei_x_free(&x);
}

static void test_reply_envelopes(void **state) {
    (void)state;
    erlang_pid pid = test_pid(5);
    erlang_ref ref = test_ref(77);
    ei_x_buff x, reply;
    ei_x_new(&reply);
    nodex_request req;

    /* gen_call: {Ref, Reply} */
    encode_ping(&x, &pid, &ref, 0);
    nodex_request_decode(&req, x.buff, x.index, NULL);
    req.reply = &reply;
    ei_x_buff *r = nodex_reply_begin(&req);
    assert_ptr_equal(r, &reply); /* the library's buffer, handed out for encoding */
    ei_x_encode_atom(r, "pong");
    int i = 0, version = 0, arity = 0;
    erlang_ref got;
    char atom[MAXATOMLEN_UTF8];
    assert_int_equal(ei_decode_version(reply.buff, &i, &version), 0);
    assert_int_equal(ei_decode_tuple_header(reply.buff, &i, &arity), 0);
    assert_int_equal(arity, 2);
    assert_int_equal(ei_decode_ref(reply.buff, &i, &got), 0);
    assert_int_equal(ei_cmp_refs(&got, &ref), 0);
    assert_int_equal(ei_decode_atom(reply.buff, &i, atom), 0);
    assert_string_equal(atom, "pong");
    assert_int_equal(i, reply.index);
    /* begin again starts over in the same buffer */
    r = nodex_reply_begin(&req);
    assert_ptr_equal(r, &reply);
    i = 0;
    assert_int_equal(ei_decode_version(reply.buff, &i, &version), 0);
    assert_int_equal(ei_decode_tuple_header(reply.buff, &i, &arity), 0);
    assert_int_equal(ei_skip_term(reply.buff, &i), 0);
    assert_int_equal(i, reply.index);
    /* no connection: the send fails, and a second one is refused */
    assert_int_equal(nodex_reply_send(&req), NODEX_ESEND);
    assert_int_equal(nodex_reply_send(&req), NODEX_ESTATE);
    assert_int_equal(nodex_reply_atom(&req, "again"), NODEX_ESTATE);
    ei_x_free(&x);

    /* raw: the term alone */
    encode_ping(&x, NULL, NULL, 0);
    nodex_request_decode(&req, x.buff, x.index, NULL);
    req.reply = &reply;
    assert_int_equal(nodex_reply_send(&req), NODEX_ESTATE); /* nothing begun */
    r = nodex_reply_begin(&req);
    ei_x_encode_atom(r, "pong");
    i = 0;
    assert_int_equal(ei_decode_version(reply.buff, &i, &version), 0);
    assert_int_equal(ei_decode_atom(reply.buff, &i, atom), 0);
    assert_string_equal(atom, "pong");
    assert_int_equal(i, reply.index);
    ei_x_free(&x);

    /* a send to a pid has nobody to answer */
    erlang_msg msg;
    memset(&msg, 0, sizeof msg);
    msg.msgtype = ERL_SEND;
    encode_ping(&x, NULL, NULL, 0);
    nodex_request_decode(&req, x.buff, x.index, &msg);
    req.reply = &reply;
    assert_int_equal(nodex_reply_error(&req, "nope"), NODEX_ENOSENDER);
    ei_x_free(&x);
    ei_x_free(&reply);
    assert_string_equal(nodex_strerror(NODEX_DISCONNECTED), "connection dropped");
}

static void test_open_rejects_bad_options(void **state) {
    (void)state;
    nodex_args a = {.sname = "x", .hostname = HOST, .cookie = "c", .gateway_sname = "gw"};
    nodex_cnode_options o = {0};
    nodex_cnode *cn = (nodex_cnode *)&a;
    char err[256];
    assert_int_equal(nodex_cnode_open(&cn, &a, &o, err, sizeof err), NODEX_EUSAGE);
    assert_null(cn);
}

/* ------------------------------------------------------------------------------------------ */
/* a fake gateway on loopback, with a private epmd */

static pid_t epmd_pid = -1;
static ei_cnode gw;
static int gw_listen = -1, gw_epmd = -1;
static char gw_sname[64];

static int free_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int ok = s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 &&
             getsockname(s, (struct sockaddr *)&a, &len) == 0;
    if (s >= 0) close(s);
    return ok ? ntohs(a.sin_port) : 0;
}

static int port_answers(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = connect(s, (struct sockaddr *)&a, sizeof a) == 0;
    close(s);
    return ok;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int group_setup(void **state) {
    (void)state;
    int port = free_port();
    if (port == 0) return -1;
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", port);
    setenv("ERL_EPMD_PORT", port_s, 1); /* before the first ei call: ei reads it once */
    epmd_pid = fork();
    if (epmd_pid == 0) {
        FILE *devnull = freopen("/dev/null", "w", stderr); /* our probes make it complain */
        (void)devnull;
        execlp("epmd", "epmd", "-port", port_s, (char *)NULL);
        _exit(127);
    }
    if (epmd_pid < 0) return -1;
    for (int i = 0; i < 200 && !port_answers(port); i++) sleep_ms(25);
    if (ei_init() != 0) return -1;
    snprintf(gw_sname, sizeof gw_sname, "sdkgw%d", (int)getpid());
    char node[128];
    snprintf(node, sizeof node, "%s@%s", gw_sname, HOST);
    struct in_addr addr;
    inet_pton(AF_INET, HOST, &addr);
    if (ei_connect_xinit(&gw, HOST, gw_sname, node, &addr, COOKIE, 1) < 0) return -1;
    int lport = 0;
    gw_listen = ei_xlisten(&gw, &addr, &lport, 5);
    if (gw_listen < 0) return -1;
    gw_epmd = ei_publish(&gw, lport);
    return gw_epmd < 0 ? -1 : 0;
}

static int group_teardown(void **state) {
    (void)state;
    if (gw_epmd >= 0) close(gw_epmd);
    if (gw_listen >= 0) close(gw_listen);
    if (epmd_pid > 0) {
        kill(epmd_pid, SIGTERM);
        waitpid(epmd_pid, NULL, 0);
    }
    return 0;
}

/* The C-node side: echo {ping, T} -> {pong, T}; `stop` stops it; records reply statuses. */
typedef struct cnode_side {
    nodex_args args;
    nodex_cnode_options opts;
    nodex_cnode *cn;
    char sname[64];
    int run_status;
    int open_status;
    char *ready_text;
    size_t ready_len;
    FILE *ready;
    pthread_t thread;
    _Atomic int bad_replies;
} cnode_side;

static int echo_cb(nodex_request *req, void *user) {
    cnode_side *side = user;
    int i = req->index, arity = 0, start = 0;
    char atom[MAXATOMLEN_UTF8];
    if (ei_decode_atom(req->buf, &i, atom) == 0 && strcmp(atom, "stop") == 0) return 1;
    i = req->index;
    if (ei_decode_tuple_header(req->buf, &i, &arity) == 0 && arity == 2 &&
        ei_decode_atom(req->buf, &i, atom) == 0 && (start = i, ei_skip_term(req->buf, &i) == 0)) {
        ei_x_buff *r = nodex_reply_begin(req);
        ei_x_encode_tuple_header(r, 2);
        ei_x_encode_atom(r, "pong");
        ei_x_append_buf(r, req->buf + start, i - start);
        if (nodex_reply_send(req) != NODEX_OK) side->bad_replies++;
    } else if (nodex_reply_error(req, "unknown_call") != NODEX_OK) {
        side->bad_replies++;
    }
    return 0;
}

static void side_init(cnode_side *s, unsigned workers, nodex_direction dir, const char *tag) {
    memset(s, 0, sizeof *s);
    snprintf(s->sname, sizeof s->sname, "sdkcn%s%d", tag, (int)getpid());
    s->args = (nodex_args){
        .sname = s->sname, .hostname = HOST, .cookie = COOKIE, .gateway_sname = gw_sname};
    s->ready = open_memstream(&s->ready_text, &s->ready_len);
    s->opts = (nodex_cnode_options){.on_request = echo_cb,
                                    .user = s,
                                    .workers = workers,
                                    .direction = dir,
                                    .ready_stream = s->ready};
}

static void *side_main(void *arg) {
    cnode_side *s = arg;
    if (!s->cn) s->open_status = nodex_cnode_open(&s->cn, &s->args, &s->opts, NULL, 0);
    s->run_status = s->open_status == NODEX_OK ? nodex_cnode_run(s->cn) : s->open_status;
    return NULL;
}

static void side_finish(cnode_side *s) {
    pthread_join(s->thread, NULL);
    nodex_cnode_close(s->cn);
    fclose(s->ready);
    char want[128];
    snprintf(want, sizeof want, "%s@%s ready\n", s->sname, HOST);
    assert_string_equal(s->ready_text, want);
    free(s->ready_text);
}

static void send_ping(int fd, const erlang_pid *from, long n, const erlang_ref *ref) {
    ei_x_buff x;
    ei_x_new_with_version(&x);
    if (ref) {
        ei_x_encode_tuple_header(&x, 3);
        ei_x_encode_atom(&x, "$gen_call");
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_pid(&x, from);
        ei_x_encode_ref(&x, ref);
    }
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "ping");
    ei_x_encode_long(&x, n);
    erlang_pid f = *from;
    assert_int_equal(ei_send_reg_encoded(fd, &f, "nil", x.buff, x.index), 0);
    ei_x_free(&x);
}

static void send_atom(int fd, const char *atom) {
    ei_x_buff x;
    ei_x_new_with_version(&x);
    ei_x_encode_atom(&x, atom);
    erlang_pid f;
    ei_make_pid(&gw, &f);
    assert_int_equal(ei_send_reg_encoded(fd, &f, "nil", x.buff, x.index), 0);
    ei_x_free(&x);
}

/* `init ! {stop, stop}`, or another message to init when `other` is set. */
static void send_init(int fd, int other) {
    ei_x_buff x;
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, other ? "ping" : "stop");
    ei_x_encode_atom(&x, "stop");
    erlang_pid f;
    ei_make_pid(&gw, &f);
    assert_int_equal(ei_send_reg_encoded(fd, &f, "init", x.buff, x.index), 0);
    ei_x_free(&x);
}

/* Receives one message (skipping ticks): returns its `to` pid and the n of {pong, n}. */
static long recv_pong(int fd, erlang_pid *to, const erlang_ref *want_ref) {
    ei_x_buff x;
    ei_x_new(&x);
    erlang_msg msg;
    int rc;
    while ((rc = ei_xreceive_msg(fd, &msg, &x)) == ERL_TICK) {
    }
    assert_int_equal(rc, ERL_MSG);
    assert_int_equal(msg.msgtype, ERL_SEND);
    *to = msg.to;
    int i = 0, v = 0, arity = 0;
    long n = -1;
    char atom[MAXATOMLEN_UTF8];
    assert_int_equal(ei_decode_version(x.buff, &i, &v), 0);
    if (want_ref) {
        erlang_ref got;
        assert_int_equal(ei_decode_tuple_header(x.buff, &i, &arity), 0);
        assert_int_equal(arity, 2);
        assert_int_equal(ei_decode_ref(x.buff, &i, &got), 0);
        assert_int_equal(ei_cmp_refs(&got, (erlang_ref *)want_ref), 0);
    }
    assert_int_equal(ei_decode_tuple_header(x.buff, &i, &arity), 0);
    assert_int_equal(arity, 2);
    assert_int_equal(ei_decode_atom(x.buff, &i, atom), 0);
    assert_string_equal(atom, "pong");
    assert_int_equal(ei_decode_long(x.buff, &i, &n), 0);
    ei_x_free(&x);
    return n;
}

/* The gateway sends a tick (a zero-length packet); a live C-node answers with one. */
static void assert_tick_answered(int fd) {
    static const char tick[4] = {0, 0, 0, 0};
    assert_int_equal(write(fd, tick, 4), 4);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1);
    char tock[4] = {1, 1, 1, 1};
    size_t got = 0;
    while (got < 4) {
        ssize_t n = read(fd, tock + got, 4 - got);
        assert_true(n > 0);
        got += (size_t)n;
    }
    assert_memory_equal(tock, tick, 4);
}

static int gw_accept(void) {
    ErlConnect peer;
    int fd = ei_accept(&gw, gw_listen, &peer);
    assert_true(fd >= 0);
    return fd;
}

static void test_loopback_back_raw_and_gen_call(void **state) {
    (void)state;
    cnode_side s;
    side_init(&s, 0, NODEX_DIRECTION_BACK, "b");
    pthread_create(&s.thread, NULL, side_main, &s);
    int fd = gw_accept();

    erlang_pid pid, to;
    ei_make_pid(&gw, &pid);
    send_ping(fd, &pid, 42, NULL);
    assert_int_equal(recv_pong(fd, &to, NULL), 42);
    assert_int_equal(ei_cmp_pids(&to, &pid), 0); /* the reply reached the sender */

    erlang_ref ref;
    ei_make_ref(&gw, &ref);
    ei_make_pid(&gw, &pid);
    send_ping(fd, &pid, 7, &ref);
    assert_int_equal(recv_pong(fd, &to, &ref), 7); /* {Ref, {pong, 7}} */
    assert_int_equal(ei_cmp_pids(&to, &pid), 0);

    assert_tick_answered(fd);
    ei_make_pid(&gw, &pid);
    send_ping(fd, &pid, 8, NULL); /* still in sync after the tick */
    assert_int_equal(recv_pong(fd, &to, NULL), 8);

    /* the gateway lets go: run returns "disconnected" (the C-node then exits 0) */
    ei_close_connection(fd);
    side_finish(&s);
    assert_int_equal(s.run_status, NODEX_DISCONNECTED);
    assert_int_equal(s.bad_replies, 0);
}

static void test_loopback_workers_many_in_flight(void **state) {
    (void)state;
    enum { N = 64 };
    cnode_side s;
    side_init(&s, 4, NODEX_DIRECTION_BACK, "w");
    pthread_create(&s.thread, NULL, side_main, &s);
    int fd = gw_accept();
    erlang_pid pids[N];
    for (long i = 0; i < N; i++) {
        ei_make_pid(&gw, &pids[i]);
        send_ping(fd, &pids[i], 1000 + i, NULL);
    }
    int seen[N] = {0};
    for (int k = 0; k < N; k++) {
        erlang_pid to;
        long n = recv_pong(fd, &to, NULL);
        assert_true(n >= 1000 && n < 1000 + N);
        assert_int_equal(ei_cmp_pids(&to, &pids[n - 1000]), 0); /* matched by pid */
        seen[n - 1000]++;
    }
    for (int i = 0; i < N; i++) assert_int_equal(seen[i], 1);
    assert_tick_answered(fd);
    send_atom(fd, "stop"); /* the callback asks to stop */
    side_finish(&s);
    assert_int_equal(s.run_status, NODEX_STOPPED);
    ei_close_connection(fd);
}

static void test_loopback_direction_to(void **state) {
    (void)state;
    cnode_side s;
    side_init(&s, 2, NODEX_DIRECTION_TO, "t");
    char err[256] = "";
    s.open_status = nodex_cnode_open(&s.cn, &s.args, &s.opts, err, sizeof err);
    assert_int_equal(s.open_status, NODEX_OK);
    char node[128];
    snprintf(node, sizeof node, "%s@%s", s.sname, HOST);
    assert_string_equal(nodex_cnode_node_name(s.cn), node);
    pthread_create(&s.thread, NULL, side_main, &s);
    int fd = -1;
    for (int i = 0; i < 100 && fd < 0; i++) {
        fd = ei_connect(&gw, node); /* published in epmd before the ready line */
        if (fd < 0) sleep_ms(20);
    }
    assert_true(fd >= 0);
    erlang_pid pid, to;
    ei_make_pid(&gw, &pid);
    send_init(fd, 1); /* not for the callback, not answered: the next reply is the ping's */
    send_ping(fd, &pid, 5, NULL);
    assert_int_equal(recv_pong(fd, &to, NULL), 5);
    assert_int_equal(ei_cmp_pids(&to, &pid), 0);
    send_init(fd, 0); /* init:stop() */
    side_finish(&s);
    assert_int_equal(s.run_status, NODEX_STOPPED);
    ei_close_connection(fd);
}

static void test_open_fails_without_gateway(void **state) {
    (void)state;
    nodex_args a = {
        .sname = "sdklonely", .hostname = HOST, .cookie = COOKIE, .gateway_sname = "nosuchgateway"};
    nodex_cnode_options o = {.on_request = echo_cb};
    nodex_cnode *cn = NULL;
    char err[256] = "";
    assert_int_equal(nodex_cnode_open(&cn, &a, &o, err, sizeof err), NODEX_ECONNECT);
    assert_null(cn);
    assert_non_null(strstr(err, "cannot connect to nosuchgateway@127.0.0.1"));
}

int main(void) {
    const struct CMUnitTest offline[] = {
        cmocka_unit_test(test_args_ok),
        cmocka_unit_test(test_args_errors),
        cmocka_unit_test(test_args_cookie_from_env),
        cmocka_unit_test(test_decode_raw),
        cmocka_unit_test(test_decode_gen_call),
        cmocka_unit_test(test_reply_envelopes),
        cmocka_unit_test(test_open_rejects_bad_options),
    };
    const struct CMUnitTest loopback[] = {
        cmocka_unit_test(test_loopback_back_raw_and_gen_call),
        cmocka_unit_test(test_loopback_workers_many_in_flight),
        cmocka_unit_test(test_loopback_direction_to),
        cmocka_unit_test(test_open_fails_without_gateway),
    };
    int failed = cmocka_run_group_tests_name("sdk_offline", offline, NULL, NULL);
    failed += cmocka_run_group_tests_name("sdk_loopback", loopback, group_setup, group_teardown);
    return failed;
}
