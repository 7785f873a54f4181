/* cookie: finds the Erlang distribution cookie (config, environment or file) without leaking it. */
#include "cookie.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define COOKIE_FILE_MAX 1024 /* Erlang cookies are short; anything bigger is not a cookie file */
#define COOKIE_NEW_LEN  20

/* Strips trailing whitespace and checks the rest; returns 0, or -1 with err set. */
static int cookie_accept(char *s, size_t len, const char *origin, char *out, size_t out_len,
                         char *err, size_t err_len) {
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\n' ||
                       s[len - 1] == '\r' || s[len - 1] == '\v' || s[len - 1] == '\f')) {
        len--;
    }
    if (len == 0) {
        snprintf(err, err_len, "cookie from %s is empty", origin);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f) {
            snprintf(err, err_len, "cookie from %s contains control characters", origin);
            return -1;
        }
    }
    if (len >= out_len) {
        snprintf(err, err_len, "cookie from %s is too long (%zu bytes, at most %zu)", origin, len,
                 out_len ? out_len - 1 : 0);
        return -1;
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

/* Creates `path` with a fresh random cookie, as erl does. Returns 0, 1 when the file appeared in
 * the meantime (EEXIST: read it instead), or -1 with err set. */
static int cookie_create(const char *path, char *err, size_t err_len) {
    char cookie[COOKIE_NEW_LEN];
    size_t n = 0;
    while (n < sizeof cookie) {
        unsigned char rnd[32];
        ssize_t got = getrandom(rnd, sizeof rnd, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            snprintf(err, err_len, "cannot create cookie file %s: getrandom: %s", path,
                     strerror(errno));
            return -1;
        }
        /* Rejection sampling keeps the 26 letters equally likely (234 = 9 * 26). */
        for (ssize_t i = 0; i < got && n < sizeof cookie; i++) {
            if (rnd[i] < 234) cookie[n++] = (char)('A' + rnd[i] % 26);
        }
        explicit_bzero(rnd, sizeof rnd);
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0400);
    if (fd < 0) {
        explicit_bzero(cookie, sizeof cookie);
        if (errno == EEXIST) return 1;
        snprintf(err, err_len, "cannot create cookie file %s: %s", path, strerror(errno));
        return -1;
    }
    size_t off = 0;
    while (off < sizeof cookie) {
        ssize_t w = write(fd, cookie + off, sizeof cookie - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    explicit_bzero(cookie, sizeof cookie);
    int saved = errno;
    if (off < sizeof cookie || close(fd) != 0) {
        if (off < sizeof cookie)
            close(fd);
        else
            saved = errno;
        unlink(path); /* a half-written cookie would be read as the real one next time */
        snprintf(err, err_len, "cannot write cookie file %s: %s", path, strerror(saved));
        return -1;
    }
    return 0;
}

/* Reads and checks the cookie file. Returns 0, 1 when it does not exist, or -1 with err set. */
static int cookie_read_file(const char *path, char *out, size_t out_len, char *err,
                            size_t err_len) {
    /* O_NONBLOCK: opening a FIFO must not hang; it is rejected as not regular below. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT) return 1;
        snprintf(err, err_len, "cannot open cookie file %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, err_len, "cannot stat cookie file %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, err_len, "cookie file %s is not a regular file", path);
        close(fd);
        return -1;
    }
    if ((st.st_mode & 077) != 0) {
        snprintf(err, err_len, "cookie file %s is readable by others (mode %04o); chmod 400 it",
                 path, (unsigned)(st.st_mode & 07777));
        close(fd);
        return -1;
    }
    char buf[COOKIE_FILE_MAX + 1];
    size_t len = 0;
    int rc = 0;
    while (len < sizeof buf) {
        ssize_t n = read(fd, buf + len, sizeof buf - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            snprintf(err, err_len, "cannot read cookie file %s: %s", path, strerror(errno));
            rc = -1;
            break;
        }
        if (n == 0) break;
        len += (size_t)n;
    }
    close(fd);
    if (rc == 0 && len > COOKIE_FILE_MAX) {
        snprintf(err, err_len, "cookie file %s is too large (over %d bytes)", path,
                 COOKIE_FILE_MAX);
        rc = -1;
    }
    if (rc == 0) {
        char origin[PATH_MAX + 16];
        snprintf(origin, sizeof origin, "file %s", path);
        rc = cookie_accept(buf, len, origin, out, out_len, err, err_len);
    }
    explicit_bzero(buf, sizeof buf);
    return rc;
}

int cookie_resolve(const char *literal, const char *env_name, const char *file_path,
                   int create_default, char *out, size_t out_len, char *err, size_t err_len) {
    char scratch[1];
    if (!err || err_len == 0) { /* callers always want a reason, but never crash without one */
        err = scratch;
        err_len = sizeof scratch;
    }
    err[0] = '\0';
    if (!out || out_len == 0) {
        snprintf(err, err_len, "no room for the cookie");
        return -1;
    }
    out[0] = '\0';
    if (literal) {
        char copy[COOKIE_FILE_MAX + 1];
        size_t len = strnlen(literal, sizeof copy);
        if (len > COOKIE_FILE_MAX) {
            snprintf(err, err_len, "cookie from configuration is too long");
            return -1;
        }
        memcpy(copy, literal, len);
        int rc = cookie_accept(copy, len, "configuration", out, out_len, err, err_len);
        explicit_bzero(copy, sizeof copy);
        return rc;
    }
    const char *env = env_name ? getenv(env_name) : NULL;
    if (env && *env) {
        char copy[COOKIE_FILE_MAX + 1];
        size_t len = strnlen(env, sizeof copy);
        char origin[128];
        snprintf(origin, sizeof origin, "$%s", env_name);
        if (len > COOKIE_FILE_MAX) {
            snprintf(err, err_len, "cookie from %s is too long", origin);
            return -1;
        }
        memcpy(copy, env, len);
        int rc = cookie_accept(copy, len, origin, out, out_len, err, err_len);
        explicit_bzero(copy, sizeof copy);
        return rc;
    }
    if (!file_path || !*file_path) {
        snprintf(err, err_len, "no cookie configured (no literal, environment or file)");
        return -1;
    }
    char path[PATH_MAX];
    if (strncmp(file_path, "~/", 2) == 0) {
        const char *home = getenv("HOME");
        if (!home || !*home) {
            snprintf(err, err_len, "cannot expand cookie file %s: $HOME is not set", file_path);
            return -1;
        }
        if (snprintf(path, sizeof path, "%s/%s", home, file_path + 2) >= (int)sizeof path) {
            snprintf(err, err_len, "cookie file path is too long");
            return -1;
        }
    } else if (snprintf(path, sizeof path, "%s", file_path) >= (int)sizeof path) {
        snprintf(err, err_len, "cookie file path is too long");
        return -1;
    }
    int rc = cookie_read_file(path, out, out_len, err, err_len);
    if (rc <= 0) return rc;
    if (!create_default) {
        snprintf(err, err_len, "cookie file %s does not exist", path);
        return -1;
    }
    /* O_EXCL: if another process created it meanwhile (rc 1), read theirs. */
    if (cookie_create(path, err, err_len) < 0) return -1;
    rc = cookie_read_file(path, out, out_len, err, err_len);
    if (rc == 1) snprintf(err, err_len, "cookie file %s vanished after creation", path);
    return rc == 0 ? 0 : -1;
}
