/* test_ei_sock: the flags nodexd adds to ei's send_name, in both handshake versions, and
 * messages that are no send_name left alone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ei_sock.h"

/* Len:16 'N' Flags:64 Creation:32 NLen:16 Name */
static size_t send_name_v6(char *buf, uint64_t flags, const char *name) {
    size_t nlen = strlen(name), len = 1 + 8 + 4 + 2 + nlen;
    buf[0] = (char)(len >> 8);
    buf[1] = (char)len;
    buf[2] = 'N';
    for (int i = 0; i < 8; i++) buf[3 + i] = (char)(flags >> (56 - 8 * i));
    memcpy(buf + 11, "\x01\x02\x03\x04", 4);
    buf[15] = (char)(nlen >> 8);
    buf[16] = (char)nlen;
    memcpy(buf + 17, name, nlen);
    return len + 2;
}

static void test_a_v6_send_name_offers_dist_monitor_name_and_keeps_the_rest(void **state) {
    (void)state;
    char buf[64], before[64];
    size_t n = send_name_v6(buf, 0x407074f9cULL, "nodexd@127.0.0.1");
    memcpy(before, buf, n);
    assert_int_equal(ei_sock_offer_flags(buf, n), 0x407074f9cULL | EI_SOCK_DIST_MONITOR_NAME);
    assert_memory_equal(buf, before, 3);                /* length and tag */
    assert_memory_equal(buf + 11, before + 11, n - 11); /* creation and name */
    /* already offered: unchanged */
    memcpy(before, buf, n);
    assert_int_equal(ei_sock_offer_flags(buf, n), 0x407074fbcULL);
    assert_memory_equal(buf, before, n);
}

static void test_a_v5_send_name_gets_the_flag_in_its_32_bit_field(void **state) {
    (void)state;
    /* Len:16 'n' Version:16 Flags:32 Name */
    char buf[] = {0, 11, 'n', 0, 5, 0x00, 0x07, 0x7f, 0x84, 'a', '@', 'b', 'c'};
    assert_int_equal(ei_sock_offer_flags(buf, sizeof buf), 0x00077fa4);
    assert_int_equal((unsigned char)buf[8], 0xa4);
    assert_int_equal(buf[9], 'a');
}

static void test_other_messages_are_left_alone(void **state) {
    (void)state;
    char buf[64], before[64];
    size_t n = send_name_v6(buf, 0x4, "x@y");
    buf[2] = 'r'; /* a challenge reply */
    memcpy(before, buf, n);
    assert_int_equal(ei_sock_offer_flags(buf, n), 0);
    assert_memory_equal(buf, before, n);
    buf[2] = 'N';
    assert_int_equal(ei_sock_offer_flags(buf, n - 1), 0); /* length does not match */
    assert_int_equal(ei_sock_offer_flags(buf, 2), 0);
    assert_memory_equal(buf, before + 0, 2);
}

/* A peer that connects and sends one byte every 100 ms, 30 times (3 s in all). */
static void *trickle(void *arg) {
    int fd = *(int *)arg;
    for (int i = 0; i < 30; i++) {
        if (send(fd, "x", 1, MSG_NOSIGNAL) != 1) break;
        usleep(100000);
    }
    return NULL;
}

static void test_an_accepted_handshake_has_one_deadline_for_all_its_reads(void **state) {
    (void)state;
    ei_socket_callbacks *cb = &ei_sock_callbacks;
    void *lctx = NULL;
    assert_int_equal(cb->socket(&lctx, NULL), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int len = sizeof a;
    assert_int_equal(cb->listen(lctx, &a, &len, 4), 0);
    assert_int_not_equal(a.sin_port, 0);
    int client = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(client, (struct sockaddr *)&a, sizeof a), 0);
    ei_sock_set_accept_deadline(300);
    void *ctx = lctx;
    struct sockaddr_in peer;
    int plen = sizeof peer;
    assert_int_equal(cb->EI_ACCEPT_NAME(&ctx, &peer, &plen, EI_SCLBK_INF_TMO), 0);
    assert_ptr_not_equal(ctx, lctx);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, trickle, &client), 0);
    /* Each read gets a byte well within any per-read timeout; the handshake's deadline still
     * ends the reading long before the peer's 3 s of trickle. */
    int rc = 0, bytes = 0;
    while (rc == 0) {
        char b[8];
        ssize_t n = sizeof b;
        rc = cb->read(ctx, b, &n, EI_SCLBK_INF_TMO);
        if (rc == 0 && n == 0) break;
        if (rc == 0) bytes += (int)n;
    }
    assert_int_equal(rc, ETIMEDOUT);
    assert_true(bytes >= 1 && bytes < 30);
    assert_int_equal(cb->close(ctx), 0);
    shutdown(client, SHUT_RDWR);
    pthread_join(th, NULL);
    close(client);
    assert_int_equal(cb->close(lctx), 0);
    ei_sock_set_accept_deadline(3000);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_v6_send_name_offers_dist_monitor_name_and_keeps_the_rest),
        cmocka_unit_test(test_a_v5_send_name_gets_the_flag_in_its_32_bit_field),
        cmocka_unit_test(test_other_messages_are_left_alone),
        cmocka_unit_test(test_an_accepted_handshake_has_one_deadline_for_all_its_reads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
