/* cookie: finds the Erlang distribution cookie (config, environment or file) without leaking it. */
#ifndef NODEX_COOKIE_H
#define NODEX_COOKIE_H

#include <stddef.h>

/* Resolves the cookie, in this order: `literal` (if non-NULL), the environment variable `env_name`
 * (if set and non-empty), the file `file_path` ("~/" expanded from $HOME). The file must be a
 * regular file readable by nobody but its owner (as Erlang requires: mode & 077 == 0); trailing
 * whitespace is stripped. If `create_default` is non-zero and the file does not exist, it is
 * created as Erlang does (20 random uppercase letters, mode 0400).
 * Writes the cookie to out (NUL-terminated) and returns 0, or returns -1 with a message in err
 * that never contains the cookie itself. */
int cookie_resolve(const char *literal, const char *env_name, const char *file_path,
                   int create_default, char *out, size_t out_len, char *err, size_t err_len);

#endif
