/* test_sdnotify: sd_notify datagrams to a fake $NOTIFY_SOCKET (path and abstract), and errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "sdnotify.h"

/* The fake service manager's end: a bound datagram socket and, for path sockets, its files. */
typedef struct fake_manager {
    int fd;
    char dir[64];
    char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
} fake_manager;

static fake_manager fake = {-1, "", ""};

/* Binds a datagram socket at `addr` ('@' = abstract) and points $NOTIFY_SOCKET at it. */
static void fake_bind(const char *addr) {
    struct sockaddr_un sa = {0};
    sa.sun_family = AF_UNIX;
    size_t n = strlen(addr);
    assert_true(n < sizeof sa.sun_path);
    memcpy(sa.sun_path, addr, n);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    if (addr[0] == '@') {
        sa.sun_path[0] = '\0';
    } else {
        len++;
    }
    fake.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fake.fd >= 0);
    assert_int_equal(bind(fake.fd, (struct sockaddr *)&sa, len), 0);
    struct timeval tv = {2, 0};
    assert_int_equal(setsockopt(fake.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    assert_int_equal(setenv("NOTIFY_SOCKET", addr, 1), 0);
}

/* Receives one datagram (waits up to 2 s); returns its length, or -1 when none arrived. */
static ssize_t fake_recv(char *buf, size_t size) {
    ssize_t n = recv(fake.fd, buf, size - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    return n;
}

/* True when no datagram is waiting. */
static bool fake_empty(void) {
    char c;
    return recv(fake.fd, &c, 1, MSG_DONTWAIT) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static int setup(void **state) {
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    snprintf(fake.dir, sizeof fake.dir, "/tmp/nodex-sdnotify-XXXXXX");
    assert_non_null(mkdtemp(fake.dir));
    snprintf(fake.path, sizeof fake.path, "%s/notify", fake.dir);
    fake.fd = -1;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    if (fake.fd >= 0) close(fake.fd);
    fake.fd = -1;
    unlink(fake.path);
    rmdir(fake.dir);
    unsetenv("NOTIFY_SOCKET");
    return 0;
}

static void test_path_socket_ready_status_stopping(void **state) {
    (void)state;
    fake_bind(fake.path);
    char buf[2048];
    errno = 1234;
    assert_int_equal(sdnotify_ready(), 0);
    assert_int_equal(errno, 1234); /* errno kept on success */
    assert_int_equal(fake_recv(buf, sizeof buf), 7);
    assert_string_equal(buf, "READY=1");
    assert_int_equal(sdnotify_status("serving %d C-nodes\non %s", 3, "127.0.0.1:8080"), 0);
    fake_recv(buf, sizeof buf);
    assert_string_equal(buf, "STATUS=serving 3 C-nodes on 127.0.0.1:8080");
    assert_int_equal(sdnotify_stopping(), 0);
    fake_recv(buf, sizeof buf);
    assert_string_equal(buf, "STOPPING=1");
    assert_int_equal(sdnotify_send("READY=1\nSTATUS=multi\nMAINPID=1"), 0);
    fake_recv(buf, sizeof buf);
    assert_string_equal(buf, "READY=1\nSTATUS=multi\nMAINPID=1");
    assert_true(fake_empty());
}

static void test_abstract_socket(void **state) {
    (void)state;
    char name[64];
    snprintf(name, sizeof name, "@nodex-sdnotify-test-%ld", (long)getpid());
    fake_bind(name);
    char buf[256];
    assert_int_equal(sdnotify_ready(), 0);
    assert_int_equal(fake_recv(buf, sizeof buf), 7);
    assert_string_equal(buf, "READY=1");
    assert_true(fake_empty());
}

static void test_unset_or_empty_is_noop(void **state) {
    (void)state;
    fake_bind(fake.path);
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(sdnotify_ready(), 0);
    assert_int_equal(sdnotify_stopping(), 0);
    assert_int_equal(sdnotify_status("x %d", 1), 0);
    assert_int_equal(sdnotify_send("READY=1"), 0);
    setenv("NOTIFY_SOCKET", "", 1);
    assert_int_equal(sdnotify_ready(), 0);
    assert_true(fake_empty());
}

static void test_path_too_long(void **state) {
    (void)state;
    char longpath[sizeof(((struct sockaddr_un *)0)->sun_path) + 16];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    setenv("NOTIFY_SOCKET", longpath, 1);
    errno = 0;
    assert_int_equal(sdnotify_ready(), -1);
    assert_int_equal(errno, ENAMETOOLONG);
    longpath[0] = '@';
    setenv("NOTIFY_SOCKET", longpath, 1);
    errno = 0;
    assert_int_equal(sdnotify_ready(), -1);
    assert_int_equal(errno, ENAMETOOLONG);
    /* Exactly sizeof sun_path - 1 path bytes (+ NUL) still fits. */
    longpath[0] = '/';
    longpath[sizeof(((struct sockaddr_un *)0)->sun_path) - 1] = '\0';
    setenv("NOTIFY_SOCKET", longpath, 1);
    errno = 0;
    assert_int_equal(sdnotify_ready(), -1);
    assert_int_not_equal(errno, ENAMETOOLONG); /* fits, but nothing listens there */
}

static void test_errors(void **state) {
    (void)state;
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    errno = 0;
    assert_int_equal(sdnotify_ready(), -1);
    assert_int_equal(errno, EINVAL);
    /* Nobody bound at the path. */
    setenv("NOTIFY_SOCKET", fake.path, 1);
    errno = 0;
    assert_int_equal(sdnotify_ready(), -1);
    assert_int_equal(errno, ENOENT);
    fake_bind(fake.path);
    errno = 0;
    assert_int_equal(sdnotify_send(""), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(sdnotify_send(NULL), -1);
    assert_true(fake_empty());
}

static void test_status_truncated(void **state) {
    (void)state;
    fake_bind(fake.path);
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(sdnotify_status("%s", big), 0);
    char buf[4096];
    assert_int_equal(fake_recv(buf, sizeof buf), 7 + 1024);
    assert_memory_equal(buf, "STATUS=xxx", 10);
}

static void test_watchdog_sends_watchdog_1(void **state) {
    (void)state;
    fake_bind(fake.path);
    char buf[64];
    assert_int_equal(sdnotify_watchdog(), 0);
    assert_int_equal(fake_recv(buf, sizeof buf), 10);
    assert_string_equal(buf, "WATCHDOG=1");
}

static void test_watchdog_interval_from_watchdog_usec_for_this_pid(void **state) {
    (void)state;
    char pid[32];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    unsetenv("WATCHDOG_PID");
    setenv("WATCHDOG_USEC", "30000000", 1);
    assert_int_equal(sdnotify_watchdog_ms(), 30000); /* no WATCHDOG_PID: meant for us */
    setenv("WATCHDOG_PID", pid, 1);
    assert_int_equal(sdnotify_watchdog_ms(), 30000);
    setenv("WATCHDOG_USEC", "500", 1);
    assert_int_equal(sdnotify_watchdog_ms(), 1); /* under a millisecond rounds up, never 0 */
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
}

static void test_watchdog_off_when_unset_bad_or_for_another_pid(void **state) {
    (void)state;
    static const char *const bad[] = {"", "0", "-5", "12x", "x", "99999999999999999999999"};
    unsetenv("WATCHDOG_PID");
    unsetenv("WATCHDOG_USEC");
    assert_int_equal(sdnotify_watchdog_ms(), 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("WATCHDOG_USEC", bad[i], 1);
        assert_int_equal(sdnotify_watchdog_ms(), 0);
    }
    setenv("WATCHDOG_USEC", "1000000", 1);
    char other[32];
    snprintf(other, sizeof other, "%ld", (long)getpid() + 1);
    setenv("WATCHDOG_PID", other, 1); /* set for a process we forked from, say */
    assert_int_equal(sdnotify_watchdog_ms(), 0);
    setenv("WATCHDOG_PID", "garbage", 1);
    assert_int_equal(sdnotify_watchdog_ms(), 0);
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_path_socket_ready_status_stopping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abstract_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unset_or_empty_is_noop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_path_too_long, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_sends_watchdog_1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_interval_from_watchdog_usec_for_this_pid,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_off_when_unset_bad_or_for_another_pid, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
