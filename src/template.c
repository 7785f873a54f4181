/* template: expands "{placeholder}" templates used for C-node argv, environment and ready lines. */
#include "template.h"

#include <string.h>

#include "strbuf.h"

/* Resolves a placeholder name (not NUL-terminated) to its value, or NULL when unknown. */
typedef const char *(*template_lookup)(const void *ctx, const char *name, size_t len);

/* Walks `tmpl` once; appends the expansion to `out` when non-NULL. Returns 0, -1 for a template
 * error (*bad points at the offending '{' or '}'), -2 when out of memory. */
static int template_walk(const char *tmpl, template_lookup lookup, const void *ctx, strbuf *out,
                         const char **bad) {
    const char *p = tmpl;
    while (*p) {
        const char *brace = strpbrk(p, "{}");
        if (!brace) brace = p + strlen(p);
        if (out && strbuf_append(out, p, (size_t)(brace - p)) != 0) return -2;
        if (!*brace) break;
        if (brace[1] == brace[0]) { /* "{{" or "}}": a literal brace */
            if (out && strbuf_putc(out, *brace) != 0) return -2;
            p = brace + 2;
            continue;
        }
        *bad = brace;
        if (*brace == '}') return -1; /* a lone '}' is almost always a typo for "}}" */
        const char *name = brace + 1;
        size_t len = strcspn(name, "{}");
        if (name[len] != '}' || len == 0) return -1;
        const char *value = lookup(ctx, name, len);
        if (!value) return -1;
        if (out && strbuf_puts(out, value) != 0) return -2;
        p = name + len + 1;
    }
    return 0;
}

typedef struct var_table {
    const template_var *vars;
    size_t count;
} var_table;

static const char *lookup_var(const void *ctx, const char *name, size_t len) {
    const var_table *t = ctx;
    for (size_t i = 0; i < t->count; i++) {
        const char *n = t->vars[i].name;
        if (strncmp(n, name, len) == 0 && n[len] == '\0') return t->vars[i].value;
    }
    return NULL;
}

typedef struct name_table {
    const char *const *names;
    size_t count;
} name_table;

static const char *lookup_name(const void *ctx, const char *name, size_t len) {
    const name_table *t = ctx;
    for (size_t i = 0; i < t->count; i++) {
        const char *n = t->names[i];
        if (strncmp(n, name, len) == 0 && n[len] == '\0') return "";
    }
    return NULL;
}

char *template_expand(const char *tmpl, const template_var *vars, size_t var_count,
                      const char **bad_name) {
    const char *bad = NULL;
    var_table t = {vars, var_count};
    strbuf out = {0};
    int rc = template_walk(tmpl, lookup_var, &t, &out, &bad);
    if (rc == 0 && strbuf_append(&out, "", 0) != 0) rc = -2; /* allocates an empty result */
    if (rc != 0) {
        strbuf_free(&out);
        if (bad_name) *bad_name = rc == -1 ? bad : NULL;
        return NULL;
    }
    return strbuf_detach(&out, NULL);
}

int template_check(const char *tmpl, const char *const *names, size_t name_count,
                   const char **bad_name) {
    const char *bad = NULL;
    name_table t = {names, name_count};
    int rc = template_walk(tmpl, lookup_name, &t, NULL, &bad);
    if (rc != 0 && bad_name) *bad_name = bad;
    return rc == 0 ? 0 : -1;
}
