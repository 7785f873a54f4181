/* sdnotify: sends systemd readiness/status datagrams to $NOTIFY_SOCKET without libsystemd. */
#include "sdnotify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Fills `sa` from a $NOTIFY_SOCKET value; returns the address length or -1 with errno set. */
static int notify_address(const char *path, struct sockaddr_un *sa, socklen_t *len) {
    size_t n = strlen(path);
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (path[0] != '/' && path[0] != '@') {
        errno = EINVAL;
        return -1;
    }
    /* A path needs its terminating NUL inside sun_path; an abstract name does not. */
    if (n > sizeof sa->sun_path - (path[0] == '/' ? 1 : 0)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(sa->sun_path, path, n);
    if (path[0] == '@') sa->sun_path[0] = '\0';
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '/' ? 1 : 0));
    return 0;
}

int sdnotify_send(const char *state) {
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !path[0]) return 0;
    if (!state || !state[0]) {
        errno = EINVAL;
        return -1;
    }
    struct sockaddr_un sa;
    socklen_t len = 0;
    if (notify_address(path, &sa, &len) != 0) return -1;

    int saved = errno;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    ssize_t sent;
    do {
        sent = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, len);
    } while (sent < 0 && errno == EINTR);
    int err = errno;
    close(fd);
    if (sent < 0) {
        errno = err;
        return -1;
    }
    if ((size_t)sent != strlen(state)) {
        errno = EMSGSIZE;
        return -1;
    }
    errno = saved;
    return 0;
}

int sdnotify_ready(void) {
    return sdnotify_send("READY=1");
}

int sdnotify_stopping(void) {
    return sdnotify_send("STOPPING=1");
}

int sdnotify_status(const char *fmt, ...) {
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !path[0]) return 0;
    if (!fmt) {
        errno = EINVAL;
        return -1;
    }
    char buf[7 + 1024 + 1] = "STATUS=";
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + 7, sizeof buf - 7, fmt, ap);
    va_end(ap);
    if (n < 0) return -1;
    for (char *p = buf + 7; *p; p++) {
        if (*p == '\n' || *p == '\r') *p = ' ';
    }
    return sdnotify_send(buf);
}

/* Parses a positive decimal number; -1 when s is not one. */
static long long positive_number(const char *s) {
    if (!s || !*s) return -1;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v <= 0) return -1;
    return v;
}

long long sdnotify_watchdog_ms(void) {
    int saved = errno;
    long long usec = positive_number(getenv("WATCHDOG_USEC"));
    const char *pid_s = getenv("WATCHDOG_PID");
    long long pid = pid_s && *pid_s ? positive_number(pid_s) : (long long)getpid();
    errno = saved;
    if (usec <= 0 || pid != (long long)getpid()) return 0;
    return usec < 1000 ? 1 : usec / 1000;
}

int sdnotify_watchdog(void) {
    return sdnotify_send("WATCHDOG=1");
}
