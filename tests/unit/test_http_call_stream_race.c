/* test_http_call_stream_race: POST /cnodes/{name}/stream must not touch its call state after
 * gateway_call returned: a fast reply may end (and free) it on the loop thread first. The send is
 * held back 300 ms after the request goes out, so the reply always wins the race. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <sys/uio.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "epmd.h"
#include "gateway.h"
#include "http_api.h"
#include "log.h"
#include "nodex_fixture.h"
#include "strbuf.h"
#include "term.h"

/* ---- tests -------------------------------------------------------------------------------- */
/* ---- review: stream submit use-after-free ------------------------------------------------- */

/* Interposes sendmsg (dist_send_packet's writev): once armed, the next distribution packet
 * (5 iovecs, pass-through header 'p') is sent for real and then the sender sleeps 300 ms. That
 * widens the window between gateway_call's send and its return: the C-node's reply arrives, the
 * loop runs on_done (http_call_stream_done frees the http_call_stream) before
 * http_call_stream_submit reads cs->stream. */
static atomic_bool delay_next_dist_send;

ssize_t sendmsg(int fd, const struct msghdr *mh, int flags) {
    static ssize_t (*real)(int, const struct msghdr *, int);
    if (!real) real = (ssize_t(*)(int, const struct msghdr *, int))dlsym(RTLD_NEXT, "sendmsg");
    ssize_t n = real(fd, mh, flags);
    bool dist = mh->msg_iovlen == 5 && mh->msg_iov[0].iov_len == 5 &&
                ((const char *)mh->msg_iov[0].iov_base)[4] == 'p';
    bool expected = true;
    if (dist && n > 0 && atomic_compare_exchange_strong(&delay_next_dist_send, &expected, false))
        fixture_sleep_ms(300);
    return n;
}

static void test_stream_reply_before_gateway_call_returns(void **state) {
    (void)state;
    atomic_store(&delay_next_dist_send, true);
    fixture_response r;
    fixture_http_call_json(fixture_http_fe.port, "/cnodes/t/stream",
                           "Accept: application/x-ndjson\r\n", fixture_ping_json, &r);
    assert_false(atomic_load(&delay_next_dist_send)); /* the delay did happen */
    if (r.status != 200) fail_msg("status %d: %s", r.status, r.body.data);
    char want[256];
    snprintf(want, sizeof want, "{\"message\":%s,\"final\":true}\n", fixture_pong_json);
    assert_string_equal(r.body.data, want);
    fixture_http_response_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stream_reply_before_gateway_call_returns,
                                        fixture_http_setup, fixture_http_teardown),
    };
    return cmocka_run_group_tests(tests, fixture_group_setup, fixture_group_teardown);
}
