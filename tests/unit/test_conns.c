/* test_conns: connections without the gateway: a socketpair plays the peer. Messages reach
 * on_message with their owner, a peer that closes or falls silent is reported to the owner (or
 * closed by conns when there is none), idle connections are ticked, and a connector's failed
 * attempt comes back through the loop's wake-up with its owner and generation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conns.h"

typedef struct seen {
    int messages;
    void *message_owner;
    long message_type;
    int lost;
    void *lost_owner;
    bool lost_by_peer;
    char why[128];
    int connected;
    void *connected_owner;
    unsigned generation;
    int connected_fd;
    char error[128];
} seen;

typedef struct fixture {
    loop *l;
    ei_cnode ec;
    atomic_bool stop;
    conns *cs;
    seen s;
    int peer_fd; /* the test's end of the socketpair */
    conns_conn *c;
} fixture;

static void on_message(void *ctx, conns_conn *c, const dist_message *m) {
    seen *s = ctx;
    s->messages++;
    s->message_owner = conns_owner(c);
    s->message_type = m->type;
}

static void on_accepted(void *ctx, int fd, const char *peer) {
    (void)ctx;
    (void)peer;
    ei_close_connection(fd);
}

static void on_connected(void *ctx, void *owner, unsigned generation, int fd, const char *peer,
                         const char *error) {
    seen *s = ctx;
    (void)peer;
    s->connected++;
    s->connected_owner = owner;
    s->generation = generation;
    s->connected_fd = fd;
    snprintf(s->error, sizeof s->error, "%s", error);
}

static void on_lost(void *ctx, void *owner, const char *peer, const char *why, bool by_peer) {
    seen *s = ctx;
    (void)peer;
    s->lost++;
    s->lost_owner = owner;
    s->lost_by_peer = by_peer;
    snprintf(s->why, sizeof s->why, "%s", why);
}

static const conns_callbacks callbacks = {.on_message = on_message,
                                          .on_accepted = on_accepted,
                                          .on_connected = on_connected,
                                          .on_lost = on_lost};

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    char err[128];
    if (!f || ei_init() != 0) return -1;
    if (!(f->l = loop_new(NULL, 0, err, sizeof err))) return -1;
    if (ei_connect_init(&f->ec, "test_conns", "cookie", 1) < 0) return -1;
    atomic_init(&f->stop, false);
    f->cs = conns_new(f->l, &f->ec, &f->ec, &f->stop, 1000, &callbacks, &f->s);
    int sv[2];
    if (!f->cs || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return -1;
    f->peer_fd = sv[1];
    f->c = conns_add(f->cs, sv[0], "peer@host");
    if (!f->c) return -1;
    loop_enter(f->l);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    loop_leave(f->l);
    atomic_store(&f->stop, true);
    assert_true(conns_stop(f->cs));
    conns_close_all(f->cs);
    conns_free(f->cs);
    loop_free(f->l);
    if (f->peer_fd >= 0) close(f->peer_fd);
    free(f);
    return 0;
}

/* Polls the loop until `done` holds (no time bound: each poll waits for an event). */
#define POLL_UNTIL(f, cond)                                                                        \
    while (!(cond)) assert_true(loop_poll((f)->l, INT64_MAX, false) >= 0)

static void write_send_packet(int fd) {
    erlang_pid to;
    memset(&to, 0, sizeof to);
    snprintf(to.node, sizeof to.node, "%s", "test_conns@localhost");
    to.num = 1;
    ei_x_buff ctrl, msg;
    assert_int_equal(ei_x_new_with_version(&ctrl), 0);
    ei_x_encode_tuple_header(&ctrl, 3);
    ei_x_encode_long(&ctrl, 2);
    ei_x_encode_atom(&ctrl, "");
    ei_x_encode_pid(&ctrl, &to);
    assert_int_equal(ei_x_new_with_version(&msg), 0);
    ei_x_encode_atom(&msg, "hello");
    size_t len = 1 + (size_t)ctrl.index + (size_t)msg.index;
    char buf[256];
    buf[0] = (char)(len >> 24);
    buf[1] = (char)(len >> 16);
    buf[2] = (char)(len >> 8);
    buf[3] = (char)len;
    buf[4] = 'p';
    memcpy(buf + 5, ctrl.buff, (size_t)ctrl.index);
    memcpy(buf + 5 + ctrl.index, msg.buff, (size_t)msg.index);
    assert_int_equal(write(fd, buf, 4 + len), (ssize_t)(4 + len));
    ei_x_free(&ctrl);
    ei_x_free(&msg);
}

static void test_message_reaches_on_message_with_the_owner(void **state) {
    fixture *f = *state;
    int owner;
    conns_set_owner(f->c, &owner, 0);
    assert_ptr_equal(conns_owner(f->c), &owner);
    write_send_packet(f->peer_fd);
    POLL_UNTIL(f, f->s.messages == 1);
    assert_ptr_equal(f->s.message_owner, &owner);
    assert_int_equal(f->s.message_type, 2);
    assert_int_equal(f->s.lost, 0);
}

static void test_peer_close_is_reported_to_the_owner_as_by_peer(void **state) {
    fixture *f = *state;
    int owner;
    conns_set_owner(f->c, &owner, 0);
    close(f->peer_fd);
    f->peer_fd = -1;
    POLL_UNTIL(f, f->s.lost == 1);
    assert_ptr_equal(f->s.lost_owner, &owner);
    assert_true(f->s.lost_by_peer);
    /* The owner decides: the connection stays until it is closed. */
    conns_close(f->cs, f->c);
    conns_bury(f->cs);
}

static void test_peer_close_of_a_connection_of_no_owner_closes_it(void **state) {
    fixture *f = *state;
    dist_conn *dc = conns_dist(f->c);
    dist_conn_ref(dc);
    close(f->peer_fd);
    f->peer_fd = -1;
    POLL_UNTIL(f, atomic_load(&dc->broken));
    assert_int_equal(f->s.lost, 0);
    dist_conn_unref(dc);
    conns_bury(f->cs);
}

static void test_tick_sends_a_tick_when_idle_and_loses_a_silent_connection(void **state) {
    fixture *f = *state;
    int owner;
    conns_set_owner(f->c, &owner, 0);
    dist_conn *dc = conns_dist(f->c);
    int64_t now = dist_now_ms();
    atomic_store(&dc->last_recv_ms, now);
    atomic_store(&dc->last_send_ms, now - 1000);
    conns_tick(f->cs, now);
    char tick[4] = {1, 1, 1, 1};
    assert_int_equal(read(f->peer_fd, tick, sizeof tick), 4);
    assert_memory_equal(tick, "\0\0\0\0", 4);
    assert_int_equal(f->s.lost, 0);
    /* Nothing received for longer than the tick time: lost, not by the peer. */
    conns_tick(f->cs, now + 1001);
    assert_int_equal(f->s.lost, 1);
    assert_false(f->s.lost_by_peer);
    assert_string_equal(f->s.why, "no answer to ticks (tick_time)");
}

static void test_owner_silence_overrides_the_tick_time(void **state) {
    fixture *f = *state;
    int owner;
    conns_set_owner(f->c, &owner, 5000);
    dist_conn *dc = conns_dist(f->c);
    int64_t now = dist_now_ms();
    atomic_store(&dc->last_recv_ms, now);
    atomic_store(&dc->last_send_ms, now);
    conns_tick(f->cs, now + 4000);
    assert_int_equal(f->s.lost, 0);
    conns_tick(f->cs, now + 5001);
    assert_int_equal(f->s.lost, 1);
}

static void wake(void *ctx) {
    conns_on_wake(ctx);
}

static void test_failed_connect_comes_back_with_owner_and_generation(void **state) {
    fixture *f = *state;
    int owner;
    /* No such node (epmd absent or it does not know the name): one attempt, then the hand-off. */
    assert_int_equal(conns_connect(f->cs, &owner, 7, "nobody_here@127.0.0.1", 2000, false), 0);
    loop_on_wake(f->l, wake, f->cs);
    POLL_UNTIL(f, f->s.connected == 1);
    assert_ptr_equal(f->s.connected_owner, &owner);
    assert_int_equal(f->s.generation, 7);
    assert_int_equal(f->s.connected_fd, -1);
    /* epmd refused, or it does not know the name */
    assert_non_null(strstr(f->s.error, "cannot connect to nobody_here@127.0.0.1: "));
}

/* The connector asks epmd itself, with the attempt's deadline: an epmd that accepts and never
 * answers used to hold the thread for ever inside ei_connect's lookup. */
static void test_connect_to_an_epmd_that_never_answers_ends_at_its_deadline(void **state) {
    fixture *f = *state;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(l, 4), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &len), 0);
    char port[16];
    snprintf(port, sizeof port, "%d", ntohs(a.sin_port));
    setenv("ERL_EPMD_PORT", port, 1);
    int owner;
    assert_int_equal(conns_connect(f->cs, &owner, 3, "ghost@127.0.0.1", 300, false), 0);
    loop_on_wake(f->l, wake, f->cs);
    POLL_UNTIL(f, f->s.connected == 1);
    unsetenv("ERL_EPMD_PORT");
    assert_int_equal(f->s.connected_fd, -1);
    assert_non_null(strstr(f->s.error, "epmd on 127.0.0.1: "));
    assert_non_null(strstr(f->s.error, strerror(ETIMEDOUT)));
    close(l);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_message_reaches_on_message_with_the_owner, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_peer_close_is_reported_to_the_owner_as_by_peer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_peer_close_of_a_connection_of_no_owner_closes_it,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_tick_sends_a_tick_when_idle_and_loses_a_silent_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_owner_silence_overrides_the_tick_time, setup,
                                        teardown),
        /* first: ei caches the epmd port of its first lookup for the process */
        cmocka_unit_test_setup_teardown(
            test_connect_to_an_epmd_that_never_answers_ends_at_its_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_connect_comes_back_with_owner_and_generation,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
