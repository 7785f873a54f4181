/* template: expands "{placeholder}" templates used for C-node argv, environment and ready lines. */
#ifndef NODEX_TEMPLATE_H
#define NODEX_TEMPLATE_H

#include <stddef.h>

/* One placeholder's name and value. */
typedef struct template_var {
    const char *name;  /* "sname" */
    const char *value; /* "example" */
} template_var;

/* Expands `tmpl`, replacing each {name} with its value; "{{" and "}}" stand for literal braces.
 * Returns a malloc'd string the caller frees, or NULL with *bad_name (if non-NULL) pointing into
 * `tmpl` at the '{' of the unknown, empty or unterminated placeholder (or at a lone '}'); when out
 * of memory *bad_name is NULL. Known names: whatever `vars` lists. */
char *template_expand(const char *tmpl, const template_var *vars, size_t var_count,
                      const char **bad_name);
/* Checks that `tmpl` uses only the listed names. Returns 0, or -1 with *bad_name set as above. */
int template_check(const char *tmpl, const char *const *names, size_t name_count,
                   const char **bad_name);

#endif
