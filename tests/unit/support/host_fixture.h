/* host_fixture: what entries act with, without a gateway: a real loop, routing and events, a
 * config of C-nodes, no connections; events are recorded. Checks fail the running cmocka test. */
#ifndef NODEX_HOST_FIXTURE_H
#define NODEX_HOST_FIXTURE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "entry.h"
#include "events.h"
#include "loop.h"
#include "routing.h"

#define HOST_FIXTURE_MAX_SEEN 16

typedef struct host_fixture {
    config *cfg;
    pthread_mutex_t mu;
    loop *loop;
    routing *routing;
    events *events;
    entry_list nodes;
    bool shutting_down;
    entry_host host;
    ei_cnode ec;
    cnode_state seen[HOST_FIXTURE_MAX_SEEN]; /* the states entered, in order */
    size_t seen_count;
    char last_reason[192]; /* the last event's */
} host_fixture;

/* Parses a config whose `cnodes:` part is `cnodes_yaml` (node entrytest@127.0.0.1). */
config *host_fixture_config(const char *cnodes_yaml);
/* A host for `cnodes_yaml`. */
host_fixture *host_fixture_new(const char *cnodes_yaml);
/* Stops `cn` as the gateway does at exit (SIGTERM, then SIGKILL) and reaps its process. */
void host_fixture_stop(host_fixture *f, entry *cn);
/* Frees the host and its node list (stop started entries first). */
void host_fixture_free(host_fixture *f);
/* True when the recorded events include `want` (n states) in this order. */
bool host_fixture_seen_in_order(const host_fixture *f, const cnode_state *want, size_t n);

#endif
