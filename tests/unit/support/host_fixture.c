/* host_fixture: an entry_host on a real loop, routing and events, for entry-level tests. */
#include "host_fixture.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void host_fixture_on_event(const gateway_event *ev, void *ctx) {
    host_fixture *f = ctx;
    if (f->seen_count < HOST_FIXTURE_MAX_SEEN) f->seen[f->seen_count++] = ev->state;
    snprintf(f->last_reason, sizeof f->last_reason, "%s", ev->reason);
}

config *host_fixture_config(const char *cnodes_yaml) {
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "node:\n  name: \"entrytest@127.0.0.1\"\n  start_epmd: false\n"
             "http:\n  listen: \"127.0.0.1:0\"\ngrpc:\n  listen: null\nlog:\n  level: error\n%s",
             cnodes_yaml);
    config_error err;
    config *cfg = config_load_string(yaml, strlen(yaml), "host_fixture", &err);
    if (!cfg) fail_msg("config: %s", err.message);
    return cfg;
}

host_fixture *host_fixture_new(const char *cnodes_yaml) {
    host_fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->cfg = host_fixture_config(cnodes_yaml);
    pthread_mutex_init(&f->mu, NULL);
    char why[256];
    f->loop = loop_new(NULL, 0, why, sizeof why);
    assert_non_null(f->loop);
    f->routing = routing_new(&f->mu, "entrytest@127.0.0.1");
    f->events = events_new();
    assert_non_null(f->routing);
    assert_non_null(f->events);
    assert_true(events_subscribe(f->events, host_fixture_on_event, f) > 0);
    assert_true(ei_connect_init(&f->ec, "entrytest", "cookie", 1) >= 0);
    f->host = (entry_host){.mu = &f->mu,
                           .cfg = f->cfg,
                           .ec = &f->ec,
                           .loop = f->loop,
                           .routing = f->routing,
                           .events = f->events,
                           .nodes = &f->nodes,
                           .cookie = "cookie",
                           .sname = "entrytest",
                           .hostname = "127.0.0.1",
                           .node_name = "entrytest@127.0.0.1",
                           .child_home = "/nonexistent",
                           .shutting_down = &f->shutting_down};
    return f;
}

void host_fixture_stop(host_fixture *f, entry *cn) {
    f->shutting_down = true;
    entry_stop_begin(cn);
    int64_t start = dist_now_ms();
    while (entry_stop_wait(cn, dist_now_ms() - start))
        loop_poll(f->loop, dist_now_ms() + 10, false);
    entry_stop_end(cn);
}

void host_fixture_free(host_fixture *f) {
    entry_list_free(&f->nodes);
    events_free(f->events);
    routing_free(f->routing);
    loop_free(f->loop);
    pthread_mutex_destroy(&f->mu);
    config_free(f->cfg);
    free(f);
}

bool host_fixture_seen_in_order(const host_fixture *f, const cnode_state *want, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < f->seen_count && k < n; i++)
        if (f->seen[i] == want[k]) k++;
    return k == n;
}
