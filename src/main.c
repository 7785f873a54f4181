/* main: nodexd's command line: load the config, join the cluster, serve HTTP until signalled. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "config.h"
#include "cookie.h"
#include "epmd.h"
#include "gateway.h"
#include "grpc_api.h"
#include "heap.h"
#include "http_api.h"
#include "log.h"
#include "sdnotify.h"
#include "tls.h"

static void usage(FILE *out) {
    fputs("usage: nodexd [--config FILE] [--check-config FILE] [--print-default-config] [--help]\n"
          "\n"
          "nodexd joins an Erlang cluster as a hidden node, starts and supervises C-nodes and\n"
          "serves calls into them over HTTP.\n"
          "\n"
          "  --config FILE         read the YAML configuration FILE (default: embedded config\n"
          "                        serving the example C-node as 'example' on 127.0.0.1:8080)\n"
          "  --check-config FILE   validate FILE, print \"config OK\" or the error, and exit\n"
          "  --print-default-config  print the embedded default configuration\n"
          "  --help                this text\n"
          "\n"
          "Cookie: $NODEX_COOKIE, node.cookie_file (default ~/.erlang.cookie) or node.cookie.\n"
          "Docs: docs/http.md, docs/configuration.md, docs/terms.md\n",
          out);
}

typedef struct started_ctx {
    http_api *http;
    grpc_api *grpc; /* NULL when grpc.listen is null */
    gateway *gw;
    service *svc;
    const config *cfg; /* the configuration nodexd started with */
    config **reloaded; /* configurations read by reloads: in use (auth) until exit */
    size_t reloaded_count;
} started_ctx;

static void on_started(void *arg) {
    started_ctx *s = arg;
    /* Tests and scripts wait for this line: it carries the resolved port. */
    printf("nodexd ready http=%s node=%s%s%s\n", http_api_address(s->http),
           gateway_node_name(s->gw), s->grpc ? " grpc=" : "",
           s->grpc ? grpc_api_address(s->grpc) : "");
    fflush(stdout);
    sdnotify_status("serving http=%s node=%s", http_api_address(s->http), gateway_node_name(s->gw));
    sdnotify_ready();
}

/* A C-node whose argv carries the cookie shows it to every local user (/proc/PID/cmdline). */
static void warn_cookie_in_argv(const config *cfg) {
    for (size_t i = 0; i < cfg->cnode_count; i++) {
        const config_cnode *cn = &cfg->cnodes[i];
        for (size_t k = 0; k < cn->arg_count; k++) {
            if (!strstr(cn->args[k], "{cookie}")) continue;
            log_warn("cnode %s: the cookie is in its argv, readable by local users in "
                     "/proc/PID/cmdline; a C-node that can read it from its environment should "
                     "get env: {NODEX_COOKIE: \"{cookie}\"} and args without {cookie}",
                     cn->name);
            break;
        }
    }
}

/* Logs what a new configuration changes that a reload does not apply (it takes a restart). */
static void report_unapplied(const config *cur, const config *next) {
    for (int i = 0; i < CONFIG_SECTION_COUNT; i++) {
        if (i == CONFIG_SECTION_AUTH || i == CONFIG_SECTION_CNODES) continue;
        if (cur->section_fingerprint[i] != next->section_fingerprint[i])
            log_warn("reload: %s changed: it takes a restart (the running values stay)",
                     config_section_name((config_section)i));
    }
}

/* SIGHUP: read the configuration file again; a file that does not load, or names a C-node that
 * cannot be set up, is refused with its error and changes nothing. C-nodes added, removed or
 * changed are started, stopped or replaced; its principals and tokens replace the running ones. */
static void reload_config(started_ctx *s) {
    if (!s->cfg->from_file) {
        log_info("reload: nodexd runs on the embedded default configuration: no file to read");
        return;
    }
    config_error cerr = {{0}};
    config *next = config_load_file(s->cfg->source, &cerr);
    if (!next) {
        log_error("reload: refused, the running configuration stays: %s", cerr.message);
        return;
    }
    config **list = realloc(s->reloaded, (s->reloaded_count + 1) * sizeof *list);
    if (!list) {
        log_error("reload: out of memory; the running configuration stays");
        config_free(next);
        return;
    }
    s->reloaded = list;
    char err[512];
    gateway_reload_counts n;
    if (gateway_reload_cnodes(s->gw, next, &n, err, sizeof err) != 0) {
        log_error("reload: refused, the running configuration stays: %s", err);
        config_free(next);
        return;
    }
    s->reloaded[s->reloaded_count++] = next; /* in use until exit: C-nodes and auth refer to it */
    service_reload_cnodes(s->svc, next);
    log_info("reload: cnodes: %zu added, %zu removed, %zu changed, %zu unchanged", n.added,
             n.removed, n.changed, n.kept);
    report_unapplied(s->cfg, next);
    size_t principals = 0;
    if (service_reload_auth(s->svc, next, &principals, err, sizeof err) != 0)
        log_error("reload: auth keeps its principals and tokens: %s", err);
    else
        log_info("reload: auth: %zu principals, tokens read again", principals);
}

/* SIGHUP: the configuration file, then the TLS certificate files of both listeners (a failure
 * keeps the old ones). */
static void on_reload(void *arg) {
    started_ctx *s = arg;
    reload_config(s);
    char err[512];
    if (http_api_reload_tls(s->http, err, sizeof err) != 0)
        log_error("reload: HTTPS keeps its certificate: %s", err);
    if (s->grpc && grpc_api_reload_tls(s->grpc, err, sizeof err) != 0)
        log_error("reload: gRPC keeps its certificate: %s", err);
    log_info("reload: done");
}

/* SIGTERM: the listeners stop accepting while calls in flight finish (shutdown.drain_ms). */
static void on_drain(void *arg) {
    started_ctx *s = arg;
    sdnotify_stopping();
    sdnotify_status("draining: finishing calls in flight");
    service_drain_began(s->svc); /* health watches report NOT_SERVING now */
    http_api_drain(s->http);
    grpc_api_drain(s->grpc);
}

/* --check-config: the TLS files must load too (a start would fail on them). */
static int check_tls(const config *cfg) {
    const config_tls *t[] = {&cfg->http_tls, cfg->grpc_listen ? &cfg->grpc_tls : NULL};
    char err[512];
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (!t[i] || !t[i]->enabled) continue;
        tls_creds *c = tls_creds_load(t[i], err, sizeof err);
        if (!c) {
            fprintf(stderr, "%s\n", err);
            return -1;
        }
        tls_creds_free(c);
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *config_path = NULL;
    bool check_only = false;
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", required_argument, NULL, 'k'},
        {"print-default-config", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': config_path = optarg; break;
        case 'k':
            config_path = optarg;
            check_only = true;
            break;
        case 'p': fputs(config_default_yaml, stdout); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "nodexd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    config_error cerr = {{0}};
    config *cfg = config_path ? config_load_file(config_path, &cerr) : config_load_default(&cerr);
    if (!cfg) {
        fprintf(stderr, "%s\n", cerr.message);
        return 2;
    }
    if (check_only) {
        int bad = check_tls(cfg);
        if (!bad) puts("config OK");
        config_free(cfg);
        return bad ? 2 : 0;
    }
    log_set_level(cfg->log_level);
    log_set_format(cfg->log_format);
    /* Freed request and reply buffers stay in the heap for the next call (bench/README.md,
     * "Large payloads"); the janitor hands the heap back once the burst is over. */
    if (heap_tune() != 0) log_warn("heap: glibc refused the malloc thresholds");
    /* A gateway holds a descriptor per client and per node: take all the kernel allows. */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }

    /* Every thread created from here on inherits this mask; the loop reads signals via signalfd. */
    gateway_block_signals();

    int rc = 1;
    char err[512];
    char cookie[1024];
    gateway *gw = NULL;
    http_api *http = NULL;
    grpc_api *grpc = NULL;
    service *svc = NULL;
    heap_janitor *heap = NULL;
    started_ctx sctx = {0}; /* what the loop's callbacks see; its reloaded configs freed at out */
    if (cookie_resolve(cfg->cookie, cfg->cookie_env, cfg->cookie_file, 1, cookie, sizeof cookie,
                       err, sizeof err) != 0) {
        log_error("cookie: %s", err);
        goto out;
    }
    /* Only the children that ask for the cookie (a {cookie} template) get it. */
    unsetenv(cfg->cookie_env);
    warn_cookie_in_argv(cfg);
    char dist_any[80];
    snprintf(dist_any, sizeof dist_any, "%s:0", cfg->dist_listen);
    if (config_listen_is_loopback(dist_any))
        setenv("ERL_EPMD_ADDRESS", cfg->dist_listen, 0); /* an epmd we start stays local too */
    if (cfg->start_epmd ? epmd_ensure(3000, err, sizeof err) != 0 : !epmd_is_running(1000)) {
        log_error("epmd: %s", cfg->start_epmd ? err : "not running (node.start_epmd is false)");
        goto out;
    }
    gw = gateway_new(cfg, cookie, err, sizeof err);
    memset(cookie, 0, sizeof cookie);
    if (!gw) {
        log_error("%s", err);
        goto out;
    }
    svc = service_new(cfg, gw, err, sizeof err); /* reads the principals' tokens */
    if (!svc) {
        log_error("auth: %s", err);
        goto out;
    }
    if (cfg->auth_none)
        log_warn("auth: none: every client that reaches %s%s%s may run every operation",
                 cfg->http_listen, cfg->grpc_listen ? " or " : "",
                 cfg->grpc_listen ? cfg->grpc_listen : "");
    http = http_api_start(cfg, gw, svc, err, sizeof err);
    if (!http) {
        log_error("%s", err);
        goto out;
    }
    log_info("HTTP on %s, config %s", http_api_address(http), cfg->source);
    if (cfg->grpc_listen) {
        grpc = grpc_api_start(cfg, gw, svc, err, sizeof err); /* signals are blocked already */
        if (!grpc) {
            log_error("%s", err);
            goto out;
        }
        log_info("gRPC on %s", grpc_api_address(grpc));
    }
    sctx = (started_ctx){http, grpc, gw, svc, cfg, NULL, 0};
    gateway_on_reload(gw, on_reload, &sctx);
    gateway_on_drain(gw, on_drain, &sctx);
    /* Any transport's burst: once a second, trims when idle after 4 MiB were faulted in. */
    heap = heap_janitor_start(1000, 4u << 20, 20, heap_usage_now(), err, sizeof err);
    if (!heap) log_warn("%s: freed heap stays with the process", err);
    rc = gateway_run(gw, on_started, &sctx) == 0 ? 0 : 1;
    sdnotify_stopping();
    log_info("stopped");
out:
    heap_janitor_stop(heap);
    /* gateway_run failed every pending call (CALL_SHUTDOWN): stop the servers, then the gateway. */
    grpc_api_stop(grpc);
    http_api_stop(http);
    service_free(svc);
    gateway_free(gw);
    for (size_t i = 0; i < sctx.reloaded_count; i++) config_free(sctx.reloaded[i]);
    free(sctx.reloaded);
    config_free(cfg);
    return rc;
}
