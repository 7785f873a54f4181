/* config: the daemon's configuration, read from one YAML file or from the embedded default. */
#ifndef NODEX_CONFIG_H
#define NODEX_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "log.h"

/* X-macro tables: enum values and their config spellings from one list. */
#define CNODE_DIRECTIONS(X)                                                                        \
    X(CNODE_DIRECTION_BACK, "back")   /* the C-node connects to nodexd (Nodex convention) */       \
    X(CNODE_DIRECTION_TO, "to")       /* the C-node publishes itself; nodexd connects to it */     \
    X(CNODE_DIRECTION_ADOPT, "adopt") /* no process: an already-running node, by name */

#define CNODE_PROTOCOLS(X)                                                                         \
    X(CNODE_PROTOCOL_RAW, "raw")           /* send the request to a registered name */             \
    X(CNODE_PROTOCOL_GEN_CALL, "gen_call") /* {'$gen_call', {Pid, Ref}, Request} */

#define CNODE_RESTARTS(X)                                                                          \
    X(CNODE_RESTART_PERMANENT, "permanent") /* always restarted */                                 \
    X(CNODE_RESTART_TRANSIENT, "transient") /* restarted unless it exited with status 0 */         \
    X(CNODE_RESTART_TEMPORARY, "temporary") /* never restarted */

#define X(id, name) id,
typedef enum cnode_direction { CNODE_DIRECTIONS(X) } cnode_direction;
typedef enum cnode_protocol { CNODE_PROTOCOLS(X) } cnode_protocol;
typedef enum cnode_restart { CNODE_RESTARTS(X) } cnode_restart;
#undef X

const char *cnode_direction_name(cnode_direction v);
const char *cnode_protocol_name(cnode_protocol v);
const char *cnode_restart_name(cnode_restart v);

/* How replies are recognised among the messages that reach a call's pid. */
typedef enum reply_filter_kind {
    REPLY_FILTER_ANY,  /* the first message is the reply */
    REPLY_FILTER_TAG,  /* only {Tag, Reply} with Tag == reply_tag (an atom); answers Reply */
    REPLY_FILTER_NODE, /* only {Node, Reply} with Node == the C-node's node name atom */
} reply_filter_kind;

/* One name=value environment entry; value is a template (see template.h). */
typedef struct config_env {
    char *name;
    char *value;
} config_env;

/* One registered C-node. All strings are owned by the config. */
typedef struct config_cnode {
    char *name;       /* API name: /cnodes/{name} */
    char *executable; /* path; a bare name is looked up beside nodexd, then in ../libexec/nodex */
    char **
        args; /* argv[1..] templates, NULL-terminated (never NULL); default: the Nodex convention */
    size_t arg_count;
    config_env *env; /* extra environment entries */
    size_t env_count;
    char *cwd;        /* working directory, NULL = nodexd's */
    char *sname;      /* the C-node's short name template, default "{gateway_sname}_{name}" */
    char *hostname;   /* NULL = the gateway's host part */
    char *node;       /* adopt/to: full node name to connect to; NULL = {sname}@{hostname} */
    char *ready_line; /* template, default "{sname}@{hostname} ready" */
    unsigned spawn_inactive_timeout_ms; /* default 5000 */
    cnode_direction direction;
    cnode_protocol protocol;
    char *registered_name; /* raw protocol target, default "nil" */
    reply_filter_kind reply_filter;
    char *reply_tag;              /* REPLY_FILTER_TAG only, else NULL */
    unsigned call_timeout_ms;     /* default 5000 */
    unsigned max_call_timeout_ms; /* cap on ?timeout_ms=, default 300000 */
    cnode_restart restart;
    unsigned max_restarts;          /* default 3 ... */
    unsigned max_seconds;           /* ... in 5 s; beyond it the C-node is failed */
    unsigned backoff_initial_ms;    /* default 100, doubling per consecutive restart */
    unsigned backoff_max_ms;        /* default 5000 */
    unsigned shutdown_timeout_ms;   /* SIGTERM, then SIGKILL after this; default 2000 */
    unsigned connect_timeout_ms;    /* direction to/adopt: per attempt; default 2000 */
    unsigned max_in_flight;         /* calls in flight on this C-node; over it 503; default 10000 */
    unsigned instances;             /* processes serving this name; calls go to the least
                                       loaded one that is up; default 1 */
    unsigned max_waiting;           /* calls held while no instance is up yet; over it 503;
                                       default 1000; 0: calls never wait */
    unsigned calls_per_process;     /* recycle a process after this many calls (a C-node that
                                       serves one message and exits: 1); default 0: never */
    unsigned retry_failed_after_ms; /* a failed C-node is tried again after this long;
                                       default 300000; 0: it stays failed */
    bool monitor;         /* gen_call: MONITOR_P the target per call, DEMONITOR_P after it; its
                             MONITOR_P_EXIT (noproc, the exit) ends the call at once. Default: true for
                             direction adopt (an Erlang node), false for the C-nodes nodexd starts (ei
                             C-nodes drop their connection on a MONITOR_P) */
    uint64_t fingerprint; /* of its YAML mapping: a reload compares C-nodes by it */
} config_cnode;

/* One principal of auth.principals: how it proves who it is, and what it may do. */
typedef struct config_principal {
    char *name;
    char *token_file;   /* a file holding its bearer token, or NULL */
    char *token_env;    /* an environment variable holding it, or NULL */
    char *cert_subject; /* mTLS: the client certificate's subject DN, or NULL */
    char *cert_san;     /* mTLS: one DNS or URI SAN of the client certificate, or NULL */
    char **allow;       /* permissions, "op" or "op:pattern", NULL-terminated (never NULL) */
    size_t allow_count;
} config_principal;

/* The permission names `allow` entries start with, from one list: name, takes a pattern. */
#define CONFIG_PERMISSIONS(X)                                                                      \
    X("call", true)           /* call:GLOB over C-node names */                                    \
    X("cast", true)           /* cast:GLOB */                                                      \
    X("stream", true)         /* stream:GLOB */                                                    \
    X("watch", false)         /* lifecycle events */                                               \
    X("rpc", true)            /* rpc:MODULE:FUNCTION globs */                                      \
    X("modules.load", true)   /* modules.load:GLOB over module names */                            \
    X("nodes.spawn", false)   /* start child Erlang nodes */                                       \
    X("nodes.stop", false)    /* stop child Erlang nodes */                                        \
    X("cnodes.restart", true) /* cnodes.restart:GLOB: restart C-nodes (out of failed too) */
/* A listener's TLS settings (http.tls, grpc.tls). All strings are owned by the config. */
typedef struct config_tls {
    bool enabled;             /* the mapping is present: the listener speaks TLS 1.2 or later */
    char *cert_file;          /* PEM certificate chain, leaf first (required) */
    char *key_file;           /* PEM private key of the leaf (required, not encrypted) */
    char *client_ca_file;     /* PEM CA certificates that client certificates must chain to;
                                 NULL: no client certificate is asked for */
    bool require_client_cert; /* refuse clients without a valid certificate (needs the CA) */
    char *origin;             /* "FILE:LINE: http.tls", for errors about the files */
} config_tls;

/* The top-level sections, from one list (a reload reports which of them changed). */
#define CONFIG_SECTIONS(X)                                                                         \
    X(CONFIG_SECTION_NODE, "node")                                                                 \
    X(CONFIG_SECTION_HTTP, "http")                                                                 \
    X(CONFIG_SECTION_GRPC, "grpc")                                                                 \
    X(CONFIG_SECTION_ERLANG_NODES, "erlang_nodes")                                                 \
    X(CONFIG_SECTION_TERMS, "terms")                                                               \
    X(CONFIG_SECTION_LOG, "log")                                                                   \
    X(CONFIG_SECTION_SHUTDOWN, "shutdown")                                                         \
    X(CONFIG_SECTION_AUTH, "auth")                                                                 \
    X(CONFIG_SECTION_CNODES, "cnodes")

typedef enum config_section {
#define X(id, name) id,
    CONFIG_SECTIONS(X)
#undef X
        CONFIG_SECTION_COUNT
} config_section;

/* "http", ... */
const char *config_section_name(config_section s);

typedef struct config {
    char *source; /* file name, or "<embedded default>" */
    /* of each section's YAML as written (0: absent): equal text, equal fingerprint */
    uint64_t section_fingerprint[CONFIG_SECTION_COUNT];
    /* node */
    char *node_name;       /* "nodexd@127.0.0.1"; a name without '@' gets "@<hostname>" */
    bool longnames;        /* derived: the host part has a dot or is an IP address */
    char *cookie;          /* literal cookie (discouraged), NULL if not given */
    char *cookie_file;     /* default "~/.erlang.cookie" */
    char *cookie_env;      /* environment variable holding the cookie, default "NODEX_COOKIE" */
    char *dist_listen;     /* address the distribution listener binds, default "127.0.0.1" */
    unsigned dist_port;    /* 0 = ephemeral */
    unsigned tick_time_ms; /* a peer silent this long is down; default 4000 */
    unsigned peer_tick_time_ms; /* same for other Erlang nodes, which tick at their own
                                   net_ticktime (default 60 s); default 60000 */
    bool start_epmd;            /* run `epmd -daemon` when none answers; default true */
    /* http */
    char *http_listen;                    /* "127.0.0.1:8080"; port 0 = ephemeral */
    unsigned http_threads;                /* 0 (default): MHD on the gateway loop thread */
    unsigned http_max_connections_per_ip; /* from one client address, default 1000; 0: no cap */
    size_t max_body_bytes;                /* default 8 MiB; over it 413 */
    size_t http_body_budget_bytes;        /* body bytes held at once, in all; default 256 MiB */
    unsigned http_connection_timeout_s;   /* idle keep-alive timeout, default 60 */
    unsigned http_max_connections;        /* concurrent HTTP connections, default 10000 */
    unsigned http_header_timeout_ms; /* a request's headers must be in by then, default 30000 */
    unsigned http_body_timeout_ms;   /* its body after its headers, default 120000; 0: none */
    char **allowed_origins; /* browser origins allowed (CORS), NULL-terminated (never NULL) */
    size_t allowed_origin_count;
    char **allowed_hosts; /* Host names a loopback listener also answers to (never NULL) */
    size_t allowed_host_count;
    config_tls http_tls; /* HTTPS when enabled */
    /* grpc */
    char *grpc_listen;     /* "127.0.0.1:50051"; NULL (yaml null) disables the gRPC server */
    unsigned grpc_threads; /* completion-queue threads, default 2 */
    unsigned grpc_max_concurrent_streams; /* per HTTP/2 connection, default 1000 */
    unsigned grpc_max_in_flight;          /* gRPC calls in progress at once; over it
                                             RESOURCE_EXHAUSTED; default 10000 */
    size_t grpc_max_message_bytes;        /* default 8 MiB */
    size_t grpc_max_stream_pending_bytes; /* a stream's unsent bytes before it is cut off,
                                             default 8 MiB */
    config_tls grpc_tls;                  /* gRPC over TLS when enabled */
    /* erlang_nodes: child Erlang nodes and rpc */
    char *erl_executable; /* default "erl" (looked up on PATH) */
    char *child_prefix;   /* child node names are <prefix><N>@<gateway host>; default "child" */
    unsigned child_count; /* children started with nodexd, default 0 */
    char **erl_args;      /* extra `erl` arguments, NULL-terminated (never NULL) */
    size_t erl_arg_count;
    char **code_paths; /* directories added with -pa, NULL-terminated (never NULL) */
    size_t code_path_count;
    unsigned child_ready_timeout_ms;    /* default 15000 */
    unsigned child_shutdown_timeout_ms; /* init:stop, then SIGTERM, then SIGKILL; default 5000 */
    cnode_restart child_restart;        /* default permanent */
    unsigned child_max_restarts;        /* default 3 ... */
    unsigned child_max_seconds;         /* ... in 5 s */
    unsigned max_children;              /* POST /nodes cap, default 64 */
    unsigned rpc_timeout_ms;            /* default 5000 */
    unsigned max_rpc_timeout_ms;        /* default 300000 */
    char **rpc_nodes; /* node-name globs rpc may reach besides children and connected peers */
    size_t rpc_node_count;
    /* auth */
    config_principal *principals;
    size_t principal_count;
    /* terms */
    unsigned term_max_depth; /* default 512 */
    size_t term_max_bytes;   /* default 64 MiB */
    /* logging */
    log_level log_level;
    log_format log_format;
    unsigned shutdown_drain_ms; /* shutdown.drain_ms: SIGTERM lets calls in flight finish this
                                   long (not ready, no new calls); 0 = fail them at once */
    /* C-nodes */
    config_cnode *cnodes;
    size_t cnode_count;
    /* switches, together (no padding between) */
    bool allow_rpc;          /* erlang_nodes.rpc: rpc at all; default false */
    bool allow_load_modules; /* erlang_nodes.load_modules; default false */
    bool allow_spawn;        /* erlang_nodes.spawn: spawn and stop children; default false */
    bool auth_none;  /* `auth: none`: no authentication, even on a public listener (warned) */
    bool log_access; /* log.access: one line per finished HTTP request and gRPC call */
    bool from_file;  /* loaded by config_load_file (a reload can read it again) */
} config;

/* Error report: "file:line: key: what is wrong". */
typedef struct config_error {
    char message[512];
} config_error;

/* Parses YAML from a file. Returns a config the caller frees with config_free, or NULL with `err`
 * filled. Unknown keys, bad types and out-of-range values are errors naming file, line and key. */
config *config_load_file(const char *path, config_error *err);
/* Parses YAML from memory; `source` names it in errors. Same contract as config_load_file. */
config *config_load_string(const char *yaml, size_t len, const char *source, config_error *err);
/* The embedded default: the example C-node as "example", HTTP on 127.0.0.1:8080. */
config *config_load_default(config_error *err);
/* The embedded default's YAML text (printed by `nodexd --print-default-config`). */
extern const char config_default_yaml[];
/* True for a loopback address ("127.0.0.1:8080", "[::1]:1", "localhost:80"). */
bool config_listen_is_loopback(const char *listen);
/* Finds a C-node by API name, or NULL. */
const config_cnode *config_find_cnode(const config *cfg, const char *name);
/* Frees the config and everything it owns. NULL is allowed. */
void config_free(config *cfg);

#endif
