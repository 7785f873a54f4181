/* epmd: the Erlang port mapper: checks it answers, starts it, asks it for a node's port. */
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
#define EPMD_PORT2_REQ    122
#define EPMD_PORT2_RESP   119

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

/* A TCP connection to `addr`:`port` made before the deadline (non-blocking), or -1 with errno. */
static int connect_by(const struct in_addr *addr, int port, int64_t deadline) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr = *addr;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int soerr = errno;
        socklen_t len = sizeof soerr;
        if (soerr == EINPROGRESS) {
            soerr = ETIMEDOUT;
            if (wait_fd(fd, POLLOUT, deadline) == 0 &&
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
                soerr = errno;
        }
        if (soerr != 0) {
            close(fd);
            errno = soerr;
            return -1;
        }
    }
    return fd;
}

/* Reads exactly `len` bytes before the deadline. Returns 0, or -1 with errno (ETIMEDOUT, or
 * ECONNRESET when the peer closed first). */
static int recv_all_by(int fd, unsigned char *buf, size_t len, int64_t deadline) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = recv(fd, buf + got, len - got, 0);
        if (n > 0) {
            got += (size_t)n;
        } else if (n == 0) {
            errno = ECONNRESET;
            return -1;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (wait_fd(fd, POLLIN, deadline) != 0) {
                errno = ETIMEDOUT;
                return -1;
            }
        } else if (errno != EINTR) {
            return -1;
        }
    }
    return 0;
}

int epmd_is_running(int timeout_ms) {
    int64_t deadline = now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    struct in_addr lo = {.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = connect_by(&lo, epmd_port(), deadline);
    if (fd < 0) return 0;
    int ok = 0;
    /* NAMES_REQ: 2-byte big-endian length 1, then the request byte. Small enough to send whole. */
    static const unsigned char req[3] = {0, 1, EPMD_NAMES_REQ};
    if (send(fd, req, sizeof req, MSG_NOSIGNAL) != (ssize_t)sizeof req) goto out;
    /* The reply starts with epmd's own port as a 4-byte big-endian integer. */
    unsigned char reply[4];
    if (recv_all_by(fd, reply, sizeof reply, deadline) != 0) goto out;
    uint32_t their_port =
        (uint32_t)reply[0] << 24 | (uint32_t)reply[1] << 16 | (uint32_t)reply[2] << 8 | reply[3];
    ok = their_port >= 1 && their_port <= 65535;
out:
    close(fd);
    return ok;
}

int epmd_port_please(const struct in_addr *addr, const char *alive, int64_t deadline_ms) {
    size_t len = strlen(alive);
    if (len == 0 || len > 255) {
        errno = EINVAL;
        return -1;
    }
    int fd = connect_by(addr, epmd_port(), deadline_ms);
    if (fd < 0) return -1;
    /* PORT_PLEASE2_REQ: 2-byte big-endian length, the request byte, the alive name. */
    unsigned char req[3 + 255];
    req[0] = (unsigned char)((len + 1) >> 8);
    req[1] = (unsigned char)(len + 1);
    req[2] = EPMD_PORT2_REQ;
    for (size_t i = 0; i < len; i++) req[3 + i] = (unsigned char)alive[i]; /* no NUL sent */
    int rc = -1;
    size_t sent = 0;
    while (sent < len + 3) {
        ssize_t n = send(fd, req + sent, len + 3 - sent, MSG_NOSIGNAL);
        if (n > 0) {
            sent += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(fd, POLLOUT, deadline_ms) != 0) {
                errno = ETIMEDOUT;
                goto out;
            }
        } else if (n < 0 && errno != EINTR) {
            goto out;
        }
    }
    /* PORT2_RESP: 119, result (0 found); when found: port (2 bytes), node type, protocol,
     * highest and lowest version (2 bytes each), then the name and extra, which we skip. */
    unsigned char head[2];
    if (recv_all_by(fd, head, sizeof head, deadline_ms) != 0) goto out;
    if (head[0] != EPMD_PORT2_RESP) {
        errno = EPROTO;
        goto out;
    }
    if (head[1] != 0) {
        rc = 0; /* no such name */
        goto out;
    }
    unsigned char body[8];
    if (recv_all_by(fd, body, sizeof body, deadline_ms) != 0) goto out;
    int port = body[0] << 8 | body[1];
    if (port < 1 || body[3] != 0 /* protocol: TCP/IP v4 */) {
        errno = EPROTO;
        goto out;
    }
    rc = port;
out:
    close(fd);
    return rc;
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
