/* http_assets: the embedded files (defined by the C source cmake/embed.cmake generates). */
#include "http_assets.h"

extern const unsigned char http_asset_openapi_json[];
extern const size_t http_asset_openapi_json_len;
extern const unsigned char http_asset_status_page_html[];
extern const size_t http_asset_status_page_html_len;

http_asset http_assets_openapi(void) {
    return (http_asset){(const char *)http_asset_openapi_json, http_asset_openapi_json_len,
                        "application/json"};
}

http_asset http_assets_status_page(void) {
    return (http_asset){(const char *)http_asset_status_page_html, http_asset_status_page_html_len,
                        "text/html; charset=utf-8"};
}

/* Inline code and styles, connections to its own origin only, never framed. */
#define HTTP_ASSETS_CSP                                                                            \
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "                  \
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "                     \
    "frame-ancestors 'none'"

const http_asset_header *http_assets_page_headers(void) {
    static const http_asset_header headers[] = {
        {"Content-Security-Policy", HTTP_ASSETS_CSP},
        {"X-Content-Type-Options", "nosniff"},
        {"X-Frame-Options", "DENY"},
        {"Referrer-Policy", "no-referrer"},
        {"Cache-Control", "no-cache"},
        {NULL, NULL},
    };
    return headers;
}
