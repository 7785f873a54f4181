/* epmd: checks that the Erlang port mapper answers, and starts it when it does not. */
#include "epmd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "child.h"

#define EPMD_DEFAULT_PORT 4369
#define EPMD_NAMES_REQ    110

extern char **environ;

int epmd_port(void) {
    const char *s = getenv("ERL_EPMD_PORT");
    if (!s || *s < '0' || *s > '9') return EPMD_DEFAULT_PORT; /* strtol would allow " +80" */
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 1 || v > 65535) return EPMD_DEFAULT_PORT;
    return (int)v;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int ms_left(int64_t deadline) {
    int64_t left = deadline - now_ms();
    return left < 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
}

/* Waits for `events` on fd until the deadline; poll, not select, so any fd number works. */
static int wait_fd(int fd, short events, int64_t deadline) {
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = events};
        int r = poll(&pfd, 1, ms_left(deadline));
        if (r < 0 && errno == EINTR) continue;
        return r > 0 ? 0 : -1;
    }
}

int epmd_is_running(int timeout_ms) {
    int64_t deadline = now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    int port = epmd_port();
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = 0;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        if (errno != EINPROGRESS || wait_fd(fd, POLLOUT, deadline) != 0) goto out;
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0) goto out;
    }
    /* NAMES_REQ: 2-byte big-endian length 1, then the request byte. Small enough to send whole. */
    static const unsigned char req[3] = {0, 1, EPMD_NAMES_REQ};
    if (send(fd, req, sizeof req, MSG_NOSIGNAL) != (ssize_t)sizeof req) goto out;
    /* The reply starts with epmd's own port as a 4-byte big-endian integer. */
    unsigned char reply[4];
    size_t got = 0;
    while (got < sizeof reply) {
        ssize_t n = recv(fd, reply + got, sizeof reply - got, 0);
        if (n > 0) {
            got += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(fd, POLLIN, deadline) != 0) goto out;
        } else {
            goto out;
        }
    }
    uint32_t their_port =
        (uint32_t)reply[0] << 24 | (uint32_t)reply[1] << 16 | (uint32_t)reply[2] << 8 | reply[3];
    ok = their_port >= 1 && their_port <= 65535;
out:
    close(fd);
    return ok;
}

/* Finds `name` on $PATH before forking: execvp is not on the async-signal-safe list. */
static int find_in_path(const char *name, char *out, size_t out_len) {
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t dir_len = strcspn(path, ":");
        const char *dir = dir_len ? path : ".";
        int dl = dir_len ? (int)dir_len : 1;
        int n = snprintf(out, out_len, "%.*s/%s", dl, dir, name);
        struct stat st;
        if (n > 0 && (size_t)n < out_len && stat(out, &st) == 0 && S_ISREG(st.st_mode) &&
            access(out, X_OK) == 0) {
            return 0;
        }
        path += dir_len;
        if (*path == ':') path++;
    }
    return -1;
}

/* Waits for the `epmd -daemon` launcher (it forks the daemon and exits). */
static int reap_launcher(pid_t pid, int64_t deadline, int *status) {
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) return 0;
        if (r < 0 && errno != EINTR) return -1;
        if (r == 0 && ms_left(deadline) == 0) {
            kill(pid, SIGKILL);
            while (waitpid(pid, status, 0) < 0 && errno == EINTR) {
            }
            return -1;
        }
        if (r == 0) {
            struct timespec ts = {0, 10L * 1000000};
            nanosleep(&ts, NULL);
        }
    }
}

int epmd_ensure(int timeout_ms, char *err, size_t err_len) {
    char scratch[1];
    if (!err || err_len == 0) {
        err = scratch;
        err_len = sizeof scratch;
    }
    err[0] = '\0';
    if (epmd_is_running(timeout_ms < 500 ? timeout_ms : 500)) return 0;
    int64_t deadline = now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    char exe[PATH_MAX];
    if (find_in_path("epmd", exe, sizeof exe) != 0) {
        snprintf(err, err_len, "epmd is not running on port %d and not found on $PATH",
                 epmd_port());
        return -1;
    }
    char *const argv[] = {exe, "-daemon", NULL};
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, err_len, "cannot start epmd: fork: %s", strerror(errno));
        if (devnull >= 0) close(devnull);
        return -1;
    }
    if (pid == 0) {
        /* The daemon outlives nodexd: no PDEATHSIG, its own session (epmd does setsid itself),
         * and none of nodexd's fds, blocked signals or ignored signals. */
        if (devnull >= 0) {
            dup2(devnull, STDIN_FILENO);
            dup2(devnull, STDOUT_FILENO);
        }
        child_exec_prepare();
        execve(exe, argv, environ);
        _exit(127);
    }
    if (devnull >= 0) close(devnull);
    int status = 0;
    if (reap_launcher(pid, deadline, &status) != 0) {
        snprintf(err, err_len, "epmd -daemon (%s) did not return within %d ms", exe, timeout_ms);
        return -1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char what[64];
        child_describe_status(status, what, sizeof what);
        snprintf(err, err_len, "epmd -daemon (%s) failed: %s", exe, what);
        return -1;
    }
    for (;;) {
        int left = ms_left(deadline);
        if (epmd_is_running(left < 200 ? left : 200)) return 0;
        if (ms_left(deadline) == 0) break;
        struct timespec ts = {0, 20L * 1000000};
        nanosleep(&ts, NULL);
    }
    snprintf(err, err_len, "epmd started (%s -daemon) but did not answer on port %d within %d ms",
             exe, epmd_port(), timeout_ms);
    return -1;
}
