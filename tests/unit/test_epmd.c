/* test_epmd: ERL_EPMD_PORT parsing, the NAMES probe against a real epmd, epmd_ensure, and the
 * bounded PORT_PLEASE2 lookup. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "epmd.h"

static pid_t epmd_child;  /* a foreground `epmd -port N` this test forked */
static pid_t epmd_daemon; /* a daemon started by epmd_ensure, found via /proc */
static char saved_path[4096];

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* A port that was free a moment ago: bind port 0 on loopback, read it back, close. */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void use_port(int port) {
    char s[16];
    snprintf(s, sizeof s, "%d", port);
    setenv("ERL_EPMD_PORT", s, 1);
}

static bool pid_alive(pid_t pid) {
    char p[64], st[512];
    snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(p, "r");
    if (!f) return false;
    size_t n = fread(st, 1, sizeof st - 1, f);
    fclose(f);
    st[n] = '\0';
    const char *rp = strrchr(st, ')'); /* "pid (comm) S ...": a zombie is as good as gone */
    return rp && rp[1] == ' ' && rp[2] != 'Z' && rp[2] != 'X';
}

/* Reads a NUL-separated /proc file; returns its length or -1. */
static ssize_t read_proc(pid_t pid, const char *what, char *buf, size_t cap) {
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/%s", (int)pid, what);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n >= 0) buf[n] = '\0';
    return n;
}

static bool nul_list_has(const char *buf, ssize_t len, const char *item) {
    for (ssize_t i = 0; i < len; i += (ssize_t)strlen(buf + i) + 1)
        if (strcmp(buf + i, item) == 0) return true;
    return false;
}

/* The inode of a TCP socket listening on port (IPv4 or IPv6), or 0. */
static unsigned long listener_inode(int port) {
    static const char *const tables[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
        FILE *f = fopen(tables[t], "r");
        if (!f) continue;
        char line[512];
        unsigned long found = 0;
        while (!found && fgets(line, sizeof line, f)) {
            /* "  sl  local_address rem_address   st tx_queue:rx_queue tr:tm->when retrnsmt uid
             * timeout inode": local is HEXADDR:HEXPORT, st 0A is LISTEN. */
            char local[64], remote[64], st[8];
            unsigned long inode = 0;
            if (sscanf(line, "%*s %63s %63s %7s %*s %*s %*s %*s %*s %lu", local, remote, st,
                       &inode) != 4)
                continue;
            const char *colon = strrchr(local, ':');
            if (colon && strcmp(st, "0A") == 0 && strtol(colon + 1, NULL, 16) == port)
                found = inode;
        }
        fclose(f);
        if (found) return found;
    }
    return 0;
}

/* The epmd process that holds the socket listening on port, or 0. Found by the socket, not by
 * name: `epmd -daemon` forks twice, and its intermediates (same argv, same environment) may not
 * have exited yet when the daemon starts to answer. */
static pid_t find_epmd_daemon(int port) {
    unsigned long inode = listener_inode(port);
    if (inode == 0) return 0;
    char want[64];
    snprintf(want, sizeof want, "socket:[%lu]", inode);
    DIR *d = opendir("/proc");
    assert_non_null(d);
    pid_t found = 0;
    static char buf[65536];
    for (struct dirent *e; (e = readdir(d)) != NULL && !found;) {
        pid_t pid = (pid_t)strtol(e->d_name, NULL, 10);
        if (pid <= 0) continue;
        ssize_t n = read_proc(pid, "cmdline", buf, sizeof buf);
        if (n <= 0 || !strstr(buf, "epmd") || !nul_list_has(buf, n, "-daemon")) continue;
        for (int fd = 0; fd < 64 && !found; fd++) {
            char link[64], target[64];
            snprintf(link, sizeof link, "/proc/%d/fd/%d", (int)pid, fd);
            ssize_t m = readlink(link, target, sizeof target - 1);
            if (m <= 0) continue;
            target[m] = '\0';
            if (strcmp(target, want) == 0 && pid_alive(pid)) found = pid;
        }
    }
    closedir(d);
    return found;
}

/* The parent pid from /proc/<pid>/stat, or -1. */
static pid_t parent_of(pid_t pid) {
    char buf[512];
    if (read_proc(pid, "stat", buf, sizeof buf) <= 0) return -1;
    const char *rp = strrchr(buf, ')');
    if (!rp || rp[1] != ' ' || !rp[2] || rp[3] != ' ') return -1; /* ") S 123 ..." */
    return (pid_t)strtol(rp + 4, NULL, 10);
}

/* As subreaper we adopt epmd's daemonizing intermediates: kill and reap them, each by pid. */
static void reap_adopted(void) {
    DIR *d = opendir("/proc");
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        pid_t pid = (pid_t)strtol(e->d_name, NULL, 10);
        if (pid <= 0 || pid == epmd_child || parent_of(pid) != getpid()) continue;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    closedir(d);
}

static void start_foreground_epmd(int port) {
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    epmd_child = fork();
    assert_true(epmd_child >= 0);
    if (epmd_child == 0) {
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        execlp("epmd", "epmd", "-port", p, (char *)NULL);
        _exit(127);
    }
}

static int teardown(void **state) {
    (void)state;
    if (epmd_child > 0) {
        kill(epmd_child, SIGKILL);
        waitpid(epmd_child, NULL, 0);
        epmd_child = 0;
    }
    if (epmd_daemon > 0) {
        kill(epmd_daemon, SIGKILL);
        epmd_daemon = 0;
    }
    reap_adopted();
    prctl(PR_SET_CHILD_SUBREAPER, 0);
    if (saved_path[0]) {
        setenv("PATH", saved_path, 1);
        saved_path[0] = '\0';
    }
    unsetenv("ERL_EPMD_PORT");
    return 0;
}

static void test_port_defaults_and_rejects_invalid_values(void **state) {
    (void)state;
    unsetenv("ERL_EPMD_PORT");
    assert_int_equal(epmd_port(), 4369);
    static const char *const bad[] = {"", "0", "65536", "-1", "12ab", "abc", " 80", "99999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("ERL_EPMD_PORT", bad[i], 1);
        assert_int_equal(epmd_port(), 4369);
    }
    setenv("ERL_EPMD_PORT", "1", 1);
    assert_int_equal(epmd_port(), 1);
    setenv("ERL_EPMD_PORT", "65535", 1);
    assert_int_equal(epmd_port(), 65535);
    setenv("ERL_EPMD_PORT", "14369", 1);
    assert_int_equal(epmd_port(), 14369);
}

static void test_is_running_false_on_a_closed_port(void **state) {
    (void)state;
    use_port(free_port());
    int64_t start = now_ms();
    assert_false(epmd_is_running(60000));
    assert_true(now_ms() - start < 60000); /* refused, not the timeout's answer */
}

/* A listener that accepts (the kernel does) and never answers; its port is epmd's from now on. */
static int silent_epmd(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 4), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    use_port(ntohs(a.sin_port));
    return fd;
}

static void test_is_running_false_when_listener_never_answers(void **state) {
    (void)state;
    /* A listener that accepts (the kernel does) but never replies: the probe must time out. */
    int fd = silent_epmd();
    int64_t start = now_ms();
    assert_false(epmd_is_running(300));
    /* Not before the timeout (a lower bound: load only adds to it); without one it would hang. */
    assert_true(now_ms() - start >= 250);
    close(fd);
}

static void test_is_running_true_against_a_real_epmd(void **state) {
    (void)state;
    int port = free_port();
    use_port(port);
    assert_false(epmd_is_running(200));
    start_foreground_epmd(port);
    int64_t deadline = now_ms() + 5000;
    while (!epmd_is_running(200)) {
        assert_true(now_ms() < deadline);
        sleep_ms(20);
    }
    char err[256];
    assert_int_equal(epmd_ensure(1000, err, sizeof err), 0); /* already running: nothing to do */
    assert_int_equal(kill(epmd_child, SIGKILL), 0);
    assert_int_equal(waitpid(epmd_child, NULL, 0), epmd_child);
    epmd_child = 0;
    assert_false(epmd_is_running(200));
}

static void test_port_please_gives_up_at_its_deadline_when_epmd_never_answers(void **state) {
    (void)state;
    int fd = silent_epmd();
    struct in_addr lo = {.s_addr = htonl(INADDR_LOOPBACK)};
    int64_t start = now_ms();
    errno = 0;
    /* ei_connect's own lookup waits here for ever (no timeout on the epmd socket). */
    assert_int_equal(epmd_port_please(&lo, "ghost", start + 300), -1);
    assert_int_equal(errno, ETIMEDOUT);
    assert_true(now_ms() - start >= 250); /* a lower bound: load only adds to it */
    close(fd);
}

static void test_port_please_refused_when_no_epmd_listens(void **state) {
    (void)state;
    use_port(free_port());
    struct in_addr lo = {.s_addr = htonl(INADDR_LOOPBACK)};
    errno = 0;
    assert_int_equal(epmd_port_please(&lo, "ghost", now_ms() + 60000), -1);
    assert_int_equal(errno, ECONNREFUSED);
}

/* Registers `alive` on `port` with the epmd (ALIVE2_REQ); the returned socket keeps it there. */
static int epmd_register(const char *alive, int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)epmd_port())};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    unsigned char req[64];
    size_t n = strlen(alive), len = 13 + n;
    unsigned char head[] = {(unsigned char)(len >> 8),
                            (unsigned char)len,
                            120,
                            (unsigned char)(port >> 8),
                            (unsigned char)port,
                            72,
                            0,
                            0,
                            6,
                            0,
                            5,
                            0,
                            (unsigned char)n};
    memcpy(req, head, sizeof head);
    memcpy(req + sizeof head, alive, n);
    req[sizeof head + n] = 0; /* no extra */
    req[sizeof head + n + 1] = 0;
    assert_int_equal(send(fd, req, sizeof head + n + 2, 0), (ssize_t)(sizeof head + n + 2));
    unsigned char resp[2];
    assert_int_equal(recv(fd, resp, 2, MSG_WAITALL), 2);
    assert_true(resp[0] == 121 || resp[0] == 118); /* ALIVE2_RESP, or ALIVE2_X_RESP (v6) */
    assert_int_equal(resp[1], 0);
    return fd;
}

static void test_port_please_finds_a_registered_node_and_answers_0_for_an_unknown_one(void **s) {
    (void)s;
    int port = free_port();
    use_port(port);
    start_foreground_epmd(port);
    int64_t deadline = now_ms() + 5000;
    while (!epmd_is_running(200)) {
        assert_true(now_ms() < deadline);
        sleep_ms(20);
    }
    int reg = epmd_register("here", 45678);
    struct in_addr lo = {.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(epmd_port_please(&lo, "here", now_ms() + 5000), 45678);
    assert_int_equal(epmd_port_please(&lo, "nobody", now_ms() + 5000), 0);
    errno = 0;
    assert_int_equal(epmd_port_please(&lo, "", now_ms() + 5000), -1);
    assert_int_equal(errno, EINVAL);
    close(reg);
}

static void test_ensure_starts_a_daemon_on_the_configured_port(void **state) {
    (void)state;
    /* The daemon and epmd's intermediate fork are reparented to us, so we can reap them. */
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    int port = free_port();
    use_port(port);
    assert_false(epmd_is_running(200));
    int leak = socket(AF_INET, SOCK_STREAM, 0); /* no SOCK_CLOEXEC: must still not reach epmd */
    assert_true(leak > 2);
    char leak_name[64], link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", leak);
    ssize_t n = readlink(link, leak_name, sizeof leak_name - 1);
    assert_true(n > 0);
    leak_name[n] = '\0';

    char err[256] = "";
    assert_int_equal(epmd_ensure(5000, err, sizeof err), 0);
    assert_string_equal(err, "");
    close(leak);
    epmd_daemon = find_epmd_daemon(port);
    assert_true(epmd_daemon > 0);
    assert_true(epmd_is_running(500));
    for (int fd = 0; fd < 64; fd++) {
        char target[64];
        snprintf(link, sizeof link, "/proc/%d/fd/%d", (int)epmd_daemon, fd);
        n = readlink(link, target, sizeof target - 1);
        if (n <= 0) continue;
        target[n] = '\0';
        assert_string_not_equal(target, leak_name);
    }

    assert_int_equal(kill(epmd_daemon, SIGTERM), 0);
    int64_t deadline = now_ms() + 3000;
    while (pid_alive(epmd_daemon)) {
        if (now_ms() > deadline) kill(epmd_daemon, SIGKILL);
        assert_true(now_ms() < deadline + 2000);
        sleep_ms(20);
    }
    assert_int_equal(waitpid(epmd_daemon, NULL, 0), epmd_daemon);
    epmd_daemon = 0;
    assert_false(epmd_is_running(200));
}

static void test_ensure_reports_epmd_missing_from_path(void **state) {
    (void)state;
    use_port(free_port());
    snprintf(saved_path, sizeof saved_path, "%s", getenv("PATH") ? getenv("PATH") : "");
    setenv("PATH", "/nonexistent", 1);
    char err[256];
    assert_int_equal(epmd_ensure(500, err, sizeof err), -1);
    assert_non_null(strstr(err, "not found on $PATH"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_port_defaults_and_rejects_invalid_values, teardown),
        cmocka_unit_test_teardown(test_is_running_false_on_a_closed_port, teardown),
        cmocka_unit_test_teardown(test_is_running_false_when_listener_never_answers, teardown),
        cmocka_unit_test_teardown(test_is_running_true_against_a_real_epmd, teardown),
        cmocka_unit_test_teardown(test_port_please_gives_up_at_its_deadline_when_epmd_never_answers,
                                  teardown),
        cmocka_unit_test_teardown(test_port_please_refused_when_no_epmd_listens, teardown),
        cmocka_unit_test_teardown(
            test_port_please_finds_a_registered_node_and_answers_0_for_an_unknown_one, teardown),
        cmocka_unit_test_teardown(test_ensure_starts_a_daemon_on_the_configured_port, teardown),
        cmocka_unit_test_teardown(test_ensure_reports_epmd_missing_from_path, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
