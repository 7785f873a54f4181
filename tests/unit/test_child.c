/* test_child: spawning, line reading, exit/signal status, exec failures, PDEATHSIG, fd hygiene. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "child.h"

#define MAX_LINES 64

/* What a test started, so the teardown can end it even after a failed assertion. */
static child *live_child[2];
static pid_t live_pid[2];

static void track_pid(pid_t pid) {
    for (int i = 0; i < 2; i++) {
        if (live_pid[i] <= 0) {
            live_pid[i] = pid;
            return;
        }
    }
}

static void untrack_pid(pid_t pid) {
    for (int i = 0; i < 2; i++)
        if (live_pid[i] == pid) live_pid[i] = 0;
}

static child *track(child *c) {
    for (int i = 0; i < 2; i++) {
        if (!live_child[i]) {
            live_child[i] = c;
            return c;
        }
    }
    return c;
}

/* child_free plus forgetting it. */
static void done(child *c) {
    for (int i = 0; i < 2; i++)
        if (live_child[i] == c) live_child[i] = NULL;
    child_free(c);
}

static int teardown(void **state) {
    (void)state;
    for (int i = 0; i < 2; i++) {
        child_free(live_child[i]);
        live_child[i] = NULL;
        if (live_pid[i] > 0) {
            kill(live_pid[i], SIGKILL);
            waitpid(live_pid[i], NULL, 0); /* ECHILD if it was not ours to reap: fine */
            live_pid[i] = 0;
        }
    }
    prctl(PR_SET_CHILD_SUBREAPER, 0);
    return 0;
}

typedef struct output {
    char *lines[2][MAX_LINES];
    size_t lens[2][MAX_LINES];
    int count[2];
} output;

static void on_line(void *ctx, int stream, const char *line, size_t len) {
    output *o = ctx;
    assert_int_equal(line[len], '\0');
    assert_true(o->count[stream] < MAX_LINES);
    o->lines[stream][o->count[stream]] = strndup(line, len);
    o->lens[stream][o->count[stream]] = len;
    o->count[stream]++;
}

static void output_free(output *o) {
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < o->count[s]; i++) free(o->lines[s][i]);
    memset(o, 0, sizeof *o);
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Reads both streams to EOF, then waits for the exit; returns the raw status. Fails after 10 s. */
static int run_to_exit(child *c, output *o) {
    int64_t deadline = now_ms() + 10000;
    while (child_output_fd(c, 0) >= 0 || child_output_fd(c, 1) >= 0) {
        struct pollfd pfd[2] = {{.fd = child_output_fd(c, 0), .events = POLLIN},
                                {.fd = child_output_fd(c, 1), .events = POLLIN}};
        assert_true(poll(pfd, 2, 100) >= 0);
        for (int s = 0; s < 2; s++) {
            if (child_output_fd(c, s) < 0) continue;
            int r = child_read_lines(c, s, on_line, o);
            assert_true(r >= 0);
            if (r == 0) child_close_output(c, s);
        }
        assert_true(now_ms() < deadline);
    }
    int status = 0;
    while (!child_poll_exit(c, &status)) {
        assert_true(now_ms() < deadline);
        sleep_ms(5);
    }
    assert_true(child_exited(c));
    return status;
}

static child *spawn_sh(const char *script, const char *const *env, const char *cwd) {
    const char *argv[] = {"/bin/sh", "-c", script, NULL};
    child_spec spec = {.argv = argv, .env = env, .cwd = cwd};
    child *c = child_spawn(&spec);
    assert_non_null(c);
    return track(c);
}

static bool pid_gone(pid_t pid) {
    return kill(pid, 0) != 0 && errno == ESRCH;
}

static void test_lines_strip_lf_and_crlf_and_keep_final_unterminated_line(void **state) {
    (void)state;
    output o = {0};
    child *c =
        spawn_sh("printf 'one\\ntwo\\r\\n\\nthree\\r\\nlast'; printf 'e1\\ne2' >&2", NULL, NULL);
    int status = run_to_exit(c, &o);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(o.count[0], 5);
    assert_string_equal(o.lines[0][0], "one");
    assert_string_equal(o.lines[0][1], "two");
    assert_string_equal(o.lines[0][2], "");
    assert_string_equal(o.lines[0][3], "three");
    assert_string_equal(o.lines[0][4], "last");
    assert_int_equal(o.count[1], 2);
    assert_string_equal(o.lines[1][0], "e1");
    assert_string_equal(o.lines[1][1], "e2");
    assert_int_equal(child_output_fd(c, 0), -1);
    assert_int_equal(child_read_lines(c, 0, on_line, &o), 0); /* EOF stays EOF */
    done(c);
    output_free(&o);
}

/* The fd outlives EOF until child_close_output: a watcher that closed it before taking it out of
 * epoll would keep getting its events (through a forked child's copy) after freeing the watch. */
static void test_a_stream_at_eof_stays_open_until_child_close_output(void **state) {
    (void)state;
    output o = {0};
    child *c = spawn_sh("printf 'bye\\n'", NULL, NULL);
    int fd = child_output_fd(c, 0);
    assert_true(fd >= 0);
    int64_t deadline = now_ms() + 10000;
    int r;
    while ((r = child_read_lines(c, 0, on_line, &o)) == 1) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        assert_true(poll(&pfd, 1, 100) >= 0);
        assert_true(now_ms() < deadline);
    }
    assert_int_equal(r, 0);
    assert_int_equal(o.count[0], 1);
    assert_string_equal(o.lines[0][0], "bye");
    assert_int_equal(child_output_fd(c, 0), fd); /* still open: the caller closes it */
    assert_true(fcntl(fd, F_GETFD) >= 0);
    assert_int_equal(child_read_lines(c, 0, on_line, &o), 0); /* EOF stays EOF, nothing read */
    assert_int_equal(o.count[0], 1);
    child_close_output(c, 0);
    assert_int_equal(child_output_fd(c, 0), -1);
    done(c);
    output_free(&o);
}

static void test_overlong_line_is_cut_in_64k_pieces(void **state) {
    (void)state;
    output o = {0};
    child *c = spawn_sh("head -c 140000 /dev/zero | tr '\\0' a; echo; echo next", NULL, NULL);
    int status = run_to_exit(c, &o);
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(o.count[0], 4);
    assert_int_equal(o.lens[0][0], 65536);
    assert_int_equal(o.lens[0][1], 65536);
    assert_int_equal(o.lens[0][2], 140000 - 2 * 65536);
    assert_string_equal(o.lines[0][3], "next");
    done(c);
    output_free(&o);
}

static void test_crlf_split_at_the_64k_cut_yields_no_empty_line(void **state) {
    (void)state;
    output o = {0};
    /* 65535 bytes, then "\r\n": the '\r' lands on the last byte of a full buffer. */
    child *c =
        spawn_sh("head -c 65535 /dev/zero | tr '\\0' b; printf '\\r\\nafter\\n'", NULL, NULL);
    run_to_exit(c, &o);
    assert_int_equal(o.count[0], 2);
    assert_int_equal(o.lens[0][0], 65535);
    assert_string_equal(o.lines[0][1], "after");
    done(c);
    output_free(&o);
}

static void test_line_of_exactly_64k_yields_one_line(void **state) {
    (void)state;
    output o = {0};
    child *c = spawn_sh("head -c 65536 /dev/zero | tr '\\0' c; echo; echo; echo after", NULL, NULL);
    run_to_exit(c, &o);
    assert_int_equal(o.count[0], 3);
    assert_int_equal(o.lens[0][0], 65536);
    assert_string_equal(o.lines[0][1], ""); /* a real empty line is still delivered */
    assert_string_equal(o.lines[0][2], "after");
    done(c);
    output_free(&o);
}

static void test_exit_status_is_reported_and_described(void **state) {
    (void)state;
    output o = {0};
    child *c = spawn_sh("exit 3", NULL, NULL);
    int status = run_to_exit(c, &o);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 3);
    char text[64];
    child_describe_status(status, text, sizeof text);
    assert_string_equal(text, "exit status 3");
    int again = -1;
    assert_true(child_poll_exit(c, &again)); /* repeated polls return the same status */
    assert_int_equal(again, status);
    done(c);
}

static void test_signal_death_is_reported_and_described(void **state) {
    (void)state;
    output o = {0};
    child *c = spawn_sh("kill -KILL $$", NULL, NULL);
    int status = run_to_exit(c, &o);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
    char text[64];
    child_describe_status(status, text, sizeof text);
    assert_string_equal(text, "killed by signal 9 (Killed)");
    done(c);
}

static void test_describe_status_covers_stop_and_truncation(void **state) {
    (void)state;
    char text[64];
    child_describe_status(W_EXITCODE(0, SIGTERM), text, sizeof text);
    assert_string_equal(text, "killed by signal 15 (Terminated)");
    child_describe_status(W_STOPCODE(SIGSTOP), text, sizeof text);
    assert_string_equal(text, "stopped by signal 19");
    char small[5];
    child_describe_status(W_EXITCODE(42, 0), small, sizeof small);
    assert_string_equal(small, "exit");
}

static void test_exec_failure_of_missing_path_exits_127_with_reason(void **state) {
    (void)state;
    output o = {0};
    const char *argv[] = {"/nonexistent/nodex-cnode", "-x", NULL};
    child_spec spec = {.argv = argv};
    child *c = track(child_spawn(&spec));
    assert_non_null(c);
    int status = run_to_exit(c, &o);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 127);
    assert_int_equal(o.count[0], 0);
    assert_int_equal(o.count[1], 1);
    assert_non_null(strstr(o.lines[1][0], "/nonexistent/nodex-cnode"));
    assert_non_null(strstr(o.lines[1][0], "No such file or directory"));
    done(c);
    output_free(&o);
}

static void test_exec_failure_of_non_executable_reports_permission_denied(void **state) {
    (void)state;
    output o = {0};
    const char *argv[] = {"/etc/passwd", NULL};
    child_spec spec = {.argv = argv};
    child *c = track(child_spawn(&spec));
    assert_non_null(c);
    int status = run_to_exit(c, &o);
    assert_int_equal(WEXITSTATUS(status), 127);
    assert_int_equal(o.count[1], 1);
    assert_non_null(strstr(o.lines[1][0], "Permission denied"));
    done(c);
    output_free(&o);
}

static void test_spawn_rejects_empty_argv(void **state) {
    (void)state;
    const char *argv[] = {NULL};
    child_spec spec = {.argv = argv};
    errno = 0;
    assert_null(child_spawn(&spec));
    assert_int_equal(errno, EINVAL);
}

static void test_env_entries_are_added_and_replace_inherited_ones(void **state) {
    (void)state;
    setenv("NODEX_T_REPLACED", "old", 1);
    setenv("NODEX_T_KEPT", "kept", 1);
    const char *env[] = {"NODEX_T_REPLACED=new", "NODEX_T_ADDED=added value", NULL};
    output o = {0};
    child *c = spawn_sh("echo \"$NODEX_T_REPLACED|$NODEX_T_ADDED|$NODEX_T_KEPT\"; "
                        "env | grep -c '^NODEX_T_REPLACED='",
                        env, NULL);
    run_to_exit(c, &o);
    assert_int_equal(o.count[0], 2);
    assert_string_equal(o.lines[0][0], "new|added value|kept");
    assert_string_equal(o.lines[0][1], "1"); /* replaced, not duplicated */
    done(c);
    output_free(&o);
    unsetenv("NODEX_T_REPLACED");
    unsetenv("NODEX_T_KEPT");
}

static void test_cwd_is_applied(void **state) {
    (void)state;
    char dir[] = "/tmp/nodex-child-XXXXXX";
    assert_non_null(mkdtemp(dir));
    output o = {0};
    child *c = spawn_sh("pwd -P", NULL, dir);
    run_to_exit(c, &o);
    char real[PATH_MAX];
    assert_non_null(realpath(dir, real));
    assert_int_equal(o.count[0], 1);
    assert_string_equal(o.lines[0][0], real);
    done(c);
    output_free(&o);
    assert_int_equal(rmdir(dir), 0);
}

static void test_missing_cwd_exits_127_with_reason(void **state) {
    (void)state;
    output o = {0};
    child *c = spawn_sh("echo should-not-run", NULL, "/nonexistent/dir");
    int status = run_to_exit(c, &o);
    assert_int_equal(WEXITSTATUS(status), 127);
    assert_int_equal(o.count[0], 0);
    assert_int_equal(o.count[1], 1);
    assert_non_null(strstr(o.lines[1][0], "chdir"));
    assert_non_null(strstr(o.lines[1][0], "/nonexistent/dir"));
    done(c);
    output_free(&o);
}

static void test_parent_pipe_ends_are_nonblocking_and_cloexec(void **state) {
    (void)state;
    child *c = spawn_sh("sleep 30", NULL, NULL);
    for (int s = 0; s < 2; s++) {
        int fd = child_output_fd(c, s);
        assert_true(fd > 2);
        assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
        assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    }
    assert_int_equal(child_output_fd(c, 2), -1);
    output o = {0};
    assert_int_equal(child_read_lines(c, 0, on_line, &o), 1); /* nothing yet: does not block */
    assert_int_equal(child_read_lines(c, 7, on_line, &o), -1);
    done(c);
}

static void test_child_inherits_no_fd_beyond_stdio(void **state) {
    (void)state;
    /* Leaks on purpose: no O_CLOEXEC, like a socket opened by a careless library. */
    int leak = open("/dev/null", O_RDONLY);
    int sock = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(leak > 2 && sock > 2);
    output o = {0};
    child *c = spawn_sh("ls /proc/$$/fd", NULL, NULL);
    run_to_exit(c, &o);
    assert_int_equal(o.count[0], 3);
    assert_string_equal(o.lines[0][0], "0");
    assert_string_equal(o.lines[0][1], "1");
    assert_string_equal(o.lines[0][2], "2");
    done(c);
    output_free(&o);
    close(leak);
    close(sock);
}

static void test_blocked_and_ignored_signals_are_reset_in_the_child(void **state) {
    (void)state;
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    assert_int_equal(sigprocmask(SIG_BLOCK, &block, &old), 0);
    struct sigaction ign = {.sa_handler = SIG_IGN}, old_int;
    assert_int_equal(sigaction(SIGINT, &ign, &old_int), 0);

    output o = {0};
    child *c = spawn_sh("kill -TERM $$; sleep 5; echo survived", NULL, NULL);
    int status = run_to_exit(c, &o);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGTERM);
    done(c);
    c = spawn_sh("kill -INT $$; sleep 5; echo survived", NULL, NULL);
    status = run_to_exit(c, &o);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGINT);
    assert_int_equal(o.count[0], 0);
    done(c);

    assert_int_equal(sigaction(SIGINT, &old_int, NULL), 0);
    assert_int_equal(sigprocmask(SIG_SETMASK, &old, NULL), 0);
}

/* Waits (as subreaper) for a grandchild by pid; returns its status or fails after timeout_ms. */
static int reap_within(pid_t pid, int timeout_ms) {
    int64_t deadline = now_ms() + timeout_ms;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return status;
        assert_int_equal(r, 0);
        assert_true(now_ms() < deadline);
        sleep_ms(10);
    }
}

static void test_child_signal_reaches_the_whole_process_group(void **state) {
    (void)state;
    /* As subreaper, orphaned grandchildren come back to us and can be reaped by pid. */
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    child *c = spawn_sh("sleep 30 & echo $!; wait", NULL, NULL);
    output o = {0};
    int64_t deadline = now_ms() + 5000;
    while (o.count[0] == 0) {
        struct pollfd pfd = {.fd = child_output_fd(c, 0), .events = POLLIN};
        poll(&pfd, 1, 100);
        assert_int_equal(child_read_lines(c, 0, on_line, &o), 1);
        assert_true(now_ms() < deadline);
    }
    pid_t sleeper = (pid_t)strtol(o.lines[0][0], NULL, 10);
    assert_true(sleeper > 0);
    track_pid(sleeper);
    assert_int_equal(getpgid(sleeper), child_pid(c));
    child_signal(c, SIGTERM);
    int status = run_to_exit(c, &o);
    assert_true(WIFSIGNALED(status));
    int sleeper_status = reap_within(sleeper, 2000);
    untrack_pid(sleeper);
    assert_true(WIFSIGNALED(sleeper_status));
    assert_int_equal(WTERMSIG(sleeper_status), SIGTERM);
    child_signal(c, SIGKILL); /* no-op once exited */
    done(c);
    output_free(&o);
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
}

static void test_child_free_kills_and_reaps_a_running_child(void **state) {
    (void)state;
    child *c = spawn_sh("sleep 3600", NULL, NULL); /* would outlast any test timeout */
    pid_t pid = child_pid(c);
    done(c);                    /* returns only if it ended the child instead of waiting */
    assert_true(pid_gone(pid)); /* killed and reaped: not even a zombie */
    child_free(NULL);
}

static void test_child_dies_when_its_parent_is_killed(void **state) {
    (void)state;
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    int report[2];
    assert_int_equal(pipe2(report, O_CLOEXEC), 0);
    pid_t middle = fork();
    assert_true(middle >= 0);
    if (middle == 0) {
        /* Not a cmocka context any more: no assertions, _exit on any failure. */
        /* The intermediate "nodexd": spawns sleep, reports its pid, waits to be killed. */
        const char *argv[] = {"/bin/sleep", "30", NULL};
        child_spec spec = {.argv = argv};
        child *c = child_spawn(&spec);
        pid_t pid = c ? child_pid(c) : -1;
        if (write(report[1], &pid, sizeof pid) != (ssize_t)sizeof pid) _exit(1);
        for (;;) pause();
    }
    track_pid(middle);
    close(report[1]);
    pid_t grandchild = -1;
    assert_int_equal(read(report[0], &grandchild, sizeof grandchild), sizeof grandchild);
    close(report[0]);
    assert_true(grandchild > 0);
    track_pid(grandchild);
    sleep_ms(50); /* let the grandchild get past prctl and into sleep */
    assert_false(pid_gone(grandchild));

    assert_int_equal(kill(middle, SIGKILL), 0);
    int status = 0;
    assert_int_equal(waitpid(middle, &status, 0), middle);
    untrack_pid(middle);
    int gc_status = reap_within(grandchild, 2000);
    untrack_pid(grandchild);
    assert_true(WIFSIGNALED(gc_status));
    assert_int_equal(WTERMSIG(gc_status), SIGKILL);
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_lines_strip_lf_and_crlf_and_keep_final_unterminated_line,
                                  teardown),
        cmocka_unit_test_teardown(test_a_stream_at_eof_stays_open_until_child_close_output,
                                  teardown),
        cmocka_unit_test_teardown(test_overlong_line_is_cut_in_64k_pieces, teardown),
        cmocka_unit_test_teardown(test_crlf_split_at_the_64k_cut_yields_no_empty_line, teardown),
        cmocka_unit_test_teardown(test_line_of_exactly_64k_yields_one_line, teardown),
        cmocka_unit_test_teardown(test_exit_status_is_reported_and_described, teardown),
        cmocka_unit_test_teardown(test_signal_death_is_reported_and_described, teardown),
        cmocka_unit_test_teardown(test_describe_status_covers_stop_and_truncation, teardown),
        cmocka_unit_test_teardown(test_exec_failure_of_missing_path_exits_127_with_reason,
                                  teardown),
        cmocka_unit_test_teardown(test_exec_failure_of_non_executable_reports_permission_denied,
                                  teardown),
        cmocka_unit_test_teardown(test_spawn_rejects_empty_argv, teardown),
        cmocka_unit_test_teardown(test_env_entries_are_added_and_replace_inherited_ones, teardown),
        cmocka_unit_test_teardown(test_cwd_is_applied, teardown),
        cmocka_unit_test_teardown(test_missing_cwd_exits_127_with_reason, teardown),
        cmocka_unit_test_teardown(test_parent_pipe_ends_are_nonblocking_and_cloexec, teardown),
        cmocka_unit_test_teardown(test_child_inherits_no_fd_beyond_stdio, teardown),
        cmocka_unit_test_teardown(test_blocked_and_ignored_signals_are_reset_in_the_child,
                                  teardown),
        cmocka_unit_test_teardown(test_child_signal_reaches_the_whole_process_group, teardown),
        cmocka_unit_test_teardown(test_child_free_kills_and_reaps_a_running_child, teardown),
        cmocka_unit_test_teardown(test_child_dies_when_its_parent_is_killed, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
