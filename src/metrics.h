/* metrics: Prometheus text exposition of the gateway: C-nodes, transports' requests and stream
 * cuts, process. */
#ifndef NODEX_METRICS_H
#define NODEX_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "gateway.h"
#include "strbuf.h"

/* The MIME type of the exposition (Prometheus text format 0.0.4). */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Request counters of one transport, by route (or method) and status (or code). Counting is
 * lock-free and may run on any thread; routes and statuses are fixed when it is made, so the
 * series stay bounded whatever clients send. */
typedef struct metrics_requests metrics_requests;

/* Every counter of the process. Thread-safe. */
typedef struct metrics metrics;

/* A registry, its clock started now. NULL when out of memory. Free with metrics_free. */
metrics *metrics_new(void);
/* Frees the registry and its transports' tables (nobody may count after this). */
void metrics_free(metrics *m);

/* Adds a transport's table: series `<family>{<route_label>=routes[i], <status_label>=s}` for
 * status s from 0 to max_status (a larger status counts as max_status + 1, "other").
 * `family`, the labels and `routes` (route_count names) must outlive the registry. Returns the
 * table (owned by `m`), or NULL when out of memory. Any thread. */
metrics_requests *metrics_add_requests(metrics *m, const char *family, const char *help,
                                       const char *route_label, const char *status_label,
                                       const char *const *routes, size_t route_count,
                                       unsigned max_status);
/* Counts one request of `route` (an index into the table's routes; out of range is ignored)
 * that ended with `status`. Any thread; `t` may be NULL (nothing counted). */
void metrics_requests_count(metrics_requests *t, size_t route, unsigned status);
/* The count of one series (for tests). */
uint64_t metrics_requests_get(const metrics_requests *t, size_t route, unsigned status);

/* The transports, and why a stream was cut off, each from one list: id, label value. */
#define METRICS_TRANSPORTS(X)                                                                      \
    X(METRICS_HTTP, "http")                                                                        \
    X(METRICS_GRPC, "grpc")
#define METRICS_CUT_CAUSES(X)                                                                      \
    X(METRICS_CUT_UNREAD_BYTES, "unread_bytes") /* the client left more than the cap unread */

typedef enum metrics_transport {
#define X(id, label) id,
    METRICS_TRANSPORTS(X)
#undef X
        METRICS_TRANSPORT_COUNT
} metrics_transport;

typedef enum metrics_cut_cause {
#define X(id, label) id,
    METRICS_CUT_CAUSES(X)
#undef X
        METRICS_CUT_CAUSE_COUNT
} metrics_cut_cause;

/* Counts one stream (HTTP /events or call stream, gRPC server stream) that `t` cut off for
 * `cause`: nodex_stream_cuts_total. Returns the count of that series now (for logs). Lock-free,
 * any thread; out-of-range values are ignored (0 returned). */
uint64_t metrics_stream_cut(metrics *m, metrics_transport t, metrics_cut_cause cause);
/* The count of one stream-cut series. Any thread. */
uint64_t metrics_stream_cuts(const metrics *m, metrics_transport t, metrics_cut_cause cause);

/* Appends the whole exposition: per C-node and instance (state, calls by outcome, latency
 * histogram, in flight, waiting, restarts, dropped messages by cause, bytes), every
 * transport's requests, stream cuts by transport and cause, and the process (RSS, descriptors,
 * start time, uptime); `gw` NULL leaves out the C-nodes and readiness. Returns 0, or -1 when out of
 * memory. Any thread. */
int metrics_render(const metrics *m, gateway *gw, strbuf *out);

/* Appends `s` as a label value (backslash, quote and newline escaped). Returns 0 or -1. */
int metrics_label_value(strbuf *out, const char *s);

#endif
