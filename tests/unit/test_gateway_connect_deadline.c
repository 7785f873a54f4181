/* test_gateway_connect_deadline: a node that accepts TCP but never answers the handshake must
 * not hold a connector thread past its deadline (ei's own connect has no timeout; nodexd's
 * outgoing handshakes run on ei_sock's deadline-bound sockets). */
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

/* ---- review: connector without a timeout ------------------------------------------------- */

#include <dirent.h>

static int thread_count(void) {
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static atomic_bool rpc_done;
static void on_rpc_done(call *c, void *ctx) {
    (void)c;
    (void)ctx;
    atomic_store(&rpc_done, true);
}

static void test_connector_gives_up_with_the_loop(void **state) {
    (void)state;
    /* A "node" registered in epmd whose port completes TCP connects (backlog) but never
     * speaks the distribution handshake. */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 16), 0);
    socklen_t alen = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &alen);
    ei_cnode hole;
    struct in_addr lo = {htonl(INADDR_LOOPBACK)};
    assert_true(ei_connect_xinit(&hole, "127.0.0.1", "blackhole", "blackhole@127.0.0.1", &lo,
                                 "httptestcookie", 1) >= 0);
    int pub = ei_publish(&hole, ntohs(a.sin_port));
    assert_true(pub >= 0);

    int before = thread_count();
    call c = {0};
    gateway_make_pid(fixture_http_gw.gw, &c.pid);
    c.on_done = on_rpc_done;
    atomic_store(&rpc_done, false);
    int64_t t0 = fixture_now_ms();
    assert_int_equal(
        gateway_rpc(fixture_http_gw.gw, "blackhole@127.0.0.1", &c, "erlang", "node", "j", 1, 300),
        GATEWAY_OK);
    while (!atomic_load(&rpc_done) && fixture_now_ms() - t0 < 10000) fixture_sleep_ms(10);
    assert_true(atomic_load(&rpc_done));
    call_clear(&c);
    /* The loop declares the attempt failed after connect_timeout_ms (3 s) + 1 s; give the
     * connector 3 s more than that to end. */
    while (thread_count() > before && fixture_now_ms() - t0 < 7000) fixture_sleep_ms(50);
    int after = thread_count();
    close(pub);
    close(lfd);
    if (after > before)
        fail_msg("%d thread(s) still running %lld ms after the rpc started (connector stuck in "
                 "ei_connect)",
                 after - before, (long long)(fixture_now_ms() - t0));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connector_gives_up_with_the_loop, fixture_http_setup,
                                        fixture_http_teardown),
    };
    return cmocka_run_group_tests(tests, fixture_group_setup, fixture_group_teardown);
}
