/* test_nodes: what nodexd makes of an Erlang node without starting one: a child's config (erl
 * argv, HOME, ready line), a peer's, node names, the children's private HOME with the cookie
 * (and the sweep of those left by dead nodexds), the rpc request term, and when a spawn request
 * is reported. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nodes.h"

static char *code_paths[] = {"/opt/{app}/ebin", NULL};
static char *erl_args[] = {"+S", "1", NULL};

static config base_config(void) {
    config cfg = {.tick_time_ms = 4000,
                  .erl_executable = "/bin/sh", /* any executable: nothing is started */
                  .child_prefix = "kid",
                  .erl_args = erl_args,
                  .erl_arg_count = 2,
                  .code_paths = code_paths,
                  .code_path_count = 1,
                  .child_ready_timeout_ms = 15000,
                  .child_shutdown_timeout_ms = 5000,
                  .child_restart = CNODE_RESTART_PERMANENT,
                  .child_max_restarts = 3,
                  .child_max_seconds = 5,
                  .rpc_timeout_ms = 5000,
                  .max_rpc_timeout_ms = 300000};
    return cfg;
}

static void test_child_config_runs_erl_with_the_node_name_home_and_ready_line(void **state) {
    (void)state;
    config cfg = base_config();
    config_cnode o = {0};
    char *exe = NULL, *ready = NULL;
    assert_int_equal(nodes_config(&cfg, true, "kid1@host", "/tmp/home", &o, &exe, &ready), 0);
    assert_string_equal(exe, "/bin/sh");
    assert_string_equal(ready, "kid1@host ready");
    assert_int_equal(o.direction, CNODE_DIRECTION_TO);
    assert_int_equal(o.restart, CNODE_RESTART_PERMANENT);
    assert_string_equal(o.registered_name, "rex");
    assert_string_equal(o.reply_tag, "rex");
    assert_int_equal(o.reply_filter, REPLY_FILTER_TAG);
    assert_int_equal(o.env_count, 1);
    assert_string_equal(o.env[0].name, "HOME");
    assert_string_equal(o.env[0].value, "/tmp/home");
    const char *want[] = {"-noinput",     "-sname", "kid1@host", "-kernel",
                          "net_ticktime", "4",      "-pa",       "/opt/{{app}}/ebin", /* literal */
                          "+S",           "1",      "-eval"};
    assert_int_equal(o.arg_count, 12);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        assert_string_equal(o.args[i], want[i]);
    nodes_config_free(&o);
    free(exe);
    free(ready);
}

/* Counts args equal to `want` in the child's argv (templates: braces doubled). */
static int child_args_with(const char *listen, const char *want) {
    config cfg = base_config();
    cfg.dist_listen = (char *)listen;
    config_cnode o = {0};
    char *exe = NULL, *ready = NULL;
    assert_int_equal(nodes_config(&cfg, true, "kid1@host", "/tmp/home", &o, &exe, &ready), 0);
    int found = -1;
    for (size_t i = 0; i + 2 < o.arg_count; i++)
        if (strcmp(o.args[i], "-kernel") == 0 &&
            strcmp(o.args[i + 1], "inet_dist_use_interface") == 0)
            found = strcmp(o.args[i + 2], want) == 0 ? (int)i : -2;
    /* before -pa and the configured erl args, so those can still override it */
    if (found >= 0) assert_string_equal(o.args[found + 3], "-pa");
    nodes_config_free(&o);
    free(exe);
    free(ready);
    return found;
}

static void test_child_listens_on_loopback_when_node_listen_is_loopback(void **state) {
    (void)state;
    assert_int_equal(child_args_with("127.0.0.1", "{{127,0,0,1}}"), 6);
    assert_int_equal(child_args_with("127.1.2.3", "{{127,1,2,3}}"), 6);
    assert_int_equal(child_args_with("0.0.0.0", ""), -1);
    assert_int_equal(child_args_with("10.0.0.5", ""), -1);
}

static void test_peer_config_is_never_restarted_and_has_no_process(void **state) {
    (void)state;
    config cfg = base_config();
    config_cnode o = {0};
    char *exe = NULL, *ready = NULL;
    assert_int_equal(nodes_config(&cfg, false, "other@host", NULL, &o, &exe, &ready), 0);
    assert_null(exe);
    assert_null(ready);
    assert_int_equal(o.direction, CNODE_DIRECTION_ADOPT);
    assert_int_equal(o.restart, CNODE_RESTART_TEMPORARY);
    assert_int_equal(o.env_count, 0);
    assert_null(o.args);
    assert_int_equal(o.call_timeout_ms, 5000);
    nodes_config_free(&o);
}

static void test_child_config_fails_when_erl_is_not_found(void **state) {
    (void)state;
    config cfg = base_config();
    cfg.erl_executable = "no-such-erl-anywhere";
    config_cnode o = {0};
    char *exe = NULL, *ready = NULL;
    assert_int_equal(nodes_config(&cfg, true, "kid1@host", "/tmp/home", &o, &exe, &ready), -1);
    assert_null(exe);
    nodes_config_free(&o);
}

static void test_names(void **state) {
    (void)state;
    config cfg = base_config();
    char node[64];
    nodes_child_name(&cfg, 12, "myhost", node, sizeof node);
    assert_string_equal(node, "kid12@myhost");
    assert_true(nodes_valid_name("a@b"));
    assert_false(nodes_valid_name("nohost"));
    assert_false(nodes_valid_name("@host"));
    assert_false(nodes_valid_name("a@"));
    assert_false(nodes_valid_name("a@b@c"));
    assert_false(nodes_valid_name("a b@c"));
    assert_false(nodes_valid_name("a'@c"));
}

static void test_home_holds_the_cookie_privately_and_stale_homes_are_swept(void **state) {
    (void)state;
    char tmp[] = "/tmp/test_nodes-XXXXXX";
    assert_non_null(mkdtemp(tmp));
    setenv("TMPDIR", tmp, 1);
    /* A home left by a nodexd that no longer runs (no process has this pid). */
    char stale[PATH_MAX + 64], stale_cookie[PATH_MAX + 96];
    snprintf(stale, sizeof stale, "%s/nodexd-%d-abcdef", tmp, INT_MAX - 1);
    assert_int_equal(mkdir(stale, 0700), 0);
    snprintf(stale_cookie, sizeof stale_cookie, "%s/.erlang.cookie", stale);
    FILE *sf = fopen(stale_cookie, "w");
    assert_non_null(sf);
    fclose(sf);
    char *home = NULL, err[128];
    assert_int_equal(nodes_home_create("secret", &home, err, sizeof err), 0);
    assert_non_null(home);
    assert_int_equal(access(stale, F_OK), -1);
    struct stat st;
    assert_int_equal(stat(home, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/.erlang.cookie", home);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0400);
    char got[16] = {0};
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_int_equal(fread(got, 1, sizeof got - 1, f), 6);
    fclose(f);
    assert_string_equal(got, "secret");
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", home);
    nodes_home_remove(home);
    assert_int_equal(access(dir, F_OK), -1);
    unsetenv("TMPDIR");
    assert_int_equal(rmdir(tmp), 0);
}

static void test_rpc_request_is_pid_and_call_tuple(void **state) {
    (void)state;
    erlang_pid from;
    memset(&from, 0, sizeof from);
    snprintf(from.node, sizeof from.node, "%s", "nodexd@host");
    from.num = 3;
    char args[16];
    int ai = 0;
    ei_encode_list_header(args, &ai, 1);
    ei_encode_long(args, &ai, 7);
    ei_encode_empty_list(args, &ai);
    ei_x_buff x;
    assert_int_equal(ei_x_new(&x), 0);
    assert_int_equal(nodes_encode_rpc(&x, &from, "erlang", "abs", args, (size_t)ai), 0);
    int i = 0, arity;
    erlang_pid got;
    char atom[MAXATOMLEN];
    assert_int_equal(ei_decode_tuple_header(x.buff, &i, &arity), 0);
    assert_int_equal(arity, 2);
    assert_int_equal(ei_decode_pid(x.buff, &i, &got), 0);
    assert_int_equal(got.num, 3);
    assert_int_equal(ei_decode_tuple_header(x.buff, &i, &arity), 0);
    assert_int_equal(arity, 5);
    const char *atoms[] = {"call", "erlang", "abs"};
    for (size_t k = 0; k < 3; k++) {
        assert_int_equal(ei_decode_atom(x.buff, &i, atom), 0);
        assert_string_equal(atom, atoms[k]);
    }
    assert_int_equal(ei_skip_term(x.buff, &i), 0);
    assert_int_equal(ei_decode_atom(x.buff, &i, atom), 0);
    assert_string_equal(atom, "user");
    assert_int_equal(i, x.index);
    ei_x_free(&x);
    /* An atom over 255 characters cannot be encoded. */
    char big[300];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(ei_x_new(&x), 0);
    assert_int_equal(nodes_encode_rpc(&x, &from, big, "f", args, (size_t)ai), -1);
    ei_x_free(&x);
}

/* ---- spawn requests ---- */

typedef struct fake_child {
    cnode_state state;
    const char *node;
    const char *last_error;
} fake_child;

static void fake_status(const void *child, nodes_child_status *out) {
    const fake_child *c = child;
    out->state = c->state;
    out->node = c->node;
    out->last_error = c->last_error;
}

typedef struct report {
    int calls;
    size_t count;
    char first[32];
    char error[128];
    bool had_error;
} report;

static void on_spawned(void *ctx, const char *const *nodes, size_t count, const char *error) {
    report *r = ctx;
    r->calls++;
    r->count = count;
    snprintf(r->first, sizeof r->first, "%s", count ? nodes[0] : "");
    r->had_error = error != NULL;
    snprintf(r->error, sizeof r->error, "%s", error ? error : "");
}

static void test_spawn_is_reported_once_all_children_are_up(void **state) {
    (void)state;
    nodes_spawns *s = nodes_spawns_new(fake_status);
    fake_child a = {CNODE_STARTING, "kid1@h", ""}, b = {CNODE_STARTING, "kid2@h", ""};
    report rep = {0};
    nodes_spawn *r = nodes_spawn_new(2, on_spawned, &rep);
    nodes_spawn_add(r, &a);
    nodes_spawn_add(r, &b);
    assert_int_equal(nodes_spawn_count(r), 2);
    assert_ptr_equal(nodes_spawn_child(r, 1), &b);
    nodes_spawns_submit(s, r);
    a.state = CNODE_UP;
    nodes_spawns_check(s, false);
    assert_int_equal(rep.calls, 0);
    b.state = CNODE_UP;
    nodes_spawns_check(s, false);
    assert_int_equal(rep.calls, 1);
    assert_int_equal(rep.count, 2);
    assert_false(rep.had_error);
    nodes_spawns_check(s, false);
    assert_int_equal(rep.calls, 1);
    nodes_spawns_free(s);
}

/* The gateway frees a forgotten child only once no request holds it: submitted (queued or
 * checked) and not yet reported. */
static void test_spawns_hold_their_children_until_reported(void **state) {
    (void)state;
    nodes_spawns *s = nodes_spawns_new(fake_status);
    fake_child a = {CNODE_STARTING, "kid1@h", ""}, other = {CNODE_STARTING, "kid9@h", ""};
    report rep = {0};
    nodes_spawn *r = nodes_spawn_new(1, on_spawned, &rep);
    nodes_spawn_add(r, &a);
    assert_false(nodes_spawns_holds(s, &a)); /* being built: its maker's */
    nodes_spawns_submit(s, r);
    assert_true(nodes_spawns_holds(s, &a)); /* queued */
    assert_false(nodes_spawns_holds(s, &other));
    nodes_spawns_check(s, false);
    assert_true(nodes_spawns_holds(s, &a)); /* checked, still starting */
    a.state = CNODE_STOPPED;
    nodes_spawns_check(s, false);
    assert_int_equal(rep.calls, 1);
    assert_false(nodes_spawns_holds(s, &a)); /* reported */
    nodes_spawns_free(s);
}

static void test_spawn_fails_with_the_childs_error_or_at_shutdown(void **state) {
    (void)state;
    nodes_spawns *s = nodes_spawns_new(fake_status);
    fake_child a = {CNODE_UP, "kid1@h", ""}, b = {CNODE_STARTING, "kid2@h", ""};
    report down = {0}, stopping = {0};
    nodes_spawn *r = nodes_spawn_new(2, on_spawned, &down);
    nodes_spawn_add(r, &a);
    nodes_spawn_add(r, &b);
    nodes_spawns_submit(s, r);
    b.state = CNODE_RESTARTING;
    b.last_error = "exited before it was up: exit status 1";
    nodes_spawns_check(s, false);
    assert_int_equal(down.calls, 1);
    assert_int_equal(down.count, 1);
    assert_string_equal(down.first, "kid1@h");
    assert_string_equal(down.error, "exited before it was up: exit status 1");
    fake_child c = {CNODE_STARTING, "kid3@h", ""};
    r = nodes_spawn_new(1, on_spawned, &stopping);
    nodes_spawn_add(r, &c);
    nodes_spawns_submit(s, r);
    nodes_spawns_check(s, true);
    assert_int_equal(stopping.calls, 1);
    assert_string_equal(stopping.error, "the gateway is shutting down");
    /* A request never reported is freed with the tracker, without a report. */
    report never = {0};
    r = nodes_spawn_new(1, on_spawned, &never);
    nodes_spawn_add(r, &c);
    nodes_spawns_submit(s, r);
    nodes_spawns_free(s);
    assert_int_equal(never.calls, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_child_config_runs_erl_with_the_node_name_home_and_ready_line),
        cmocka_unit_test(test_child_listens_on_loopback_when_node_listen_is_loopback),
        cmocka_unit_test(test_peer_config_is_never_restarted_and_has_no_process),
        cmocka_unit_test(test_child_config_fails_when_erl_is_not_found),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_home_holds_the_cookie_privately_and_stale_homes_are_swept),
        cmocka_unit_test(test_rpc_request_is_pid_and_call_tuple),
        cmocka_unit_test(test_spawn_is_reported_once_all_children_are_up),
        cmocka_unit_test(test_spawn_fails_with_the_childs_error_or_at_shutdown),
        cmocka_unit_test(test_spawns_hold_their_children_until_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
