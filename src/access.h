/* access: request ids, W3C trace context and the access log line, shared by HTTP and gRPC. */
#ifndef NODEX_ACCESS_H
#define NODEX_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest request id accepted from a client (bytes); longer ones are replaced. */
#define ACCESS_REQUEST_ID_MAX 128
/* Bytes of a generated request id (hex), without the NUL. */
#define ACCESS_REQUEST_ID_GENERATED 32
/* The longest tracestate passed on (W3C: 32 members of at most 256 bytes; we keep 512). */
#define ACCESS_TRACESTATE_MAX 512

/* A request's correlation: its id (the client's, or made here) and trace context. */
typedef struct access_ids {
    char request_id[ACCESS_REQUEST_ID_MAX + 1];
    bool request_id_generated; /* the client sent none or one that was not acceptable */
    char traceparent[56];      /* a valid version-00-shaped traceparent, or "" */
    char tracestate[ACCESS_TRACESTATE_MAX + 1]; /* passed with a valid traceparent only */
} access_ids;

/* True when `s` (`len` bytes) is an acceptable request id: 1 to ACCESS_REQUEST_ID_MAX
 * printable ASCII characters without spaces, quotes or backslashes (safe in headers and logs).
 * Pure. */
bool access_request_id_valid(const char *s, size_t len);
/* Writes a new request id (ACCESS_REQUEST_ID_GENERATED hex digits, unique in the process and
 * random across processes) and a NUL into `out`. Any thread. */
void access_request_id_new(char out[ACCESS_REQUEST_ID_GENERATED + 1]);
/* True when `s` (`len` bytes) is a W3C traceparent nodexd can pass on:
 * "vv-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>" in lower case, version not "ff",
 * trace-id and parent-id not all zeros (a later version may append "-..."). Pure. */
bool access_traceparent_valid(const char *s, size_t len);
/* Fills `ids` from what the client sent (each may be NULL): its request id when valid, else a
 * new one; the trace context when the traceparent is valid (tracestate cut at the limit at a
 * member boundary, dropped if it has control characters). Any thread. */
void access_ids_from(access_ids *ids, const char *request_id, size_t request_id_len,
                     const char *traceparent, size_t traceparent_len, const char *tracestate,
                     size_t tracestate_len);

/* One finished request, for the access log. Strings may be NULL (logged as null / "-"). */
typedef struct access_entry {
    const char *transport; /* "http", "grpc" */
    const char *method;    /* HTTP method, or the gRPC method's full name */
    const char *route;     /* the route's template ("POST /cnodes/{name}/call") */
    const char *target;    /* the C-node or node the request named, if any */
    unsigned status;       /* HTTP status or gRPC status code */
    const char *code;      /* the error code of the body, if any */
    int64_t duration_us;
    uint64_t bytes_in;  /* request body bytes */
    uint64_t bytes_out; /* response body bytes */
    const char *peer;   /* the client's address */
    const char *principal;
    const access_ids *ids;
} access_entry;

/* Logs one line "access" at info level with every field of `e` (text or JSON as the log is
 * configured). Any thread. */
void access_log(const access_entry *e);

#endif
