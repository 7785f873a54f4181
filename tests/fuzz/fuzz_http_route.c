/* fuzz_http_route: HTTP routing and header parsing on hostile input. The input is fields split
 * by '\n': method, path, Content-Type, Accept, Host, timeout_ms, a query flag. Checks what every
 * answer must satisfy (a route's name is a path segment, a 405 names its methods, ...). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { F_METHOD, F_PATH, F_CONTENT_TYPE, F_ACCEPT, F_HOST, F_TIMEOUT, F_FLAG, F_COUNT };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *copy = malloc(size + 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    copy[size] = '\0'; /* MHD hands strings: a NUL ends each field early, as it would there */
    const char *f[F_COUNT] = {0};
    char *p = copy;
    for (int i = 0; i < F_COUNT && p; i++) {
        f[i] = p;
        p = strchr(p, '\n');
        if (p) *p++ = '\0';
    }
    http_route r;
    http_route_match(f[F_METHOD] ? f[F_METHOD] : "GET", f[F_PATH] ? f[F_PATH] : "/", &r);
    if (r.kind == HTTP_ROUTE_NOT_FOUND && (r.allow || r.name[0] || r.module[0])) abort();
    if (r.allow && !*r.allow) abort();
    if (strchr(r.name, '/') || strchr(r.module, '/')) abort();
    if (r.kind == HTTP_ROUTE_NODE_LOAD && !r.module[0]) abort();
    if (r.kind >= HTTP_ROUTE_CNODE && r.kind <= HTTP_ROUTE_CNODE_RESTART &&
        (!r.name[0] || strlen(r.name) >= 128))
        abort();
    if (r.kind >= HTTP_ROUTE_NODE_STOP && !r.name[0]) abort();
    http_format in = http_route_content_type(f[F_CONTENT_TYPE]);
    if (in > HTTP_FORMAT_NONE) abort();
    http_format out =
        http_route_accept(f[F_ACCEPT], in == HTTP_FORMAT_NONE ? HTTP_FORMAT_JSON : in);
    if (out > HTTP_FORMAT_NONE) abort();
    if (out != HTTP_FORMAT_NONE && !http_format_mime(out)) abort();
    char *allowed[] = {"gw.example.com", "[fe80::1]"};
    if (f[F_HOST]) (void)http_route_host_allowed(f[F_HOST], allowed, 2);
    unsigned t = http_route_timeout_ms(f[F_TIMEOUT], 1000000);
    if (t > 1000000 || (!f[F_TIMEOUT] && t != 0)) abort();
    (void)http_route_query_true(f[F_FLAG]);
    free(copy);
    return 0;
}
