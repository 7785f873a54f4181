/* grpc_health: the standard grpc.health.v1.Health service's names and statuses, and its Watch. */
#include "grpc_health.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GRPC_HEALTH_GATEWAY "nodex.v1.Gateway" /* the gateway's own gRPC service */

struct grpc_health_watch {
    service *svc;
    const service_principal *principal;
    char *name;
    grpc_health_report_fn report;
    void *ctx;
    uint64_t sub_id;
    pthread_mutex_t mu; /* one read and report at a time */
    bool reported;      /* guarded by mu */
    grpc_health_status last;
};

service_status grpc_health_check(service *svc, const service_principal *p, const char *name,
                                 grpc_health_status *out, service_error *err) {
    if (!name) name = "";
    bool whole = name[0] == '\0' || strcmp(name, GRPC_HEALTH_GATEWAY) == 0;
    bool serving = false;
    service_status st = service_health_check(svc, p, whole ? NULL : name, &serving, err);
    if (st == SERVICE_NOT_FOUND)
        snprintf(err->message, sizeof err->message,
                 "unknown health service '%.64s' (\"\" or \"" GRPC_HEALTH_GATEWAY
                 "\" for nodexd, or a C-node's name)",
                 name);
    *out = st != SERVICE_OK
               ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN
           : serving ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                     : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    return st;
}

/* Reads the status again and reports it when it changed. */
static void grpc_health_watch_update(grpc_health_watch *w) {
    pthread_mutex_lock(&w->mu);
    grpc_health_status now;
    service_error e;
    grpc_health_check(w->svc, w->principal, w->name, &now, &e); /* unknown: SERVICE_UNKNOWN */
    if (!w->reported || now != w->last) {
        w->reported = true;
        w->last = now;
        w->report(now, w->ctx);
    }
    pthread_mutex_unlock(&w->mu);
}

/* A lifecycle event or the drain's start (loop thread): any of them may change the status. */
static void grpc_health_on_event(const gateway_event *ev, void *ctx) {
    (void)ev;
    grpc_health_watch_update(ctx);
}

grpc_health_watch *grpc_health_watch_new(service *svc, const service_principal *p, const char *name,
                                         grpc_health_report_fn report, void *ctx,
                                         service_error *err) {
    grpc_health_watch *w = calloc(1, sizeof *w);
    if (!w || !(w->name = strdup(name ? name : ""))) {
        free(w);
        err->status = SERVICE_NO_MEMORY;
        snprintf(err->message, sizeof err->message, "out of memory");
        return NULL;
    }
    w->svc = svc;
    w->principal = p;
    w->report = report;
    w->ctx = ctx;
    pthread_mutex_init(&w->mu, NULL);
    /* subscribe first: a change between the first read and the subscription is not lost */
    if (service_watch_health(svc, p, grpc_health_on_event, w, &w->sub_id, err) != SERVICE_OK) {
        grpc_health_watch_free(w);
        return NULL;
    }
    grpc_health_watch_update(w);
    return w;
}

void grpc_health_watch_free(grpc_health_watch *w) {
    if (!w) return;
    service_unwatch_health(w->svc, w->sub_id); /* waits for a running callback */
    pthread_mutex_destroy(&w->mu);
    free(w->name);
    free(w);
}
