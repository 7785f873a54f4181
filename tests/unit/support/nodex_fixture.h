/* nodex_fixture: shared fixture for the in-process gateway unit tests: a private epmd, the test
 * C-node, a gateway running on its own thread, C-node pid bookkeeping and a raw HTTP/1.1 client.
 * Every function that checks something does so with cmocka assertions (failing the running test).
 */
#ifndef NODEX_FIXTURE_H
#define NODEX_FIXTURE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "gateway.h"
#include "http_api.h"
#include "strbuf.h"

/* ---- time and processes ------------------------------------------------------------------- */

/* Milliseconds on the monotonic clock. */
int64_t fixture_now_ms(void);
/* Sleeps for `ms` milliseconds. */
void fixture_sleep_ms(int ms);
/* True if `pid` no longer exists or is a zombie / dead process. */
bool fixture_pid_gone(pid_t pid);
/* Blocks the gateway's signals and makes this process a child subreaper (call first in main). */
void fixture_process_init(void);

/* ---- private epmd ------------------------------------------------------------------------- */

/* Starts epmd on a free loopback port, exports it as ERL_EPMD_PORT; 0 once it answers, else -1. */
int fixture_epmd_start(void);
/* Kills and reaps the epmd started by fixture_epmd_start (ERL_EPMD_PORT is left set). */
void fixture_epmd_stop(void);

/* ---- test C-node -------------------------------------------------------------------------- */

/* Locates <build>/tests/test_cnode beside this executable (asserts it is executable). */
void fixture_find_test_cnode(void);
/* The path found by fixture_find_test_cnode. */
const char *fixture_test_cnode_path(void);

/* cmocka group setup: fixture_find_test_cnode, then fixture_epmd_start. */
int fixture_group_setup(void **state);
/* cmocka group teardown: fixture_epmd_stop, then unsets ERL_EPMD_PORT. */
int fixture_group_teardown(void **state);

/* ---- gateway on its own thread ------------------------------------------------------------ */

typedef struct fixture_gateway {
    config *cfg;
    gateway *gw;
    pthread_t loop;
    bool running;
    int run_rc; /* gateway_run's result once the loop has stopped */
    atomic_bool started;
    pid_t pids[8]; /* C-node processes seen, to check they are gone at the end */
    size_t npids;
} fixture_gateway;

/* A hook run with the gateway created but its loop not yet started (or stopped); 0 = ok. */
typedef int (*fixture_hook)(fixture_gateway *f, void *ctx);

/* Zeroes `f`, loads `yaml` (named `source`), creates the gateway with `cookie`, runs `attach`
 * (may be NULL), starts gateway_run on a thread and waits for it to start; 0 or -1 (printed). */
int fixture_gateway_start(fixture_gateway *f, const char *yaml, const char *source,
                          const char *cookie, fixture_hook attach, void *ctx);
/* Requests the loop to stop and joins it (every gateway call has completed); idempotent. */
void fixture_gateway_stop_loop(fixture_gateway *f);
/* Remembers every C-node pid, stops the loop, runs `detach` (may be NULL), frees the gateway and
 * config, and returns -1 (killing it) if any C-node pid seen is still alive, else 0. */
int fixture_gateway_stop(fixture_gateway *f, fixture_hook detach, void *ctx);
/* Records a C-node pid (if new and > 0) to check at fixture_gateway_stop. */
void fixture_remember_pid(fixture_gateway *f, pid_t pid);
/* Waits until C-node `name` is in `state` (fails the test after timeout_ms); returns its info. */
gateway_cnode_info fixture_wait_state(fixture_gateway *f, const char *name, cnode_state state,
                                      int timeout_ms);
/* As fixture_wait_state, for the C-node at config index `index`. */
gateway_cnode_info fixture_wait_state_at(fixture_gateway *f, size_t index, cnode_state state,
                                         int timeout_ms);

/* ---- raw HTTP/1.1 client ------------------------------------------------------------------ */

typedef struct fixture_response {
    int status;
    char head[8192]; /* status line and headers, as received */
    strbuf body;
    bool closed; /* the server closed the connection after it */
} fixture_response;

/* Per-connection receive buffer: bytes of the next response may already be in it. */
typedef struct fixture_conn {
    int fd;
    char buf[1 << 16];
    size_t len;
} fixture_conn;

/* The port of an "host:port" address, or 0. */
int fixture_address_port(const char *address);
/* A socket connected to 127.0.0.1:`port` (asserted). */
int fixture_http_connect(int port);
/* Sends all of `data` (fails the test on error). */
void fixture_send_all(int fd, const char *data, size_t len);
/* Reads more bytes into c->buf, waiting until `deadline` (ms); bytes read, 0 at EOF, -1 on timeout.
 */
ssize_t fixture_conn_fill(fixture_conn *c, int64_t deadline);
/* Drops the first `n` buffered bytes. */
void fixture_conn_consume(fixture_conn *c, size_t n);
/* The value of header `name` in r->head (first occurrence) copied to `out`, or NULL. */
const char *fixture_http_header(const fixture_response *r, const char *name, char *out, size_t cap);
/* Reads one full response (Content-Length, chunked or to EOF) from `c` into `r`. */
void fixture_http_read_response(fixture_conn *c, fixture_response *r);
/* One request on a fresh connection. `extra` holds header lines, each ending in \r\n. */
void fixture_http_request(int port, const char *method, const char *path, const char *extra,
                          const char *body, size_t body_len, fixture_response *r);
/* POST of a JSON `body` with Content-Type: application/json plus `extra` headers. */
void fixture_http_call_json(int port, const char *path, const char *extra, const char *body,
                            fixture_response *r);
/* Frees the response body. */
void fixture_http_response_free(fixture_response *r);
/* Asserts the body is valid JSON (decodes to a term). */
void fixture_assert_json(const fixture_response *r);
/* Asserts status, application/json, and exactly {"error":{"code":CODE,"message":"..."}}. */
void fixture_assert_http_error(const fixture_response *r, int status, const char *code);

/* ---- the standard HTTP gateway: one test C-node "t", HTTP on a free port, no gRPC ------------ */

typedef struct fixture_http {
    service *svc;
    http_api *api;
    int port; /* the HTTP front end's port on 127.0.0.1 */
} fixture_http;

/* fixture_hook that starts the HTTP front end on f's config into `ctx` (a fixture_http *). */
int fixture_http_attach(fixture_gateway *f, void *ctx);
/* fixture_hook that stops the HTTP front end in `ctx` (a fixture_http *). */
int fixture_http_detach(fixture_gateway *f, void *ctx);
/* Starts the gateway with HTTP (max_body_bytes `max_body`, cookie "httptestcookie") and C-node
 * "t" (the test C-node), and waits for "t" to be up; 0 or -1. */
int fixture_http_gateway_start(fixture_gateway *f, fixture_http *h, int max_body);
/* Stops and frees what fixture_http_gateway_start started; -1 if a C-node outlived it. */
int fixture_http_gateway_stop(fixture_gateway *f, fixture_http *h);

/* The max_body_bytes of fixture_http_setup's gateway. */
#define FIXTURE_HTTP_MAX_BODY 1024
/* The gateway and HTTP front end that fixture_http_setup / fixture_http_teardown manage. */
extern fixture_gateway fixture_http_gw;
extern fixture_http fixture_http_fe;
/* cmocka setup: fixture_http_gateway_start(&fixture_http_gw, &fixture_http_fe,
 * FIXTURE_HTTP_MAX_BODY). */
int fixture_http_setup(void **state);
/* cmocka teardown: fixture_http_gateway_stop of the same; -1 if a C-node outlived the gateway. */
int fixture_http_teardown(void **state);

/* {ping, <<"hi">>} and {pong, <<"hi">>} as JSON terms. */
extern const char fixture_ping_json[];
extern const char fixture_pong_json[];

#endif
