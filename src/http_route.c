/* http_route: HTTP routes and header values to what they ask for, without a server. */
#include "http_route.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const format_mime[] = {
    [HTTP_FORMAT_JSON] = "application/json",
    [HTTP_FORMAT_TEXT] = "application/x-erlang-text",
    [HTTP_FORMAT_ETF] = "application/x-erlang-binary",
};

const char *http_format_mime(http_format f) {
    return f < HTTP_FORMAT_NONE ? format_mime[f] : "application/octet-stream";
}

/* Copies the path segment at p (up to '/' or the end) into out; its length, or 0 when empty or
 * too long. */
static size_t segment(const char *p, char *out, size_t cap) {
    size_t n = strcspn(p, "/");
    if (n == 0 || n >= cap) return 0;
    memcpy(out, p, n);
    out[n] = '\0';
    return n;
}

/* Sets the route when the method fits, else the Allow of a 405. */
static void route(http_route *out, bool fits, http_route_kind kind, const char *allow) {
    out->kind = kind;
    out->allow = fits ? NULL : allow;
}

/* /cnodes/{name}[/{action}]; false when the path is not one of them. */
static bool match_cnodes(const char *p, bool get, bool post, http_route *out) {
    if (!*p) {
        route(out, get, HTTP_ROUTE_CNODES, "GET");
        return true;
    }
    if (*p != '/') return false;
    size_t n = segment(++p, out->name, 128);
    if (!n) return false;
    p += n;
    if (!*p) {
        route(out, get, HTTP_ROUTE_CNODE, "GET");
        return true;
    }
    p++;
    static const struct {
        const char *action;
        http_route_kind kind;
    } actions[] = {
        {"call", HTTP_ROUTE_CNODE_CALL},
        {"cast", HTTP_ROUTE_CNODE_CAST},
        {"stream", HTTP_ROUTE_CNODE_STREAM},
        {"restart", HTTP_ROUTE_CNODE_RESTART},
    };
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++)
        if (strcmp(p, actions[i].action) == 0) {
            route(out, post, actions[i].kind, "POST");
            return true;
        }
    return false;
}

/* /nodes, /nodes/{node}, /nodes/{node}/rpc, /nodes/{node}/modules/{module} */
static bool match_nodes(const char *method, const char *p, bool get, http_route *out) {
    bool post = strcmp(method, "POST") == 0;
    if (!*p) {
        route(out, get || post, post ? HTTP_ROUTE_NODES_SPAWN : HTTP_ROUTE_NODES, "GET, POST");
        return true;
    }
    size_t n = segment(++p, out->name, sizeof out->name);
    if (!n) return false;
    p += n;
    if (!*p) {
        route(out, strcmp(method, "DELETE") == 0, HTTP_ROUTE_NODE_STOP, "DELETE");
        return true;
    }
    if (strcmp(p, "/rpc") == 0) {
        route(out, post, HTTP_ROUTE_NODE_RPC, "POST");
        return true;
    }
    if (strncmp(p, "/modules/", 9) == 0 && p[9] && !strchr(p + 9, '/') &&
        segment(p + 9, out->module, sizeof out->module)) {
        route(out, strcmp(method, "PUT") == 0, HTTP_ROUTE_NODE_LOAD, "PUT");
        return true;
    }
    return false;
}

const char *const http_route_names[] = {
#define X(id, name) name,
    HTTP_ROUTES(X)
#undef X
};

const char *http_route_name(http_route_kind kind) {
    return (unsigned)kind < HTTP_ROUTE_COUNT ? http_route_names[kind] : "unmatched";
}

void http_route_match(const char *method, const char *url, http_route *out) {
    out->kind = HTTP_ROUTE_NOT_FOUND;
    out->allow = NULL;
    out->name[0] = out->module[0] = '\0';
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;
    if (strcmp(url, "/healthz") == 0) return route(out, get, HTTP_ROUTE_HEALTHZ, "GET");
    if (strcmp(url, "/readyz") == 0) return route(out, get, HTTP_ROUTE_READYZ, "GET");
    if (strcmp(url, "/events") == 0) return route(out, get, HTTP_ROUTE_EVENTS, "GET");
    if (strcmp(url, "/metrics") == 0) return route(out, get, HTTP_ROUTE_METRICS, "GET");
    if (strcmp(url, "/") == 0) return route(out, get, HTTP_ROUTE_STATUS_PAGE, "GET");
    if (strcmp(url, "/openapi.json") == 0) return route(out, get, HTTP_ROUTE_OPENAPI, "GET");
    bool found = false;
    if (strncmp(url, "/cnodes", 7) == 0) found = match_cnodes(url + 7, get, post, out);
    if (strncmp(url, "/nodes", 6) == 0 && (url[6] == '\0' || url[6] == '/'))
        found = match_nodes(method, url + 6, get, out);
    if (!found) { /* a partial match may have filled the names */
        out->kind = HTTP_ROUTE_NOT_FOUND;
        out->allow = NULL;
        out->name[0] = out->module[0] = '\0';
    }
}

http_format http_format_of(const char *value, size_t len) {
    while (len && (*value == ' ' || *value == '\t')) value++, len--;
    while (len && (value[len - 1] == ' ' || value[len - 1] == '\t')) len--;
    for (int f = 0; f < HTTP_FORMAT_NONE; f++)
        if (strlen(format_mime[f]) == len && strncasecmp(value, format_mime[f], len) == 0)
            return (http_format)f;
    return HTTP_FORMAT_NONE;
}

http_format http_route_content_type(const char *content_type) {
    if (!content_type) return HTTP_FORMAT_JSON;
    /* Form and text/plain bodies (what a browser sends cross-origin without a preflight) are
     * never read. */
    return http_format_of(content_type, strcspn(content_type, ";"));
}

http_format http_route_accept(const char *accept, http_format in) {
    if (!accept || !*accept) return in;
    const char *p = accept;
    while (*p) {
        size_t item = strcspn(p, ",");
        const char *t = p;
        size_t tl = strcspn(p, ";,");
        while (tl && (*t == ' ' || *t == '\t')) t++, tl--;
        while (tl && (t[tl - 1] == ' ' || t[tl - 1] == '\t')) tl--;
        if ((tl == 3 && strncmp(t, "*/*", 3) == 0) ||
            (tl == 13 && strncasecmp(t, "application/*", 13) == 0))
            return in;
        http_format f = http_format_of(t, tl);
        if (f != HTTP_FORMAT_NONE) return f;
        p += item;
        if (*p == ',') p++;
    }
    return HTTP_FORMAT_NONE;
}

bool http_route_host_allowed(const char *host, char *const *allowed, size_t count) {
    char name[256];
    size_t n = host[0] == '[' ? strcspn(host, "]") + 1 : strcspn(host, ":");
    if (n >= sizeof name || (host[0] == '[' && host[n - 1] != ']')) return false;
    memcpy(name, host, n);
    name[n] = '\0';
    struct in_addr a4;
    if (strcasecmp(name, "localhost") == 0 || strcmp(name, "[::1]") == 0 ||
        (inet_pton(AF_INET, name, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127))
        return true;
    for (size_t i = 0; i < count; i++)
        if (strcasecmp(name, allowed[i]) == 0) return true;
    return false;
}

unsigned http_route_timeout_ms(const char *value, unsigned invalid) {
    if (!value) return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(value, &end, 10);
    if (!*value || *end || errno || v == 0 || v >= invalid ||
        strspn(value, "0123456789") != strlen(value))
        return invalid;
    return (unsigned)v;
}

bool http_route_query_true(const char *value) {
    return value && (strcmp(value, "true") == 0 || strcmp(value, "1") == 0 || *value == '\0');
}
