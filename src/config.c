/* config: loads and validates nodexd's YAML configuration through one table-driven key walker. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <netinet/in.h>
#include <yaml.h>

#include "template.h"

#define NAME_OF(id, name) name,
static const char *const direction_names[] = {CNODE_DIRECTIONS(NAME_OF)};
static const char *const protocol_names[] = {CNODE_PROTOCOLS(NAME_OF)};
static const char *const restart_names[] = {CNODE_RESTARTS(NAME_OF)};
static const char *const level_names[] = {LOG_LEVELS(NAME_OF)};
static const char *const log_format_names[] = {LOG_FORMATS(NAME_OF)};
#undef NAME_OF

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const char *cnode_direction_name(cnode_direction v) {
    return (size_t)v < COUNT(direction_names) ? direction_names[v] : "?";
}

const char *cnode_protocol_name(cnode_protocol v) {
    return (size_t)v < COUNT(protocol_names) ? protocol_names[v] : "?";
}

const char *cnode_restart_name(cnode_restart v) {
    return (size_t)v < COUNT(restart_names) ? restart_names[v] : "?";
}

const char config_default_yaml[] =
    "# nodexd embedded default configuration; see docs/configuration.md for every key.\n"
    "node:\n"
    "  name: \"nodexd@127.0.0.1\"\n"
    "http:\n"
    "  listen: \"127.0.0.1:8080\"\n"
    "cnodes:\n"
    "  - name: example\n"
    "    executable: example_cnode\n";

/* Placeholders a C-node template may use (template.h). */
static const char *const template_names[] = {"sname",        "hostname", "cookie", "gateway_sname",
                                             "gateway_node", "name",     "node"};

typedef struct parse_ctx {
    yaml_document_t *doc;
    const char *source;
    config_error *err;
    char got[64]; /* describe()'s output */
} parse_ctx;

/* Path of a key in errors: "cnodes[0].restart". Keys are user text, so it is bounded. */
typedef char key_path[160];

/* A value setter: parses `value` into the field at `target`. Returns 0 or -1 with c->err set. */
typedef int (*field_setter)(parse_ctx *c, yaml_node_t *value, const char *path, void *target);

typedef enum field_type { F_STR, F_UINT, F_SIZE, F_BOOL, F_CUSTOM } field_type;

enum { FLAG_NULLABLE = 1, FLAG_TEMPLATE = 2 };

typedef struct field_spec {
    const char *key;
    size_t offset;
    const char *self;       /* F_STR template: a placeholder it may not use (itself) */
    unsigned long long min; /* F_UINT, F_SIZE */
    unsigned long long max;
    field_setter set; /* F_CUSTOM */
    field_type type;
    unsigned flags; /* F_STR */
} field_spec;

static int fail(parse_ctx *c, const yaml_node_t *n, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(parse_ctx *c, const yaml_node_t *n, const char *path, const char *fmt, ...) {
    char what[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (n)
        snprintf(c->err->message, sizeof c->err->message, "%s:%zu: %s: %s", c->source,
                 n->start_mark.line + 1, path, what);
    else
        snprintf(c->err->message, sizeof c->err->message, "%s: %s: %s", c->source, path, what);
    return -1;
}

static int fail_oom(parse_ctx *c, const yaml_node_t *n, const char *path) {
    return fail(c, n, path, "out of memory");
}

static const char *scalar(const yaml_node_t *n) {
    return (const char *)n->data.scalar.value;
}

/* YAML 1.1 nulls, only when unquoted: "null" in quotes is a string. */
static int is_null(const yaml_node_t *n) {
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
    const char *s = scalar(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* Describes a node for "got ..." in errors; quoted scalars are cut to stay readable. */
static const char *describe(parse_ctx *c, const yaml_node_t *n) {
    if (n->type == YAML_MAPPING_NODE) return "a mapping";
    if (n->type == YAML_SEQUENCE_NODE) return "a sequence";
    if (n->type != YAML_SCALAR_NODE) return "nothing";
    if (is_null(n)) return "null";
    size_t vlen = n->data.scalar.length;
    snprintf(c->got, sizeof c->got, "\"%.*s%s\"", vlen > 40 ? 40 : (int)vlen,
             (const char *)n->data.scalar.value, vlen > 40 ? "..." : "");
    return c->got;
}

/* A string value (any scalar; numbers are taken as their text). *out is NULL for a null. */
static int get_string(parse_ctx *c, yaml_node_t *n, const char *path, int nullable, char **out) {
    *out = NULL;
    if (nullable && is_null(n)) return 0;
    if (n->type != YAML_SCALAR_NODE || is_null(n))
        return fail(c, n, path, "expected a string, got %s", describe(c, n));
    if (strlen(scalar(n)) != n->data.scalar.length)
        return fail(c, n, path, "string contains a NUL byte");
    *out = strdup(scalar(n));
    return *out ? 0 : fail_oom(c, n, path);
}

static int get_uint(parse_ctx *c, yaml_node_t *n, const char *path, unsigned long long min,
                    unsigned long long max, unsigned long long *out) {
    const char *s = n->type == YAML_SCALAR_NODE ? scalar(n) : "";
    int digits = n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                 *s != '\0' && strspn(s, "0123456789") == strlen(s);
    errno = 0;
    unsigned long long v = digits ? strtoull(s, NULL, 10) : 0;
    if (!digits || errno == ERANGE || v < min || v > max)
        return fail(c, n, path, "expected a decimal integer from %llu to %llu, got %s", min, max,
                    describe(c, n));
    *out = v;
    return 0;
}

static int get_bool(parse_ctx *c, yaml_node_t *n, const char *path, bool *out) {
    if (n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
        if (!strcmp(scalar(n), "true")) return *out = true, 0;
        if (!strcmp(scalar(n), "false")) return *out = false, 0;
    }
    return fail(c, n, path, "expected true or false, got %s", describe(c, n));
}

/* One of a fixed list of unquoted-or-quoted words; *out is its index. */
static int get_choice(parse_ctx *c, yaml_node_t *n, const char *path, const char *const *names,
                      size_t count, size_t *out) {
    char list[160] = "";
    if (n->type == YAML_SCALAR_NODE) {
        for (size_t i = 0; i < count; i++) {
            if (!strcmp(scalar(n), names[i])) return *out = i, 0;
        }
    }
    for (size_t i = 0; i < count; i++) {
        size_t used = strlen(list);
        snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", names[i]);
    }
    return fail(c, n, path, "expected one of %s, got %s", list, describe(c, n));
}

/* Checks a template's placeholders; `self` (may be NULL) is a name it may not refer to. */
static int check_template(parse_ctx *c, yaml_node_t *n, const char *path, const char *tmpl,
                          const char *self) {
    const char *names[COUNT(template_names)];
    char known[160] = "";
    size_t count = 0;
    for (size_t i = 0; i < COUNT(template_names); i++) {
        if (self && !strcmp(self, template_names[i])) continue;
        size_t used = strlen(known);
        snprintf(known + used, sizeof known - used, "%s%s", count ? ", " : "", template_names[i]);
        names[count++] = template_names[i];
    }
    const char *bad = NULL;
    if (template_check(tmpl, names, count, &bad) == 0) return 0;
    if (!bad) bad = tmpl;
    if (*bad == '}') return fail(c, n, path, "lone \"}\" (write \"}}\" for a literal brace)");
    size_t len = strcspn(bad + 1, "{}") + 1; /* bad is the placeholder's '{' */
    len += bad[len] == '}';
    return fail(c, n, path, "unknown or unterminated placeholder \"%.*s\" (known: %s)",
                len > 40 ? 40 : (int)len, bad, known);
}

static yaml_node_t *node_at(parse_ctx *c, yaml_node_item_t id) {
    return yaml_document_get_node(c->doc, id);
}

/* FNV-1a over a YAML subtree: node kinds, scalars and keys in order. Equal YAML (up to
 * formatting and comments) gives an equal fingerprint. */
static uint64_t fingerprint_bytes(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

static uint64_t fingerprint_node(parse_ctx *c, yaml_node_t *n, uint64_t h, unsigned depth) {
    if (!n || depth > 64) return fingerprint_bytes(h, "?", 1);
    switch (n->type) {
    case YAML_SCALAR_NODE:
        h = fingerprint_bytes(h, "s", 1);
        h = fingerprint_bytes(h, n->data.scalar.value, n->data.scalar.length);
        return fingerprint_bytes(h, "", 1); /* the NUL ends it: "a","b" differs from "ab" */
    case YAML_SEQUENCE_NODE:
        h = fingerprint_bytes(h, "[", 1);
        for (yaml_node_item_t *i = n->data.sequence.items.start; i < n->data.sequence.items.top;
             i++)
            h = fingerprint_node(c, yaml_document_get_node(c->doc, *i), h, depth + 1);
        return fingerprint_bytes(h, "]", 1);
    case YAML_MAPPING_NODE:
        h = fingerprint_bytes(h, "{", 1);
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
             p++) {
            h = fingerprint_node(c, yaml_document_get_node(c->doc, p->key), h, depth + 1);
            h = fingerprint_node(c, yaml_document_get_node(c->doc, p->value), h, depth + 1);
        }
        return fingerprint_bytes(h, "}", 1);
    default: return fingerprint_bytes(h, "?", 1);
    }
}

static uint64_t fingerprint(parse_ctx *c, yaml_node_t *n) {
    return fingerprint_node(c, n, 0xcbf29ce484222325ULL, 0);
}

static const char *const config_section_names[] = {
#define X(id, name) name,
    CONFIG_SECTIONS(X)
#undef X
};

const char *config_section_name(config_section s) {
    return (unsigned)s < CONFIG_SECTION_COUNT ? config_section_names[s] : "?";
}

/* Every top-level section's fingerprint (the mapping passed parse_mapping). */
static void fingerprint_sections(parse_ctx *c, yaml_node_t *root, config *cfg) {
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        for (int i = 0; k && k->type == YAML_SCALAR_NODE && i < CONFIG_SECTION_COUNT; i++)
            if (strcmp((const char *)k->data.scalar.value, config_section_names[i]) == 0)
                cfg->section_fingerprint[i] =
                    fingerprint(c, yaml_document_get_node(c->doc, p->value));
    }
}

/* The value of `key` in a mapping, or NULL. */
static yaml_node_t *mapping_get(parse_ctx *c, yaml_node_t *map, const char *key) {
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(c, p->key);
        if (k && k->type == YAML_SCALAR_NODE && !strcmp(scalar(k), key))
            return node_at(c, p->value);
    }
    return NULL;
}

static void join_path(key_path out, const char *prefix, const char *key) {
    int n = snprintf(out, sizeof(key_path), "%s%s%s", prefix, *prefix ? "." : "", key);
    if (n < 0 || (size_t)n >= sizeof(key_path)) memcpy(out + sizeof(key_path) - 4, "...", 4);
}

/* Walks a mapping: rejects non-scalar, duplicate and unknown keys, dispatches known ones. A null
 * value for the whole mapping means "all defaults" so a section can be emptied by commenting. */
static int parse_mapping(parse_ctx *c, yaml_node_t *map, const char *path, const field_spec *fields,
                         size_t nfields, void *base) {
    if (is_null(map)) return 0;
    if (map->type != YAML_MAPPING_NODE)
        return fail(c, map, path, "expected a mapping, got %s", describe(c, map));
    yaml_node_pair_t *start = map->data.mapping.pairs.start;
    for (yaml_node_pair_t *p = start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node_at(c, p->key), *v = node_at(c, p->value);
        if (!k || !v) return fail(c, map, path, "malformed mapping");
        if (k->type != YAML_SCALAR_NODE || strlen(scalar(k)) != k->data.scalar.length)
            return fail(c, k, path, "keys must be plain words");
        key_path sub;
        join_path(sub, path, scalar(k));
        for (yaml_node_pair_t *q = start; q < p; q++) {
            yaml_node_t *prev = node_at(c, q->key);
            if (prev && prev->type == YAML_SCALAR_NODE && !strcmp(scalar(prev), scalar(k)))
                return fail(c, k, sub, "duplicate key (first at line %zu)",
                            prev->start_mark.line + 1);
        }
        const field_spec *f = NULL;
        for (size_t i = 0; i < nfields && !f; i++) {
            if (!strcmp(fields[i].key, scalar(k))) f = &fields[i];
        }
        if (!f) return fail(c, k, sub, "unknown key");
        void *target = (char *)base + f->offset;
        unsigned long long u = 0;
        switch (f->type) {
        case F_STR: {
            char *s;
            if (get_string(c, v, sub, (f->flags & FLAG_NULLABLE) != 0, &s)) return -1;
            if (s && !*s) {
                free(s);
                return fail(c, v, sub, "must not be empty");
            }
            if (s && (f->flags & FLAG_TEMPLATE) && check_template(c, v, sub, s, f->self)) {
                free(s);
                return -1;
            }
            free(*(char **)target);
            *(char **)target = s;
            break;
        }
        case F_UINT:
            if (get_uint(c, v, sub, f->min, f->max, &u)) return -1;
            *(unsigned *)target = (unsigned)u;
            break;
        case F_SIZE:
            if (get_uint(c, v, sub, f->min, f->max, &u)) return -1;
            *(size_t *)target = (size_t)u;
            break;
        case F_BOOL:
            if (get_bool(c, v, sub, (bool *)target)) return -1;
            break;
        case F_CUSTOM:
            if (f->set(c, v, sub, target)) return -1;
            break;
        }
    }
    return 0;
}

/* ---- setters for values that are more than a scalar ---- */

/* Sets `*(char **)target` to a validated node name, appending "@<short hostname>" when bare. */
static int set_node_name(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    char *s;
    if (get_string(c, v, path, 0, &s)) return -1;
    const char *at = strchr(s, '@');
    size_t alive = at ? (size_t)(at - s) : strlen(s);
    const char *err = NULL;
    if (alive == 0 ||
        strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") < alive)
        err = "the part before '@' must be letters, digits, '_' or '-'";
    else if (at && (!at[1] || strchr(at + 1, '@')))
        err = "expected name@host with one '@' and a non-empty host";
    if (!err && !at) {
        char host[256];
        if (gethostname(host, sizeof host) != 0) {
            free(s);
            return fail(c, v, path, "cannot append the host name: %s", strerror(errno));
        }
        host[sizeof host - 1] = '\0';
        host[strcspn(host, ".")] = '\0'; /* bare names are short names */
        size_t need = alive + 1 + strlen(host) + 1;
        char *full = malloc(need);
        if (!full) {
            free(s);
            return fail_oom(c, v, path);
        }
        snprintf(full, need, "%s@%s", s, host);
        free(s);
        s = full;
    }
    if (!err && strlen(s) > 255) err = "longer than 255 characters";
    if (err) {
        free(s);
        return fail(c, v, path, "%s", err);
    }
    free(*(char **)target);
    *(char **)target = s;
    return 0;
}

/* An IP literal to bind to: both listeners take addresses, not names to resolve. */
/* node.listen: ei's distribution listener is IPv4 only, so IPv6 is refused here rather than at
 * start-up. */
static int set_ip_address(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    char *s;
    unsigned char addr[sizeof(struct in6_addr)];
    if (get_string(c, v, path, 0, &s)) return -1;
    if (inet_pton(AF_INET, s, addr) != 1) {
        bool v6 = inet_pton(AF_INET6, s, addr) == 1;
        free(s);
        return fail(c, v, path,
                    v6 ? "IPv6 is not supported here (the Erlang distribution listener of ei "
                         "binds IPv4): expected an IPv4 address"
                       : "expected an IPv4 address");
    }
    free(*(char **)target);
    *(char **)target = s;
    return 0;
}

/* "host:port" or "[v6]:port" with a decimal port 0..65535. */
static int set_http_listen(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    char *s;
    if (get_string(c, v, path, 0, &s)) return -1;
    const char *colon = strrchr(s, ':');
    const char *port = colon ? colon + 1 : "";
    int ok = colon && colon > s && *port && strlen(port) <= 5 &&
             strspn(port, "0123456789") == strlen(port) && strtol(port, NULL, 10) <= 65535;
    if (ok && s[0] == '[')
        ok = colon[-1] == ']' && colon - s > 2;
    else if (ok)
        ok = strchr(s, ':') == colon; /* a bare v6 address needs brackets */
    if (!ok) {
        free(s);
        return fail(c, v, path, "expected host:port (IPv6 as [addr]:port), port 0 to 65535");
    }
    free(*(char **)target);
    *(char **)target = s;
    return 0;
}

static int set_log_level(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    size_t i = 0;
    if (get_choice(c, v, path, level_names, COUNT(level_names), &i)) return -1;
    *(log_level *)target = (log_level)i;
    return 0;
}

static int set_log_format(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    size_t i = 0;
    if (get_choice(c, v, path, log_format_names, COUNT(log_format_names), &i)) return -1;
    *(log_format *)target = (log_format)i;
    return 0;
}

static int set_direction(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    size_t i = 0;
    if (get_choice(c, v, path, direction_names, COUNT(direction_names), &i)) return -1;
    *(cnode_direction *)target = (cnode_direction)i;
    return 0;
}

static int set_protocol(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    size_t i = 0;
    if (get_choice(c, v, path, protocol_names, COUNT(protocol_names), &i)) return -1;
    *(cnode_protocol *)target = (cnode_protocol)i;
    return 0;
}

static int set_restart(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    size_t i = 0;
    if (get_choice(c, v, path, restart_names, COUNT(restart_names), &i)) return -1;
    *(cnode_restart *)target = (cnode_restart)i;
    return 0;
}

/* C-node names appear in URLs: [A-Za-z0-9_-]{1,64}. */
static int set_cnode_name(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    char *s;
    if (get_string(c, v, path, 0, &s)) return -1;
    size_t len = strlen(s);
    if (len == 0 || len > 64 ||
        strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") != len) {
        fail(c, v, path, "expected 1 to 64 letters, digits, '_' or '-', got %s", describe(c, v));
        free(s);
        return -1;
    }
    free(*(char **)target);
    *(char **)target = s;
    return 0;
}

/* Sets a C-node's args (target is the config_cnode): a sequence of templates. */
static int set_args(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    config_cnode *cn = target;
    if (is_null(v)) return 0;
    if (v->type != YAML_SEQUENCE_NODE)
        return fail(c, v, path, "expected a sequence, got %s", describe(c, v));
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    for (size_t i = 0; i < cn->arg_count; i++) free(cn->args[i]); /* the default */
    free(cn->args);
    cn->arg_count = 0;
    cn->args = calloc(n + 1, sizeof *cn->args);
    if (!cn->args) return fail_oom(c, v, path);
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = node_at(c, v->data.sequence.items.start[i]);
        key_path sub;
        snprintf(sub, sizeof sub, "%s[%zu]", path, i);
        if (!item) return fail(c, v, sub, "malformed sequence");
        /* owned by cn as soon as stored, so config_free cleans up after a later failure */
        if (get_string(c, item, sub, 0, &cn->args[i])) return -1;
        cn->arg_count = i + 1;
        if (check_template(c, item, sub, cn->args[i], NULL)) return -1;
    }
    return 0;
}

/* Sets a C-node's env (target is the config_cnode): NAME: template. */
static int set_env(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    config_cnode *cn = target;
    if (is_null(v)) return 0;
    if (v->type != YAML_MAPPING_NODE)
        return fail(c, v, path, "expected a mapping, got %s", describe(c, v));
    yaml_node_pair_t *start = v->data.mapping.pairs.start;
    size_t n = (size_t)(v->data.mapping.pairs.top - start);
    cn->env = calloc(n ? n : 1, sizeof *cn->env);
    if (!cn->env) return fail_oom(c, v, path);
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *k = node_at(c, start[i].key), *val = node_at(c, start[i].value);
        if (!k || !val) return fail(c, v, path, "malformed mapping");
        if (k->type != YAML_SCALAR_NODE || strlen(scalar(k)) != k->data.scalar.length)
            return fail(c, k, path, "keys must be plain words");
        key_path sub;
        join_path(sub, path, scalar(k));
        const char *name = scalar(k);
        if (!*name || strchr("0123456789", *name) ||
            strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") !=
                strlen(name))
            return fail(c, k, sub,
                        "environment variable names are letters, digits and '_', "
                        "not starting with a digit");
        for (size_t j = 0; j < i; j++) {
            if (!strcmp(cn->env[j].name, name)) return fail(c, k, sub, "duplicate key");
        }
        cn->env[i].name = strdup(name);
        if (!cn->env[i].name) return fail_oom(c, k, sub);
        cn->env_count = i + 1;
        if (get_string(c, val, sub, 0, &cn->env[i].value)) return -1;
        if (check_template(c, val, sub, cn->env[i].value, NULL)) return -1;
    }
    return 0;
}

/* Sets a C-node's reply filter (target is the config_cnode): any | node | {tag: atom}. */
static int set_reply_filter(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    config_cnode *cn = target;
    if (v->type == YAML_SCALAR_NODE && !strcmp(scalar(v), "any")) {
        cn->reply_filter = REPLY_FILTER_ANY;
        return 0;
    }
    if (v->type == YAML_SCALAR_NODE && !strcmp(scalar(v), "node")) {
        cn->reply_filter = REPLY_FILTER_NODE;
        return 0;
    }
    if (v->type != YAML_MAPPING_NODE)
        return fail(c, v, path, "expected any, node or {tag: atom}, got %s", describe(c, v));
    static const field_spec tag_fields[] = {
        {.key = "tag", .type = F_STR, .offset = offsetof(config_cnode, reply_tag)},
    };
    if (parse_mapping(c, v, path, tag_fields, COUNT(tag_fields), cn)) return -1;
    if (!cn->reply_tag) return fail(c, v, path, "missing required key \"tag\"");
    if (strlen(cn->reply_tag) > 255) {
        key_path sub;
        join_path(sub, path, "tag");
        return fail(c, mapping_get(c, v, "tag"), sub, "an atom is at most 255 characters");
    }
    cn->reply_filter = REPLY_FILTER_TAG;
    return 0;
}

/* ---- key tables ---- */

/* st and m name a struct and a member: they cannot be parenthesized. */
/* NOLINTBEGIN(bugprone-macro-parentheses) */
#define STR(st, k, m, fl)                                                                          \
    { .key = (k), .type = F_STR, .offset = offsetof(st, m), .flags = (fl) }
#define TMPL(st, k, m, fl, sf)                                                                     \
    {                                                                                              \
        .key = (k), .type = F_STR, .offset = offsetof(st, m), .flags = (fl) | FLAG_TEMPLATE,       \
        .self = (sf)                                                                               \
    }
#define UINT(st, k, m, lo, hi)                                                                     \
    { .key = (k), .type = F_UINT, .offset = offsetof(st, m), .min = (lo), .max = (hi) }
#define SIZE(st, k, m, lo, hi)                                                                     \
    { .key = (k), .type = F_SIZE, .offset = offsetof(st, m), .min = (lo), .max = (hi) }
#define BOOL(st, k, m)                                                                             \
    { .key = (k), .type = F_BOOL, .offset = offsetof(st, m) }
#define CUSTOM(st, k, m, fn)                                                                       \
    { .key = (k), .type = F_CUSTOM, .offset = offsetof(st, m), .set = (fn) }
/* NOLINTEND(bugprone-macro-parentheses) */
/* Setters that need several fields of the C-node get the whole struct. */
#define WHOLE(k, fn)                                                                               \
    { .key = (k), .type = F_CUSTOM, .offset = 0, .set = (fn) }

#define HOUR_MS 3600000ULL
#define DAY_MS  86400000ULL

static const field_spec node_fields[] = {
    CUSTOM(config, "name", node_name, set_node_name),
    STR(config, "cookie", cookie, FLAG_NULLABLE),
    STR(config, "cookie_file", cookie_file, 0),
    STR(config, "cookie_env", cookie_env, 0),
    CUSTOM(config, "listen", dist_listen, set_ip_address),
    UINT(config, "port", dist_port, 0, 65535),
    UINT(config, "tick_time_ms", tick_time_ms, 100, HOUR_MS),
    UINT(config, "peer_tick_time_ms", peer_tick_time_ms, 1000, HOUR_MS),
    BOOL(config, "start_epmd", start_epmd),
};

static int set_allowed_origins(parse_ctx *c, yaml_node_t *v, const char *path, void *target);
static int set_allowed_hosts(parse_ctx *c, yaml_node_t *v, const char *path, void *target);
static const field_spec tls_fields[] = {
    STR(config_tls, "cert_file", cert_file, 0),
    STR(config_tls, "key_file", key_file, 0),
    STR(config_tls, "client_ca_file", client_ca_file, FLAG_NULLABLE),
    BOOL(config_tls, "require_client_cert", require_client_cert),
};

/* A listener's tls mapping (target is its config_tls); null leaves TLS off. */
static int set_tls(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    config_tls *t = target;
    if (is_null(v)) return 0;
    if (parse_mapping(c, v, path, tls_fields, COUNT(tls_fields), t)) return -1;
    if (!t->cert_file) return fail(c, v, path, "missing required key \"cert_file\"");
    if (!t->key_file) return fail(c, v, path, "missing required key \"key_file\"");
    if (t->require_client_cert && !t->client_ca_file) {
        key_path sub;
        join_path(sub, path, "require_client_cert");
        return fail(c, mapping_get(c, v, "require_client_cert"), sub,
                    "true needs client_ca_file (the CA that client certificates chain to)");
    }
    char origin[sizeof(key_path) + 300];
    snprintf(origin, sizeof origin, "%s:%zu: %s", c->source, v->start_mark.line + 1, path);
    free(t->origin);
    if (!(t->origin = strdup(origin))) return fail_oom(c, v, path);
    t->enabled = true;
    return 0;
}

static const field_spec http_fields[] = {
    CUSTOM(config, "listen", http_listen, set_http_listen),
    UINT(config, "threads", http_threads, 0, 1024),
    SIZE(config, "max_body_bytes", max_body_bytes, 1, INT_MAX),
    UINT(config, "connection_timeout_s", http_connection_timeout_s, 0, 86400),
    UINT(config, "max_connections", http_max_connections, 1, 1000000),
    UINT(config, "max_connections_per_ip", http_max_connections_per_ip, 0, 1000000),
    UINT(config, "header_timeout_ms", http_header_timeout_ms, 0, 86400000),
    UINT(config, "body_timeout_ms", http_body_timeout_ms, 0, 86400000),
    SIZE(config, "body_budget_bytes", http_body_budget_bytes, 1, 1ull << 40),
    WHOLE("allowed_origins", set_allowed_origins),
    WHOLE("allowed_hosts", set_allowed_hosts),
    CUSTOM(config, "tls", http_tls, set_tls),
};

/* "host:port", or null to disable the gRPC server. */
static int set_grpc_listen(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    if (v->type == YAML_SCALAR_NODE &&
        (strcmp((const char *)v->data.scalar.value, "null") == 0 ||
         strcmp((const char *)v->data.scalar.value, "~") == 0 || v->data.scalar.length == 0) &&
        v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
        free(*(char **)target);
        *(char **)target = NULL;
        return 0;
    }
    return set_http_listen(c, v, path, target);
}

static const field_spec grpc_fields[] = {
    CUSTOM(config, "listen", grpc_listen, set_grpc_listen),
    UINT(config, "threads", grpc_threads, 1, 64),
    UINT(config, "max_concurrent_streams", grpc_max_concurrent_streams, 1, 1000000),
    UINT(config, "max_in_flight", grpc_max_in_flight, 1, 10000000),
    SIZE(config, "max_message_bytes", grpc_max_message_bytes, 1, INT_MAX),
    SIZE(config, "max_stream_pending_bytes", grpc_max_stream_pending_bytes, 1, INT_MAX),
    CUSTOM(config, "tls", grpc_tls, set_tls),
};

/* A sequence of plain strings into a NULL-terminated array and its count. */
static int set_string_list(parse_ctx *c, yaml_node_t *v, const char *path, char ***list,
                           size_t *count) {
    if (is_null(v)) return 0;
    if (v->type != YAML_SEQUENCE_NODE)
        return fail(c, v, path, "expected a sequence, got %s", describe(c, v));
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    for (size_t i = 0; i < *count; i++) free((*list)[i]);
    free(*list);
    *count = 0;
    *list = calloc(n + 1, sizeof **list);
    if (!*list) return fail_oom(c, v, path);
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = node_at(c, v->data.sequence.items.start[i]);
        key_path sub;
        snprintf(sub, sizeof sub, "%s[%zu]", path, i);
        if (!item) return fail(c, v, sub, "malformed sequence");
        if (get_string(c, item, sub, 0, &(*list)[i])) return -1;
        *count = i + 1;
    }
    return 0;
}

static int set_erl_args(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    config *cfg = target;
    return set_string_list(c, v, path, &cfg->erl_args, &cfg->erl_arg_count);
}

static int set_code_paths(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    config *cfg = target;
    return set_string_list(c, v, path, &cfg->code_paths, &cfg->code_path_count);
}

static int set_rpc_nodes(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    config *cfg = target;
    return set_string_list(c, v, path, &cfg->rpc_nodes, &cfg->rpc_node_count);
}

/* http.allowed_origins: "scheme://host[:port]" each, exactly as browsers send Origin. */
static int set_allowed_origins(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    config *cfg = target;
    if (set_string_list(c, v, path, &cfg->allowed_origins, &cfg->allowed_origin_count)) return -1;
    for (size_t i = 0; i < cfg->allowed_origin_count; i++) {
        const char *o = cfg->allowed_origins[i];
        size_t n = strlen(o);
        if ((strncmp(o, "http://", 7) != 0 && strncmp(o, "https://", 8) != 0) || o[n - 1] == '/' ||
            strchr(strstr(o, "//") + 2, '/')) {
            key_path sub;
            snprintf(sub, sizeof sub, "%s[%zu]", path, i);
            return fail(c, node_at(c, v->data.sequence.items.start[i]), sub,
                        "expected an origin such as https://app.example.com (scheme, host and "
                        "optional port, no path)");
        }
    }
    return 0;
}

static int set_allowed_hosts(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    config *cfg = target;
    return set_string_list(c, v, path, &cfg->allowed_hosts, &cfg->allowed_host_count);
}

/* A sequence of mappings into a new array of `size`-byte zeroed entries: `parse(c, item, path,
 * target, i)` fills entry i. *count grows before each parse, so config_free frees what a failing
 * entry holds. */
typedef int (*entry_parser)(parse_ctx *c, yaml_node_t *item, const char *path, void *target,
                            size_t i);
static int parse_entries(parse_ctx *c, yaml_node_t *v, const char *path, size_t size, void **array,
                         size_t *count, entry_parser parse, void *target) {
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    *array = calloc(n ? n : 1, size);
    if (!*array) return fail_oom(c, v, path);
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = node_at(c, v->data.sequence.items.start[i]);
        key_path sub;
        snprintf(sub, sizeof sub, "%s[%zu]", path, i);
        *count = i + 1; /* from here config_free owns the entry */
        if (!item || item->type != YAML_MAPPING_NODE)
            return fail(c, item ? item : v, sub, "expected a mapping, got %s",
                        item ? describe(c, item) : "nothing");
        if (parse(c, item, sub, target, i)) return -1;
    }
    return 0;
}

/* ---- auth ---- */

static const struct {
    const char *name;
    bool scoped;
} permissions[] = {
#define X(name, scoped) {name, scoped},
    CONFIG_PERMISSIONS(X)
#undef X
};

/* One allow entry: a known permission, with ":pattern" only where it takes one. */
static int check_permission(parse_ctx *c, yaml_node_t *n, const char *path, const char *entry) {
    size_t len = strcspn(entry, ":");
    for (size_t i = 0; i < COUNT(permissions); i++) {
        if (strlen(permissions[i].name) != len || strncmp(entry, permissions[i].name, len) != 0)
            continue;
        if (entry[len] && !permissions[i].scoped)
            return fail(c, n, path, "%s takes no pattern", permissions[i].name);
        if (entry[len] && !entry[len + 1])
            return fail(c, n, path, "empty pattern after '%s:'", permissions[i].name);
        if (!strcmp(permissions[i].name, "rpc") && entry[len] && !strchr(entry + len + 1, ':'))
            return fail(c, n, path, "expected rpc:MODULE:FUNCTION (globs, e.g. rpc:erlang:node)");
        return 0;
    }
    char known[256] = "";
    for (size_t i = 0; i < COUNT(permissions); i++) {
        size_t at = strlen(known);
        snprintf(known + at, sizeof known - at, "%s%s", i ? ", " : "", permissions[i].name);
    }
    return fail(c, n, path, "unknown permission '%.*s' (one of %s)", (int)len, entry, known);
}

static int set_principal_allow(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    config_principal *pr = target;
    if (set_string_list(c, v, path, &pr->allow, &pr->allow_count)) return -1;
    for (size_t i = 0; i < pr->allow_count; i++) {
        key_path sub;
        snprintf(sub, sizeof sub, "%s[%zu]", path, i);
        if (check_permission(c, node_at(c, v->data.sequence.items.start[i]), sub, pr->allow[i]))
            return -1;
    }
    return 0;
}

static const field_spec client_cert_fields[] = {
    STR(config_principal, "subject", cert_subject, 0),
    STR(config_principal, "san", cert_san, 0),
};

static int set_client_cert(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    config_principal *pr = target;
    if (parse_mapping(c, v, path, client_cert_fields, COUNT(client_cert_fields), pr)) return -1;
    if (!pr->cert_subject && !pr->cert_san)
        return fail(c, v, path, "expected subject (the certificate's DN) or san");
    return 0;
}

static const field_spec principal_fields[] = {
    STR(config_principal, "name", name, 0),
    STR(config_principal, "token_file", token_file, 0),
    STR(config_principal, "token_env", token_env, 0),
    WHOLE("client_cert", set_client_cert),
    WHOLE("allow", set_principal_allow),
};

/* One principal: item is a mapping (parse_entries checked). */
static int parse_principal(parse_ctx *c, yaml_node_t *item, const char *sub, void *target,
                           size_t i) {
    config *cfg = target;
    config_principal *pr = &cfg->principals[i];
    if (!(pr->allow = calloc(1, sizeof *pr->allow))) return fail_oom(c, item, sub);
    if (parse_mapping(c, item, sub, principal_fields, COUNT(principal_fields), pr)) return -1;
    if (!pr->name) return fail(c, item, sub, "missing required key \"name\"");
    for (size_t j = 0; j < i; j++)
        if (!strcmp(cfg->principals[j].name, pr->name))
            return fail(c, item, sub, "a second principal named '%s'", pr->name);
    if (pr->token_file && pr->token_env)
        return fail(c, item, sub, "give token_file or token_env, not both");
    if (!pr->token_file && !pr->token_env && !pr->cert_subject && !pr->cert_san)
        return fail(c, item, sub,
                    "a principal needs token_file, token_env or client_cert to prove itself");
    return 0;
}

static int set_principals(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    config *cfg = target;
    if (v->type != YAML_SEQUENCE_NODE)
        return fail(c, v, path, "expected a sequence of principals, got %s", describe(c, v));
    return parse_entries(c, v, path, sizeof *cfg->principals, (void **)&cfg->principals,
                         &cfg->principal_count, parse_principal, cfg);
}

static const field_spec auth_fields[] = {
    WHOLE("principals", set_principals),
};

/* auth: none, or a mapping with principals. */
static int set_auth_section(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    config *cfg = target;
    if (v->type == YAML_SCALAR_NODE && !strcmp(scalar(v), "none")) {
        cfg->auth_none = true;
        return 0;
    }
    if (v->type != YAML_MAPPING_NODE)
        return fail(c, v, path, "expected none, or a mapping with principals, got %s",
                    describe(c, v));
    if (parse_mapping(c, v, path, auth_fields, COUNT(auth_fields), target)) return -1;
    if (!cfg->principal_count)
        return fail(c, v, path, "principals: at least one (or auth: none to run without auth)");
    return 0;
}

static const field_spec erlang_nodes_fields[] = {
    STR(config, "erl", erl_executable, 0),
    STR(config, "name_prefix", child_prefix, 0),
    UINT(config, "count", child_count, 0, 1000),
    WHOLE("erl_args", set_erl_args),
    WHOLE("code_paths", set_code_paths),
    UINT(config, "ready_timeout_ms", child_ready_timeout_ms, 1, HOUR_MS),
    UINT(config, "shutdown_timeout_ms", child_shutdown_timeout_ms, 0, HOUR_MS),
    CUSTOM(config, "restart", child_restart, set_restart),
    UINT(config, "max_restarts", child_max_restarts, 0, 1000000),
    UINT(config, "max_seconds", child_max_seconds, 1, 86400),
    UINT(config, "max_children", max_children, 0, 10000),
    UINT(config, "rpc_timeout_ms", rpc_timeout_ms, 1, DAY_MS),
    UINT(config, "max_rpc_timeout_ms", max_rpc_timeout_ms, 1, DAY_MS),
    BOOL(config, "rpc", allow_rpc),
    BOOL(config, "load_modules", allow_load_modules),
    BOOL(config, "spawn", allow_spawn),
    WHOLE("rpc_nodes", set_rpc_nodes),
};

static const field_spec terms_fields[] = {
    UINT(config, "max_depth", term_max_depth, 1, 65536),
    SIZE(config, "max_bytes", term_max_bytes, 1, INT_MAX),
};

static const field_spec log_fields[] = {
    CUSTOM(config, "level", log_level, set_log_level),
    CUSTOM(config, "format", log_format, set_log_format),
    BOOL(config, "access", log_access),
};

static const field_spec shutdown_fields[] = {
    UINT(config, "drain_ms", shutdown_drain_ms, 0, HOUR_MS),
};

static const field_spec cnode_fields[] = {
    CUSTOM(config_cnode, "name", name, set_cnode_name),
    STR(config_cnode, "executable", executable, 0),
    WHOLE("args", set_args),
    WHOLE("env", set_env),
    STR(config_cnode, "cwd", cwd, FLAG_NULLABLE),
    TMPL(config_cnode, "sname", sname, 0, "sname"),
    STR(config_cnode, "hostname", hostname, FLAG_NULLABLE),
    TMPL(config_cnode, "node", node, FLAG_NULLABLE, "node"),
    TMPL(config_cnode, "ready_line", ready_line, 0, NULL),
    UINT(config_cnode, "spawn_inactive_timeout_ms", spawn_inactive_timeout_ms, 1, HOUR_MS),
    CUSTOM(config_cnode, "direction", direction, set_direction),
    CUSTOM(config_cnode, "protocol", protocol, set_protocol),
    STR(config_cnode, "registered_name", registered_name, 0),
    WHOLE("reply_filter", set_reply_filter),
    UINT(config_cnode, "call_timeout_ms", call_timeout_ms, 1, DAY_MS),
    UINT(config_cnode, "max_call_timeout_ms", max_call_timeout_ms, 1, DAY_MS),
    CUSTOM(config_cnode, "restart", restart, set_restart),
    UINT(config_cnode, "max_restarts", max_restarts, 0, 1000000),
    UINT(config_cnode, "max_seconds", max_seconds, 1, 86400),
    UINT(config_cnode, "backoff_initial_ms", backoff_initial_ms, 0, HOUR_MS),
    UINT(config_cnode, "backoff_max_ms", backoff_max_ms, 0, HOUR_MS),
    UINT(config_cnode, "shutdown_timeout_ms", shutdown_timeout_ms, 0, HOUR_MS),
    UINT(config_cnode, "connect_timeout_ms", connect_timeout_ms, 1, HOUR_MS),
    UINT(config_cnode, "max_in_flight", max_in_flight, 1, 10000000),
    UINT(config_cnode, "instances", instances, 1, 1024),
    UINT(config_cnode, "max_waiting", max_waiting, 0, 10000000),
    UINT(config_cnode, "calls_per_process", calls_per_process, 0, UINT32_MAX - 1),
    UINT(config_cnode, "retry_failed_after_ms", retry_failed_after_ms, 0, DAY_MS),
    BOOL(config_cnode, "monitor", monitor),
};

/* ---- sections ---- */

#define SECTION_SETTER(fn, table)                                                                  \
    static int fn(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {                  \
        return parse_mapping(c, v, path, table, COUNT(table), target);                             \
    }
SECTION_SETTER(set_node_section, node_fields)
SECTION_SETTER(set_http_section, http_fields)
SECTION_SETTER(set_terms_section, terms_fields)
SECTION_SETTER(set_log_section, log_fields)
SECTION_SETTER(set_shutdown_section, shutdown_fields)
SECTION_SETTER(set_grpc_section, grpc_fields)
#undef SECTION_SETTER

/* The erlang_nodes section, with the checks that span keys. */
static int set_erlang_nodes_section(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    config *cfg = target;
    if (parse_mapping(c, v, path, erlang_nodes_fields, COUNT(erlang_nodes_fields), target))
        return -1;
    key_path sub;
    const char *p = cfg->child_prefix;
    if (!*p ||
        strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
            strlen(p) ||
        strlen(p) > 200) {
        join_path(sub, path, "name_prefix");
        return fail(c, mapping_get(c, v, "name_prefix"), sub,
                    "expected letters, digits, '_' or '-' (a node name's alive part)");
    }
    if (cfg->rpc_timeout_ms > cfg->max_rpc_timeout_ms) {
        join_path(sub, path, "rpc_timeout_ms");
        return fail(c, mapping_get(c, v, "rpc_timeout_ms"), sub,
                    "%u is above max_rpc_timeout_ms (%u)", cfg->rpc_timeout_ms,
                    cfg->max_rpc_timeout_ms);
    }
    return 0;
}

static int strdup_all(const char *const *src, char **const *dst, size_t n) {
    for (size_t i = 0; i < n; i++) {
        *dst[i] = strdup(src[i]);
        if (!*dst[i]) return -1;
    }
    return 0;
}

static int cnode_defaults(config_cnode *cn) {
    cn->spawn_inactive_timeout_ms = 5000;
    cn->direction = CNODE_DIRECTION_BACK;
    cn->protocol = CNODE_PROTOCOL_RAW;
    cn->reply_filter = REPLY_FILTER_ANY;
    cn->call_timeout_ms = 5000;
    cn->max_call_timeout_ms = 300000;
    cn->restart = CNODE_RESTART_PERMANENT;
    cn->max_restarts = 3;
    cn->max_seconds = 5;
    cn->backoff_initial_ms = 100;
    cn->backoff_max_ms = 5000;
    cn->shutdown_timeout_ms = 2000;
    cn->connect_timeout_ms = 2000;
    cn->max_in_flight = 10000;
    cn->instances = 1;
    cn->max_waiting = 1000;
    cn->retry_failed_after_ms = 300000; /* as Kubernetes' crash-loop backoff caps at 5 min */
    /* The Nodex convention: <sname> <hostname> <cookie> <gateway-sname>. */
    static const char *const nodex_args[] = {"{sname}", "{hostname}", "{cookie}",
                                             "{gateway_sname}"};
    cn->args = calloc(COUNT(nodex_args) + 1, sizeof *cn->args); /* always NULL-terminated */
    if (!cn->args) return -1;
    for (size_t i = 0; i < COUNT(nodex_args); i++) {
        if (!(cn->args[i] = strdup(nodex_args[i]))) return -1;
        cn->arg_count = i + 1;
    }
    static const char *const src[] = {"{gateway_sname}_{name}", "{sname}@{hostname} ready", "nil"};
    char **const dst[] = {&cn->sname, &cn->ready_line, &cn->registered_name};
    return strdup_all(src, dst, COUNT(src));
}

/* Checks what no single key can: required keys and relations between keys. */
static int cnode_validate(parse_ctx *c, yaml_node_t *map, const char *path, config *cfg,
                          size_t index) {
    config_cnode *cn = &cfg->cnodes[index];
    key_path sub;
    if (!cn->name) return fail(c, map, path, "missing required key \"name\"");
    if (!cn->executable && cn->direction != CNODE_DIRECTION_ADOPT)
        return fail(c, map, path, "missing required key \"executable\" (direction %s)",
                    cnode_direction_name(cn->direction));
    if (!cn->node && cn->direction == CNODE_DIRECTION_ADOPT)
        return fail(c, map, path, "missing required key \"node\" (direction adopt)");
    /* By default a gen_call monitors its target where that is an Erlang process (an adopted
     * node's gen_server): ei C-nodes drop their connection on a MONITOR_P. */
    if (!mapping_get(c, map, "monitor"))
        cn->monitor =
            cn->protocol == CNODE_PROTOCOL_GEN_CALL && cn->direction == CNODE_DIRECTION_ADOPT;
    if (cn->call_timeout_ms > cn->max_call_timeout_ms) {
        join_path(sub, path, "call_timeout_ms");
        return fail(c, mapping_get(c, map, "call_timeout_ms"), sub,
                    "%u is above max_call_timeout_ms (%u)", cn->call_timeout_ms,
                    cn->max_call_timeout_ms);
    }
    if (cn->backoff_initial_ms > cn->backoff_max_ms) {
        join_path(sub, path, "backoff_initial_ms");
        return fail(c, mapping_get(c, map, "backoff_initial_ms"), sub,
                    "%u is above backoff_max_ms (%u)", cn->backoff_initial_ms, cn->backoff_max_ms);
    }
    for (size_t j = 0; j < index; j++) {
        if (!strcmp(cfg->cnodes[j].name, cn->name)) {
            join_path(sub, path, "name");
            return fail(c, mapping_get(c, map, "name"), sub,
                        "duplicate C-node name \"%s\" (also cnodes[%zu])", cn->name, j);
        }
    }
    return 0;
}

/* One C-node: item is a mapping (parse_entries checked). */
static int parse_cnode(parse_ctx *c, yaml_node_t *item, const char *sub, void *target, size_t i) {
    config *cfg = target;
    config_cnode *cn = &cfg->cnodes[i];
    if (cnode_defaults(cn)) return fail_oom(c, item, sub);
    if (parse_mapping(c, item, sub, cnode_fields, COUNT(cnode_fields), cn)) return -1;
    cn->fingerprint = fingerprint(c, item);
    return cnode_validate(c, item, sub, cfg, i);
}

/* Parses the cnodes sequence; target is the config. */
static int set_cnodes(parse_ctx *c, yaml_node_t *v, const char *path, void *target) {
    config *cfg = target;
    if (is_null(v)) return 0;
    if (v->type != YAML_SEQUENCE_NODE)
        return fail(c, v, path, "expected a sequence, got %s", describe(c, v));
    return parse_entries(c, v, path, sizeof *cfg->cnodes, (void **)&cfg->cnodes, &cfg->cnode_count,
                         parse_cnode, cfg);
}

static const field_spec top_fields[] = {
    WHOLE("node", set_node_section),
    WHOLE("http", set_http_section),
    WHOLE("terms", set_terms_section),
    WHOLE("log", set_log_section),
    WHOLE("shutdown", set_shutdown_section),
    WHOLE("grpc", set_grpc_section),
    WHOLE("erlang_nodes", set_erlang_nodes_section),
    WHOLE("cnodes", set_cnodes),
    WHOLE("auth", set_auth_section),
};

/* ---- loading ---- */

static config *config_new(const char *source) {
    config *cfg = calloc(1, sizeof *cfg);
    if (!cfg) return NULL;
    cfg->dist_port = 0;
    cfg->tick_time_ms = 4000;
    cfg->peer_tick_time_ms = 60000;
    cfg->start_epmd = true;
    cfg->http_threads = 0;
    cfg->max_body_bytes = 8u << 20;
    cfg->http_connection_timeout_s = 60;
    cfg->http_max_connections = 10000;
    cfg->http_max_connections_per_ip = 1000;
    cfg->http_header_timeout_ms = 30000;
    cfg->http_body_timeout_ms = 120000;
    cfg->http_body_budget_bytes = 256u << 20;
    cfg->term_max_depth = 512;
    cfg->term_max_bytes = 64u << 20;
    cfg->log_level = LOG_INFO;
    cfg->log_format = LOG_FORMAT_TEXT;
    cfg->shutdown_drain_ms = 10000;
    cfg->grpc_threads = 2;
    cfg->grpc_max_concurrent_streams = 1000;
    cfg->grpc_max_in_flight = 10000;
    cfg->grpc_max_message_bytes = 8u << 20;
    cfg->grpc_max_stream_pending_bytes = 8u << 20;
    cfg->child_ready_timeout_ms = 15000;
    cfg->child_shutdown_timeout_ms = 5000;
    cfg->child_restart = CNODE_RESTART_PERMANENT;
    cfg->child_max_restarts = 3;
    cfg->child_max_seconds = 5;
    cfg->max_children = 64;
    cfg->rpc_timeout_ms = 5000;
    cfg->max_rpc_timeout_ms = 300000;
    cfg->erl_args = calloc(1, sizeof *cfg->erl_args);
    cfg->code_paths = calloc(1, sizeof *cfg->code_paths);
    cfg->rpc_nodes = calloc(1, sizeof *cfg->rpc_nodes);
    cfg->allowed_origins = calloc(1, sizeof *cfg->allowed_origins);
    cfg->allowed_hosts = calloc(1, sizeof *cfg->allowed_hosts);
    if (!cfg->erl_args || !cfg->code_paths || !cfg->rpc_nodes || !cfg->allowed_origins ||
        !cfg->allowed_hosts) {
        config_free(cfg);
        return NULL;
    }
    const char *const src[] = {source,      "nodexd@127.0.0.1", "~/.erlang.cookie", "NODEX_COOKIE",
                               "127.0.0.1", "127.0.0.1:8080",   "127.0.0.1:50051",  "erl",
                               "child"};
    char **const dst[] = {&cfg->source,      &cfg->node_name,      &cfg->cookie_file,
                          &cfg->cookie_env,  &cfg->dist_listen,    &cfg->http_listen,
                          &cfg->grpc_listen, &cfg->erl_executable, &cfg->child_prefix};
    if (strdup_all(src, dst, COUNT(src))) {
        config_free(cfg);
        return NULL;
    }
    return cfg;
}

/* Long names when the host part has a dot or is an IP address (IPv6 has no dot). */
static bool derive_longnames(const char *node_name) {
    const char *host = strchr(node_name, '@');
    unsigned char addr[sizeof(struct in6_addr)];
    if (!host) return false;
    host++;
    return strchr(host, '.') || inet_pton(AF_INET6, host, addr) == 1;
}

static void syntax_error(const yaml_parser_t *p, const char *source, config_error *err) {
    const char *problem = p->problem ? p->problem : "cannot parse";
    if (p->error == YAML_MEMORY_ERROR)
        snprintf(err->message, sizeof err->message, "%s: out of memory", source);
    else if (p->error == YAML_READER_ERROR) /* bad encoding: libyaml knows the offset, not a line */
        snprintf(err->message, sizeof err->message, "%s: YAML read error: %s at byte %zu", source,
                 problem, p->problem_offset);
    else if (p->context)
        snprintf(err->message, sizeof err->message,
                 "%s:%zu: YAML syntax error: %s (%s started at line %zu)", source,
                 p->problem_mark.line + 1, problem, p->context, p->context_mark.line + 1);
    else
        snprintf(err->message, sizeof err->message, "%s:%zu: YAML syntax error: %s", source,
                 p->problem_mark.line + 1, problem);
}

bool config_listen_is_loopback(const char *listen) {
    char host[256];
    const char *colon = listen ? strrchr(listen, ':') : NULL;
    size_t n = colon ? (size_t)(colon - listen) : 0;
    if (n >= 2 && listen[0] == '[' && listen[n - 1] == ']') {
        listen++;
        n -= 2;
    }
    if (!n || n >= sizeof host) return false;
    memcpy(host, listen, n);
    host[n] = '\0';
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
    return strcasecmp(host, "localhost") == 0;
}

/* A listener others can reach needs authentication, or an explicit `auth: none`. */
static int check_exposure(parse_ctx *c, yaml_node_t *root, const config *cfg) {
    if (cfg->auth_none || cfg->principal_count) return 0;
    const char *section = NULL, *listen = NULL;
    if (!config_listen_is_loopback(cfg->http_listen)) {
        section = "http";
        listen = cfg->http_listen;
    } else if (cfg->grpc_listen && !config_listen_is_loopback(cfg->grpc_listen)) {
        section = "grpc";
        listen = cfg->grpc_listen;
    }
    if (!section) return 0;
    yaml_node_t *sec = mapping_get(c, root, section);
    yaml_node_t *at = sec && sec->type == YAML_MAPPING_NODE ? mapping_get(c, sec, "listen") : NULL;
    key_path sub;
    snprintf(sub, sizeof sub, "%s.listen", section);
    return fail(c, at ? at : root, sub,
                "%s is not a loopback address and no authentication is configured: add "
                "auth.principals (bearer tokens or client certificates), or set auth: none to "
                "let anyone who reaches it in",
                listen);
}

/* Loads from an initialised parser. The parser stays the caller's. */
static config *load(yaml_parser_t *parser, const char *source, config_error *err) {
    yaml_document_t doc;
    parse_ctx c = {.doc = &doc, .source = source, .err = err};
    err->message[0] = '\0';
    if (!yaml_parser_load(parser, &doc)) { /* libyaml frees the document on failure */
        syntax_error(parser, source, err);
        return NULL;
    }
    config *cfg = config_new(source);
    int rc = cfg ? 0 : -1;
    if (!cfg) snprintf(err->message, sizeof err->message, "%s: out of memory", source);
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (rc == 0 && !root) {
        snprintf(err->message, sizeof err->message, "%s: empty document, expected a mapping",
                 source);
        rc = -1;
    }
    if (rc == 0 && root->type != YAML_MAPPING_NODE) {
        rc = fail(&c, root, "(top level)", "expected a mapping, got %s", describe(&c, root));
    }
    if (rc == 0) rc = parse_mapping(&c, root, "", top_fields, COUNT(top_fields), cfg);
    if (rc == 0) fingerprint_sections(&c, root, cfg);
    if (rc == 0) rc = check_exposure(&c, root, cfg);
    yaml_document_delete(&doc);
    if (rc == 0) { /* a second document is almost surely a mistake (a stray "---") */
        if (!yaml_parser_load(parser, &doc)) {
            syntax_error(parser, source, err);
            rc = -1;
        } else {
            yaml_node_t *extra = yaml_document_get_root_node(&doc);
            if (extra)
                snprintf(err->message, sizeof err->message,
                         "%s:%zu: only one YAML document is allowed", source,
                         extra->start_mark.line + 1);
            rc = extra ? -1 : 0;
            yaml_document_delete(&doc);
        }
    }
    if (rc != 0) {
        config_free(cfg);
        return NULL;
    }
    cfg->longnames = derive_longnames(cfg->node_name);
    return cfg;
}

config *config_load_string(const char *yaml, size_t len, const char *source, config_error *err) {
    yaml_parser_t parser;
    if (!source) source = "<string>";
    if (!yaml_parser_initialize(&parser)) {
        snprintf(err->message, sizeof err->message, "%s: out of memory", source);
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    config *cfg = load(&parser, source, err);
    yaml_parser_delete(&parser);
    return cfg;
}

config *config_load_file(const char *path, config_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err->message, sizeof err->message, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    yaml_parser_t parser;
    config *cfg = NULL;
    if (yaml_parser_initialize(&parser)) {
        yaml_parser_set_input_file(&parser, f);
        cfg = load(&parser, path, err);
        yaml_parser_delete(&parser);
    } else {
        snprintf(err->message, sizeof err->message, "%s: out of memory", path);
    }
    fclose(f);
    if (cfg) cfg->from_file = true;
    return cfg;
}

config *config_load_default(config_error *err) {
    return config_load_string(config_default_yaml, sizeof config_default_yaml - 1,
                              "<embedded default>", err);
}

const config_cnode *config_find_cnode(const config *cfg, const char *name) {
    for (size_t i = 0; cfg && name && i < cfg->cnode_count; i++) {
        if (!strcmp(cfg->cnodes[i].name, name)) return &cfg->cnodes[i];
    }
    return NULL;
}

static void free_string_list(char **list, size_t count) {
    for (size_t i = 0; list && i < count; i++) free(list[i]);
    free(list);
}

static void cnode_free(config_cnode *cn) {
    for (size_t i = 0; i < cn->arg_count; i++) free(cn->args[i]);
    free(cn->args);
    for (size_t i = 0; i < cn->env_count; i++) {
        free(cn->env[i].name);
        free(cn->env[i].value);
    }
    free(cn->env);
    char *strings[] = {cn->name,       cn->executable,      cn->cwd,
                       cn->sname,      cn->hostname,        cn->node,
                       cn->ready_line, cn->registered_name, cn->reply_tag};
    for (size_t i = 0; i < COUNT(strings); i++) free(strings[i]);
}

static void tls_free(config_tls *t) {
    char *strings[] = {t->cert_file, t->key_file, t->client_ca_file, t->origin};
    for (size_t i = 0; i < COUNT(strings); i++) free(strings[i]);
}

void config_free(config *cfg) {
    if (!cfg) return;
    tls_free(&cfg->http_tls);
    tls_free(&cfg->grpc_tls);
    for (size_t i = 0; i < cfg->cnode_count; i++) cnode_free(&cfg->cnodes[i]);
    free(cfg->cnodes);
    char *strings[] = {cfg->source,         cfg->node_name,   cfg->cookie,      cfg->cookie_file,
                       cfg->cookie_env,     cfg->dist_listen, cfg->http_listen, cfg->grpc_listen,
                       cfg->erl_executable, cfg->child_prefix};
    for (size_t i = 0; i < COUNT(strings); i++) free(strings[i]);
    free_string_list(cfg->erl_args, cfg->erl_arg_count);
    free_string_list(cfg->code_paths, cfg->code_path_count);
    free_string_list(cfg->rpc_nodes, cfg->rpc_node_count);
    free_string_list(cfg->allowed_origins, cfg->allowed_origin_count);
    free_string_list(cfg->allowed_hosts, cfg->allowed_host_count);
    for (size_t i = 0; i < cfg->principal_count; i++) {
        config_principal *pr = &cfg->principals[i];
        char *fields[] = {pr->name, pr->token_file, pr->token_env, pr->cert_subject, pr->cert_san};
        for (size_t j = 0; j < COUNT(fields); j++) free(fields[j]);
        free_string_list(pr->allow, pr->allow_count);
    }
    free(cfg->principals);
    free(cfg);
}
