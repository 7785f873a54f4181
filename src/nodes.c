/* nodes: Erlang nodes nodexd starts or reaches: their specs, the children's HOME, rpc, init:stop.
 */
#include "nodes.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Doubles braces so a literal argument survives template expansion. */
static char *nodes_template_literal(const char *s) {
    size_t n = strlen(s), extra = 0;
    for (size_t i = 0; i < n; i++) extra += s[i] == '{' || s[i] == '}';
    char *out = malloc(n + extra + 1), *p = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        *p++ = s[i];
        if (s[i] == '{' || s[i] == '}') *p++ = s[i];
    }
    *p = '\0';
    return out;
}

char *nodes_which(const char *name) {
    if (strchr(name, '/')) return access(name, X_OK) == 0 ? strdup(name) : NULL;
    const char *path = getenv("PATH");
    if (!path) path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t n = strcspn(path, ":");
        char *cand;
        if (asprintf(&cand, "%.*s/%s", (int)n, path, name) < 0) return NULL;
        if (access(cand, X_OK) == 0) return cand;
        free(cand);
        path += n + (path[n] == ':');
    }
    return NULL;
}

/* Writes node.listen as an Erlang ip_address() term ("{127,0,0,1}") when it is an IPv4 loopback
 * address; returns false (nothing written) for any other address. */
static bool nodes_loopback_term(const char *listen, char *out, size_t cap) {
    struct in_addr a;
    if (!listen || inet_pton(AF_INET, listen, &a) != 1) return false;
    uint32_t h = ntohl(a.s_addr);
    if (h >> 24 != 127) return false;
    snprintf(out, cap, "{%u,%u,%u,%u}", h >> 24, (h >> 16) & 0xffu, (h >> 8) & 0xffu, h & 0xffu);
    return true;
}

/* Builds a child's argv: erl -noinput -name|-sname Node -kernel net_ticktime T [-kernel
 * inet_dist_use_interface IP] -pa Dirs... ExtraArgs... -eval ready. The interface is node.listen's
 * when that is loopback, so children are as unreachable from outside as nodexd (an epmd they
 * start inherits ERL_EPMD_ADDRESS, see main.c); ExtraArgs come later and may override it. */
static int nodes_child_args(const config *cfg, config_cnode *o) {
    size_t n = 6 + 3 + 2 * cfg->code_path_count + cfg->erl_arg_count + 2;
    o->args = calloc(n + 1, sizeof *o->args);
    if (!o->args) return -1;
    /* The child ticks at our pace, so a hung child is noticed within node.tick_time_ms. */
    char ticktime[16];
    snprintf(ticktime, sizeof ticktime, "%u", (cfg->tick_time_ms + 999) / 1000);
    const char *fixed[] = {"-noinput",     cfg->longnames ? "-name" : "-sname",
                           o->node,        "-kernel",
                           "net_ticktime", ticktime};
    for (size_t i = 0; i < 6; i++)
        if (!(o->args[o->arg_count++] = nodes_template_literal(fixed[i]))) return -1;
    char interface[32]; /* one argv element each: erl parses the term itself, no shell quoting */
    if (nodes_loopback_term(cfg->dist_listen, interface, sizeof interface)) {
        const char *local[] = {"-kernel", "inet_dist_use_interface", interface};
        for (size_t i = 0; i < 3; i++)
            if (!(o->args[o->arg_count++] = nodes_template_literal(local[i]))) return -1;
    }
    for (size_t i = 0; i < cfg->code_path_count; i++) {
        if (!(o->args[o->arg_count++] = strdup("-pa"))) return -1;
        if (!(o->args[o->arg_count++] = nodes_template_literal(cfg->code_paths[i]))) return -1;
    }
    for (size_t i = 0; i < cfg->erl_arg_count; i++)
        if (!(o->args[o->arg_count++] = nodes_template_literal(cfg->erl_args[i]))) return -1;
    /* The ready line nodexd waits for, printed once the node is distributed. */
    if (!(o->args[o->arg_count++] = strdup("-eval"))) return -1;
    if (!(o->args[o->arg_count++] = strdup("io:format(\"~s ready~n\", [node()])"))) return -1;
    return 0;
}

int nodes_config(const config *cfg, bool child, const char *node, const char *home, config_cnode *o,
                 char **executable, char **ready_line) {
    o->direction = child ? CNODE_DIRECTION_TO : CNODE_DIRECTION_ADOPT;
    o->protocol = CNODE_PROTOCOL_RAW;
    o->reply_filter = REPLY_FILTER_TAG; /* rpc answers {rex, Reply} */
    o->call_timeout_ms = cfg->rpc_timeout_ms;
    o->max_call_timeout_ms = cfg->max_rpc_timeout_ms;
    o->restart = child ? cfg->child_restart : CNODE_RESTART_TEMPORARY;
    o->max_restarts = cfg->child_max_restarts;
    o->max_seconds = cfg->child_max_seconds;
    o->backoff_initial_ms = 100;
    o->backoff_max_ms = 5000;
    o->shutdown_timeout_ms = cfg->child_shutdown_timeout_ms;
    o->spawn_inactive_timeout_ms = cfg->child_ready_timeout_ms;
    o->connect_timeout_ms = child ? 5000 : 3000;
    o->max_in_flight = 100000;
    bool ok = (o->name = strdup(node)) && (o->registered_name = strdup("rex")) &&
              (o->reply_tag = strdup("rex")) && (o->node = strdup(node));
    if (ok && child) {
        /* argv is world-readable: the cookie reaches children through a private HOME. */
        ok = (o->env = calloc(1, sizeof *o->env)) != NULL && (o->env[0].name = strdup("HOME")) &&
             (o->env[0].value = strdup(home));
        o->env_count = ok ? 1 : 0;
        ok = ok && nodes_child_args(cfg, o) == 0 &&
             (*executable = nodes_which(cfg->erl_executable)) &&
             (*ready_line = malloc(strlen(node) + 7));
        if (ok) sprintf(*ready_line, "%s ready", node);
    }
    if (!ok && o->env && !o->env_count) {
        free(o->env[0].name);
        free(o->env[0].value);
    }
    return ok ? 0 : -1;
}

void nodes_config_free(config_cnode *o) {
    for (size_t i = 0; o->args && i < o->arg_count; i++) free(o->args[i]);
    free(o->args);
    for (size_t i = 0; o->env && i < o->env_count; i++) {
        free(o->env[i].name);
        free(o->env[i].value);
    }
    free(o->env);
    char *strings[] = {o->name, o->executable, o->sname,           o->hostname,
                       o->node, o->ready_line, o->registered_name, o->reply_tag};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) free(strings[i]);
}

void nodes_child_name(const config *cfg, unsigned index, const char *hostname, char *out,
                      size_t cap) {
    snprintf(out, cap, "%s%u@%s", cfg->child_prefix, index, hostname);
}

bool nodes_valid_name(const char *node) {
    const char *at = strchr(node, '@');
    size_t len = strlen(node);
    if (!at || at == node || !at[1] || strchr(at + 1, '@') || len >= MAXATOMLEN) return false;
    for (const char *p = node; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == '\'' || *p == '"') return false;
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* The children's HOME: child Erlang nodes read the cookie from $HOME/.erlang.cookie */

/* Removes the child-home directories of nodexds that died without cleaning up (SIGKILL):
 * nodexd-<pid>-XXXXXX of ours whose pid no longer runs. */
static void nodes_home_sweep(const char *tmp) {
    DIR *d = opendir(tmp);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "nodexd-", 7) != 0) continue;
        char *end;
        long pid = strtol(e->d_name + 7, &end, 10);
        if (pid <= 0 || pid > INT_MAX || *end != '-') continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char dir[PATH_MAX], file[PATH_MAX + 32];
        struct stat st;
        snprintf(dir, sizeof dir, "%s/%s", tmp, e->d_name);
        if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid()) continue;
        snprintf(file, sizeof file, "%s/.erlang.cookie", dir);
        unlink(file);
        rmdir(dir);
    }
    closedir(d);
}

int nodes_home_create(const char *cookie, char **home, char *err, size_t err_len) {
    const char *tmp = getenv("TMPDIR");
    nodes_home_sweep(tmp && *tmp ? tmp : "/tmp");
    if (asprintf(home, "%s/nodexd-%d-XXXXXX", tmp && *tmp ? tmp : "/tmp", (int)getpid()) < 0) {
        *home = NULL;
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    if (!mkdtemp(*home)) {
        snprintf(err, err_len, "cannot create a directory for child nodes: %s", strerror(errno));
        free(*home);
        *home = NULL;
        return -1;
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/.erlang.cookie", *home);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0400);
    size_t len = strlen(cookie);
    if (fd < 0 || write(fd, cookie, len) != (ssize_t)len) {
        snprintf(err, err_len, "cannot write the child nodes' cookie file: %s", strerror(errno));
        if (fd >= 0) close(fd);
        nodes_home_remove(*home);
        *home = NULL;
        return -1;
    }
    close(fd);
    return 0;
}

void nodes_home_remove(char *home) {
    if (!home) return;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/.erlang.cookie", home);
    unlink(path);
    rmdir(home);
    free(home);
}

/* ------------------------------------------------------------------------------------------ */
/* Messages to Erlang nodes */

int nodes_encode_rpc(ei_x_buff *x, const erlang_pid *from, const char *module, const char *function,
                     const char *args, size_t args_len) {
    if (ei_x_encode_tuple_header(x, 2) || ei_x_encode_pid(x, from) ||
        ei_x_encode_tuple_header(x, 5) || ei_x_encode_atom(x, "call") ||
        ei_x_encode_atom(x, module) || ei_x_encode_atom(x, function) ||
        ei_x_append_buf(x, args, (int)args_len) || ei_x_encode_atom(x, "user"))
        return -1;
    return 0;
}

int nodes_send_init_stop(dist_conn *dc, const erlang_pid *from) {
    static const char stop_msg[] = {ERL_SMALL_TUPLE_EXT,
                                    2,
                                    ERL_SMALL_ATOM_UTF8_EXT,
                                    4,
                                    's',
                                    't',
                                    'o',
                                    'p',
                                    ERL_SMALL_ATOM_UTF8_EXT,
                                    4,
                                    's',
                                    't',
                                    'o',
                                    'p'};
    return dist_send_reg(dc, from, "init", NULL, 0, stop_msg, sizeof stop_msg);
}

/* ------------------------------------------------------------------------------------------ */
/* Spawn requests */

struct nodes_spawn {
    void **children;
    size_t count, cap;
    gateway_spawn_fn done;
    void *ctx;
    struct nodes_spawn *next;
};

struct nodes_spawns {
    nodes_status_fn status;
    pthread_mutex_t mu;  /* guards queue */
    nodes_spawn *queue;  /* submitted, not yet seen by the loop */
    nodes_spawn *active; /* loop thread only */
};

nodes_spawns *nodes_spawns_new(nodes_status_fn status) {
    nodes_spawns *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->status = status;
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

void nodes_spawns_free(nodes_spawns *s) {
    if (!s) return;
    nodes_spawn *lists[] = {s->queue, s->active};
    for (size_t k = 0; k < 2; k++) {
        for (nodes_spawn *r = lists[k], *next; r; r = next) {
            next = r->next;
            nodes_spawn_discard(r);
        }
    }
    pthread_mutex_destroy(&s->mu);
    free(s);
}

nodes_spawn *nodes_spawn_new(unsigned count, gateway_spawn_fn done, void *ctx) {
    nodes_spawn *r = calloc(1, sizeof *r);
    if (!r || !(r->children = calloc(count ? count : 1, sizeof *r->children))) {
        free(r);
        return NULL;
    }
    r->cap = count;
    r->done = done;
    r->ctx = ctx;
    return r;
}

void nodes_spawn_add(nodes_spawn *r, void *child) {
    if (r->count < r->cap) r->children[r->count++] = child;
}

size_t nodes_spawn_count(const nodes_spawn *r) {
    return r->count;
}

void *nodes_spawn_child(const nodes_spawn *r, size_t i) {
    return r->children[i];
}

void nodes_spawn_discard(nodes_spawn *r) {
    free(r->children);
    free(r);
}

void nodes_spawns_submit(nodes_spawns *s, nodes_spawn *r) {
    pthread_mutex_lock(&s->mu);
    r->next = s->queue;
    s->queue = r;
    pthread_mutex_unlock(&s->mu);
}

bool nodes_spawns_holds(nodes_spawns *s, const void *child) {
    bool held = false;
    pthread_mutex_lock(&s->mu);
    nodes_spawn *lists[] = {s->queue, s->active};
    for (size_t k = 0; k < 2 && !held; k++)
        for (const nodes_spawn *r = lists[k]; r && !held; r = r->next)
            for (size_t i = 0; i < r->count && !held; i++) held = r->children[i] == child;
    pthread_mutex_unlock(&s->mu);
    return held;
}

void nodes_spawns_check(nodes_spawns *s, bool shutting_down) {
    pthread_mutex_lock(&s->mu);
    nodes_spawn *q = s->queue;
    s->queue = NULL;
    pthread_mutex_unlock(&s->mu);
    while (q) {
        nodes_spawn *next = q->next;
        q->next = s->active;
        s->active = q;
        q = next;
    }
    for (nodes_spawn **pp = &s->active; *pp;) {
        nodes_spawn *r = *pp;
        size_t up = 0;
        const char *error = NULL;
        const char *names[r->count ? r->count : 1];
        for (size_t i = 0; i < r->count; i++) {
            nodes_child_status st;
            s->status(r->children[i], &st);
            if (st.state == CNODE_UP)
                names[up++] = st.node;
            else if (st.state != CNODE_STARTING && !error)
                error = st.last_error[0] ? st.last_error : "the node went down while starting";
        }
        if (up < r->count && !error && !shutting_down) {
            pp = &r->next;
            continue;
        }
        if (shutting_down && !error) error = "the gateway is shutting down";
        if (error) {
            char msg[300];
            snprintf(msg, sizeof msg, "%s", error);
            r->done(r->ctx, names, up, msg);
        } else {
            r->done(r->ctx, names, up, NULL);
        }
        *pp = r->next;
        nodes_spawn_discard(r);
    }
}
