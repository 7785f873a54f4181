/* child: starts a supervised OS process with piped stdout/stderr and ends it; Linux-only. */
#ifndef NODEX_CHILD_H
#define NODEX_CHILD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* A running (or exited, not yet freed) child. Owned by the caller of child_spawn; child_free ends
 * and reaps it if needed. Not thread-safe: one thread (the event loop) drives each child. */
typedef struct child child;

/* What to start. argv[0] is the executable path (execv, no PATH search); env entries are added
 * to (or replace those of) nodexd's environment; cwd may be NULL. */
typedef struct child_spec {
    const char *const *argv; /* NULL-terminated */
    const char *const *env;  /* "NAME=value", NULL-terminated; may be NULL */
    const char *cwd;
} child_spec;

/* Spawns the process. The child gets PR_SET_PDEATHSIG(SIGKILL) (it dies when nodexd dies, even by
 * SIGKILL; call child_spawn only from a thread that lives as long as the process, since the signal
 * follows the spawning thread), its own process group, stdin from /dev/null, and stdout/stderr
 * on two non-blocking, close-on-exec pipes. An exec failure is reported as an exit with status
 * 127 and the reason on stderr. Returns NULL with errno set on failure. */
child *child_spawn(const child_spec *spec);
/* OS pid. */
pid_t child_pid(const child *c);
/* The read ends of stdout (stream 0) and stderr (stream 1), for epoll; -1 once closed
 * (child_close_output or child_free). */
int child_output_fd(const child *c, int stream);

/* Reads what is available on `stream` and calls `on_line` for every complete line, with the
 * trailing "\n" or "\r\n" stripped (lines over 64 KiB are cut and delivered in pieces). At EOF a
 * final unterminated line is delivered. Returns 1 while open, 0 at EOF (and on every call after),
 * -1 on a read error; after 0 or -1 the fd stays open until child_close_output, so a watcher can
 * take it out of epoll first (a closed fd cannot be: a forked child's copy keeps its events
 * coming). Never blocks; reads until EAGAIN (edge-triggered epoll is fine). `line`
 * is NUL-terminated and valid only during the call; on_line must not free `c`. */
int child_read_lines(child *c, int stream,
                     void (*on_line)(void *ctx, int stream, const char *line, size_t len),
                     void *ctx);
/* Closes `stream`'s read end (take it out of epoll before). */
void child_close_output(child *c, int stream);

/* Non-blocking reap: returns true once the child has exited (then fills *status with the raw
 * waitpid status, see WIFEXITED etc.), false while it runs. Safe to call repeatedly. */
bool child_poll_exit(child *c, int *status);
/* True once child_poll_exit has seen the exit. */
bool child_exited(const child *c);
/* Sends `sig` to the child's process group (and the child). No-op once exited. */
void child_signal(child *c, int sig);
/* Describes a raw wait status: "exit status 3" or "killed by signal 9 (Killed)". */
void child_describe_status(int status, char *out, size_t out_len);
/* For a freshly forked child about to exec (async-signal-safe): every signal back to its default
 * disposition, an empty signal mask, and every fd above 2 closed. Used by child_spawn and epmd. */
void child_exec_prepare(void);
/* Ends the child (SIGKILL if still running), reaps it (blocking, it cannot survive SIGKILL), closes
 * the pipes and frees. NULL is allowed. */
void child_free(child *c);

#endif
