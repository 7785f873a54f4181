/* grpc_health: the standard grpc.health.v1.Health service's names and statuses, and its Watch. */
#ifndef NODEX_GRPC_HEALTH_H
#define NODEX_GRPC_HEALTH_H

#include "grpc/health/v1/health.pb-c.h"
#include "service.h"

typedef Grpc__Health__V1__HealthCheckResponse__ServingStatus grpc_health_status;

/* The health service names nodexd answers: "" and "nodex.v1.Gateway" are the whole gateway
 * (SERVING when it is ready, as GET /readyz says), a configured C-node's name is that C-node
 * (SERVING when one of its instances is up; C-node names have no '.', so they never clash).
 * SERVICE_OK with *out SERVING or NOT_SERVING; SERVICE_NOT_FOUND with *out SERVICE_UNKNOWN for
 * any other name. A probe: `p` may be NULL. Any thread. */
service_status grpc_health_check(service *svc, const service_principal *p, const char *name,
                                 grpc_health_status *out, service_error *err);

/* Receives a Watch's statuses; runs on the thread that created the watch (the first status) or
 * on the gateway's loop thread (later ones), one at a time: it must not block. */
typedef void (*grpc_health_report_fn)(grpc_health_status status, void *ctx);

/* One Watch of health service `name`: its lifecycle-event subscription and the last status it
 * reported. */
typedef struct grpc_health_watch grpc_health_watch;

/* Subscribes to the gateway's lifecycle events, then reports the current status of `name`
 * (SERVICE_UNKNOWN for an unknown name: the stream stays open) before it returns, and after
 * that each status that differs from the last one reported, read again on every event. Reads
 * and reports are serialized: the last report is always the latest state. `svc` must outlive
 * it. Returns NULL with the refusal in err. Free with grpc_health_watch_free. Any thread. */
grpc_health_watch *grpc_health_watch_new(service *svc, const service_principal *p, const char *name,
                                         grpc_health_report_fn report, void *ctx,
                                         service_error *err);
/* Ends the subscription: when this returns, `report` is not running and never runs again. Any
 * thread but not from inside `report` or an event callback. NULL is allowed. */
void grpc_health_watch_free(grpc_health_watch *w);

#endif
