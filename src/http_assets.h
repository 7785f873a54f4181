/* http_assets: the static files nodexd serves over HTTP, embedded at build time from their one
 * source (docs/openapi.json, src/status_page.html; cmake/embed.cmake). */
#ifndef NODEX_HTTP_ASSETS_H
#define NODEX_HTTP_ASSETS_H

#include <stddef.h>

/* One embedded file: its bytes (static, NUL-terminated, never freed) and its media type. */
typedef struct http_asset {
    const char *data;
    size_t len; /* without the terminating NUL */
    const char *content_type;
} http_asset;

/* The OpenAPI 3.1 description of the HTTP API (GET /openapi.json). Pure, thread-safe. */
http_asset http_assets_openapi(void);
/* The status page (GET /): static HTML with inline CSS and JavaScript, no data of this nodexd
 * in it (the page fetches it with the caller's token). Pure, thread-safe. */
http_asset http_assets_status_page(void);
/* One response header. */
typedef struct http_asset_header {
    const char *name;
    const char *value;
} http_asset_header;

/* The headers the status page is served with, up to a {NULL, NULL} entry (static): its
 * Content-Security-Policy (inline code, connections to its own origin only) and friends. */
const http_asset_header *http_assets_page_headers(void);

#endif
