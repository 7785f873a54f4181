/* grpc_api: the gRPC front end (gRPC C core): service nodex.v1.Gateway, async calls and streams. */
#ifndef NODEX_GRPC_API_H
#define NODEX_GRPC_API_H

#include <stddef.h>

#include "config.h"
#include "gateway.h"
#include "service.h"

typedef struct grpc_api grpc_api;

/* Initializes gRPC core and starts the server on cfg->grpc_listen (must be non-NULL) with
 * cfg->grpc_threads completion-queue threads. No thread ever waits for a C-node: replies,
 * stream messages and events are sent from the gateway's loop thread. The signals must already
 * be blocked (gateway_block_signals): gRPC's own threads inherit the mask. Returns NULL with a
 * message in err (gRPC is then shut down again). Every call is authenticated and run through
 * `svc`. `cfg`, `gw` and `svc` must outlive the server. Call
 * from the main thread. */
grpc_api *grpc_api_start(const config *cfg, gateway *gw, service *svc, char *err, size_t err_len);
/* The bound "host:port" (port resolved when the config asked for 0). */
const char *grpc_api_address(const grpc_api *g);
/* Re-reads grpc.tls's certificate, key and client CA files: new handshakes use them, open
 * connections and streams keep theirs. Returns 0 (also when TLS is off), or -1 with the reason
 * in err and the old credentials still serving. Any thread. */
int grpc_api_reload_tls(grpc_api *g, char *err, size_t err_len);
/* Stops taking calls (the listener closes, clients get GOAWAY and UNAVAILABLE for new calls)
 * while the calls in progress go on; grpc_api_stop ends those. Any thread; NULL is a no-op. */
void grpc_api_drain(grpc_api *g);
/* Stops the server after gateway_run returned and before gateway_free: ends Watch streams and
 * any other open call with UNAVAILABLE, waits briefly for them, cancels the rest, drains the
 * completion queue, joins its threads and shuts gRPC core down. Frees it. NULL is allowed. */
void grpc_api_stop(grpc_api *g);

#endif
