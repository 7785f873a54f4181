/* http_api: the HTTP/1.1 front end (libmicrohttpd): routes, content negotiation, async calls. */
#ifndef NODEX_HTTP_API_H
#define NODEX_HTTP_API_H

#include "config.h"
#include "gateway.h"
#include "service.h"

typedef struct http_api http_api;

/* Starts the server on cfg->http_listen with cfg->http_threads epoll threads. Handlers never
 * block on a C-node: calls suspend their connection and are resumed by the gateway's loop.
 * Every request is authenticated and run through `svc`. Returns NULL with a message in err.
 * `cfg`, `gw` and `svc` must outlive the server. */
http_api *http_api_start(const config *cfg, gateway *gw, service *svc, char *err, size_t err_len);
/* The bound "host:port" (port resolved when the config asked for 0). */
const char *http_api_address(const http_api *h);
/* Re-reads http.tls's certificate, key and client CA files: new handshakes use them, open
 * connections keep theirs. Returns 0 (also when HTTPS is off), or -1 with the reason in err and
 * the old credentials still serving. Any thread. */
int http_api_reload_tls(http_api *h, char *err, size_t err_len);
/* Stops accepting connections (the listening socket is closed) while open ones are served;
 * every answer from then on closes its connection. Any thread; NULL is a no-op. */
void http_api_drain(http_api *h);
/* Stops the server: every call must have completed (gateway_run returned). Frees it. */
void http_api_stop(http_api *h);

#endif
