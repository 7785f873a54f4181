/* child: starts a supervised OS process with piped stdout/stderr and ends it; Linux-only. */
#include "child.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"

#define CHILD_LINE_MAX 65536 /* longer lines are delivered in pieces */

extern char **environ;

struct child {
    pid_t pid;
    bool exited;
    int status;
    int fd[2];    /* stdout, stderr read ends; -1 once closed */
    char *buf[2]; /* partial line per stream, CHILD_LINE_MAX + 1 bytes, lazily allocated */
    size_t buf_len[2];
    bool cut[2];   /* the last piece delivered was cut: a newline right after ends it */
    bool ended[2]; /* read to EOF or an error: nothing more is read; fd open until closed */
};

/* Async-signal-safe helpers for the forked child: no malloc, no stdio, no locale. */

static void safe_write(const char *s) {
    size_t len = strlen(s);
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, s, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        s += n;
        len -= (size_t)n;
    }
}

/* strerror() may allocate and is not async-signal-safe; these cover what execve/chdir report. */
static const char *safe_errno_text(int err) {
    switch (err) {
    case ENOENT: return "No such file or directory";
    case EACCES: return "Permission denied";
    case EPERM: return "Operation not permitted";
    case ENOEXEC: return "Exec format error";
    case ENOTDIR: return "Not a directory";
    case EISDIR: return "Is a directory";
    case ELOOP: return "Too many levels of symbolic links";
    case ENAMETOOLONG: return "File name too long";
    case ENOMEM: return "Cannot allocate memory";
    case E2BIG: return "Argument list too long";
    case ETXTBSY: return "Text file busy";
    case EMFILE: return "Too many open files";
    case EIO: return "Input/output error";
    default: return NULL;
    }
}

/* Writes "nodexd: <what> <path>: <reason>\n" to stderr (the child's stderr pipe). */
static void safe_report(const char *what, const char *path, int err) {
    char num[16];
    char *p = num + sizeof num;
    *--p = '\0';
    int v = err;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0 && p > num);
    const char *text = safe_errno_text(err);
    safe_write("nodexd: ");
    safe_write(what);
    safe_write(" ");
    safe_write(path);
    safe_write(": ");
    safe_write(text ? text : "errno ");
    if (!text) safe_write(p);
    safe_write("\n");
}

void child_exec_prepare(void) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    /* Handlers are reset by execve anyway, but SIG_IGN would survive it. Errors (SIGKILL, SIGSTOP,
     * glibc's internal signals) are expected and harmless. */
    for (int sig = 1; sig < NSIG; sig++) sigaction(sig, &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (close_range(3, ~0U, 0) != 0) {
        struct rlimit rl;
        rlim_t max = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
        if (max > 1048576) max = 1048576;
        for (rlim_t fd = 3; fd < max; fd++) close((int)fd);
    }
}

/* Builds nodexd's environment with `extra` added or replacing same-named entries. The strings
 * are borrowed; only the array is allocated. */
static char **build_envp(const char *const *extra) {
    size_t n_env = 0, n_extra = 0;
    while (environ && environ[n_env]) n_env++;
    while (extra && extra[n_extra]) n_extra++;
    char **envp = calloc(n_env + n_extra + 1, sizeof *envp);
    if (!envp) return NULL;
    size_t n = 0;
    for (size_t i = 0; i < n_env; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t name_len = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        bool replaced = false;
        for (size_t j = 0; j < n_extra && !replaced; j++) {
            replaced = strncmp(extra[j], environ[i], name_len) == 0 && extra[j][name_len] == '=';
        }
        if (!replaced) envp[n++] = environ[i];
    }
    for (size_t j = 0; j < n_extra; j++) envp[n++] = (char *)extra[j];
    envp[n] = NULL;
    return envp;
}

/* Moves fd out of the 0..2 range so the dup2 calls in the child cannot clobber each other. */
static int fd_above_stdio(int fd) {
    if (fd > STDERR_FILENO) return fd;
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
    int saved = errno;
    close(fd);
    errno = saved;
    return moved;
}

/* Runs in the forked child; never returns. Only async-signal-safe calls from here to execve. */
static _Noreturn void child_exec(const child_spec *spec, char **envp, pid_t parent, int in_fd,
                                 int out_fd, int err_fd) {
    if (dup2(in_fd, STDIN_FILENO) < 0 || dup2(out_fd, STDOUT_FILENO) < 0 ||
        dup2(err_fd, STDERR_FILENO) < 0) {
        _exit(127);
    }
    setpgid(0, 0);
    /* Die with nodexd. If it already died before prctl took effect, getppid() has changed. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
        safe_report("cannot set PR_SET_PDEATHSIG for", spec->argv[0], errno);
        _exit(127);
    }
    if (getppid() != parent) _exit(127);
    child_exec_prepare(); /* also closes the pipes' original fds */
    if (spec->cwd && chdir(spec->cwd) != 0) {
        safe_report("cannot chdir to", spec->cwd, errno);
        _exit(127);
    }
    execve(spec->argv[0], (char *const *)spec->argv, envp);
    safe_report("cannot exec", spec->argv[0], errno);
    _exit(127);
}

child *child_spawn(const child_spec *spec) {
    if (!spec || !spec->argv || !spec->argv[0]) {
        errno = EINVAL;
        return NULL;
    }
    child *c = calloc(1, sizeof *c);
    char **envp = build_envp(spec->env);
    int in_fd = -1, out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
    int saved_errno = ENOMEM;
    if (!c || !envp) goto fail;
    c->fd[0] = c->fd[1] = -1;
    in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (in_fd < 0 || (in_fd = fd_above_stdio(in_fd)) < 0) goto fail_errno;
    if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) goto fail_errno;
    for (int i = 0; i < 2; i++) {
        if ((out_pipe[i] = fd_above_stdio(out_pipe[i])) < 0) goto fail_errno;
        if ((err_pipe[i] = fd_above_stdio(err_pipe[i])) < 0) goto fail_errno;
    }
    if (fcntl(out_pipe[0], F_SETFL, O_NONBLOCK) != 0 ||
        fcntl(err_pipe[0], F_SETFL, O_NONBLOCK) != 0) {
        goto fail_errno;
    }

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) goto fail_errno;
    if (pid == 0) child_exec(spec, envp, parent, in_fd, out_pipe[1], err_pipe[1]);

    /* Also set the group from this side so child_signal reaches it even before the child runs. */
    setpgid(pid, pid);
    c->pid = pid;
    c->fd[0] = out_pipe[0];
    c->fd[1] = err_pipe[0];
    close(in_fd);
    close(out_pipe[1]);
    close(err_pipe[1]);
    free(envp);
    return c;

fail_errno:
    saved_errno = errno;
fail:
    if (in_fd >= 0) close(in_fd);
    for (int i = 0; i < 2; i++) {
        if (out_pipe[i] >= 0) close(out_pipe[i]);
        if (err_pipe[i] >= 0) close(err_pipe[i]);
    }
    free(envp);
    free(c);
    errno = saved_errno;
    return NULL;
}

pid_t child_pid(const child *c) {
    return c->pid;
}

int child_output_fd(const child *c, int stream) {
    return stream == 0 || stream == 1 ? c->fd[stream] : -1;
}

static void close_stream(child *c, int stream) {
    if (c->fd[stream] >= 0) close(c->fd[stream]);
    c->fd[stream] = -1;
}

void child_close_output(child *c, int stream) {
    if (stream == 0 || stream == 1) close_stream(c, stream);
}

/* Hands line[0..len) to on_line NUL-terminated; the byte after it (inside the buffer) is restored.
 */
static void deliver(int stream, char *line, size_t len,
                    void (*on_line)(void *, int, const char *, size_t), void *ctx) {
    char saved = line[len];
    line[len] = '\0';
    on_line(ctx, stream, line, len);
    line[len] = saved;
}

/* Delivers every complete line in the buffer (and a full-buffer piece), keeping the rest. */
static void split_lines(child *c, int stream, void (*on_line)(void *, int, const char *, size_t),
                        void *ctx) {
    char *buf = c->buf[stream];
    size_t len = c->buf_len[stream], start = 0;
    for (;;) {
        char *nl = memchr(buf + start, '\n', len - start);
        size_t end;
        size_t next;
        if (nl) {
            end = (size_t)(nl - buf);
            next = end + 1;
            if (end > start && buf[end - 1] == '\r') end--;
        } else if (len - start == CHILD_LINE_MAX) {
            /* Cut an overlong line, but keep a trailing '\r': it may be half of "\r\n". */
            end = len - (buf[len - 1] == '\r' ? 1 : 0);
            next = end;
        } else {
            break;
        }
        /* The terminator of a line already delivered in pieces is not an empty line. */
        bool terminator_only = c->cut[stream] && nl && end == start;
        if (!terminator_only) deliver(stream, buf + start, end - start, on_line, ctx);
        c->cut[stream] = !nl;
        start = next;
    }
    memmove(buf, buf + start, len - start);
    c->buf_len[stream] = len - start;
}

int child_read_lines(child *c, int stream,
                     void (*on_line)(void *ctx, int stream, const char *line, size_t len),
                     void *ctx) {
    if (stream != 0 && stream != 1) return -1;
    if (c->fd[stream] < 0 || c->ended[stream]) return 0;
    if (!c->buf[stream]) {
        c->buf[stream] = malloc(CHILD_LINE_MAX + 1);
        if (!c->buf[stream]) {
            c->ended[stream] = true; /* a retry would need another readiness event */
            errno = ENOMEM;
            return -1;
        }
    }
    for (;;) {
        size_t used = c->buf_len[stream];
        ssize_t n = read(c->fd[stream], c->buf[stream] + used, CHILD_LINE_MAX - used);
        if (n > 0) {
            c->buf_len[stream] = used + (size_t)n;
            split_lines(c, stream, on_line, ctx);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 1;
        if (n == 0 && used > 0) deliver(stream, c->buf[stream], used, on_line, ctx);
        c->buf_len[stream] = 0;
        int rc = n == 0 ? 0 : -1;
        int saved = errno;
        c->ended[stream] = true;
        free(c->buf[stream]);
        c->buf[stream] = NULL;
        errno = saved;
        return rc;
    }
}

bool child_poll_exit(child *c, int *status) {
    while (!c->exited) {
        int st = 0;
        pid_t r = waitpid(c->pid, &st, WNOHANG);
        if (r == 0) return false;
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            /* Someone else reaped it (SIGCHLD set to SIG_IGN?): report it as an exit. */
            log_warn("child %d: waitpid: %s", (int)c->pid, strerror(errno));
            st = 255 << 8;
        }
        c->exited = true;
        c->status = st;
    }
    if (status) *status = c->status;
    return true;
}

bool child_exited(const child *c) {
    return c->exited;
}

void child_signal(child *c, int sig) {
    if (c->exited) return;
    kill(-c->pid, sig); /* the group: whatever the child started too */
    kill(c->pid, sig);  /* in case it left its group */
}

void child_describe_status(int status, char *out, size_t out_len) {
    if (!out || out_len == 0) return;
    if (WIFEXITED(status)) {
        snprintf(out, out_len, "exit status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        const char *descr = sigdescr_np(sig);
        snprintf(out, out_len, "killed by signal %d (%s)%s", sig, descr ? descr : "unknown",
                 WCOREDUMP(status) ? ", core dumped" : "");
    } else if (WIFSTOPPED(status)) {
        snprintf(out, out_len, "stopped by signal %d", WSTOPSIG(status));
    } else {
        snprintf(out, out_len, "unknown wait status 0x%x", (unsigned)status);
    }
}

void child_free(child *c) {
    if (!c) return;
    if (!c->exited) {
        child_signal(c, SIGKILL);
        int st = 0;
        while (waitpid(c->pid, &st, 0) < 0 && errno == EINTR) {
        }
        c->exited = true;
        c->status = st;
    }
    for (int i = 0; i < 2; i++) {
        close_stream(c, i);
        free(c->buf[i]);
    }
    free(c);
}
