/* test_service: the operation layer without any transport (gateway + test C-node + private epmd):
 * every operation's error paths, the status table, timeouts, authorization, reply shapes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ei.h>

#include "nodex_fixture.h"
#include "service.h"

static fixture_gateway fx;
static service *svc;

#define MAX_CALL_MS     10000
#define DEFAULT_CALL_MS 7000
#define MAX_RPC_MS      20000
#define DEFAULT_RPC_MS  3000

static int setup(void **state) {
    (void)state;
    static unsigned instance;
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "node:\n"
             "  name: \"svc%d_%u@127.0.0.1\"\n"
             "  start_epmd: false\n"
             "http:\n"
             "  listen: \"127.0.0.1:0\"\n" /* no HTTP front end is started */
             "grpc:\n"
             "  listen: null\n"
             "erlang_nodes:\n"
             "  erl: /nonexistent/erl\n"
             "  max_children: 2\n"
             "  rpc_timeout_ms: %d\n"
             "  max_rpc_timeout_ms: %d\n"
             "  rpc: true\n"
             "  load_modules: true\n"
             "  spawn: true\n"
             "  rpc_nodes: [\"*@127.0.0.1\", nohost]\n"
             "log:\n"
             "  level: error\n"
             "cnodes:\n"
             "  - name: t\n"
             "    executable: %s\n"
             "    max_restarts: 0\n"
             "    call_timeout_ms: %d\n"
             "    max_call_timeout_ms: %d\n"
             "    shutdown_timeout_ms: 1000\n"
             "  - name: pool\n"
             "    executable: %s\n"
             "    instances: 2\n"
             "    max_restarts: 0\n"
             "    shutdown_timeout_ms: 1000\n",
             (int)getpid() % 100000, ++instance, DEFAULT_RPC_MS, MAX_RPC_MS,
             fixture_test_cnode_path(), DEFAULT_CALL_MS, MAX_CALL_MS, fixture_test_cnode_path());
    if (fixture_gateway_start(&fx, yaml, "test_service", "servicetestcookie", NULL, NULL) != 0)
        return -1;
    fixture_wait_state(&fx, "t", CNODE_UP, 10000);
    fixture_wait_state(&fx, "pool", CNODE_UP, 10000);
    char err[256];
    svc = service_new(fx.cfg, fx.gw, err, sizeof err);
    if (!svc) fprintf(stderr, "service_new: %s\n", err);
    return svc ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    service_free(svc);
    svc = NULL;
    return fixture_gateway_stop(&fx, NULL, NULL);
}

/* One gateway for the whole group: private epmd, then the gateway and its C-nodes. */
static int group_setup(void **state) {
    return fixture_group_setup(state) != 0 ? -1 : setup(state);
}

static int group_teardown(void **state) {
    int rc = teardown(state);
    return fixture_group_teardown(state) != 0 ? -1 : rc;
}

/* ---- helpers ------------------------------------------------------------------------------ */

/* A call and the wait for its on_done. */
typedef struct waiter {
    call c;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} waiter;

static void waiter_done(call *c, void *ctx) {
    (void)c;
    waiter *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void waiter_init(waiter *w) {
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->c.on_done = waiter_done;
    w->c.ctx = w;
    service_call_pid(svc, &w->c);
}

/* Waits for on_done (generously: the suite may run on a loaded machine). */
static void waiter_wait(waiter *w) {
    int64_t deadline = fixture_now_ms() + 60000;
    pthread_mutex_lock(&w->mu);
    while (!w->done && fixture_now_ms() < deadline) {
        pthread_mutex_unlock(&w->mu);
        fixture_sleep_ms(5);
        pthread_mutex_lock(&w->mu);
    }
    bool done = w->done;
    pthread_mutex_unlock(&w->mu);
    if (!done) fail_msg("the call never ended");
}

static void waiter_free(waiter *w) {
    call_clear(&w->c);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}

/* {Tag, <<Text>>} encoded without version byte into x (fresh). */
static void encode_tagged(ei_x_buff *x, const char *tag, const char *text) {
    assert_int_equal(ei_x_new(x), 0);
    assert_int_equal(ei_x_encode_tuple_header(x, 2), 0);
    assert_int_equal(ei_x_encode_atom(x, tag), 0);
    assert_int_equal(ei_x_encode_binary(x, text, (int)strlen(text)), 0);
}

/* Makes `c` look like a call that replied with the bytes of x (copied). */
static void fake_reply(call *c, const ei_x_buff *x) {
    memset(c, 0, sizeof *c);
    c->outcome = CALL_REPLIED;
    c->reply = malloc((size_t)x->index);
    assert_non_null(c->reply);
    memcpy(c->reply, x->buff, (size_t)x->index);
    c->reply_len = (size_t)x->index;
}

static void assert_refused(service_status got, const service_error *e, service_status want,
                           const char *needle) {
    if (got != want || e->status != want)
        fail_msg("got %s (%s), wanted %s", service_status_code(got), e->message,
                 service_status_code(want));
    if (needle && !strstr(e->message, needle))
        fail_msg("message '%s' lacks '%s'", e->message, needle);
}

static void never_called(void *ctx, const char *const *nodes, size_t count, const char *error) {
    (void)ctx;
    (void)nodes;
    (void)count;
    (void)error;
    fail_msg("a refused spawn must not report");
}

/* ---- the tables --------------------------------------------------------------------------- */

static void test_every_status_maps_to_an_http_and_a_grpc_status(void **state) {
    (void)state;
    for (int s = SERVICE_OK; s <= SERVICE_TIMEOUT; s++) {
        int http = service_status_http((service_status)s);
        int grpc = service_status_grpc((service_status)s);
        assert_true(http >= 200 && http <= 599);
        assert_true(grpc >= 0 && grpc <= 16);
        assert_true(strlen(service_status_code((service_status)s)) > 0);
        assert_true((s == SERVICE_OK) == (http == 200));
        assert_true((s == SERVICE_OK) == (grpc == 0));
    }
    assert_int_equal(service_status_http(SERVICE_TIMEOUT), 504);
    assert_int_equal(service_status_grpc(SERVICE_TIMEOUT), 4);
    assert_int_equal(service_status_http(SERVICE_PERMISSION_DENIED), 403);
    assert_int_equal(service_status_grpc(SERVICE_PERMISSION_DENIED), 7);
    assert_int_equal(service_status_http(SERVICE_UNAUTHENTICATED), 401);
    assert_int_equal(service_status_grpc(SERVICE_UNAUTHENTICATED), 16);
    assert_int_equal(service_status_http(SERVICE_NOT_FOUND), 404);
    assert_int_equal(service_status_grpc(SERVICE_NOT_FOUND), 5);
    assert_string_equal(service_status_code(SERVICE_UNAVAILABLE), "unavailable");
}

static void test_term_errors_keep_their_codes_and_statuses(void **state) {
    (void)state;
    for (int t = TERM_ERR_SYNTAX; t <= TERM_ERR_NOMEM; t++) {
        service_status s = service_status_of_term((term_status)t);
        assert_string_equal(service_status_code(s), term_status_name((term_status)t));
        assert_int_equal(service_status_http(s), term_status_http((term_status)t));
    }
    assert_int_equal(service_status_grpc(service_status_of_term(TERM_ERR_SIZE)), 8);
    assert_int_equal(service_status_grpc(service_status_of_term(TERM_ERR_SYNTAX)), 3);
    assert_int_equal(service_status_of_term(TERM_OK), SERVICE_OK);
}

static void test_operation_names_are_distinct(void **state) {
    (void)state;
    for (int a = 0; a < SERVICE_OP_COUNT; a++)
        for (int b = a + 1; b < SERVICE_OP_COUNT; b++)
            assert_string_not_equal(service_op_name((service_op)a), service_op_name((service_op)b));
    assert_string_equal(service_op_name(SERVICE_OP_SPAWN), "nodes.spawn");
    assert_string_equal(service_op_name(SERVICE_OP_COUNT), "?");
}

/* ---- authorization ------------------------------------------------------------------------ */

static void test_every_operation_refuses_a_principal_without_its_permission(void **state) {
    (void)state;
    /* allowed everything but the operation under test: the refusal must name that one */
    for (int op = 0; op < SERVICE_OP_COUNT; op++) {
        if (op == SERVICE_OP_HEALTH || op == SERVICE_OP_LIST_CNODES || op == SERVICE_OP_GET_CNODE ||
            op == SERVICE_OP_LIST_NODES || op == SERVICE_OP_REFLECTION ||
            op == SERVICE_OP_METRICS || op == SERVICE_OP_DESCRIBE)
            continue; /* probes, status and the schema, metrics and the API's description need no
                         permission */
        service_grant grants[SERVICE_OP_COUNT];
        size_t n_grants = 0;
        for (int other = 0; other < SERVICE_OP_COUNT; other++)
            if (other != op) grants[n_grants++] = (service_grant){.op = (service_op)other};
        service_principal p = {.name = "alice", .grants = grants, .grant_count = n_grants};
        service_error e;
        service_status st = SERVICE_OK;
        waiter w;
        waiter_init(&w);
        ei_x_buff x;
        encode_tagged(&x, "ping", "denied");
        gateway_cnode_info info, *many = NULL;
        gateway_node_info *nodes = NULL;
        size_t n = 0;
        uint64_t id = 0;
        switch ((service_op)op) {
        case SERVICE_OP_CALL:
        case SERVICE_OP_CAST:
        case SERVICE_OP_STREAM: {
            service_call_req r = {.op = (service_op)op, .cnode = "t", .deadline_left_ms = -1};
            st = service_call(svc, &p, &r, op == SERVICE_OP_CAST ? NULL : &w.c, x.buff,
                              (size_t)x.index, &e);
            break;
        }
        case SERVICE_OP_LIST_CNODES: st = service_list_cnodes(svc, &p, &many, &n, &e); break;
        case SERVICE_OP_GET_CNODE:
            st = service_get_cnode(svc, &p, "t", &info, NULL, NULL, &e);
            break;
        case SERVICE_OP_WATCH:
            st = service_watch(svc, &p, true, NULL, NULL, &id, &e);
            assert_int_equal(id, 0);
            break;
        case SERVICE_OP_LIST_NODES: st = service_list_nodes(svc, &p, &nodes, &n, &e); break;
        case SERVICE_OP_RPC: {
            service_rpc_req r = {.node = "a@127.0.0.1",
                                 .module = "erlang",
                                 .function = "node",
                                 .deadline_left_ms = -1};
            st = service_rpc(svc, &p, &r, &w.c, "\x6a", 1, &e);
            break;
        }
        case SERVICE_OP_LOAD: {
            service_rpc_req r = {.node = "a@127.0.0.1", .module = "m", .deadline_left_ms = -1};
            st = service_load(svc, &p, &r, &w.c, "beam", 4, &e);
            break;
        }
        case SERVICE_OP_SPAWN: st = service_spawn_nodes(svc, &p, 1, NULL, NULL, &e); break;
        case SERVICE_OP_STOP: st = service_stop_node(svc, &p, "child1@127.0.0.1", &e); break;
        case SERVICE_OP_RESTART: st = service_restart_cnode(svc, &p, "t", &e); break;
        case SERVICE_OP_HEALTH:
        case SERVICE_OP_REFLECTION:
        case SERVICE_OP_METRICS:
        case SERVICE_OP_DESCRIBE:
        case SERVICE_OP_COUNT: break;
        }
        char needle[64];
        snprintf(needle, sizeof needle, "'%s'", service_op_name((service_op)op));
        assert_refused(st, &e, SERVICE_PERMISSION_DENIED, needle);
        assert_non_null(strstr(e.message, "alice"));
        assert_null(many);
        assert_null(nodes);
        ei_x_free(&x);
        waiter_free(&w);
    }
    /* nothing ran: the C-node took no call, no child exists */
    gateway_cnode_info t;
    assert_int_equal(gateway_cnode_info_by_name(fx.gw, "t", &t), 0);
    assert_int_equal(t.calls_total, 0);
    assert_int_equal(t.in_flight, 0);
}

static void test_no_principal_is_unauthenticated(void **state) {
    (void)state;
    service_error e;
    gateway_node_info *nodes;
    size_t n;
    assert_refused(service_list_nodes(svc, NULL, &nodes, &n, &e), &e, SERVICE_UNAUTHENTICATED,
                   "nodes.list");
    assert_refused(service_authorize(svc, NULL, SERVICE_OP_CALL, "t", &e), &e,
                   SERVICE_UNAUTHENTICATED, "authentication");
    assert_int_equal(service_authorize(svc, &service_anonymous, SERVICE_OP_RPC, "m:f", &e),
                     SERVICE_OK);
}

static void test_the_api_description_needs_a_principal_and_no_grant(void **state) {
    (void)state;
    service_error e;
    service_principal nobody = {.name = "nobody"};
    assert_int_equal(service_authorize(svc, &nobody, SERVICE_OP_DESCRIBE, NULL, &e), SERVICE_OK);
    assert_refused(service_authorize(svc, NULL, SERVICE_OP_DESCRIBE, NULL, &e), &e,
                   SERVICE_UNAUTHENTICATED, "api.describe");
}

static void test_grants_name_their_targets_with_globs(void **state) {
    (void)state;
    const service_grant grants[] = {
        {.op = SERVICE_OP_CALL, .pattern = "t"},
        {.op = SERVICE_OP_CAST, .pattern = "po*"},
        {.op = SERVICE_OP_RPC, .pattern = "erlang:node"},
        {.op = SERVICE_OP_LOAD, .pattern = "mine_*"},
    };
    service_principal p = {.name = "bob", .grants = grants, .grant_count = 4};
    service_error e;
    service_call_req r = {.op = SERVICE_OP_CALL, .cnode = "t", .deadline_left_ms = -1};
    assert_int_equal(service_call_check(svc, &p, &r, &e), SERVICE_OK);
    r.cnode = "pool";
    assert_refused(service_call_check(svc, &p, &r, &e), &e, SERVICE_PERMISSION_DENIED,
                   "'call' for pool");
    r.op = SERVICE_OP_CAST;
    assert_int_equal(service_call_check(svc, &p, &r, &e), SERVICE_OK);
    r.op = SERVICE_OP_STREAM;
    assert_refused(service_call_check(svc, &p, &r, &e), &e, SERVICE_PERMISSION_DENIED, "stream");
    service_rpc_req q = {
        .node = "a@127.0.0.1", .module = "erlang", .function = "node", .deadline_left_ms = -1};
    assert_int_equal(service_rpc_check(svc, &p, &q, &e), SERVICE_OK);
    q.function = "halt";
    assert_refused(service_rpc_check(svc, &p, &q, &e), &e, SERVICE_PERMISSION_DENIED,
                   "'rpc' for erlang:halt");
    q.module = "os";
    q.function = "cmd";
    assert_refused(service_rpc_check(svc, &p, &q, &e), &e, SERVICE_PERMISSION_DENIED, "os:cmd");
    /* bad names: a principal with some rpc grant is told; one without learns nothing */
    q.module = "";
    assert_refused(service_rpc_check(svc, &p, &q, &e), &e, SERVICE_BAD_REQUEST, "names");
    service_principal none = {.name = "eve"};
    assert_refused(service_rpc_check(svc, &none, &q, &e), &e, SERVICE_PERMISSION_DENIED, "eve");
    waiter w;
    waiter_init(&w);
    service_rpc_req l = {.node = "a@127.0.0.1", .module = "theirs", .deadline_left_ms = -1};
    assert_refused(service_load(svc, &p, &l, &w.c, "x", 1, &e), &e, SERVICE_PERMISSION_DENIED,
                   "'modules.load' for theirs");
    waiter_free(&w);
    /* status needs no grant */
    gateway_cnode_info *all;
    size_t n;
    assert_int_equal(service_list_cnodes(svc, &none, &all, &n, &e), SERVICE_OK);
    free(all);
}

static void
test_a_principal_without_the_permission_gets_forbidden_even_with_a_malformed_body(void **state) {
    (void)state;
    service_principal none = {.name = "eve"};
    const service_grant g = {.op = SERVICE_OP_CALL, .pattern = "t"};
    service_principal only_t = {.name = "tom", .grants = &g, .grant_count = 1};
    service_error e;
    /* the gate transports ask before reading arguments: a grant of the operation on anything */
    const service_op ops[] = {SERVICE_OP_CALL,  SERVICE_OP_CAST, SERVICE_OP_STREAM,
                              SERVICE_OP_WATCH, SERVICE_OP_RPC,  SERVICE_OP_LOAD,
                              SERVICE_OP_SPAWN, SERVICE_OP_STOP, SERVICE_OP_RESTART};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        assert_refused(service_authorize_op(svc, &none, ops[i], &e), &e, SERVICE_PERMISSION_DENIED,
                       service_op_name(ops[i]));
    assert_int_equal(service_authorize_op(svc, &only_t, SERVICE_OP_CALL, &e), SERVICE_OK);
    assert_refused(service_authorize_op(svc, &only_t, SERVICE_OP_CAST, &e), &e,
                   SERVICE_PERMISSION_DENIED, "'cast'");
    assert_refused(service_authorize_op(svc, NULL, SERVICE_OP_CALL, &e), &e,
                   SERVICE_UNAUTHENTICATED, "call");
    assert_int_equal(service_authorize_op(svc, NULL, SERVICE_OP_HEALTH, &e), SERVICE_OK);
    assert_int_equal(service_authorize_op(svc, &none, SERVICE_OP_LIST_CNODES, &e), SERVICE_OK);
    /* a C-node that does not exist, an unreadable timeout: 403, not 404 or 400 */
    service_call_req r = {.op = SERVICE_OP_CALL, .cnode = "nosuch", .deadline_left_ms = -1};
    assert_refused(service_call_check(svc, &none, &r, &e), &e, SERVICE_PERMISSION_DENIED,
                   "'call' for nosuch");
    assert_refused(service_call_check(svc, &only_t, &r, &e), &e, SERVICE_PERMISSION_DENIED,
                   "'call' for nosuch");
    r.cnode = NULL;
    assert_refused(service_call_check(svc, &none, &r, &e), &e, SERVICE_PERMISSION_DENIED, "eve");
    r = (service_call_req){.op = SERVICE_OP_CAST,
                           .cnode = "t",
                           .timeout_ms = SERVICE_TIMEOUT_INVALID,
                           .deadline_left_ms = -1};
    assert_refused(service_call(svc, &only_t, &r, NULL, "\x6a", 1, &e), &e,
                   SERVICE_PERMISSION_DENIED, "'cast' for t");
    r.op = SERVICE_OP_CALL; /* with the permission, the timeout is what is wrong */
    assert_refused(service_call_check(svc, &only_t, &r, &e), &e, SERVICE_BAD_REQUEST, "timeout_ms");
    assert_refused(service_restart_cnode(svc, &none, "nosuch", &e), &e, SERVICE_PERMISSION_DENIED,
                   "cnodes.restart");
    assert_refused(service_restart_cnode(svc, &service_anonymous, "nosuch", &e), &e,
                   SERVICE_NOT_FOUND, "nosuch");
    /* a load checked before its bytes are read; bad names and no count say nothing either */
    service_rpc_req l = {.node = "a@127.0.0.1", .module = "m", .deadline_left_ms = -1};
    assert_refused(service_load_check(svc, &none, &l, &e), &e, SERVICE_PERMISSION_DENIED,
                   "modules.load");
    l.module = "";
    assert_refused(service_load_check(svc, &none, &l, &e), &e, SERVICE_PERMISSION_DENIED, "eve");
    assert_refused(service_load_check(svc, &service_anonymous, &l, &e), &e, SERVICE_BAD_REQUEST,
                   "names");
    assert_refused(service_spawn_nodes(svc, &none, 0, never_called, NULL, &e), &e,
                   SERVICE_PERMISSION_DENIED, "nodes.spawn");
}

static void test_rpc_load_and_spawn_are_off_unless_switched_on(void **state) {
    (void)state;
    config_error cerr;
    static const char yaml[] = "cnodes: []\n";
    config *off = config_load_string(yaml, sizeof yaml - 1, "off", &cerr);
    assert_non_null(off);
    assert_false(off->allow_rpc || off->allow_load_modules || off->allow_spawn);
    char err[256];
    service *s2 = service_new(off, fx.gw, err, sizeof err);
    assert_non_null(s2);
    service_error e;
    waiter w;
    waiter_init(&w);
    service_rpc_req q = {
        .node = "a@127.0.0.1", .module = "erlang", .function = "node", .deadline_left_ms = -1};
    assert_refused(service_rpc(s2, &service_anonymous, &q, &w.c, "\x6a", 1, &e), &e,
                   SERVICE_PERMISSION_DENIED, "erlang_nodes.rpc: true");
    q.function = NULL;
    assert_refused(service_load(s2, &service_anonymous, &q, &w.c, "x", 1, &e), &e,
                   SERVICE_PERMISSION_DENIED, "erlang_nodes.load_modules: true");
    assert_refused(service_spawn_nodes(s2, &service_anonymous, 1, never_called, NULL, &e), &e,
                   SERVICE_PERMISSION_DENIED, "erlang_nodes.spawn: true");
    assert_refused(service_stop_node(s2, &service_anonymous, "child1@127.0.0.1", &e), &e,
                   SERVICE_PERMISSION_DENIED, "erlang_nodes.spawn: true");
    /* a grant does not turn a switch on */
    const service_grant g = {.op = SERVICE_OP_RPC};
    service_principal p = {.name = "ops", .grants = &g, .grant_count = 1};
    q.function = "node";
    assert_refused(service_rpc_check(s2, &p, &q, &e), &e, SERVICE_PERMISSION_DENIED, "turned off");
    waiter_free(&w);
    service_free(s2);
    config_free(off);
}

static void test_rpc_to_a_node_nodexd_does_not_know_is_refused(void **state) {
    (void)state;
    service_error e;
    service_rpc_req q = {
        .node = "x@10.1.2.3", .module = "erlang", .function = "node", .deadline_left_ms = -1};
    assert_refused(service_rpc_check(svc, &service_anonymous, &q, &e), &e,
                   SERVICE_PERMISSION_DENIED, "not one nodexd knows");
    q.node = "x@127.0.0.1"; /* erlang_nodes.rpc_nodes: "*@127.0.0.1" */
    assert_int_equal(service_rpc_check(svc, &service_anonymous, &q, &e), SERVICE_OK);
}

/* ---- calls -------------------------------------------------------------------------------- */

static void test_call_to_an_unknown_cnode_is_not_found(void **state) {
    (void)state;
    service_error e;
    service_call_req r = {.op = SERVICE_OP_CALL, .cnode = "nope", .deadline_left_ms = -1};
    assert_refused(service_call_check(svc, &service_anonymous, &r, &e), &e, SERVICE_NOT_FOUND,
                   "'nope'");
    r.cnode = NULL;
    assert_refused(service_call_check(svc, &service_anonymous, &r, &e), &e, SERVICE_NOT_FOUND,
                   "no C-node");
    r = (service_call_req){.op = SERVICE_OP_CAST, .cnode = "nope", .deadline_left_ms = -1};
    assert_refused(service_call(svc, &service_anonymous, &r, NULL, "\x6a", 1, &e), &e,
                   SERVICE_NOT_FOUND, "'nope'");
}

static void test_call_timeouts_default_cap_and_follow_the_deadline(void **state) {
    (void)state;
    service_error e;
    service_call_req r = {.op = SERVICE_OP_CALL, .cnode = "t", .deadline_left_ms = -1};
    assert_int_equal(service_call_check(svc, &service_anonymous, &r, &e), SERVICE_OK);
    assert_int_equal(r.timeout_used, DEFAULT_CALL_MS);
    assert_string_equal(r.name, "t");
    r.timeout_ms = 250;
    assert_int_equal(service_call_check(svc, &service_anonymous, &r, &e), SERVICE_OK);
    assert_int_equal(r.timeout_used, 250);
    r.timeout_ms = MAX_CALL_MS + 1;
    assert_refused(service_call_check(svc, &service_anonymous, &r, &e), &e, SERVICE_BAD_REQUEST,
                   "from 1 to 10000");
    r.timeout_ms = SERVICE_TIMEOUT_INVALID;
    assert_refused(service_call_check(svc, &service_anonymous, &r, &e), &e, SERVICE_BAD_REQUEST,
                   "timeout_ms");
    /* the client's deadline: earlier than the request's wait wins, a later one does not */
    r.timeout_ms = 5000;
    r.deadline_left_ms = 120;
    assert_int_equal(service_call_check(svc, &service_anonymous, &r, &e), SERVICE_OK);
    assert_int_equal(r.timeout_used, 120);
    r.timeout_ms = 300;
    r.deadline_left_ms = 100000;
    assert_int_equal(service_call_check(svc, &service_anonymous, &r, &e), SERVICE_OK);
    assert_int_equal(r.timeout_used, 300);
    /* no request, a long deadline: capped at the C-node's maximum */
    r.timeout_ms = 0;
    assert_int_equal(service_call_check(svc, &service_anonymous, &r, &e), SERVICE_OK);
    assert_int_equal(r.timeout_used, MAX_CALL_MS);
    r.deadline_left_ms = 0;
    assert_refused(service_call_check(svc, &service_anonymous, &r, &e), &e, SERVICE_TIMEOUT,
                   "deadline passed");
}

static void test_call_of_a_non_call_operation_is_refused(void **state) {
    (void)state;
    service_error e;
    service_call_req r = {.op = SERVICE_OP_RPC, .cnode = "t", .deadline_left_ms = -1};
    assert_refused(service_call(svc, &service_anonymous, &r, NULL, "\x6a", 1, &e), &e,
                   SERVICE_BAD_REQUEST, "rpc");
}

static void test_message_over_max_bytes_is_too_large(void **state) {
    (void)state;
    size_t len = fx.cfg->term_max_bytes + 1;
    char *big = calloc(1, len);
    assert_non_null(big);
    big[0] = 'j';
    service_error e;
    service_call_req r = {.op = SERVICE_OP_CAST, .cnode = "t", .deadline_left_ms = -1};
    assert_refused(service_call(svc, &service_anonymous, &r, NULL, big, len, &e), &e,
                   SERVICE_TOO_LARGE, "max_bytes");
    free(big);
}

static void test_call_replies_and_cast_is_sent(void **state) {
    (void)state;
    waiter w;
    waiter_init(&w);
    ei_x_buff x;
    encode_tagged(&x, "ping", "svc");
    service_error e;
    service_call_req r = {.op = SERVICE_OP_CALL, .cnode = "t", .deadline_left_ms = -1};
    assert_int_equal(service_call(svc, &service_anonymous, &r, &w.c, x.buff, (size_t)x.index, &e),
                     SERVICE_OK);
    waiter_wait(&w);
    assert_int_equal(service_call_outcome(&w.c, "C-node", "t", r.timeout_used, &e), SERVICE_OK);
    int idx = (int)w.c.reply_offset, arity;
    char tag[MAXATOMLEN];
    assert_int_equal(ei_decode_tuple_header(w.c.reply, &idx, &arity), 0);
    assert_int_equal(ei_decode_atom(w.c.reply, &idx, tag), 0);
    assert_string_equal(tag, "pong");
    r.op = SERVICE_OP_CAST;
    assert_int_equal(service_call(svc, &service_anonymous, &r, NULL, x.buff, (size_t)x.index, &e),
                     SERVICE_OK);
    ei_x_free(&x);
    waiter_free(&w);
}

/* {wait_file, Path, Tag}: the test C-node holds the call until Path exists. */
static void encode_wait_file(ei_x_buff *x, const char *path) {
    assert_int_equal(ei_x_new(x), 0);
    assert_int_equal(ei_x_encode_tuple_header(x, 3), 0);
    assert_int_equal(ei_x_encode_atom(x, "wait_file"), 0);
    assert_int_equal(ei_x_encode_binary(x, path, (int)strlen(path)), 0);
    assert_int_equal(ei_x_encode_atom(x, "s"), 0);
}

static void release_file(const char *path) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
}

/* A call the test C-node holds until `name`'s file exists: started in `w`, the file path in
 * `path` (absent at the start). Returns the request (its timeout_used set). */
static service_call_req start_held_call(waiter *w, service_op op, unsigned timeout_ms,
                                        const char *name, char *path, size_t path_len) {
    snprintf(path, path_len, "/tmp/nodex-svc-%d-%s", (int)getpid(), name);
    unlink(path);
    waiter_init(w);
    ei_x_buff x;
    encode_wait_file(&x, path);
    service_error e;
    service_call_req r = {.op = op, .cnode = "t", .timeout_ms = timeout_ms, .deadline_left_ms = -1};
    assert_int_equal(service_call(svc, &service_anonymous, &r, &w->c, x.buff, (size_t)x.index, &e),
                     SERVICE_OK);
    ei_x_free(&x);
    return r;
}

static void test_late_call_is_a_timeout_naming_the_wait(void **state) {
    (void)state;
    char path[128];
    waiter w;
    service_call_req r = start_held_call(&w, SERVICE_OP_CALL, 100, "timeout", path, sizeof path);
    waiter_wait(&w);
    release_file(path);
    service_error e;
    assert_refused(service_call_outcome(&w.c, "C-node", "t", r.timeout_used, &e), &e,
                   SERVICE_TIMEOUT, "did not reply within 100 ms");
    unlink(path);
    waiter_free(&w);
}

static void test_cancelled_call_ends_cancelled(void **state) {
    (void)state;
    char path[128];
    waiter w;
    service_call_req r = start_held_call(&w, SERVICE_OP_STREAM, 0, "cancel", path, sizeof path);
    assert_true(service_cancel(svc, &w.c));
    waiter_wait(&w);
    release_file(path);
    service_error e;
    assert_refused(service_call_outcome(&w.c, "C-node", "t", r.timeout_used, &e), &e,
                   SERVICE_CANCELLED, NULL);
    assert_false(service_cancel(svc, &w.c));
    unlink(path);
    waiter_free(&w);
}

static void test_outcomes_map_to_their_statuses(void **state) {
    (void)state;
    static const struct {
        call_outcome outcome;
        service_status status;
    } cases[] = {
        {CALL_UNAVAILABLE, SERVICE_UNAVAILABLE},
        {CALL_SHUTDOWN, SERVICE_SHUTTING_DOWN},
        {CALL_CANCELLED, SERVICE_CANCELLED},
        {CALL_TIMEOUT, SERVICE_TIMEOUT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        call c = {.outcome = cases[i].outcome};
        snprintf(c.detail, sizeof c.detail, "why %zu", i);
        service_error e;
        assert_int_equal(service_call_outcome(&c, "node", "n@h", 5, &e), cases[i].status);
        assert_int_equal(e.status, cases[i].status);
        assert_true(strlen(e.message) > 0);
    }
}

/* ---- rpc and loading ---------------------------------------------------------------------- */

static void test_rpc_with_bad_names_args_or_timeout_is_refused(void **state) {
    (void)state;
    char long_name[300];
    memset(long_name, 'm', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    static const char *const bad_node = "";
    const struct {
        const char *node, *module, *function;
        unsigned timeout;
        const char *needle;
    } cases[] = {
        {bad_node, "erlang", "node", 0, "names of 1 to 255"},
        {"a@127.0.0.1", long_name, "node", 0, "names of 1 to 255"},
        {"a@127.0.0.1", "erlang", "", 0, "names of 1 to 255"},
        {"a@127.0.0.1", "erlang", "\xff\xfe", 0, "names of 1 to 255"},
        {"a@127.0.0.1", "erlang", "node", MAX_RPC_MS + 1, "from 1 to 20000"},
        {"a@127.0.0.1", "erlang", "node", SERVICE_TIMEOUT_INVALID, "timeout_ms"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        waiter w;
        waiter_init(&w);
        service_error e;
        service_rpc_req r = {.node = cases[i].node,
                             .module = cases[i].module,
                             .function = cases[i].function,
                             .timeout_ms = cases[i].timeout,
                             .deadline_left_ms = -1};
        assert_refused(service_rpc(svc, &service_anonymous, &r, &w.c, "\x6a", 1, &e), &e,
                       SERVICE_BAD_REQUEST, cases[i].needle);
        waiter_free(&w);
    }
    waiter w;
    waiter_init(&w);
    service_error e;
    service_rpc_req r = {
        .node = "a@127.0.0.1", .module = "erlang", .function = "node", .deadline_left_ms = -1};
    assert_refused(service_rpc(svc, &service_anonymous, &r, &w.c, "\x61\x01", 2, &e), &e,
                   SERVICE_BAD_REQUEST, "args must be a list");
    assert_refused(service_rpc(svc, &service_anonymous, &r, &w.c, "", 0, &e), &e,
                   SERVICE_BAD_REQUEST, "args must be a list");
    /* names the gateway cannot call: no host, or nodexd itself */
    r.node = "nohost";
    assert_refused(service_rpc(svc, &service_anonymous, &r, &w.c, "\x6a", 1, &e), &e,
                   SERVICE_BAD_REQUEST, "not a node nodexd can call");
    r.node = gateway_node_name(fx.gw);
    assert_refused(service_rpc(svc, &service_anonymous, &r, &w.c, "\x6a", 1, &e), &e,
                   SERVICE_BAD_REQUEST, "not a node nodexd can call");
    waiter_free(&w);
}

static void test_rpc_timeout_defaults_to_the_rpc_setting(void **state) {
    (void)state;
    service_error e;
    service_rpc_req r = {
        .node = "a@127.0.0.1", .module = "erlang", .function = "node", .deadline_left_ms = -1};
    assert_int_equal(service_rpc_check(svc, &service_anonymous, &r, &e), SERVICE_OK);
    assert_int_equal(r.timeout_used, DEFAULT_RPC_MS);
    r.deadline_left_ms = 40;
    assert_int_equal(service_rpc_check(svc, &service_anonymous, &r, &e), SERVICE_OK);
    assert_int_equal(r.timeout_used, 40);
}

static void test_rpc_to_a_node_nobody_runs_ends_unavailable(void **state) {
    (void)state;
    waiter w;
    waiter_init(&w);
    service_error e;
    service_rpc_req r = {.node = "nobody_here@127.0.0.1",
                         .module = "erlang",
                         .function = "node",
                         .timeout_ms = 5000,
                         .deadline_left_ms = -1};
    assert_int_equal(service_rpc(svc, &service_anonymous, &r, &w.c, "\x6a", 1, &e), SERVICE_OK);
    waiter_wait(&w);
    assert_refused(service_call_outcome(&w.c, "node", r.node, r.timeout_used, &e), &e,
                   SERVICE_UNAVAILABLE, "nobody_here");
    waiter_free(&w);
}

static void test_rpc_results_tell_badrpc_and_bad_replies_apart(void **state) {
    (void)state;
    ei_x_buff x;
    call c;
    int at;
    service_error e;
    /* {badrpc, nodedown}: the reason */
    assert_int_equal(ei_x_new(&x), 0);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "badrpc");
    ei_x_encode_atom(&x, "nodedown");
    fake_reply(&c, &x);
    assert_refused(service_rpc_result(svc, &c, "n@h", &at, &e), &e, SERVICE_BADRPC,
                   "rpc on n@h failed: nodedown");
    char atom[MAXATOMLEN];
    assert_int_equal(ei_decode_atom(c.reply, &at, atom), 0);
    assert_string_equal(atom, "nodedown");
    assert_refused(service_load_result(svc, &c, "n@h", "m", &e), &e, SERVICE_UNAVAILABLE,
                   "nodedown");
    call_clear(&c);
    ei_x_free(&x);
    /* {badrpc, {'EXIT', x}}: a load failing so is badrpc too */
    assert_int_equal(ei_x_new(&x), 0);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "badrpc");
    ei_x_encode_atom(&x, "other");
    fake_reply(&c, &x);
    assert_refused(service_load_result(svc, &c, "n@h", "m", &e), &e, SERVICE_BADRPC, "other");
    call_clear(&c);
    ei_x_free(&x);
    /* a plain result */
    encode_tagged(&x, "ok", "fine");
    fake_reply(&c, &x);
    assert_int_equal(service_rpc_result(svc, &c, "n@h", &at, &e), SERVICE_OK);
    assert_int_equal(at, 0);
    assert_refused(service_load_result(svc, &c, "n@h", "m", &e), &e, SERVICE_LOAD_FAILED,
                   "code:load_binary(m) on n@h returned");
    call_clear(&c);
    ei_x_free(&x);
    /* {module, m}: loaded */
    assert_int_equal(ei_x_new(&x), 0);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "module");
    ei_x_encode_atom(&x, "m");
    fake_reply(&c, &x);
    assert_int_equal(service_load_result(svc, &c, "n@h", "m", &e), SERVICE_OK);
    call_clear(&c);
    ei_x_free(&x);
    /* bytes that are no term */
    static const char junk[] = {(char)ERL_SMALL_TUPLE_EXT, 3, 'a'};
    memset(&c, 0, sizeof c);
    c.outcome = CALL_REPLIED;
    c.reply = malloc(sizeof junk);
    assert_non_null(c.reply);
    memcpy(c.reply, junk, sizeof junk);
    c.reply_len = sizeof junk;
    assert_refused(service_rpc_result(svc, &c, "n@h", &at, &e), &e, SERVICE_BAD_REPLY,
                   "cannot be decoded");
    assert_refused(service_load_result(svc, &c, "n@h", "m", &e), &e, SERVICE_BAD_REPLY,
                   "cannot be decoded");
    call_clear(&c);
}

static void test_load_needs_a_beam_and_good_names(void **state) {
    (void)state;
    waiter w;
    waiter_init(&w);
    service_error e;
    service_rpc_req r = {.node = "a@127.0.0.1", .module = "m", .deadline_left_ms = -1};
    assert_refused(service_load(svc, &service_anonymous, &r, &w.c, "", 0, &e), &e,
                   SERVICE_BAD_REQUEST, ".beam");
    r.module = "";
    assert_refused(service_load(svc, &service_anonymous, &r, &w.c, "x", 1, &e), &e,
                   SERVICE_BAD_REQUEST, "node and module");
    r.module = "m";
    r.node = "nohost";
    assert_refused(service_load(svc, &service_anonymous, &r, &w.c, "x", 1, &e), &e,
                   SERVICE_BAD_REQUEST, "not a node nodexd can call");
    waiter_free(&w);
}

/* ---- Erlang nodes ------------------------------------------------------------------------- */

static void test_spawn_counts_are_checked_against_max_children(void **state) {
    (void)state;
    service_error e;
    assert_refused(service_spawn_nodes(svc, &service_anonymous, 0, never_called, NULL, &e), &e,
                   SERVICE_BAD_REQUEST, ">= 1");
    assert_refused(service_spawn_nodes(svc, &service_anonymous, 3, never_called, NULL, &e), &e,
                   SERVICE_OVER_LIMIT, "max_children (2)");
    assert_int_equal(service_status_grpc(SERVICE_OVER_LIMIT), 8);
    assert_int_equal(service_status_http(SERVICE_OVER_LIMIT), 400);
    /* no erl here: the gateway cannot start children at all */
    assert_refused(service_spawn_nodes(svc, &service_anonymous, 1, never_called, NULL, &e), &e,
                   SERVICE_UNAVAILABLE, "cannot start child nodes");
    gateway_node_info *nodes;
    size_t n;
    assert_int_equal(service_list_nodes(svc, &service_anonymous, &nodes, &n, &e), SERVICE_OK);
    assert_int_equal(n, 0);
    free(nodes);
}

static void test_stop_of_an_unknown_child_is_not_found(void **state) {
    (void)state;
    service_error e;
    assert_refused(service_stop_node(svc, &service_anonymous, "child9@127.0.0.1", &e), &e,
                   SERVICE_NOT_FOUND, "child9@127.0.0.1");
}

/* ---- status, health, events --------------------------------------------------------------- */

static void test_cnode_snapshots_list_get_and_pool_instances(void **state) {
    (void)state;
    service_error e;
    gateway_cnode_info *all;
    size_t n;
    assert_int_equal(service_list_cnodes(svc, &service_anonymous, &all, &n, &e), SERVICE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(all[0].name, "t");
    assert_string_equal(all[1].name, "pool");
    free(all);
    gateway_cnode_info info, *inst;
    assert_int_equal(service_get_cnode(svc, &service_anonymous, "pool", &info, &inst, &n, &e),
                     SERVICE_OK);
    assert_int_equal(n, 2);
    assert_int_equal(inst[0].instance, 1);
    assert_int_equal(inst[1].instance, 2);
    assert_int_not_equal(inst[0].os_pid, inst[1].os_pid);
    free(inst);
    assert_int_equal(service_get_cnode(svc, &service_anonymous, "t", &info, &inst, &n, &e),
                     SERVICE_OK);
    assert_null(inst);
    assert_int_equal(n, 0);
    assert_refused(service_get_cnode(svc, &service_anonymous, "nope", &info, NULL, NULL, &e), &e,
                   SERVICE_NOT_FOUND, "'nope'");
}

static void test_health_names_what_is_not_ready(void **state) {
    (void)state;
    const char **names;
    size_t n;
    assert_true(service_health(svc, &names, &n));
    assert_int_equal(n, 0);
    free(names);
    assert_true(service_health(svc, NULL, NULL));
}

static void test_health_check_serves_the_gateway_and_each_cnode_without_a_principal(void **state) {
    (void)state;
    /* ready once every instance is up (setup waited for the first of the pool) */
    for (int64_t deadline = fixture_now_ms() + 20000; !service_health(svc, NULL, NULL);) {
        if (fixture_now_ms() > deadline) fail_msg("the gateway did not become ready");
        fixture_sleep_ms(5);
    }
    service_error e;
    bool serving = false;
    assert_int_equal(service_health_check(svc, NULL, NULL, &serving, &e), SERVICE_OK);
    assert_true(serving);
    serving = false;
    assert_int_equal(service_health_check(svc, NULL, "t", &serving, &e), SERVICE_OK);
    assert_true(serving);
    serving = false;
    assert_int_equal(service_health_check(svc, NULL, "pool", &serving, &e), SERVICE_OK);
    assert_true(serving);
    assert_refused(service_health_check(svc, NULL, "nope", &serving, &e), &e, SERVICE_NOT_FOUND,
                   "'nope'");
    assert_false(serving);
    /* only the probe is open: the operations around it still want a principal */
    assert_true(service_op_is_probe(SERVICE_OP_HEALTH));
    for (int op = 0; op < SERVICE_OP_COUNT; op++) {
        if (op == SERVICE_OP_HEALTH) continue;
        assert_false(service_op_is_probe((service_op)op));
        assert_refused(service_authorize(svc, NULL, (service_op)op, NULL, &e), &e,
                       SERVICE_UNAUTHENTICATED, "authentication");
    }
}

static void test_health_check_of_a_stopped_pool_instance_still_serves(void **state) {
    (void)state;
    /* one instance down is still a serving C-node: any instance up will do */
    gateway_cnode_info info;
    assert_int_equal(gateway_cnode_info_by_name(fx.gw, "pool", &info), 0);
    assert_int_equal(info.instances, 2);
    gateway_cnode_info one;
    size_t index = 0;
    for (; index < gateway_cnode_count(fx.gw); index++) {
        gateway_cnode_info probe;
        if (gateway_cnode_info_at(fx.gw, index, &probe) == 0 && strcmp(probe.name, "pool") == 0)
            break;
    }
    assert_int_equal(gateway_cnode_instance_at(fx.gw, index, 2, &one), 0);
    assert_true(one.os_pid > 0);
    kill(one.os_pid, SIGKILL);
    for (;;) { /* max_restarts 0: the instance stays failed */
        assert_int_equal(gateway_cnode_instance_at(fx.gw, index, 2, &one), 0);
        if (one.state == CNODE_FAILED) break;
        fixture_sleep_ms(5);
    }
    service_error e;
    bool serving = false;
    assert_int_equal(service_health_check(svc, NULL, "pool", &serving, &e), SERVICE_OK);
    assert_true(serving);
    assert_int_equal(service_health_check(svc, NULL, NULL, &serving, &e), SERVICE_OK);
    assert_false(serving); /* not ready: an instance that should run is not up */
}

typedef struct seen_events {
    size_t current; /* seq 0 */
    bool saw_t, saw_pool;
} seen_events;

static void on_seen(const gateway_event *ev, void *ctx) {
    seen_events *s = ctx;
    if (ev->seq != 0) return; /* a live change: not what this test counts */
    s->current++;
    if (strcmp(ev->name, "t") == 0 && ev->state == CNODE_UP) s->saw_t = true;
    if (strcmp(ev->name, "pool") == 0 && ev->state == CNODE_UP) s->saw_pool = true;
    assert_true(ev->time_ms > 0);
}

static void test_watch_sends_current_states_before_it_returns(void **state) {
    (void)state;
    seen_events s = {0};
    uint64_t id;
    service_error e;
    assert_int_equal(service_watch(svc, &service_anonymous, true, on_seen, &s, &id, &e),
                     SERVICE_OK);
    assert_true(id > 0);
    assert_int_equal(s.current, 2);
    assert_true(s.saw_t && s.saw_pool);
    service_unwatch(svc, id);
    seen_events none = {0};
    assert_int_equal(service_watch(svc, &service_anonymous, false, on_seen, &none, &id, &e),
                     SERVICE_OK);
    assert_int_equal(none.current, 0);
    service_unwatch(svc, id);
    service_unwatch(svc, 0); /* no subscription: ignored */
}

int main(void) {
    fixture_process_init(); /* before any thread */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_status_maps_to_an_http_and_a_grpc_status),
        cmocka_unit_test(test_term_errors_keep_their_codes_and_statuses),
        cmocka_unit_test(test_operation_names_are_distinct),
        cmocka_unit_test(test_every_operation_refuses_a_principal_without_its_permission),
        cmocka_unit_test(test_no_principal_is_unauthenticated),
        cmocka_unit_test(test_health_check_serves_the_gateway_and_each_cnode_without_a_principal),
        cmocka_unit_test(test_the_api_description_needs_a_principal_and_no_grant),
        cmocka_unit_test(test_grants_name_their_targets_with_globs),
        cmocka_unit_test(
            test_a_principal_without_the_permission_gets_forbidden_even_with_a_malformed_body),
        cmocka_unit_test(test_rpc_load_and_spawn_are_off_unless_switched_on),
        cmocka_unit_test(test_rpc_to_a_node_nodexd_does_not_know_is_refused),
        cmocka_unit_test(test_call_to_an_unknown_cnode_is_not_found),
        cmocka_unit_test(test_call_timeouts_default_cap_and_follow_the_deadline),
        cmocka_unit_test(test_call_of_a_non_call_operation_is_refused),
        cmocka_unit_test(test_message_over_max_bytes_is_too_large),
        cmocka_unit_test(test_call_replies_and_cast_is_sent),
        cmocka_unit_test(test_late_call_is_a_timeout_naming_the_wait),
        cmocka_unit_test(test_cancelled_call_ends_cancelled),
        cmocka_unit_test(test_outcomes_map_to_their_statuses),
        cmocka_unit_test(test_rpc_with_bad_names_args_or_timeout_is_refused),
        cmocka_unit_test(test_rpc_timeout_defaults_to_the_rpc_setting),
        cmocka_unit_test(test_rpc_to_a_node_nobody_runs_ends_unavailable),
        cmocka_unit_test(test_rpc_results_tell_badrpc_and_bad_replies_apart),
        cmocka_unit_test(test_load_needs_a_beam_and_good_names),
        cmocka_unit_test(test_spawn_counts_are_checked_against_max_children),
        cmocka_unit_test(test_stop_of_an_unknown_child_is_not_found),
        cmocka_unit_test(test_cnode_snapshots_list_get_and_pool_instances),
        cmocka_unit_test(test_health_names_what_is_not_ready),
        cmocka_unit_test(test_watch_sends_current_states_before_it_returns),
        /* last: it leaves a pool instance failed */
        cmocka_unit_test(test_health_check_of_a_stopped_pool_instance_still_serves),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
