/* http_route: the HTTP API's routing and header parsing without libmicrohttpd: a method and path
 * to a route, Content-Type and Accept to formats, Host, and query values. */
#ifndef NODEX_HTTP_ROUTE_H
#define NODEX_HTTP_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

/* The term formats a body or a reply can have. */
typedef enum http_format {
    HTTP_FORMAT_JSON,
    HTTP_FORMAT_TEXT,
    HTTP_FORMAT_ETF,
    HTTP_FORMAT_NONE /* none that nodexd reads or writes */
} http_format;

/* What a method and path ask for, with the path template that names it in metrics and logs. */
#define HTTP_ROUTES(X)                                                                             \
    X(HTTP_ROUTE_NOT_FOUND, "unmatched")                                                           \
    X(HTTP_ROUTE_HEALTHZ, "GET /healthz")                                                          \
    X(HTTP_ROUTE_READYZ, "GET /readyz")                                                            \
    X(HTTP_ROUTE_METRICS, "GET /metrics")                                                          \
    X(HTTP_ROUTE_CNODES, "GET /cnodes")                                                            \
    X(HTTP_ROUTE_CNODE, "GET /cnodes/{name}")                                                      \
    X(HTTP_ROUTE_CNODE_CALL, "POST /cnodes/{name}/call")                                           \
    X(HTTP_ROUTE_CNODE_CAST, "POST /cnodes/{name}/cast")                                           \
    X(HTTP_ROUTE_CNODE_STREAM, "POST /cnodes/{name}/stream")                                       \
    X(HTTP_ROUTE_CNODE_RESTART, "POST /cnodes/{name}/restart")                                     \
    X(HTTP_ROUTE_EVENTS, "GET /events")                                                            \
    X(HTTP_ROUTE_NODES, "GET /nodes")                                                              \
    X(HTTP_ROUTE_NODES_SPAWN, "POST /nodes")                                                       \
    X(HTTP_ROUTE_NODE_STOP, "DELETE /nodes/{node}")                                                \
    X(HTTP_ROUTE_NODE_RPC, "POST /nodes/{node}/rpc")                                               \
    X(HTTP_ROUTE_NODE_LOAD, "PUT /nodes/{node}/modules/{module}")                                  \
    X(HTTP_ROUTE_STATUS_PAGE, "GET /")                                                             \
    X(HTTP_ROUTE_OPENAPI, "GET /openapi.json")

typedef enum http_route_kind {
#define X(id, name) id,
    HTTP_ROUTES(X)
#undef X
} http_route_kind;

/* Number of route kinds: the enumerators counted. */
enum {
#define X(id, name) id##_COUNTED,
    HTTP_ROUTES(X)
#undef X
        HTTP_ROUTE_COUNT
};

/* The route's template ("POST /cnodes/{name}/call"; "unmatched" for HTTP_ROUTE_NOT_FOUND). */
const char *http_route_name(http_route_kind kind);
/* Every route's template, indexed by http_route_kind (HTTP_ROUTE_COUNT of them). */
extern const char *const http_route_names[];

/* A matched route. */
typedef struct http_route {
    http_route_kind kind;
    const char *allow; /* non-NULL: the path exists, not for this method (405, Allow: this) */
    char name[256];    /* the C-node's or node's name, when the path has one */
    char module[256];  /* HTTP_ROUTE_NODE_LOAD */
} http_route;

/* Matches `method` (GET also stands for HEAD) and `url` (the path, without the query) to a
 * route in *out; a path nodexd does not serve is HTTP_ROUTE_NOT_FOUND (no allow, empty names).
 * Pure, thread-safe. */
void http_route_match(const char *method, const char *url, http_route *out);

/* The MIME type of a format (not HTTP_FORMAT_NONE). */
const char *http_format_mime(http_format f);
/* A media type (`len` bytes, surrounding blanks ignored, case-insensitive) as a format. */
http_format http_format_of(const char *value, size_t len);
/* The body's format from a Content-Type value (parameters ignored); NULL means JSON. */
http_format http_route_content_type(const char *content_type);
/* The reply's format from an Accept value: the first listed type nodexd produces; NULL, empty
 * or a wildcard mean `in` (the body's). HTTP_FORMAT_NONE when none is acceptable. */
http_format http_route_accept(const char *accept, http_format in);

/* Whether a loopback listener answers to Host `host` (against DNS rebinding): localhost, a
 * 127/8 address, [::1], or one of the `count` names in `allowed`; an optional :port is ignored.
 */
bool http_route_host_allowed(const char *host, char *const *allowed, size_t count);
/* A timeout_ms query value: 0 when absent (NULL), `invalid` when not an integer from 1 up to
 * below `invalid`, else its value. */
unsigned http_route_timeout_ms(const char *value, unsigned invalid);
/* A boolean query flag: present and empty, "true" or "1". */
bool http_route_query_true(const char *value);

#endif
